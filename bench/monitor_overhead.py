#!/usr/bin/env python
"""What the monitor costs the engine: tokens/s with the pane open against closed, in the same run.

    python bench/monitor_overhead.py            # 8 agents x 64 tokens, 5 rounds (about 2 minutes on 2 cores)
    python bench/monitor_overhead.py --quick    # tiny sizes, to check that the script works

One kernel, 8 `chat` agents decoding at once (ignore_eos, so every agent makes exactly its tokens). Each phase
spawns them with fresh prompts and times them until the last one exits; engine tokens/s is the generated
tokens (EngineStats.generated_tokens) over that time. "open" runs `MonitorApp` headless (`App.run_test()`,
140x45) refreshing at 2 Hz while the agents decode; "closed" runs nothing. Phases run closed, open, open,
closed (ABBA per round) so that drift on a shared machine falls on both sides; the reported figures are
medians over rounds (each round's rates are its tokens over its time), so one disturbed round does not decide.

Prints ONE JSON line on stdout: {"closed_tok_s", "open_tok_s", "slowdown_pct", ...}; progress on stderr.
`monitor_cpu_ms_per_refresh` (the UI thread's CPU time plus the collections', per refresh) and
`monitor_cpu_pct_of_one_core` say what the pane costs independently of how busy the machine was.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, if it is not installed

from aiosh.kernel import Kernel  # noqa: E402
from aiosh.kernel.config import load_config  # noqa: E402
from aiosh.kernel.streams import Pipe  # noqa: E402

from aiosh.monitor import MonitorApp  # noqa: E402

TOPICS = ("a lighthouse", "a dragon", "the sea", "a robot", "a city", "a garden", "the moon", "a train", "a river",
          "a clock", "a violin", "a desert", "a forest", "a ship", "a mountain", "a library")
_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def spawn_all(k: Kernel, n: int, tokens: int, phase: int) -> list[int]:
    pids = []
    for i in range(n):
        out = Pipe()
        out.close_reader()  # nobody reads: writes are dropped
        topic = TOPICS[(phase * n + i) % len(TOPICS)]
        pids.append(k.spawn("chat", [f"Tell a story about {topic} (version {phase}.{i})."], stdout=out, options={
            "max_tokens": tokens, "ignore_eos": True, "temperature": 0.8, "seed": 1000 * phase + i,
        }))
    return pids


def wait_all(k: Kernel, pids: list[int]) -> None:
    for pid in pids:
        got = k.wait(pid, 900)
        if got is None or got[1] != 0:
            raise SystemExit(f"agent {pid} ended with {got}")


def closed_phase(k: Kernel, n: int, tokens: int, phase: int) -> tuple[float, int]:
    g0, t0 = k.local.stats.generated_tokens, time.perf_counter()
    wait_all(k, spawn_all(k, n, tokens, phase))
    return time.perf_counter() - t0, k.local.stats.generated_tokens - g0


def open_phase(k: Kernel, n: int, tokens: int, phase: int, interval: float) -> tuple[float, int, int, float]:
    """Returns (seconds, tokens, refreshes, monitor CPU seconds: the UI thread plus the collections)."""

    async def run() -> tuple[float, int, int, float]:
        app = MonitorApp(k, interval=interval)
        collect_cpu = [0.0]
        collect = app.collector.collect

        def timed(*args: object, **kwargs: object):  # the collections run on worker threads
            t = time.thread_time()
            try:
                return collect(*args, **kwargs)  # type: ignore[arg-type]
            finally:
                collect_cpu[0] += time.thread_time() - t

        app.collector.collect = timed  # type: ignore[method-assign]
        async with app.run_test(size=(140, 45)) as pilot:
            while app.collections < 1:  # the pane is up and has drawn once before the clock starts
                await pilot.pause(0.05)
            start, c0, ui0 = app.collections, collect_cpu[0], time.thread_time()
            g0, t0 = k.local.stats.generated_tokens, time.perf_counter()
            pids = spawn_all(k, n, tokens, phase)
            await asyncio.to_thread(wait_all, k, pids)
            took = time.perf_counter() - t0
            gen = k.local.stats.generated_tokens - g0
            cpu = time.thread_time() - ui0 + collect_cpu[0] - c0
            refreshes = app.collections - start
            await pilot.press("q")
        return took, gen, refreshes, cpu

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check that the script works")
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64, help="generated tokens per agent and phase")
    ap.add_argument("--rounds", type=int, default=5, help="ABBA rounds (each: closed, open, open, closed)")
    ap.add_argument("--interval", type=float, default=0.5, help="the pane's refresh interval (0.5 = 2 Hz)")
    args = ap.parse_args()
    if args.quick:
        args.tokens, args.rounds = 12, 1

    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="aiosh-bench-xdg-")
    cfg = load_config(cwd=tempfile.mkdtemp(prefix="aiosh-bench-"), overrides={
        "kernel": {"slots": args.agents, "kv_cells": args.agents * 1024},
    })
    try:
        load0 = os.getloadavg()[0]
    except OSError:
        load0 = -1.0
    k = Kernel(cfg)
    try:
        log(f"model {k.local.model_info.description}; {args.agents} agents x {args.tokens} tokens; "
            f"{args.rounds} round(s); pane every {args.interval:g} s")
        closed_phase(k, args.agents, min(8, args.tokens), phase=0)  # warm-up: caches, threads, allocator
        rounds: list[dict[str, float]] = []
        refreshes = 0
        monitor_cpu = open_s = 0.0
        phase = 1
        for r in range(args.rounds):
            sums = {"closed": [0.0, 0], "open": [0.0, 0]}
            for kind in ("closed", "open", "open", "closed"):
                if kind == "closed":
                    took, gen = closed_phase(k, args.agents, args.tokens, phase)
                else:
                    took, gen, n, cpu = open_phase(k, args.agents, args.tokens, phase, args.interval)
                    refreshes += n
                    monitor_cpu += cpu
                    open_s += took
                sums[kind][0] += took
                sums[kind][1] += gen
                log(f"round {r + 1} {kind:>6}: {gen} tokens in {took:.2f} s = {gen / took:.1f} tok/s")
                phase += 1
            c, o = sums["closed"][1] / sums["closed"][0], sums["open"][1] / sums["open"][0]
            rounds.append({"closed": c, "open": o, "slowdown": 100.0 * (c - o) / c})
            log(f"round {r + 1}: closed {c:.1f} tok/s, open {o:.1f} tok/s, slowdown {rounds[-1]['slowdown']:+.1f}%")
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = -1.0
        # Medians over rounds: on a shared machine one disturbed round must not decide the result.
        print(json.dumps({
            "closed_tok_s": round(median(x["closed"] for x in rounds), 2),
            "open_tok_s": round(median(x["open"] for x in rounds), 2),
            "slowdown_pct": round(median(x["slowdown"] for x in rounds), 2),
            "slowdown_pct_by_round": [round(x["slowdown"], 2) for x in rounds],
            "agents": args.agents, "tokens_per_agent": args.tokens, "rounds": args.rounds,
            "interval_s": args.interval, "refreshes": refreshes,
            "monitor_cpu_ms_per_refresh": round(1000 * monitor_cpu / max(1, refreshes), 2),
            "monitor_cpu_pct_of_one_core": round(100 * monitor_cpu / open_s, 2) if open_s else 0.0,
            "cpu_count": os.cpu_count(),
            "loadavg_1m_at_start": round(load0, 2), "loadavg_1m_at_end": round(load, 2), "quick": args.quick,
        }), flush=True)
    finally:
        k.shutdown()


if __name__ == "__main__":
    main()
