#!/usr/bin/env python
"""Remote backends against the local engine: the same agents through the Kernel API, local, one replica, two.

    python bench/remote.py            # full size (16 agents x 32 tokens, 3 rounds: about 2 minutes on 2 cores)
    python bench/remote.py --quick    # 4 agents x 8 tokens, 1 round: checks that the script works (figures meaningless)

Prints ONE JSON line on stdout (progress goes to stderr); bench/README.md explains every key. Three configurations,
each its own `Kernel(load_config(overrides=...))`, measured in the same run with the same threads:
  local    the in-process engine (`--backend local`), one slot per agent
  remote1  one `python -m llama_cpp.server` on loopback serving the same embedded model ([backends.solo],
           max_concurrent 1: llama-cpp-python's server runs one request at a time)
  remote2  two such servers, two [backends.NAME] entries with the same model (one pool of two replicas)
Each agent is the built-in `chat` agent with one short prompt (bench/_common.USER_PROMPTS), spawned with
options {"backend": NAME, "max_tokens": N, "temperature": 0, "ignore_eos": true}; all are spawned at once and waited
for. Figures come from the kernel's own records: the agents' syscall records (queued, started, first token,
finished, tokens) and `kernel.backends.stats()` (requests per server).

The servers start before anything is timed and are stopped at the end, also on error. On a machine with few
cores the servers and the local engine share them: the figures show what the HTTP/SSE path and a
one-request-at-a-time server cost, not what replicas on separate machines would add (see `note` in the JSON).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, _servers, whatever the working directory
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the project, if it is not installed

from _common import USER_PROMPTS, emit, loadavg, log, percentile, rnd, setup_info, version  # noqa: E402
from _servers import ALIAS, LlamaServer  # noqa: E402
from aiosh.kernel.config import load_config  # noqa: E402
from aiosh.kernel.kernel import Kernel  # noqa: E402
from aiosh.kernel.streams import Pipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["local", "remote1", "remote2"]
WAIT_S = 600  # per measurement: a run that takes longer has gone wrong


class BenchError(Exception):
    """A run whose figures would be wrong (an agent failed, a reply had the wrong number of tokens)."""


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def stats(xs: list[float], nd: int = 3) -> dict:
    return {"mean": rnd(mean(xs), nd), "p95": rnd(percentile(xs, 95), nd), "n": len(xs)} if xs else {"n": 0}


# --- who used the CPU -------------------------------------------------------------------------------------------------
def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (user nice system irq softirq), from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
    except OSError:
        return 0.0
    f += [0] * (8 - len(f))
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class CpuWatch:
    """CPU time during a measurement: this process (the kernel: agents, engine, HTTP client), the servers, and
    everything else on the machine (`others_cpu_pct`: its share of all cores; a figure taken beside other work
    is noise)."""

    def __init__(self, servers: list[LlamaServer]) -> None:
        self.servers = servers
        self.t0, self.busy0, self.own0 = time.monotonic(), machine_busy_s(), own_cpu_s()
        self.srv0 = [s.cpu_s() for s in servers]
        self.load0 = loadavg()

    def report(self) -> dict:
        t, busy, own = time.monotonic(), machine_busy_s(), own_cpu_s()
        srv = [s.cpu_s() - s0 for s, s0 in zip(self.servers, self.srv0)]
        span = max(1e-9, (t - self.t0) * (os.cpu_count() or 1))
        others = max(0.0, (busy - self.busy0) - (own - self.own0) - sum(srv))
        return {
            "kernel_process_cpu_s": rnd(own - self.own0, 2),
            "servers_cpu_s": {s.name: rnd(x, 2) for s, x in zip(self.servers, srv)},
            "others_cpu_pct": rnd(100 * others / span, 1),
            "load_1m": rnd(max(self.load0, loadavg()), 2),
        }


def wait_quiet(max_wait_s: float, servers: list[LlamaServer], threshold_pct: float = 15.0) -> float:
    """Wait (at most max_wait_s) until other processes use less than threshold_pct of the CPU over 2 s; returns
    the seconds waited."""
    t0 = time.monotonic()
    while max_wait_s > 0:
        w = CpuWatch(servers)
        time.sleep(2.0)
        other = w.report()["others_cpu_pct"]
        waited = time.monotonic() - t0
        if other < threshold_pct:
            break
        if waited >= max_wait_s:
            log(f"other processes still use {other:.0f}% of the CPU after {waited:.0f}s; measuring anyway")
            break
        log(f"other processes use {other:.0f}% of the CPU; waiting for a quieter moment")
    return time.monotonic() - t0


# --- one configuration: a Kernel and the backend its agents name ------------------------------------------------------
class Setup:
    """One Kernel, the backend name its agents are spawned with, and the servers behind it."""

    def __init__(self, name: str, backend: str, servers: list[LlamaServer], threads: int, slots: int) -> None:
        self.name, self.backend, self.servers = name, backend, servers
        entries = {}
        for i, s in enumerate(servers):
            # Same model name in every entry: one pool, the replicas interchangeable.
            entries["solo" if len(servers) == 1 else f"rep{i + 1}"] = {
                "base_url": s.url, "model": ALIAS, "max_concurrent": 1,
            }
        overrides: dict = {
            # The remote configurations keep a 1-slot local engine that stays idle (every Kernel has one).
            "kernel": {"slots": slots, "kv_cells": slots * 2048}, "model": {"n_threads": threads},
            "storage": {"enabled": False}, "scheduler": {"policy": "fair"},
        }
        if entries:
            overrides["backends"] = entries
        self.config = load_config(cwd=ROOT, overrides=overrides)
        self.kernel = Kernel(self.config)
        if self.kernel.warnings:
            raise BenchError(f"{name}: start-up warnings: {self.kernel.warnings}")
        self.lock = threading.Lock()
        self.exited: dict[int, tuple[float, int | None, list]] = {}
        self.kernel.add_listener(self._on_event)

    def _on_event(self, pid: int, kind: str, status: int | None) -> None:
        # On the kernel's loop, before anyone collects the process: its syscall records are still there.
        if kind == "exited":
            now = time.monotonic()
            try:
                recs = self.kernel.syscalls(pid)
            except Exception:  # noqa: BLE001 - reported as missing records by the caller
                recs = []
            with self.lock:
                self.exited[pid] = (now, status, recs)

    def rows(self) -> dict[str, tuple[int, int, int]]:
        """requests, errors, retries per server of the backend the agents use."""
        pool = self.kernel.backends.resolve(self.backend).name
        return {r.name: (r.requests, r.errors, r.retries) for r in self.kernel.backends.stats() if r.pool == pool}

    def run(self, n: int, tokens: int, watch_servers: list[LlamaServer]) -> dict:
        """n chat agents at once, each one call of exactly `tokens` tokens; figures from the kernel's records."""
        kern = self.kernel
        kern.local.clear_idle_caches()  # no KV left from an earlier round of the same prompts
        opts = {"backend": self.backend, "max_tokens": tokens, "temperature": 0, "ignore_eos": True}
        before = self.rows()
        outs: dict[int, Pipe] = {}
        watch = CpuWatch(watch_servers)
        t0_wall, t0 = time.time(), time.monotonic()
        for i in range(n):
            out = Pipe(f"bench stdout {i}")
            pid = kern.spawn("chat", [USER_PROMPTS[i % len(USER_PROMPTS)]], stdout=out, options=opts)
            outs[pid] = out
        deadline = t0 + WAIT_S
        while True:
            with self.lock:
                if all(p in self.exited for p in outs):
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: agents still running after {WAIT_S}s")
            time.sleep(0.002)
        cpu = watch.report()
        for pid in outs:
            kern.wait(pid, timeout=10)
        with self.lock:
            ended = {p: self.exited.pop(p) for p in outs}
        after = self.rows()
        wall = max(t for t, _, _ in ended.values()) - t0
        ttft, turn, queue, tin, tout, texts = [], [], [], [], [], []
        for i, (pid, (_, status, recs)) in enumerate(ended.items()):
            llm = [r for r in recs if r.kind == "llm"]
            if status != 0 or len(llm) != 1:
                raise BenchError(f"{self.name}: chat {pid} ended with {status}, {len(llm)} llm calls: {llm}")
            r = llm[0]
            if r.outcome != "ok" or r.tokens_out != tokens or not r.t_first:
                raise BenchError(f"{self.name}: chat {pid}: outcome {r.outcome!r}, {r.tokens_out} tokens "
                                 f"(want {tokens}), first token at {r.t_first}")
            ttft.append(r.t_first - r.t_queued)
            turn.append(r.t_finished - r.t_queued)
            queue.append(max(0.0, r.t_started - r.t_queued))
            tin.append(r.tokens_in)
            tout.append(r.tokens_out)
            texts.append((i, outs[pid].read_all()))
        spread = {name: after[name][0] - before.get(name, (0, 0, 0))[0] for name in after}
        errors = sum(after[k][1] - before.get(k, (0, 0, 0))[1] for k in after)
        retries = sum(after[k][2] - before.get(k, (0, 0, 0))[2] for k in after)
        if sum(spread.values()) != n:
            raise BenchError(f"{self.name}: the servers counted {spread} requests, want {n} in all")
        return {
            "wall_s": wall, "tok_s": sum(tout) / wall, "ttft": ttft, "turnaround": turn, "queue": queue,
            "tokens_in": sum(tin), "tokens_out": sum(tout), "requests": spread, "errors": errors,
            "retries": retries, "t0_wall": t0_wall, "cpu": cpu, "texts": dict(texts),
        }

    def warm(self, tokens: int = 4) -> None:
        """One short call per replica (the first request on a server compiles its chat template, etc.)."""
        opts = {"backend": self.backend, "max_tokens": tokens, "temperature": 0, "ignore_eos": True}
        pids = [self.kernel.spawn("chat", ["Hello."], options=opts) for _ in range(max(1, len(self.servers)))]
        for pid in pids:
            got = self.kernel.wait(pid, timeout=120)
            if got is None or got[1] != 0:
                raise BenchError(f"{self.name}: warm-up chat {pid} ended with {got}")
        with self.lock:
            for pid in pids:
                self.exited.pop(pid, None)

    def close(self) -> None:
        self.kernel.shutdown()


# --- main -------------------------------------------------------------------------------------------------------------
def summarise(name: str, setup: Setup, runs: list[dict], threads: int, local_texts: list[dict] | None) -> dict:
    requests: dict[str, int] = {}
    for r in runs:
        for k, v in r["requests"].items():
            requests[k] = requests.get(k, 0) + v
    ttft = [x for r in runs for x in r["ttft"]]
    turn = [x for r in runs for x in r["turnaround"]]
    queue = [x for r in runs for x in r["queue"]]
    out = {
        "backend": setup.backend,
        "servers": [s.name for s in setup.servers],
        "threads_total": threads * max(1, len(setup.servers)),
        "wall_s": rnd(mean(r["wall_s"] for r in runs)),
        "tok_s": rnd(mean(r["tok_s"] for r in runs), 1),
        "ttft_s": stats(ttft),
        "turnaround_s": stats(turn),
        "queue_wait_s": stats(queue),
        "requests_per_server": requests,
        "requests_per_server_runs": [r["requests"] for r in runs],
        "errors": sum(r["errors"] for r in runs),
        "retries": sum(r["retries"] for r in runs),
        "tokens_out_per_run": runs[0]["tokens_out"],
        "tokens_in_per_run": runs[0]["tokens_in"],
        "wall_s_runs": [rnd(r["wall_s"]) for r in runs],
        "tok_s_runs": [rnd(r["tok_s"], 1) for r in runs],
        "ttft_mean_s_runs": [rnd(mean(r["ttft"])) for r in runs],
        "turnaround_mean_s_runs": [rnd(mean(r["turnaround"])) for r in runs],
        "others_cpu_pct_max": max(r["cpu"]["others_cpu_pct"] for r in runs),
        "cpu_runs": [r["cpu"] for r in runs],
    }
    if local_texts is not None:
        # Greedy decoding of the same model: how many replies are the very text the local engine wrote (batched
        # and single-sequence arithmetic can differ in the last bits, and then the texts part ways).
        same = sum(1 for r, lt in zip(runs, local_texts) for i, t in r["texts"].items() if lt.get(i) == t)
        out["same_text_as_local"] = f"{same}/{sum(len(r['texts']) for r in runs)}"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 agents x 8 tokens, 1 round (figures meaningless)")
    ap.add_argument("--threads", type=int, default=0,
                    help="llama.cpp threads of the local engine and of EACH server (default: os.cpu_count() // 2, "
                    "so that the two replicas of remote2 fit on the cores)")
    ap.add_argument("--agents", type=int, default=0, help="agents per measurement (default 16, 4 with --quick)")
    ap.add_argument("--tokens", type=int, default=0, help="tokens per reply (default 32, 8 with --quick)")
    ap.add_argument("--rounds", type=int, default=0,
                    help="rounds over the three configurations, alternating their order (default 3, 1 with --quick)")
    ap.add_argument("--max-wait-quiet", type=float, default=None, metavar="S",
                    help="before each measurement wait up to S seconds until other processes use < 15%% of the CPU "
                    "(default 30, 0 with --quick)")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    threads = args.threads or max(1, cores // 2)
    n_agents = args.agents or (4 if args.quick else 16)
    tokens = args.tokens or (8 if args.quick else 32)
    rounds = args.rounds or (1 if args.quick else 3)
    max_wait = args.max_wait_quiet if args.max_wait_quiet is not None else (0 if args.quick else 30)
    for var in ("NO_PROXY", "no_proxy"):  # loopback servers: never through a proxy from the environment
        os.environ[var] = ",".join(x for x in (os.environ.get(var, ""), "127.0.0.1", "localhost") if x)

    log_dir = Path(tempfile.mkdtemp(prefix="aiosh-bench-remote-"))
    servers: list[LlamaServer] = []
    setups: dict[str, Setup] = {}
    ok = False
    try:
        log(f"starting 2 llama_cpp.server processes ({threads} threads each); load {loadavg():.2f}")
        t = time.monotonic()
        servers = [LlamaServer(log_dir, f"server{i + 1}", threads) for i in range(2)]
        for s in servers:
            s.wait_ready()
        server_start_s = time.monotonic() - t
        log(f"servers ready in {server_start_s:.1f}s: {', '.join(s.url for s in servers)}")
        setups["local"] = Setup("local", "local", [], threads, slots=n_agents)
        setups["remote1"] = Setup("remote1", "solo", servers[:1], threads, slots=1)
        setups["remote2"] = Setup("remote2", ALIAS, servers, threads, slots=1)
        for s in setups.values():
            s.warm()
        log(f"kernels ready, warmed up; {n_agents} agents x {tokens} tokens, {rounds} round(s)")

        runs: dict[str, list[dict]] = {c: [] for c in CONFIGS}
        orders, waited = [], 0.0
        for rnd_i in range(rounds):
            order = CONFIGS if rnd_i % 2 == 0 else CONFIGS[::-1]
            orders.append(order)
            for c in order:
                waited += wait_quiet(max_wait, servers)
                r = setups[c].run(n_agents, tokens, servers)
                runs[c].append(r)
                log(f"round {rnd_i + 1} {c}: {r['wall_s']:.2f}s, {r['tok_s']:.1f} tok/s, ttft mean "
                    f"{mean(r['ttft']):.2f}s, requests {r['requests']}, others {r['cpu']['others_cpu_pct']:.0f}% CPU")

        local_texts = [r["texts"] for r in runs["local"]]
        result: dict = {}
        for c in CONFIGS:
            result[c] = summarise(c, setups[c], runs[c], threads, None if c == "local" else local_texts)
        loc, r1, r2 = result["local"], result["remote1"], result["remote2"]
        result["ratios"] = {
            "remote1_tok_s_vs_local": rnd(r1["tok_s"] / loc["tok_s"], 3),
            "remote2_tok_s_vs_local": rnd(r2["tok_s"] / loc["tok_s"], 3),
            "remote2_tok_s_vs_remote1": rnd(r2["tok_s"] / r1["tok_s"], 3),
            "remote1_ttft_mean_vs_local": rnd(r1["ttft_s"]["mean"] / loc["ttft_s"]["mean"], 3),
            "remote2_ttft_mean_vs_local": rnd(r2["ttft_s"]["mean"] / loc["ttft_s"]["mean"], 3),
        }
        result["note"] = (
            f"this machine has {cores} CPU cores: the servers and the local engine compete for them, so these "
            "figures show the overhead of the HTTP/SSE path and of llama-cpp-python's one-request-at-a-time "
            "server (max_concurrent 1, no batching), not scale-out: the two replicas of remote2 share the same "
            "cores (and the kernel process's HTTP client shares them too)"
        )
        model = setups["local"].kernel.model
        result["setup"] = setup_info(
            model, threads, quick=args.quick,
            sampling={"temperature": 0, "ignore_eos": True,
                      "remote": "the kernel sends min_tokens = max_tokens (llama-cpp-python suppresses its one EOS "
                      "token until then); tokens_out of a remote call = streamed chunks (the server sends no "
                      "usage in streams), tokens_in = the kernel's estimate"},
            thread_settings={
                "local_engine_n_threads": threads, "server_n_threads": threads, "server_n_threads_batch": threads,
                "servers": len(servers), "cores": cores,
                "note": "the same llama.cpp thread count for the local engine and for each server; remote2 runs "
                "two servers, so it uses twice that many",
            },
            agents=n_agents, tokens_each=tokens, rounds=rounds, orders=orders,
            agent="chat PROMPT, options {backend, max_tokens, temperature: 0, ignore_eos: true}, all spawned "
            "at once through Kernel.spawn",
            kernels={c: {"slots": s.config.kernel.slots, "policy": s.config.scheduler.policy,
                         "backends": {n: {"base_url": b.base_url, "model": b.model,
                                          "max_concurrent": b.max_concurrent}
                                      for n, b in s.config.backends.items()}}
                     for c, s in setups.items()},
            server_cmd=" ".join("PORT" if a == str(servers[0].port) else a for a in servers[0].cmd[1:]),
            server_start_s=rnd(server_start_s, 2), waited_quiet_s=rnd(waited, 1),
            openai_version=version("openai"),
        )
        emit(result)
        ok = True
        return 0
    except BenchError as exc:
        log(f"ABORTED: {exc}")
        return 1
    finally:
        for s in setups.values():
            try:
                s.close()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                log(f"closing {s.name}: {exc}")
        for srv in servers:
            srv.stop()
        if not ok:
            for srv in servers:
                log(f"{srv.name} log ({srv.log}):\n{srv.tail()}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
