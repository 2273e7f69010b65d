#!/usr/bin/env python
"""Memory per agent, and what storage costs the engine, measured in the same run.

    python bench/memory.py            # full size (a few minutes on 2 busy cores)
    python bench/memory.py --quick    # tiny sizes, to check that the script works

Prints ONE JSON line on stdout (progress goes to stderr). Sections:
  footprint  1, 8 and 32 live agents, each holding 8 memory entries and one finished conversation turn (its KV kept
             as the engine's idle cache, the ~60-token system prompt shared): KV bytes per agent (distinct KV cells
             in use x bytes per token / agents), Python heap bytes per agent (tracemalloc, everything the kernel
             keeps for an agent: process, context, pipes, memory entries, conversation state), RSS growth per
             agent, memory-manager tokens per agent.
  storage    the same workload (agents x turns of a chat conversation with ignore_eos, a memory entry per turn)
             on two kernels of the same configuration, storage on (a WAL database file) and off
             (storage.enabled = false), runs alternated on/off; engine tokens/s (median) and the slowdown, against
             the target of at most 5%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, whatever the working directory
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the project, if it is not installed

from _common import emit, log, rnd, setup_info  # noqa: E402
from aiosh.kernel import Kernel  # noqa: E402
from aiosh.kernel.config import load_config  # noqa: E402
from aiosh.kernel.streams import Pipe  # noqa: E402

TARGET_SLOWDOWN_PCT = 5.0
WAIT_S = 600

AGENTS = textwrap.dedent('''
    from aiosh.kernel.agent import agent

    SYSTEM = ("You are one of many small agents in a benchmark. Keep answers short and factual. Never ask "
              "questions back. Use plain words. This system prompt is shared by every agent of the run.")

    @agent("holder", description="bench: keep memory entries and one conversation turn, then hold until EOF")
    async def holder(ctx):
        for i in range(8):
            await ctx.memory.set(f"k{i}", f"entry {i} of agent {ctx.pid}: " + "lorem ipsum dolor " * 4)
        messages = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"Agent {ctx.pid}: describe your task in one line."}]
        await ctx.llm.chat(messages, max_tokens=16, temperature=0, ignore_eos=True, conversation="c")
        ctx.print("ready")
        await ctx.stdin.read()
        return 0

    @agent("turns", description="bench: TURNS chat turns of TOKENS tokens each in one conversation")
    async def turns(ctx):
        n, tokens = int(ctx.argv[0]), int(ctx.argv[1])
        messages = [{"role": "system", "content": SYSTEM}]
        for i in range(n):
            messages.append({"role": "user", "content": f"Agent {ctx.pid}, turn {i}: tell me about rivers."})
            reply = await ctx.llm.chat(messages, max_tokens=tokens, temperature=0, ignore_eos=True,
                                       conversation="c")
            messages.append({"role": "assistant", "content": reply})
            await ctx.memory.set(f"turn{i}", reply)
        return 0
''')


def rss_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def make_kernel(tmp: Path, *, storage: bool, slots: int, kv_cells: int, threads: int) -> Kernel:
    cfg = load_config(cwd=tmp, overrides={
        "model": {"n_ctx": 512, "n_threads": threads},
        "kernel": {"slots": slots, "kv_cells": kv_cells},
        "storage": {"path": str(tmp / "bench.db"), "enabled": storage},
        "plugins": {"paths": [str(tmp / "plugins")]},
        "memory": {"per_agent_tokens": 4096, "total_tokens": 0},
    })
    return Kernel(cfg)


def footprint(k: Kernel, n: int) -> dict:
    """n holders alive at once: what each one costs while it holds its memory and its conversation's KV."""
    k.local.clear_idle_caches()
    time.sleep(0.7)  # an idle engine republishes its stats every 0.5 s
    base_kv = k.local.stats.kv_used
    base_rss = rss_bytes()
    tracemalloc.start()
    base_heap = tracemalloc.get_traced_memory()[0]
    gates, outs, pids = [], [], []
    for _ in range(n):
        gate, out = Pipe(), Pipe()
        pids.append(k.spawn("holder", [], stdin=gate, stdout=out, stderr=Pipe()))
        gates.append(gate)
        outs.append(out)
    deadline = time.monotonic() + WAIT_S
    for pid, out in zip(pids, outs):
        seen = ""
        while "ready" not in seen:
            chunk = out.read(timeout=max(0.1, deadline - time.monotonic()))
            if chunk == "" or time.monotonic() > deadline:
                raise RuntimeError(f"holder {pid} did not get ready: {k.proc(pid).recent_output!r}")
            seen += chunk or ""
    time.sleep(0.7)  # stats republished after the last step
    heap = tracemalloc.get_traced_memory()[0] - base_heap
    tracemalloc.stop()
    stats = k.local.stats
    kv_cells = stats.kv_used - base_kv
    mem = k.memory.stats(0)
    result = {
        "agents": n,
        "kv_tokens_per_agent": rnd(kv_cells / n, 1),
        "kv_bytes_per_agent": int(kv_cells * stats.kv_bytes_per_token / n),
        "heap_bytes_per_agent": int(heap / n),
        "rss_bytes_per_agent": int(max(0, rss_bytes() - base_rss) / n),
        "memory_tokens_per_agent": rnd(mem.resident_tokens / n, 1),
        "swapped_bytes": stats.swapped_bytes,
    }
    for gate in gates:
        gate.close()
    for pid in pids:
        got = k.wait(pid, WAIT_S)
        if got is None or got[1] != 0:
            raise RuntimeError(f"holder {pid} ended with {got}")
    return result


def throughput(k: Kernel, agents: int, turns: int, tokens: int) -> dict:
    before = k.local.stats.generated_tokens
    t0 = time.perf_counter()
    pids = [k.spawn("turns", [str(turns), str(tokens)], stdout=Pipe(), stderr=Pipe()) for _ in range(agents)]
    for pid in pids:
        got = k.wait(pid, WAIT_S)
        if got is None or got[1] != 0:
            raise RuntimeError(f"agent {pid} ended with {got}")
    wall = time.perf_counter() - t0
    time.sleep(0.6)  # the engine publishes its stats when idle
    decoded = k.local.stats.generated_tokens - before
    want = agents * turns * tokens  # ignore_eos: every call generates exactly max_tokens
    if decoded < agents * turns * (tokens - 1):  # (the last sampled token of a call is never decoded)
        raise RuntimeError(f"decoded {decoded} tokens, want {want}")
    return {"tokens": want, "wall_s": rnd(wall), "tok_s": rnd(want / wall, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (checks that the script works)")
    ap.add_argument("--threads", type=int, default=0, help="decode threads (0 = all cores)")
    args = ap.parse_args()
    sizes = [1, 2, 4] if args.quick else [1, 8, 32]
    agents, turns, tokens, reps = (2, 2, 8, 1) if args.quick else (8, 4, 32, 3)
    threads = args.threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="aiosh-bench-memory-") as d:
        tmp = Path(d)
        os.environ["XDG_DATA_HOME"] = str(tmp / "xdg-data")  # never the user's own dirs
        os.environ["XDG_CONFIG_HOME"] = str(tmp / "xdg-config")
        (tmp / "plugins").mkdir()
        (tmp / "plugins" / "benchagents.py").write_text(AGENTS)
        slots = max(sizes)
        log(f"loading two kernels ({slots} slots, n_ctx 512): storage on and off")
        on = make_kernel(tmp, storage=True, slots=slots, kv_cells=slots * 256, threads=threads)
        off = make_kernel(tmp, storage=False, slots=slots, kv_cells=slots * 256, threads=threads)
        try:
            fp = {}
            for n in sizes:
                log(f"footprint: {n} agents")
                fp[str(n)] = footprint(on, n)
            runs: dict[str, list[dict]] = {"on": [], "off": []}
            log(f"warm-up, then {reps} x (on, off): {agents} agents x {turns} turns x {tokens} tokens")
            throughput(on, agents, 1, tokens)
            throughput(off, agents, 1, tokens)
            for i in range(reps):
                for name, kern in (("on", on), ("off", off)) if i % 2 == 0 else (("off", off), ("on", on)):
                    r = throughput(kern, agents, turns, tokens)
                    log(f"  storage {name}: {r['tok_s']} tok/s")
                    runs[name].append(r)
            med = {name: statistics.median(r["tok_s"] for r in rs) for name, rs in runs.items()}
            slowdown = (med["off"] - med["on"]) / med["off"] * 100 if med["off"] else 0.0
            on.storage.flush()
            result = {
                "bench": "memory",
                "setup": setup_info(on.model, threads, n_ctx=512, slots=slots, kv_cells=slots * 256,
                                    quick=args.quick),
                "footprint": fp,
                "storage": {
                    "workload": {"agents": agents, "turns": turns, "tokens_per_turn": tokens, "reps": reps},
                    "on_tok_s": rnd(med["on"], 1), "off_tok_s": rnd(med["off"], 1),
                    "slowdown_pct": rnd(slowdown, 2), "target_pct": TARGET_SLOWDOWN_PCT,
                    "ok": slowdown <= TARGET_SLOWDOWN_PCT, "runs": runs,
                    "records_written": on.storage.writes, "write_errors": on.storage.errors,
                },
            }
        finally:
            on.shutdown()
            off.shutdown()
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
