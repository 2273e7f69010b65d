#!/usr/bin/env python
"""Unified against split KV cache: decode throughput of 8 sequences at ~64 and ~1024 tokens of context each.

    python bench/kv_layout.py            # full size
    python bench/kv_layout.py --quick    # tiny sizes, to check that the script works

Both layouts get the same engine settings (n_slots=8, n_ctx=2048: the split layout sizes its context as
n_ctx * n_slots, the unified one gets the same number of cells). Each sequence prefills its own prompt of the
given length, then decodes 64 tokens with ignore_eos. The figure is decode tokens per second over the engine steps
in which all 8 sequences decoded and nothing was prefilled (the engine's own step records), so prefill does not
blur it. Prompts differ from their first token, so no prefix is shared between sequences: in split mode a
partial `seq_cp` aborts the process (DESIGN.md, Known traps), and sharing would also make the layouts do
different work. Prints ONE JSON line on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, whatever the working directory
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the project, if it is not installed

from _common import emit, log, rnd, sampling, setup_info  # noqa: E402
from aiosh.kernel.engine import Engine, EngineSettings  # noqa: E402
from aiosh.kernel.model import Model  # noqa: E402
from aiosh.kernel.requests import GenRequest  # noqa: E402

WAIT_S = 900


def build_prompts(model: Model, n: int, length: int) -> list[str]:
    """n prompts of about `length` tokens, each starting with a different token (no shared prefix at all)."""
    prompts = []
    for i in range(n):
        parts = [OPENING_WORDS[i % len(OPENING_WORDS)] + f" ({i}), the depot log reads:"]
        j = i
        while len(model.tokenize(" ".join(parts))) < length + 8:
            parts.append(PARAGRAPHS[j % len(PARAGRAPHS)])
            j += 1
        toks = model.tokenize(" ".join(parts))[:length]
        prompts.append(model.detokenize(toks))
    firsts = [model.tokenize(p)[0] for p in prompts]
    if len(set(firsts)) != len(firsts):
        raise SystemExit(f"kv_layout: prompts must differ from their first token, got first tokens {firsts}")
    return prompts


def measure(engine: Engine, prompts: list[str], decode_tokens: int, seed: int) -> dict:
    engine.call(engine.clear_idle_caches)
    n = len(prompts)
    t0 = time.monotonic()
    handles = [
        engine.submit(GenRequest(prompt=p, max_tokens=decode_tokens, sampling=sampling(seed + i), ignore_eos=True))
        for i, p in enumerate(prompts)
    ]
    results = [h.wait(WAIT_S) for h in handles]
    for i, r in enumerate(results):
        if r.finish_reason != "length" or r.completion_tokens != decode_tokens:
            raise SystemExit(f"kv_layout: sequence {i} ended {r.finish_reason!r} after {r.completion_tokens} "
                             f"tokens (error={r.error!r})")
    if any(r.cached_tokens for r in results):
        raise SystemExit("kv_layout: a prefix was shared between sequences; the prompts must not share one")
    steps = [s for s in engine.steps() if s.t >= t0]
    full = [s for s in steps if not s.prefilled and len(s.decoded) == n]
    decode_only = [s for s in steps if not s.prefilled]
    prefill = [s for s in steps if s.prefilled and not s.decoded]
    return {
        "tok_s": sum(len(s.decoded) for s in full) / sum(s.duration for s in full) if full else float("nan"),
        "full_steps": len(full),
        "decode_only_tok_s": (sum(len(s.decoded) for s in decode_only) / sum(s.duration for s in decode_only)
                              if decode_only else float("nan")),
        "prefill_tok_s": (sum(p[2] for s in prefill for p in s.prefilled) / sum(s.duration for s in prefill)
                          if prefill else None),
        "prompt_tokens_mean": sum(r.prompt_tokens for r in results) / n,
        "wall_s": max(r.t_end for r in results) - t0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to validate the script (figures meaningless)")
    ap.add_argument("--threads", type=int, default=0, help="engine threads (default: os.cpu_count())")
    ap.add_argument("--reps", type=int, default=1, help="alternate the layouts this many times; medians reported")
    args = ap.parse_args(argv)
    threads = args.threads or os.cpu_count() or 1
    if args.quick:
        n_seqs, contexts, decode_tokens = 4, (64, 256), 8
    else:
        n_seqs, contexts, decode_tokens = 8, (64, 1024), 64

    log(f"loading the embedded model; threads={threads}")
    model = Model()
    prompts = {c: build_prompts(model, n_seqs, c) for c in contexts}
    layouts = {"unified": True, "split": False}
    engines = {}
    for name, unified in layouts.items():
        s = EngineSettings(n_ctx=2048, n_slots=8, kv_cells=0, batch_tokens=512, n_threads=threads, unified_kv=unified)
        engines[name] = Engine(model, s).start()
        engines[name].submit(GenRequest(prompt="Warm-up.", max_tokens=4, ignore_eos=True)).wait(WAIT_S)
        log(f"{name}: context of {engines[name].n_cells} cells")
    runs: dict[str, dict[int, list[dict]]] = {name: {c: [] for c in contexts} for name in layouts}
    try:
        for rep in range(args.reps):
            for c in contexts:
                # The layouts take turns (and swap who goes first each repetition), so that a change in machine
                # load hits both alike.
                for name in list(layouts)[:: 1 if rep % 2 == 0 else -1]:
                    m = measure(engines[name], prompts[c], decode_tokens, seed=10 * rep)
                    runs[name][c].append(m)
                    log(f"{name} ctx{c}: {m['tok_s']:.1f} tok/s over {m['full_steps']} full decode steps "
                        f"(prompt {m['prompt_tokens_mean']:.0f} tokens, wall {m['wall_s']:.1f}s)")
    finally:
        for e in engines.values():
            e.close()

    result: dict = {}
    for name in layouts:
        out: dict = {}
        for c in contexts:
            ms = runs[name][c]
            out[f"ctx{c}_tok_s"] = rnd(statistics.median(m["tok_s"] for m in ms), 1)
            out[f"ctx{c}_detail"] = {
                "all_tok_s": [rnd(m["tok_s"], 1) for m in ms],
                "full_decode_steps": ms[-1]["full_steps"],
                "decode_only_tok_s": rnd(statistics.median(m["decode_only_tok_s"] for m in ms), 1),
                "prefill_tok_s": rnd(statistics.median(m["prefill_tok_s"] for m in ms), 1)
                if all(m["prefill_tok_s"] for m in ms) else None,
                "prompt_tokens_mean": rnd(ms[-1]["prompt_tokens_mean"], 1),
                "wall_s": rnd(statistics.median(m["wall_s"] for m in ms), 2),
            }
        result[name] = out
    result["split_over_unified"] = {
        f"ctx{c}": rnd(result["split"][f"ctx{c}_tok_s"] / result["unified"][f"ctx{c}_tok_s"], 2) for c in contexts
    }
    result["setup"] = setup_info(
        model, threads, quick=args.quick, reps=args.reps, sequences=n_seqs, decode_tokens=decode_tokens,
        contexts=list(contexts),
        engine_settings={"n_ctx": 2048, "n_slots": 8, "kv_cells": "n_slots*2048 (unified) / n_ctx*n_slots (split)",
                         "batch_tokens": 512},
        caveat="prompts differ from the first token: no prefix sharing (split mode aborts on partial seq_cp)",
        note="timings are indicative when the machine is shared",
    )
    emit(result)
    return 0


# --- prompt text ------------------------------------------------------------------------------------------------
# Paragraphs for long contexts (kv_layout.py): each sequence reads them in a different rotation.
PARAGRAPHS = [
    "The warehouse opens at six. Forklift drivers check their batteries, the night shift hands over a list of "
    "pallets that arrived late, and the scanners start reporting stock levels every fifteen minutes.",
    "Route planning runs before the trucks leave. It weighs delivery windows, road works and the size of each "
    "order, and it tries to keep every driver within the legal limit of driving hours.",
    "Invoices are generated at the end of each month. Customers with many small shipments get one summary "
    "document, while large accounts receive an invoice per contract with a detailed appendix.",
    "When a parcel is damaged, the driver photographs it, the claim is opened in the customer portal, and the "
    "insurance team decides within five working days whether to refund or to replace the goods.",
    "The customer notification service sends a message when a parcel leaves the depot, another when the driver "
    "is two stops away, and a last one with a photo when the parcel has been delivered.",
    "Seasonal peaks change everything. In December the volume triples, temporary staff join every depot, and the "
    "planning team adds evening routes so that the morning rounds do not overflow.",
    "Fuel costs are tracked per route. A dashboard compares the planned distance with the distance actually "
    "driven, and routes that drift by more than ten percent are reviewed the next week.",
    "Training for new drivers takes two weeks: safety rules, the handheld scanner, customer etiquette, and a "
    "few days riding along with an experienced colleague before driving alone.",
]

OPENING_WORDS = ["Monday", "Harbour", "Quietly", "Seven", "Yesterday", "Among", "Bright", "Under"]


if __name__ == "__main__":
    sys.exit(main())
