#!/usr/bin/env python
"""Scheduling policies on the real model: who waits, who is served, what a context switch costs.

    python bench/scheduling.py            # full size (about 5 minutes on 2 cores when nothing else runs)
    python bench/scheduling.py --quick    # tiny sizes, to check that the script works (figures meaningless)

Prints ONE JSON line on stdout (progress goes to stderr). Sections (see bench/README.md for every key):
  mixed        16 requests (8 long queued first, then 8 short) on 4 slots under serial, fifo, rr, priority and
               fair: time to first token, turnaround of short and long, throughput, context switches, swap bytes.
  jain         8 equal backlogged requests, max_batch 2, fair: Jain's fairness index of their token rates.
  nice         two backlogged requests at nice 0 and nice 5, max_batch 1, fair: their token ratio (CFS: 3.06).
  interactive  an interactive-class request's decode rate alone and beside 15 batch-class requests.
  agents16     16 `talker` agents through the Kernel API, all at once under fair against one by one (serial).
  swap         save + restore of a 512-token sequence's KV (llama_state_seq_get/set_data) against re-prefilling it.
The model loads once for the bare-engine sections (one Engine per set of EngineSettings); the Kernel section
loads its own copy, as `aiosh` does.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, whatever the working directory
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the project, if it is not installed

import llama_cpp as ll  # noqa: E402
from _common import USER_PROMPTS, emit, loadavg, log, percentile, rnd, sampling, setup_info  # noqa: E402
from aiosh.kernel.engine import Engine, EngineSettings  # noqa: E402
from aiosh.kernel.model import Model  # noqa: E402
from aiosh.kernel.requests import GenRequest, GenResult, RequestHandle, SchedInfo  # noqa: E402
from aiosh.kernel.scheduler import NICE_0_WEIGHT, load_policy, nice_weight  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 900
POLICIES = ["serial", "fifo", "rr", "priority", "fair"]
NICE_RATIO = NICE_0_WEIGHT / nice_weight(5)  # 1024 / 335 = 3.057
TARGETS = {
    "mixed_short_turnaround_vs_fifo_max": 1 / 3,  # fair and rr: short mean turnaround <= 1/3 of fifo's
    "mixed_throughput_cost_max": 0.10,  # ... at <= 10% throughput cost against fifo
    "jain_min": 0.95,
    "nice_ratio": round(NICE_RATIO, 3),
    "nice_ratio_tolerance": 0.10,
    "interactive_share_min": 0.5,
    "agents16_ratio_min": 1.9,
    "swap_ms_max": 5.0,
}


class BenchError(Exception):
    """A run whose results would be wrong (a request failed or produced the wrong number of tokens)."""


def check(r: GenResult, max_tokens: int, what: str) -> None:
    if r.finish_reason != "length" or r.completion_tokens != max_tokens:
        raise BenchError(
            f"{what}: finished with {r.finish_reason!r} after {r.completion_tokens} tokens "
            f"(want 'length' after {max_tokens}); error={r.error!r}"
        )


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def jain_index(xs: list[float]) -> float:
    s, sq = sum(xs), sum(x * x for x in xs)
    return s * s / (len(xs) * sq) if sq else float("nan")


class CpuWatch:
    """Who used the CPU during a section: this process (all its threads) against the whole machine, from
    /proc/stat and os.times(). `others_cpu_pct` is the share of all cores that other processes took: on 2 cores a
    second llama.cpp process makes every step wait for descheduled threads (we have seen decode steps go from 7 ms
    to 3 s), so a figure measured beside one says little. loadavg counts this bench's own threads too."""

    def __init__(self) -> None:
        self.load0 = loadavg()
        self.t0, self.busy0, self.steal0, self.own0 = self.sample()

    @staticmethod
    def sample() -> tuple[float, float, float, float]:
        tick = os.sysconf("SC_CLK_TCK")
        try:
            with open("/proc/stat", encoding="ascii") as fh:
                f = [int(x) for x in fh.readline().split()[1:]]
        except OSError:
            f = [0] * 8
        f += [0] * (8 - len(f))
        busy = (f[0] + f[1] + f[2] + f[5] + f[6]) / tick  # user nice system irq softirq
        t = os.times()
        return time.monotonic(), busy, f[7] / tick, t.user + t.system

    def report(self) -> dict:
        t, busy, steal, own = self.sample()
        span = max(1e-9, (t - self.t0) * (os.cpu_count() or 1))
        return {
            "load_1m": max(self.load0, loadavg()),
            "others_cpu_pct": max(0.0, 100 * ((busy - self.busy0) - (own - self.own0)) / span),
            "steal_pct": 100 * (steal - self.steal0) / span,
        }


QUIET = {"max_wait_s": 0.0, "waited_s": 0.0, "gave_up": 0, "attempts": 1, "contended_pct": 20.0,
         "repeated": [], "contended": []}


def wait_quiet(what: str, threshold_pct: float = 15.0) -> None:
    """Wait (at most QUIET['max_wait_s']) until other processes use less than threshold_pct of the CPU over 2 s."""
    if QUIET["max_wait_s"] <= 0:
        return
    t0 = time.monotonic()
    while True:
        w = CpuWatch()
        time.sleep(2.0)
        other = w.report()["others_cpu_pct"]
        waited = time.monotonic() - t0
        if other < threshold_pct:
            break
        if waited >= QUIET["max_wait_s"]:
            QUIET["gave_up"] += 1
            log(f"{what}: other processes still use {other:.0f}% of the CPU after {waited:.0f}s; measuring anyway")
            break
        log(f"{what}: other processes use {other:.0f}% of the CPU; waiting for a quieter moment")
    QUIET["waited_s"] += time.monotonic() - t0


def measured(what: str, fn):
    """fn() after a quiet moment (wait_quiet); measured again while other processes took more than
    QUIET['contended_pct'] of the CPU during it, at most QUIET['attempts'] times in all. fn returns a dict with
    `others_cpu_pct`; the result gets `attempts`. A figure still measured beside other work is named in
    setup.quiet.contended."""
    n = max(1, int(QUIET["attempts"]))
    for attempt in range(1, n + 1):
        wait_quiet(what)
        res = fn()
        res["attempts"] = attempt
        other = res["others_cpu_pct"]
        if other <= QUIET["contended_pct"]:
            return res
        if attempt == n:
            QUIET["contended"].append(what)
            return res
        QUIET["repeated"].append(what)
        log(f"{what}: other processes took {other:.0f}% of the CPU meanwhile; measuring again")
    raise AssertionError("unreachable")


def env(w: CpuWatch) -> dict:
    return {k: rnd(v, 2 if k == "load_1m" else 1) for k, v in w.report().items()}


class Held:
    """Keeps the engine thread busy (inside `engine.call`) while requests are submitted, so that the engine takes
    them all in before its next step: every policy sees the same queue at its first plan."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.gate = threading.Event()
        self.inside = threading.Event()

    def __enter__(self) -> Held:
        def block() -> None:
            self.inside.set()
            self.gate.wait(60)

        self.thread = threading.Thread(target=lambda: self.engine.call(block, timeout=120), daemon=True)
        self.thread.start()
        if not self.inside.wait(60):
            raise BenchError("the engine thread did not take the hold")
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self.thread.join(60)


class SwapMeter:
    """Counts what Engine._preempt / _swap_in move, by wrapping the two methods on this engine instance (the
    engine calls them through `self`): bytes of each saved KV buffer, tokens dropped for recompute, time spent."""

    def __init__(self, engine: Engine) -> None:
        self.reset()
        orig_preempt, orig_swap_in = engine._preempt, engine._swap_in

        def preempt(act) -> None:
            n = len(act.slot.tokens) if act.slot is not None else 0
            t0 = time.perf_counter()
            orig_preempt(act)
            self.preempt_s += time.perf_counter() - t0
            if act.swapped is not None:
                self.out_bytes += len(act.swapped)
                self.out_tokens += n
            elif n:
                self.recompute_tokens += n

        def swap_in(act, slot) -> None:
            size = len(act.swapped) if act.swapped is not None else 0
            t0 = time.perf_counter()
            orig_swap_in(act, slot)
            self.swap_in_s += time.perf_counter() - t0
            self.in_bytes += size

        engine._preempt = preempt  # type: ignore[method-assign]
        engine._swap_in = swap_in  # type: ignore[method-assign]

    def reset(self) -> None:
        self.out_bytes = self.in_bytes = self.out_tokens = self.recompute_tokens = 0
        self.preempt_s = self.swap_in_s = 0.0


def new_engine(model: Model, threads: int, **kw) -> Engine:
    settings = EngineSettings(n_ctx=2048, batch_tokens=512, n_threads=threads, unified_kv=True, step_history=20000, **kw)
    engine = Engine(model, settings).start()
    # Warm-up (the first decode allocates llama.cpp's buffers), then start from empty caches.
    engine.submit(GenRequest(prompt="Hello", max_tokens=4, sampling=sampling(1), ignore_eos=True)).wait(WAIT_S)
    engine.call(engine.clear_idle_caches)
    return engine


def stats_delta(engine: Engine, s0) -> dict:
    s1 = engine.stats
    return {k: getattr(s1, k) - getattr(s0, k) for k in ("preemptions", "swaps_out", "swaps_in", "recomputes")}


def rates_in_window(engine: Engine, t0: float, rids: list[int]) -> dict:
    """Per-rid tokens over the window in which all of them are backlogged: from the last first token to the first
    last token, from the step records (`sampled`: who got a token in that step, at the step's end time `t`)."""
    recs = [r for r in engine.steps() if r.t >= t0]
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for r in recs:
        for _, rid in r.sampled:
            first.setdefault(rid, r.t)
            last[rid] = r.t
    missing = [rid for rid in rids if rid not in first]
    if missing:
        raise BenchError(f"no step record sampled requests {missing} (step history too short?)")
    lo, hi = max(first[rid] for rid in rids), min(last[rid] for rid in rids)
    counts = dict.fromkeys(rids, 0)
    for r in recs:
        if lo < r.t <= hi:
            for _, rid in r.sampled:
                if rid in counts:
                    counts[rid] += 1
    return {"window_s": hi - lo, "counts": counts, "t_lo": lo, "t_hi": hi,
            "steps_in_window": sum(1 for r in recs if lo < r.t <= hi)}


# --- mixed ---------------------------------------------------------------------------------------------------------
def mixed_once(engine: Engine, meter: SwapMeter, name: str, n_long: int, long_tokens: int, n_short: int,
               short_tokens: int) -> dict:
    per_tok = engine.model.info.kv_bytes_per_token
    engine.set_policy(load_policy(name, {}))
    engine.call(engine.clear_idle_caches)  # also: the policy switch has been applied
    meter.reset()
    s0 = engine.stats
    watch = CpuWatch()
    reqs = []
    for i in range(n_long):
        reqs.append(("long", GenRequest(messages=user(USER_PROMPTS[i]), max_tokens=long_tokens,
                                        sampling=sampling(200 + i), ignore_eos=True)))
    for i in range(n_short):
        reqs.append(("short", GenRequest(messages=user(USER_PROMPTS[n_long + i]), max_tokens=short_tokens,
                                         sampling=sampling(300 + i), ignore_eos=True)))
    t0 = time.monotonic()
    with Held(engine):
        handles = [(kind, engine.submit(r)) for kind, r in reqs]
    results = [(kind, h.wait(WAIT_S)) for kind, h in handles]
    for i, (kind, r) in enumerate(results):
        check(r, long_tokens if kind == "long" else short_tokens, f"mixed/{name} {kind} request {i}")
    t_start = min(r.t_submit for _, r in results)
    makespan = max(r.t_end for _, r in results) - t_start
    gen = sum(r.completion_tokens for _, r in results)
    ttft = [r.ttft for _, r in results]
    short = [r.turnaround for k, r in results if k == "short"]
    d = stats_delta(engine, s0)
    steps = [s for s in engine.steps() if s.t >= t0]
    pure = [s.duration for s in steps if s.decoded and not s.prefilled]
    out = {
        "short_turnaround_s": mean(short),
        "long_turnaround_s": mean(r.turnaround for k, r in results if k == "long"),
        "ttft_mean_s": mean(ttft),
        "ttft_p95_s": percentile(ttft, 95),
        "tok_s": gen / makespan,
        "switches": d["preemptions"],
        "swap_bytes": meter.out_bytes,
        "makespan_s": makespan,
        "swaps_out": d["swaps_out"],
        "swaps_in": d["swaps_in"],
        "recomputes": d["recomputes"],
        "swapped_tokens": meter.out_tokens,
        "swap_bytes_estimate": meter.out_tokens * per_tok,
        "recompute_tokens": meter.recompute_tokens,
        "swap_time_ms": 1e3 * (meter.preempt_s + meter.swap_in_s),
        "short_turnaround_p95_s": percentile(short, 95),
        "steps": len(steps),
        "decode_step_ms_median": 1e3 * statistics.median(pure) if pure else float("nan"),
        **watch.report(),
    }
    log(f"mixed/{name}: short {out['short_turnaround_s']:.2f}s long {out['long_turnaround_s']:.2f}s "
        f"ttft {out['ttft_mean_s']:.2f}s {out['tok_s']:.1f} tok/s switches {d['preemptions']} "
        f"swap {meter.out_bytes / 1e6:.1f} MB, decode step {out['decode_step_ms_median']:.1f} ms, "
        f"load {out['load_1m']:.2f}, others {out['others_cpu_pct']:.0f}% CPU")
    return out


ROUND = {"short_turnaround_s": 3, "long_turnaround_s": 3, "ttft_mean_s": 3, "ttft_p95_s": 3, "tok_s": 1,
         "makespan_s": 3, "short_turnaround_p95_s": 3, "swap_time_ms": 1, "decode_step_ms_median": 2, "load_1m": 2,
         "others_cpu_pct": 1, "steal_pct": 1,
         "attempts": 1}


def bench_mixed(engine: Engine, meter: SwapMeter, rounds: int, n_long: int, long_tokens: int, n_short: int,
                short_tokens: int) -> tuple[dict, dict]:
    """Each round runs every policy once; rounds alternate the order (ABCDE, EDCBA, ...) so that a change in the
    machine's load does not favour one policy. The figures are means over the rounds (counts: sums / rounds)."""
    runs: dict[str, list[dict]] = {name: [] for name in POLICIES}
    for k in range(rounds):
        for name in (POLICIES if k % 2 == 0 else POLICIES[::-1]):
            runs[name].append(measured(f"mixed/{name}", lambda name=name: mixed_once(
                engine, meter, name, n_long, long_tokens, n_short, short_tokens)))
    out: dict = {}
    for name, rs in runs.items():
        agg = {}
        for key in rs[0]:
            v = mean(r[key] for r in rs)
            agg[key] = rnd(v, ROUND[key]) if key in ROUND else (round(v) if v == int(v) else rnd(v, 1))
        agg["rounds"] = len(rs)
        if len(rs) > 1:
            agg["per_round"] = {key: [rnd(r[key], ROUND.get(key, 3)) for r in rs]
                                for key in ("short_turnaround_s", "long_turnaround_s", "ttft_mean_s", "tok_s",
                                            "switches", "decode_step_ms_median", "load_1m",
                                            "others_cpu_pct")}
        out[name] = agg
    fifo = out["fifo"]
    derived = {}
    for name in ("fair", "rr", "priority", "serial"):
        p = out[name]
        derived[name] = {
            "short_turnaround_vs_fifo": rnd(p["short_turnaround_s"] / fifo["short_turnaround_s"]),
            "throughput_vs_fifo": rnd(p["tok_s"] / fifo["tok_s"]),
        }
        if len(runs[name]) > 1:  # the same ratios within each round (a fairer pairing on a busy machine)
            derived[name]["per_round"] = [
                [rnd(a["short_turnaround_s"] / b["short_turnaround_s"]), rnd(a["tok_s"] / b["tok_s"])]
                for a, b in zip(runs[name], runs["fifo"])
            ]
    return out, derived


# --- jain / nice -----------------------------------------------------------------------------------------------------
def bench_jain(model: Model, threads: int, n: int, tokens: int) -> dict:
    engine = new_engine(model, threads, n_slots=n, max_batch=2)
    try:
        engine.set_policy(load_policy("fair", {}))
        engine.call(lambda: None)
        watch = CpuWatch()
        t0 = time.monotonic()
        with Held(engine):
            hs = [engine.submit(GenRequest(messages=user(USER_PROMPTS[16 + i]), max_tokens=tokens,
                                           sampling=sampling(400 + i), ignore_eos=True)) for i in range(n)]
        for i, h in enumerate(hs):
            check(h.wait(WAIT_S), tokens, f"jain request {i}")
        w = rates_in_window(engine, t0, [h.id for h in hs])
        rates = [w["counts"][h.id] / w["window_s"] for h in hs]
        j = jain_index(rates)
        log(f"jain: {j:.4f} over {w['window_s']:.2f}s, tokens per request {list(w['counts'].values())}")
        return {
            "jain": rnd(j, 4), "requests": n, "tokens_each": tokens, "max_batch": 2, "n_slots": n,
            "window_s": rnd(w["window_s"]), "tokens_in_window": list(w["counts"].values()),
            "tok_s_in_window": [rnd(x, 1) for x in rates], "steps_in_window": w["steps_in_window"],
            **env(watch),
        }
    finally:
        engine.close()


def bench_nice(model: Model, threads: int, tokens0: int, tokens5: int, min_window_tokens: int) -> dict:
    engine = new_engine(model, threads, n_slots=2, max_batch=1)
    try:
        engine.set_policy(load_policy("fair", {}))
        engine.call(lambda: None)
        watch = CpuWatch()
        t0 = time.monotonic()
        with Held(engine):
            h0 = engine.submit(GenRequest(messages=user(USER_PROMPTS[24]), max_tokens=tokens0, sampling=sampling(500),
                                          ignore_eos=True, sched=SchedInfo(owner=1, group=1, nice=0)))
            h5 = engine.submit(GenRequest(messages=user(USER_PROMPTS[25]), max_tokens=tokens5, sampling=sampling(501),
                                          ignore_eos=True, sched=SchedInfo(owner=2, group=2, nice=5)))
        check(h0.wait(WAIT_S), tokens0, "nice 0 request")
        check(h5.wait(WAIT_S), tokens5, "nice 5 request")
        w = rates_in_window(engine, t0, [h0.id, h5.id])
        c0, c5 = w["counts"][h0.id], w["counts"][h5.id]
        ratio = c0 / c5 if c5 else float("inf")
        total = c0 + c5
        log(f"nice: {c0} vs {c5} tokens in {w['window_s']:.2f}s: ratio {ratio:.3f} (CFS {NICE_RATIO:.3f})")
        if total < min_window_tokens:
            raise BenchError(f"nice: only {total} tokens in the backlogged window (want >= {min_window_tokens})")
        return {
            "ratio": rnd(ratio), "cfs_ratio": rnd(NICE_RATIO), "error": rnd(ratio / NICE_RATIO - 1),
            "tokens_nice0": c0, "tokens_nice5": c5, "window_tokens": total, "window_s": rnd(w["window_s"]),
            "max_tokens": [tokens0, tokens5], "max_batch": 1, **env(watch),
        }
    finally:
        engine.close()


# --- interactive ---------------------------------------------------------------------------------------------------
def decode_rate(r: GenResult) -> float:
    """Tokens per second after the first one (its decode rate, prefill and queueing left out)."""
    return (r.completion_tokens - 1) / (r.t_end - r.t_first) if r.t_end > r.t_first else float("nan")


def bench_interactive(model: Model, threads: int, tokens: int, n_batch: int, rounds: int, with_normal: bool) -> dict:
    engine = new_engine(model, threads, n_slots=16)
    try:
        engine.set_policy(load_policy("fair", {}))
        engine.call(lambda: None)
        watch = CpuWatch()
        seed = iter(range(600, 10_000))

        def one(klass: str, k: int) -> GenResult:
            r = engine.submit(GenRequest(messages=user(USER_PROMPTS[k % len(USER_PROMPTS)]), max_tokens=tokens,
                                         sampling=sampling(next(seed)), ignore_eos=True,
                                         sched=SchedInfo(owner=100, group=100, sched_class=klass))).wait(WAIT_S)
            check(r, tokens, f"{klass} request")
            return r

        def loaded(klass: str, k: int) -> tuple[GenResult, list[int]]:
            """`klass` request while n_batch batch-class requests decode (they started first; cancelled after)."""
            bg: list[RequestHandle] = [
                engine.submit(GenRequest(messages=user(USER_PROMPTS[(k + 1 + i) % len(USER_PROMPTS)]),
                                         max_tokens=1500, sampling=sampling(next(seed)), ignore_eos=True,
                                         sched=SchedInfo(owner=200 + i, group=200 + i, sched_class="batch")))
                for i in range(n_batch)
            ]
            deadline = time.monotonic() + WAIT_S
            while any(h.n_generated < 2 for h in bg):  # all prefilled and decoding
                if time.monotonic() > deadline or any(h.done for h in bg):
                    raise BenchError("batch requests did not start decoding")
                time.sleep(0.005)
            got0 = [h.n_generated for h in bg]
            r = one(klass, k)
            got1 = [h.n_generated for h in bg]
            widths.append(statistics.median(len(s.decoded) for s in engine.steps()
                                            if r.t_first < s.t <= r.t_end and s.decoded))
            alive = all(not h.done for h in bg)
            for h in bg:
                h.cancel()
            for h in bg:
                h.wait(WAIT_S)
            if not alive:
                raise BenchError("a batch request ended before the measured one did")
            engine.call(engine.clear_idle_caches)
            return r, [b - a for a, b in zip(got0, got1)]

        alone, busy, normal, bg_tokens = [], [], [], []
        widths: list[float] = []  # batch width of the steps while the measured request decoded (loaded)
        for k in range(rounds):  # alternate, so that a change of machine load hits both sides
            engine.call(engine.clear_idle_caches)
            alone.append(one("interactive", k))
            r, bg = loaded("interactive", k)
            busy.append(r)
            bg_tokens.append(sum(bg))
            log(f"interactive round {k}: alone {decode_rate(alone[-1]):.1f} tok/s, beside {n_batch} batch "
                f"{decode_rate(r):.1f} tok/s (batch requests got {sum(bg)} tokens meanwhile)")
        if with_normal:
            r, _ = loaded("normal", 0)
            normal.append(r)
            log(f"interactive: a normal-class request beside {n_batch} batch: {decode_rate(r):.1f} tok/s")
        a = statistics.median(decode_rate(r) for r in alone)
        b = statistics.median(decode_rate(r) for r in busy)
        return {
            "share": rnd(b / a), "alone_tok_s": rnd(a, 1), "loaded_tok_s": rnd(b, 1),
            "alone_tok_s_rounds": [rnd(decode_rate(r), 1) for r in alone],
            "loaded_tok_s_rounds": [rnd(decode_rate(r), 1) for r in busy],
            "alone_ttft_s": rnd(statistics.median(r.ttft for r in alone)),
            "loaded_ttft_s": rnd(statistics.median(r.ttft for r in busy)),
            "batch_tokens_meanwhile": bg_tokens, "loaded_batch_width_median": widths,
            "normal_class_loaded_tok_s": rnd(decode_rate(normal[0]), 1) if normal else None,
            "tokens": tokens, "batch_requests": n_batch, "n_slots": 16, "rounds": rounds, **env(watch),
        }
    finally:
        engine.close()


# --- agents16 through the Kernel -------------------------------------------------------------------------------------
def bench_agents16(threads: int, n_agents: int, tokens: int, order: list[str]) -> dict:
    from aiosh.kernel.config import load_config
    from aiosh.kernel.kernel import Kernel

    cfg = load_config(cwd=ROOT, overrides={
        "kernel": {"slots": n_agents}, "model": {"n_threads": threads},
        "plugins": {"paths": [str(ROOT / "tests" / "agents")]}, "storage": {"enabled": False},
    })
    log(f"agents16: starting a Kernel ({n_agents} slots)")
    exits: dict[int, float] = {}
    usage_missing: list[int] = []
    lock = threading.Lock()
    watch = CpuWatch()
    with Kernel(cfg) as kern:
        def on_event(pid: int, kind: str, status: int | None) -> None:
            if kind == "exited":
                with lock:
                    exits[pid] = time.monotonic()

        kern.add_listener(on_event)

        def run(policy: str, n: int, ntok: int) -> dict:
            kern.set_policy(policy)
            kern.local.clear_idle_caches()
            watch = CpuWatch()
            t0 = time.monotonic()
            pids = [kern.spawn("talker", [str(ntok)]) for _ in range(n)]
            for pid in pids:
                got = kern.wait(pid, timeout=WAIT_S)
                if got is None or got[1] != 0:
                    raise BenchError(f"agents16/{policy}: talker {pid} ended with {got}")
            # Tokens counted from the engine's step records (who sampled a token); Kernel.usage() is reported
            # beside it: it can miss a request's last token (see README, "agents16").
            mine = set(pids)
            sampled = sum(1 for r in kern.local.steps() if r.t >= t0 for owner, _ in r.sampled if owner in mine)
            if sampled != n * ntok:
                raise BenchError(f"agents16/{policy}: {sampled} tokens sampled, want {n * ntok}")
            usage_missing.append(n * ntok - kern.usage(pids)[1])
            deadline = time.monotonic() + 10  # the exit listener runs just after wait() is woken
            while True:
                with lock:
                    if all(p in exits for p in pids):
                        wall = max(exits[p] for p in pids) - t0
                        break
                if time.monotonic() > deadline:
                    raise BenchError(f"agents16/{policy}: no exit event for some talkers")
                time.sleep(0.001)
            dec = [r for r in kern.local.steps() if r.t >= t0 and r.decoded and not r.prefilled]
            return {"s": wall, "decode_step_ms_median": 1e3 * statistics.median(r.duration for r in dec),
                    "decode_batch_median": statistics.median(len(r.decoded) for r in dec), **watch.report()}

        run("fair", 1, 8)  # warm-up
        walls: dict[str, list[float]] = {"fair": [], "serial": []}
        others: list[float] = []
        attempts: list[int] = []
        steps: dict[str, list[list[float]]] = {"fair": [], "serial": []}
        for policy in order:
            r = measured(f"agents16/{policy}", lambda policy=policy: run(policy, n_agents, tokens))
            walls[policy].append(r["s"])
            others.append(r["others_cpu_pct"])
            attempts.append(r["attempts"])
            steps[policy].append([rnd(r["decode_step_ms_median"], 1), r["decode_batch_median"]])
            log(f"agents16/{policy}: {r['s']:.2f}s (others {r['others_cpu_pct']:.0f}% CPU)")
    fair_s, serial_s = mean(walls["fair"]), mean(walls["serial"])
    return {
        "ratio": rnd(serial_s / fair_s, 2), "fair_s": rnd(fair_s), "serial_s": rnd(serial_s),
        "fair_s_runs": [rnd(x) for x in walls["fair"]], "serial_s_runs": [rnd(x) for x in walls["serial"]],
        "order": order, "agents": n_agents, "tokens_each": tokens, "agent": f"talker {tokens}",
        "usage_tokens_missing": usage_missing, "others_cpu_pct_runs": [rnd(x, 1) for x in others],
        "attempts_runs": attempts, "decode_step_ms_and_batch_median": steps, **env(watch),
    }


# --- swap against recompute ------------------------------------------------------------------------------------------
def bench_swap(engine: Engine, n_tokens: int, reps: int) -> dict:
    model = engine.model
    text = " ".join(USER_PROMPTS) * 4
    toks = model.tokenize(text, add_bos=True)[:n_tokens]
    if len(toks) < n_tokens:
        raise BenchError(f"swap: the text has only {len(toks)} tokens")

    def job() -> dict:
        if engine._actives:
            raise BenchError("swap: the engine is busy")
        engine.clear_idle_caches()
        ctx, mem = engine.ctx, engine.mem
        seq = engine.slots[0].seq
        n_vocab = model.n_vocab
        batch = ll.llama_batch_init(max(n_tokens, 1), 0, 1)

        def fill(tokens: list[int], pos0: int) -> None:
            for i, t in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, pos0 + i, 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = 1 if i == len(tokens) - 1 else 0
            batch.n_tokens = len(tokens)

        def prefill() -> float:
            ll.llama_memory_seq_rm(mem, seq, -1, -1)
            fill(toks, 0)
            t0 = time.perf_counter()
            rc = ll.llama_decode(ctx, batch)
            dt = time.perf_counter() - t0
            if rc != 0:
                raise BenchError(f"swap: llama_decode failed ({rc})")
            return dt

        def next_logits() -> list[float]:
            fill([toks[1]], n_tokens)
            if ll.llama_decode(ctx, batch) != 0:
                raise BenchError("swap: llama_decode failed")
            row = ll.llama_get_logits_ith(ctx, 0)
            out = [row[i] for i in range(n_vocab)]
            ll.llama_memory_seq_rm(mem, seq, n_tokens, -1)
            return out

        try:
            prefill()  # warm
            recompute, out_ms, get_ms, in_ms = [], [], [], []
            size = 0
            for _ in range(reps):
                recompute.append(prefill())
            ref = next_logits()
            max_diff = 0.0
            for _ in range(reps + 1):  # the first is reported apart: fresh pages for the buffer (see README)
                # What Engine._preempt times: allocate the buffer and copy the sequence's KV out.
                size = ll.llama_state_seq_get_size(ctx, seq)
                t0 = time.perf_counter()
                buf = (ctypes.c_uint8 * size)()
                t1 = time.perf_counter()
                got = ll.llama_state_seq_get_data(ctx, buf, size, seq)
                t2 = time.perf_counter()
                if got != size:
                    raise BenchError(f"swap: llama_state_seq_get_data returned {got} of {size} bytes")
                ll.llama_memory_seq_rm(mem, seq, -1, -1)  # the slot is given up
                # What Engine._swap_in times: copy it back into an empty sequence.
                t3 = time.perf_counter()
                ok = ll.llama_state_seq_set_data(ctx, buf, size, seq)
                t4 = time.perf_counter()
                if not ok:
                    raise BenchError("swap: llama_state_seq_set_data failed")
                if ll.llama_memory_seq_pos_max(mem, seq) != n_tokens - 1:
                    raise BenchError("swap: the restored sequence does not end at the right position")
                out_ms.append(t2 - t0)
                get_ms.append(t2 - t1)
                in_ms.append(t4 - t3)
                del buf
            after = next_logits()
            max_diff = max(abs(a - b) for a, b in zip(ref, after))
        finally:
            ll.llama_memory_seq_rm(mem, seq, -1, -1)
            ll.llama_batch_free(batch)
        med = statistics.median
        first = (out_ms.pop(0), get_ms.pop(0), in_ms.pop(0))
        return {
            "swap_ms": rnd(1e3 * (med(out_ms) + med(in_ms)), 2),
            "swap_out_ms": rnd(1e3 * med(out_ms), 2), "swap_out_copy_ms": rnd(1e3 * med(get_ms), 2),
            "swap_in_ms": rnd(1e3 * med(in_ms), 2), "recompute_ms": rnd(1e3 * med(recompute), 1),
            "bytes": size, "bytes_per_token": rnd(size / n_tokens, 1), "tokens": n_tokens, "reps": reps,
            "swap_ms_runs": [rnd(1e3 * (a + b), 2) for a, b in zip(out_ms, in_ms)],
            "recompute_ms_runs": [rnd(1e3 * x, 1) for x in recompute],
            "first_swap_out_ms": rnd(1e3 * first[0], 2), "first_swap_out_copy_ms": rnd(1e3 * first[1], 2),
            "first_swap_in_ms": rnd(1e3 * first[2], 2),
            "restored_logits_max_abs_diff": rnd(max_diff, 6),
            "engine_kv_cells": engine.n_cells,
        }

    watch = CpuWatch()
    res = engine.call(job, timeout=300)
    res.update(env(watch))
    log(f"swap: {res['bytes'] / 1e6:.1f} MB, save+restore {res['swap_ms']} ms, recompute {res['recompute_ms']} ms")
    return res


# --- main --------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to validate the script (figures meaningless)")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (default: os.cpu_count())")
    ap.add_argument("--max-wait-quiet", type=float, default=None, metavar="S",
                    help="before each measurement wait up to S seconds until other processes use < 15%% of the CPU "
                    "(default 60, 0 with --quick; 0 = never wait)")
    ap.add_argument("--attempts", type=int, default=None, metavar="N",
                    help="measure again (N times in all) while other processes took > 20%% of the CPU during a "
                    "measurement (default 3, 1 with --quick)")
    args = ap.parse_args(argv)
    threads = args.threads or os.cpu_count() or 1
    QUIET["max_wait_s"] = args.max_wait_quiet if args.max_wait_quiet is not None else (0 if args.quick else 60)
    QUIET["attempts"] = args.attempts if args.attempts is not None else (1 if args.quick else 3)
    if args.quick:
        size = dict(mixed_rounds=1, long=48, short=8, jain_tokens=24, nice0=80, nice5=40, nice_min=60, inter_tokens=16,
                    inter_rounds=1, inter_normal=False, agents_tokens=8, agents_order=["fair", "serial"],
                    swap_tokens=512, swap_reps=2)
    else:
        size = dict(mixed_rounds=2, long=256, short=16, jain_tokens=256, nice0=850, nice5=400, nice_min=1000, inter_tokens=128,
                    inter_rounds=3, inter_normal=True, agents_tokens=64,
                    agents_order=["fair", "serial", "serial", "fair"], swap_tokens=512, swap_reps=7)

    log(f"loading the embedded model; threads={threads}; load {loadavg():.2f}")
    model = Model()
    result: dict = {}
    mixed_settings = dict(n_slots=4)
    engine = new_engine(model, threads, **mixed_settings)
    meter = SwapMeter(engine)
    try:
        swap = measured("swap", lambda: bench_swap(engine, size["swap_tokens"], size["swap_reps"]))
        log(f"mixed: 8 long x {size['long']} + 8 short x {size['short']} tokens, 4 slots")
        mixed, mixed_vs_fifo = bench_mixed(engine, meter, size["mixed_rounds"], 8, size["long"], 8, size["short"])
    finally:
        engine.close()
    jain = measured("jain", lambda: bench_jain(model, threads, 8, size["jain_tokens"]))
    nice = measured("nice", lambda: bench_nice(model, threads, size["nice0"], size["nice5"], size["nice_min"]))
    inter = measured("interactive", lambda: bench_interactive(model, threads, size["inter_tokens"], 15,
                                                              size["inter_rounds"], size["inter_normal"]))
    agents = bench_agents16(threads, 16, size["agents_tokens"], size["agents_order"])

    result["mixed"] = mixed
    result["mixed_vs_fifo"] = mixed_vs_fifo
    result["jain"] = jain["jain"]
    result["nice_ratio"] = nice["ratio"]
    result["interactive_share"] = inter["share"]
    result["agents16_ratio"] = agents["ratio"]
    result["swap_ms"] = swap["swap_ms"]
    result["recompute_ms"] = swap["recompute_ms"]
    result["detail"] = {"jain": jain, "nice": nice, "interactive": inter, "agents16": agents, "swap": swap}
    result["setup"] = setup_info(
        model, threads, quick=args.quick,
        mixed={"requests": "8 long then 8 short, submitted while the engine is held, so all are queued at its "
               "first plan", "long_tokens": size["long"], "short_tokens": size["short"],
               "engine_settings": {"n_slots": 4, "max_batch": 4, "n_ctx": 2048, "kv_cells": 4 * 2048,
                                   "batch_tokens": 512},
               "policies": {p: load_policy(p, {}).describe()["params"] for p in POLICIES},
               "swap_bytes": "exact: the sizes of the KV buffers Engine._preempt saved (a wrapper on the engine "
               "instance); swap_bytes_estimate = swapped tokens x kv_bytes_per_token"},
        kv_bytes_per_token=model.info.kv_bytes_per_token,
        quiet={"max_wait_s": QUIET["max_wait_s"], "waited_s": rnd(QUIET["waited_s"], 1),
               "waits_given_up": QUIET["gave_up"], "attempts": QUIET["attempts"],
               "contended_pct": QUIET["contended_pct"], "repeated": QUIET["repeated"],
               "contended": QUIET["contended"]},
        targets=TARGETS,
        note="timings are indicative when the machine is shared; see each section's others_cpu_pct and load_1m",
    )
    lim = TARGETS["mixed_short_turnaround_vs_fifo_max"]
    cost = TARGETS["mixed_throughput_cost_max"]
    met = {}
    for name in ("fair", "rr"):
        d = mixed_vs_fifo[name]
        met[f"mixed_{name}"] = d["short_turnaround_vs_fifo"] <= lim and d["throughput_vs_fifo"] >= 1 - cost
    met["jain"] = jain["jain"] >= TARGETS["jain_min"]
    met["nice_ratio"] = abs(nice["ratio"] / NICE_RATIO - 1) <= TARGETS["nice_ratio_tolerance"]
    met["interactive_share"] = inter["share"] >= TARGETS["interactive_share_min"]
    met["agents16_ratio"] = agents["ratio"] >= TARGETS["agents16_ratio_min"]
    met["swap_ms"] = swap["swap_ms"] <= TARGETS["swap_ms_max"]
    result["targets_met"] = met
    emit(result)
    return 0


# Stand-alone requests, different topics, short (the same list as engine_throughput.py's).


if __name__ == "__main__":
    sys.exit(main())
