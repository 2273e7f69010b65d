#!/usr/bin/env python
"""Is it worth keeping cheap I/O tools in threads? A tool call on a thread against the same call in a worker
process (what `@tool(isolated=True)` does for calculator and sql_query), measured in the same run.

    python bench/tool_isolation.py            # 400 calls per case
    python bench/tool_isolation.py --quick    # 40, to check that the script works

Each case runs in a process of its own (the baseline too), through the tool manager's own call path
(`ToolManager._run`: semaphore, thread, worker round trip, descriptor passing), without a model: read_file of a
4 KB file and calculator("(2 + 3) * 4"), each on a thread and in a worker process, sequentially (latency per call)
and 4 at a time (calls/s). Prints ONE JSON line: per case the median and p95 latency in ms and the calls/s, and the
process/thread ratio of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, if it is not installed

CASES = ["read_file:thread", "read_file:process", "calculator:thread", "calculator:process"]


class _Allow:
    def check(self, *_a: object) -> bool:
        return True

    def record(self, *_a: object) -> None:
        pass


def _case(case: str, n: int) -> dict:
    from aiosh.kernel.tools import ToolContext, ToolManager
    from aiosh.plugins.tools.calculator import calculator
    from aiosh.plugins.tools.files import read_file

    tool, mode = case.split(":")
    folder = Path(tempfile.mkdtemp())
    (folder / "f.txt").write_text("x" * 4096)
    base = read_file if tool == "read_file" else calculator
    spec = dataclasses.replace(base, isolated=(mode == "process"))
    args = {"path": "f.txt"} if tool == "read_file" else {"expression": "(2 + 3) * 4"}
    registry = SimpleNamespace(tool=lambda _name: None, tools=dict)
    mgr = ToolManager(registry, _Allow(), None, lambda _pid: [], lambda: None)

    async def one() -> float:
        tctx = ToolContext(mgr, spec, 1, "bench", str(folder), [])
        t0 = time.perf_counter()
        await mgr._run(spec, tctx, dict(args))
        return time.perf_counter() - t0

    async def main() -> dict:
        for _ in range(5):  # warm-up: 4 workers up (a worker's start-up is not a call's cost)
            await asyncio.gather(*[one() for _ in range(4)])
        lat = [await one() for _ in range(n)]
        t0 = time.perf_counter()
        done = 0
        while done < n:
            await asyncio.gather(*[one() for _ in range(4)])
            done += 4
        wall = time.perf_counter() - t0
        lat.sort()
        return {"median_ms": round(statistics.median(lat) * 1000, 3),
                "p95_ms": round(lat[int(len(lat) * 0.95) - 1] * 1000, 3),
                "calls_per_s_4_at_once": round(done / wall, 1), "calls": n}

    try:
        return asyncio.run(main())
    finally:
        mgr.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    n = 40 if ns.quick else 400
    if ns.case:
        print(json.dumps(_case(ns.case, n)))
        return
    results = {}
    for case in CASES:  # each in a process of its own
        print(f"{case} …", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, __file__, "--case", case, *(["--quick"] if ns.quick else [])],
                             capture_output=True, text=True, check=True).stdout
        results[case] = json.loads(out.strip().splitlines()[-1])
    ratio = {t: round(results[f"{t}:process"]["median_ms"] / results[f"{t}:thread"]["median_ms"], 2)
             for t in ("read_file", "calculator")}
    print(json.dumps({"bench": "tool_isolation", "cases": results, "process_over_thread_median": ratio}))


if __name__ == "__main__":
    main()
