"""Helpers shared by the benchmark scripts in bench/ (not a test module; nothing here runs on import).

Each bench prints exactly one JSON line on stdout and its progress on stderr, so that
`python bench/x.py > result.json` keeps a clean record while a person watches the progress.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from importlib import metadata

import _safe_llama as safe_llama  # bench/ is on sys.path for every bench script
import llama_cpp as ll
from aiosh.kernel.requests import SamplingParams

# One sampling setting for both sides of every comparison (engine and llama_cpp.Llama).
TEMPERATURE = 0.8
TOP_K = 40
TOP_P = 0.95
MIN_P = 0.05
REPEAT_PENALTY = 1.1
REPEAT_LAST_N = 64  # llama_cpp.Llama's default last_n_tokens_size is 64 too


def sampling(seed: int) -> SamplingParams:
    return SamplingParams(
        temperature=TEMPERATURE, top_k=TOP_K, top_p=TOP_P, min_p=MIN_P,
        repeat_penalty=REPEAT_PENALTY, repeat_last_n=REPEAT_LAST_N, seed=seed,
    )


def llama_sampling_kwargs(seed: int) -> dict:
    """The same sampling for `Llama.create_completion`."""
    return dict(
        temperature=TEMPERATURE, top_k=TOP_K, top_p=TOP_P, min_p=MIN_P, repeat_penalty=REPEAT_PENALTY, seed=seed
    )


_T0 = time.monotonic()


def log(msg: str) -> None:
    """Progress on stderr, with seconds since the script started."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def emit(result: dict) -> None:
    """The one JSON line on stdout."""
    sys.stdout.write(json.dumps(result, sort_keys=False) + "\n")
    sys.stdout.flush()


def rnd(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


def percentile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); with few samples p95 is simply the largest."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(1, math.ceil(q / 100 * len(s)))
    return s[k - 1]


def summary(xs: Sequence[float], nd: int = 4) -> dict:
    if not xs:
        return {"n": 0}
    return {"mean": rnd(sum(xs) / len(xs), nd), "p95": rnd(percentile(xs, 95), nd), "n": len(xs)}


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return -1.0


_LOAD_AT_START = loadavg()  # this module is imported when a bench starts


def setup_info(model, threads: int, **extra) -> dict:
    """What a reader needs to compare two runs: machine (and how busy it was), versions, model, threads, sampling."""
    return {
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu": cpu_model(),
            "platform": platform.platform(),
            "loadavg_1m_at_start": rnd(_LOAD_AT_START, 2),
            "loadavg_1m_at_end": rnd(loadavg(), 2),
        },
        "versions": {
            "python": platform.python_version(),
            "llama_cpp_python": getattr(ll, "__version__", version("llama_cpp_python")),
            "aiosh": version("aiosh"),
        },
        "model": {"file": os.path.basename(str(model.path)), "description": model.info.description},
        "threads": threads,
        "sampling": {
            "temperature": TEMPERATURE, "top_k": TOP_K, "top_p": TOP_P, "min_p": MIN_P,
            "repeat_penalty": REPEAT_PENALTY, "repeat_last_n": REPEAT_LAST_N,
        },
        **extra,
    }


def eog_tokens(model) -> list[int]:
    """Every end-of-generation token of the vocabulary (SmolLM2 has three: <|endoftext|>, <|im_end|>, ...)."""
    return [t for t in range(model.n_vocab) if model.is_eog(t)]


def chat_tokens(model, messages: list[dict[str, str]]) -> list[int]:
    """Exactly the tokens the engine builds for `messages` (kernel/engine.py `_prompt_tokens`)."""
    text = model.template.render(messages, add_generation_prompt=True)
    return model.tokenize(text, add_bos=not text.startswith(model.template.bos_token or "\0"))


class CountingLlama(ll.Llama):
    """`llama_cpp.Llama` that counts the prompt tokens it really evaluates.

    `Llama.generate` reuses the longest common prefix with what its context already holds, then passes the rest
    of the prompt to one `eval` call; a `LlamaRAMCache` hit restores a state before that. So the first `eval`
    after `begin()` is the prompt part that was actually decoded. (llama.cpp's own n_p_eval misses a one-token
    prompt eval, which it counts as a generation step; both are reported.)
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bench_prompt_evaluated = 0
        self._bench_in_prompt = False

    def begin(self) -> None:
        self._bench_in_prompt = True

    def eval(self, tokens):  # noqa: D401 - same contract as Llama.eval
        if self._bench_in_prompt:
            self.bench_prompt_evaluated += len(tokens)
            self._bench_in_prompt = False
        return super().eval(tokens)

    def perf(self) -> dict:
        p = ll.llama_perf_context(self.ctx)
        return {"n_p_eval": int(p.n_p_eval), "n_eval": int(p.n_eval)}


def make_llama(model, threads: int, n_ctx: int = 2048, n_batch: int = 512) -> CountingLlama:
    safe_llama.apply()  # the same extra-buffer decision as the kernel's (AMX CPUs crash without it)
    return CountingLlama(
        model_path=str(model.path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
        n_batch=n_batch, verbose=False,
    )


def logit_bias_overhead_ms(n_vocab: int, bias: dict[int, float], reps: int = 200) -> float:
    """What llama-cpp-python's Python logit_bias processor costs per token (it copies the whole logit row)."""
    import numpy as np

    scores = np.zeros(n_vocab, dtype=np.single)
    t0 = time.perf_counter()
    for _ in range(reps):
        new = np.copy(scores)
        for tid, b in bias.items():
            new[tid] = b + scores[tid]
    return (time.perf_counter() - t0) / reps * 1e3


# Distinct, realistic user prompts shared by the benches (the same text on every side of a comparison).
USER_PROMPTS = [
    "Write a short poem about a lighthouse keeper.",
    "Explain what a hash table is to a new programmer.",
    "List three tips for writing clear commit messages.",
    "Describe the water cycle in simple terms.",
    "What are the benefits of regular exercise?",
    "Summarise the plot of a heist story in a few sentences.",
    "Give me a recipe idea that uses lentils and spinach.",
    "How does a bicycle stay upright while moving?",
    "Write a friendly reminder email about a team meeting.",
    "Explain the difference between weather and climate.",
    "Suggest a name for a coffee shop by the sea and explain it.",
    "What should I pack for a two-day hiking trip?",
    "Describe how a refrigerator keeps food cold.",
    "Write a limerick about a forgetful robot.",
    "Why do leaves change colour in autumn?",
    "Give three ideas for a rainy afternoon with children.",
    "Explain recursion with an everyday example.",
    "What makes a good password?",
    "Describe the sound of a city at night.",
    "How do vaccines train the immune system?",
    "Write an opening line for a mystery novel.",
    "What is the difference between a virus and a bacterium?",
    "Give advice for someone starting to learn the guitar.",
    "Explain why the sky is blue.",
    "Describe a market in a small mountain town.",
    "What are the main parts of a computer?",
    "Write a thank-you note to a neighbour who watered the plants.",
    "How do bees make honey?",
    "Explain compound interest with a simple example.",
    "What should a good README file contain?",
    "Describe the first snowfall of winter.",
    "Give three reasons to keep a journal.",
]
