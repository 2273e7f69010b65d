"""The bare llama.cpp decode loop that the engine's step is measured against (run in a process of its own).

    python bench/_bare_loop.py PROMPTS.json    # prints one JSON line: the mean step time and each step's

One `llama_context` built exactly as `kernel/engine.py` builds its own (same KV cells, batch, sequences, threads,
unified KV), the same prompts prefilled with their common prefix shared as the engine shares it (`seq_cp`), then
`new_tokens` steps of: one `llama_decode` of one token per sequence, then a top-k/temperature/dist sampler chain per
sequence through `llama_sampler_sample`. Nothing else: no penalties, no detokenising, no bookkeeping. The model is
loaded through `aiosh.kernel.model.Model`, so the extra-buffer decision (AMX) is the kernel's.

Input (JSON): {"prompts": [[tokens], ...], "new_tokens": T, "threads": n, "n_slots": 16, "kv_cells": 32768,
"batch_tokens": 512, "unified_kv": true, "top_k": 40, "temperature": 0.8, "seeds": [...]}.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, if it is not installed

import llama_cpp as ll  # noqa: E402
from aiosh.kernel.model import Model  # noqa: E402


def _common_prefix(prompts: list[list[int]]) -> int:
    n = min(len(p) for p in prompts)
    i = 0
    while i < n and all(p[i] == prompts[0][i] for p in prompts):
        i += 1
    return i


def run(spec: dict) -> dict:
    prompts: list[list[int]] = spec["prompts"]
    steps: int = spec["new_tokens"]
    n = len(prompts)
    model = Model()
    cp = ll.llama_context_default_params()
    cp.n_ctx = spec["kv_cells"]
    cp.n_batch = max(spec["batch_tokens"] + spec["n_slots"], 64)  # as Engine._init_context
    cp.n_ubatch = cp.n_batch
    cp.n_seq_max = spec["n_slots"]
    cp.n_threads = cp.n_threads_batch = spec["threads"]
    cp.kv_unified = spec["unified_kv"]
    cp.no_perf = True
    ctx = ll.llama_init_from_model(model.ptr, cp)
    if not ctx:
        raise SystemExit("bare loop: could not create the context")
    mem = ll.llama_get_memory(ctx)
    batch = ll.llama_batch_init(cp.n_batch, 0, 1)

    def add(i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def decode(items: list[tuple[int, int, int, bool]]) -> None:
        for i, item in enumerate(items):
            add(i, *item)
        batch.n_tokens = len(items)
        rc = ll.llama_decode(ctx, batch)
        if rc != 0:
            raise SystemExit(f"bare loop: llama_decode returned {rc}")

    # Prefill: the shared prefix once (sequence 0), copied to the others, then each prompt's own tail.
    shared = min(_common_prefix(prompts) if n > 1 else 0, min(len(p) for p in prompts) - 1)
    for lo in range(0, shared, cp.n_batch):
        decode([(prompts[0][j], j, 0, False) for j in range(lo, min(shared, lo + cp.n_batch))])
    for s in range(1, n):
        if shared:
            ll.llama_memory_seq_cp(mem, 0, s, 0, shared)
    tails = [(s, j) for s, p in enumerate(prompts) for j in range(shared, len(p))]
    if len(tails) > cp.n_batch:
        raise SystemExit(f"bare loop: the prompts' own tails ({len(tails)} tokens) must fit in one batch")
    last_index: dict[int, int] = {}
    items = []
    for k, (s, j) in enumerate(tails):
        is_last = j == len(prompts[s]) - 1
        items.append((prompts[s][j], j, s, is_last))
        if is_last:
            last_index[s] = k
    decode(items)
    chains = []
    for s in range(n):
        c = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        ll.llama_sampler_chain_add(c, ll.llama_sampler_init_top_k(spec["top_k"]))
        ll.llama_sampler_chain_add(c, ll.llama_sampler_init_temp(spec["temperature"]))
        ll.llama_sampler_chain_add(c, ll.llama_sampler_init_dist(spec["seeds"][s] & 0xFFFFFFFF))
        chains.append(c)
    tokens = [ll.llama_sampler_sample(chains[s], ctx, last_index[s]) for s in range(n)]
    pos = [len(p) for p in prompts]

    # The measured loop: one llama_decode of one token per sequence, then one sample per sequence.
    step_s: list[float] = []
    step_cpu: list[float] = []
    for _ in range(steps):
        t0 = time.perf_counter()
        c0 = time.thread_time()
        for s in range(n):
            add(s, tokens[s], pos[s], s, True)
            pos[s] += 1
        batch.n_tokens = n
        rc = ll.llama_decode(ctx, batch)
        if rc != 0:
            raise SystemExit(f"bare loop: llama_decode returned {rc}")
        tokens = [ll.llama_sampler_sample(chains[s], ctx, s) for s in range(n)]
        step_s.append(time.perf_counter() - t0)
        step_cpu.append(time.thread_time() - c0)
    for c in chains:
        ll.llama_sampler_free(c)
    ll.llama_batch_free(batch)
    ll.llama_free(ctx)
    model.close()
    return {
        "sequences": n,
        "steps": steps,
        "shared_prefix": shared,
        "step_ms_mean": 1e3 * sum(step_s) / len(step_s),
        "step_ms": [round(1e3 * s, 3) for s in step_s],
        "step_cpu_ms": [round(1e3 * s, 3) for s in step_cpu],  # this thread's CPU (all of it with 1 thread)
        "pid": os.getpid(),
    }


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    sys.stdout.write(json.dumps(run(spec)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
