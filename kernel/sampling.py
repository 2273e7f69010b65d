"""Per-sequence samplers: a llama.cpp sampler chain, plus an optional grammar checked the cheap way.

A grammar pass over the whole vocabulary costs about as much as a decode step, and accepting a token the grammar
rejects aborts the process (a C++ exception). So, as llama.cpp's common/sampling.cpp does: sample without the
grammar, test that one token against it, and only if it is rejected resample with the grammar applied to all
candidates. Only tokens the grammar has accepted are ever passed to `llama_sampler_accept` on it.
"""

from __future__ import annotations

import ctypes
import math
import os
import random
import sys
import tempfile
import threading

import numpy as np

from .llama_bindings import ll
from .requests import EngineError, SamplingParams

_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(ll.llama_token_data)


_stderr_lock = threading.Lock()


_parsed: dict[tuple[int, str], str] = {}  # (vocab, grammar) → "" (parses) or llama.cpp's complaint
PARSED_KEPT = 128


def check_grammar(vocab, grammar: str) -> None:
    """Raise EngineError naming the problem if llama.cpp cannot parse the GBNF grammar.

    The outcome is kept by text: a tool-choice grammar is the same on every call, and this runs on the caller's
    thread (the kernel loop when the engine runs in a thread)."""
    key = (ctypes.cast(vocab, ctypes.c_void_p).value or 0, grammar)
    why = _parsed.get(key)
    if why is None:
        why = _parse_error(vocab, grammar)
        with _stderr_lock:
            _parsed[key] = why
            while len(_parsed) > PARSED_KEPT:
                _parsed.pop(next(iter(_parsed)))
    if why:
        raise EngineError(f"invalid grammar: {why}")


def _parse_error(vocab, grammar: str) -> str:
    """"" if llama.cpp parses the grammar, else the reason it gives.

    llama.cpp reports a parse error with a bare fprintf to the C-level stderr (no log callback), which would
    tear the shell's screen; fd 2 is pointed at a temporary file for the duration of this one call, and the
    message becomes part of our one-line error instead.
    """
    with _stderr_lock, tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            g = ll.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if g:
            ll.llama_sampler_free(g)
            return ""
        tmp.seek(0)
        text = tmp.read().decode("utf-8", "replace")
    why = text.split("error parsing grammar:", 1)[-1].strip().splitlines()
    return why[0] if why and why[0] else "llama.cpp could not parse it"


def _penalty_prefilter(params: SamplingParams) -> int:
    """How many top candidates to keep before the repeat penalty, so that it never scans the whole vocabulary.

    The penalty sampler looks up every candidate in its history (a hash lookup per token: about 0.35 ms a
    sample over SmolLM2's 49152 tokens, more than all the rest of the chain). A penalty >= 1 only lowers the
    logits of the at most `repeat_last_n` distinct tokens it has seen, so the `keep` best after the penalty are
    always among the `keep + repeat_last_n` best before it: cutting to those first changes no result (up to
    exact ties). `keep` is top_k when sampling, 1 for greedy. 0 = no safe cut (top_k off, a penalty < 1 that
    raises logits, or a history as long as the context).
    """
    if params.repeat_penalty < 1.0 or params.repeat_last_n <= 0:
        return 0
    keep = 1 if params.temperature <= 0 else params.top_k
    return keep + params.repeat_last_n if keep > 0 else 0


class Sampler:
    """Owns one sequence's sampler chain (and grammar sampler); must be freed on the engine thread.

    The chain is penalties, then top-k, top-p, min-p, temperature and a seeded dist (or greedy), as llama.cpp's
    common sampler orders them; with `prefilter` (the default) a wider top-k runs before the penalties, which
    gives the same tokens at a fraction of the cost (see `_penalty_prefilter`).
    """

    def __init__(self, vocab, n_vocab: int, params: SamplingParams, grammar: str | None = None, *,
                 prefilter: bool = True) -> None:
        self.n_vocab = n_vocab
        self.grammar = None
        if grammar:
            g = ll.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
            if not g:
                raise EngineError("invalid grammar (llama.cpp could not parse it)")
            self.grammar = g
        self.chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        add = lambda s: ll.llama_sampler_chain_add(self.chain, s)  # noqa: E731
        if params.repeat_penalty != 1.0:
            cut = _penalty_prefilter(params) if prefilter else 0
            if 0 < cut < n_vocab:
                add(ll.llama_sampler_init_top_k(cut))
            add(ll.llama_sampler_init_penalties(n_vocab, params.repeat_last_n, params.repeat_penalty, 0.0, 0.0))
        if params.temperature <= 0:
            add(ll.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                add(ll.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                add(ll.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0:
                add(ll.llama_sampler_init_min_p(params.min_p, 1))
            add(ll.llama_sampler_init_temp(params.temperature))
            seed = params.seed if params.seed is not None else random.getrandbits(32)
            add(ll.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx, idx: int) -> int:
        """Pick the next token from the logits at batch index idx, honouring the grammar if there is one."""
        token = ll.llama_sampler_sample(self.chain, ctx, idx)  # also accepts into the chain
        if self.grammar is None:
            return token
        if self._grammar_allows(ctx, idx, token):
            ll.llama_sampler_accept(self.grammar, token)
            return token
        # Rejected: undo nothing (penalties saw one token too many, a negligible bias), resample constrained.
        token = self._resample_with_grammar(ctx, idx)
        ll.llama_sampler_accept(self.grammar, token)
        return token

    def _grammar_allows(self, ctx, idx: int, token: int) -> bool:
        logits = ll.llama_get_logits_ith(ctx, idx)
        one = (ll.llama_token_data * 1)()
        one[0].id = ll.llama_token(token)
        one[0].logit = logits[token]
        one[0].p = 0.0
        arr = ll.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)
        ll.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        return not math.isinf(one[0].logit)

    def _resample_with_grammar(self, ctx, idx: int) -> int:
        logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, idx), shape=(self.n_vocab,))
        data = np.empty(self.n_vocab, dtype=_TOKEN_DATA)
        data["id"] = np.arange(self.n_vocab, dtype=np.int32)
        data["logit"] = logits
        data["p"] = 0.0
        ptr = data.ctypes.data_as(ctypes.POINTER(ll.llama_token_data))
        arr = ll.llama_token_data_array(data=ptr, size=self.n_vocab, selected=-1, sorted=False)
        ll.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        if not np.isfinite(data["logit"][: arr.size]).any():  # the chain would still pick one, and accepting a
            raise EngineError("grammar admits no token here")  # token the grammar rejects aborts llama.cpp
        ll.llama_sampler_apply(self.chain, ctypes.byref(arr))
        if arr.selected < 0 or arr.size == 0:
            raise EngineError("grammar admits no token here")
        token = int(arr.data[arr.selected].id)
        # The chain's own accept was skipped on this path (llama_sampler_apply does not accept): do it now.
        ll.llama_sampler_accept(self.chain, token)
        return token

    def free(self) -> None:
        if self.chain:
            ll.llama_sampler_free(self.chain)
            self.chain = None
        if self.grammar:
            ll.llama_sampler_free(self.grammar)
            self.grammar = None
