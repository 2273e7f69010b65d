"""The sampler chain: the cut before the repeat penalty must change no token, on the real model's logits."""

from __future__ import annotations

import llama_cpp as ll
import pytest
from aiosh.kernel.requests import SamplingParams
from aiosh.kernel.sampling import Sampler, _penalty_prefilter

PROMPT = "List the numbers, words and colours again and again: red, red, blue, one, two, red, blue, one,"


def test_prefilter_width_defaults():
    assert _penalty_prefilter(SamplingParams()) == 40 + 64  # top_k + repeat_last_n


def test_prefilter_width_greedy():
    assert _penalty_prefilter(SamplingParams(temperature=0, repeat_last_n=32)) == 1 + 32


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(top_k=0),  # no top-k: the penalty must see every candidate
        SamplingParams(repeat_penalty=0.9),  # a penalty < 1 raises logits: no safe cut
        SamplingParams(repeat_last_n=-1),  # history as long as the context
        SamplingParams(repeat_last_n=0),
    ],
)
def test_no_prefilter_where_it_could_change_a_token(params):
    assert _penalty_prefilter(params) == 0


@pytest.fixture(scope="module")
def context(model):
    cp = ll.llama_context_default_params()
    cp.n_ctx = 512
    cp.n_batch = cp.n_ubatch = 512
    cp.n_seq_max = 1
    cp.n_threads = cp.n_threads_batch = 1  # steady on a busy machine (no thread waits at a barrier)
    cp.no_perf = True
    ctx = ll.llama_init_from_model(model.ptr, cp)
    assert ctx
    batch = ll.llama_batch_init(512, 0, 1)
    yield ctx, batch
    ll.llama_batch_free(batch)
    ll.llama_free(ctx)


def _decode(ctx, batch, tokens: list[int], pos0: int) -> int:
    """Decode tokens at positions pos0.. in sequence 0; logits of the last one at the returned batch index."""
    for i, t in enumerate(tokens):
        batch.token[i] = t
        batch.pos[i] = pos0 + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = i == len(tokens) - 1
    batch.n_tokens = len(tokens)
    assert ll.llama_decode(ctx, batch) == 0
    return len(tokens) - 1


def _run(model, context, params: SamplingParams, steps: int) -> tuple[list[int], list[int], list[int]]:
    """Generate with the cut chain; at every step also sample the full-vocabulary chain and a chain without the
    penalty from the same logits. Returns the three token lists (the first one is what was decoded)."""
    ctx, batch = context
    ll.llama_memory_clear(ll.llama_get_memory(ctx), True)
    fast = Sampler(model.vocab, model.n_vocab, params)
    full = Sampler(model.vocab, model.n_vocab, params, prefilter=False)
    plain = Sampler(model.vocab, model.n_vocab, SamplingParams(**{**params.__dict__, "repeat_penalty": 1.0}))
    prompt = model.tokenize(PROMPT, add_bos=True)
    idx = _decode(ctx, batch, prompt, 0)
    pos = len(prompt)
    got: tuple[list[int], list[int], list[int]] = ([], [], [])
    try:
        for _ in range(steps):
            a, b, c = fast.sample(ctx, idx), full.sample(ctx, idx), plain.sample(ctx, idx)
            for out, t in zip(got, (a, b, c)):
                out.append(t)
            if a != b:
                break
            idx = _decode(ctx, batch, [a], pos)
            pos += 1
    finally:
        for s in (fast, full, plain):
            s.free()
    return got


@pytest.mark.model
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(seed=1),  # the defaults: top_k 40, top_p 0.95, min_p 0.05, penalty 1.1 over 64
        SamplingParams(seed=7, repeat_penalty=1.8, top_k=8, repeat_last_n=16),
        SamplingParams(seed=3, temperature=1.5, top_p=1.0, min_p=0.0, repeat_penalty=1.3),
        SamplingParams(temperature=0, repeat_penalty=1.5, repeat_last_n=32),  # greedy
    ],
)
def test_cut_chain_samples_the_same_tokens(model, context, params):
    fast, full, plain = _run(model, context, params, steps=48)
    assert fast == full, f"the cut chain diverged at step {len(fast) - 1}"
    # The penalty is really applied: without it, the same logits give other tokens somewhere.
    assert plain != fast


@pytest.mark.model
@pytest.mark.timeout(120)
def test_seeded_determinism(model, context):
    one = _run(model, context, SamplingParams(seed=11), steps=24)[0]
    two = _run(model, context, SamplingParams(seed=11), steps=24)[0]
    other = _run(model, context, SamplingParams(seed=12), steps=24)[0]
    assert one == two
    assert one != other
