"""The scheduler on the real model: preemption when agents outnumber slots, swap transparency, policy switches."""

from __future__ import annotations

import time

import pytest
from aiosh.kernel.engine import Engine, EngineSettings
from aiosh.kernel.requests import GenRequest, SamplingParams, SchedInfo
from aiosh.kernel.scheduler import load_policy

pytestmark = [pytest.mark.model, pytest.mark.timeout(240)]
GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0)


def _req(prompt: str, n: int, owner: int) -> GenRequest:
    return GenRequest(prompt=prompt, max_tokens=n, ignore_eos=True, sampling=GREEDY,
                      sched=SchedInfo(owner=owner, group=owner))


@pytest.fixture
def small_engine(model):
    """Two slots, one sequence per step: every step has the same batch composition (one sequence)."""
    e = Engine(model, EngineSettings(n_ctx=1024, n_slots=2, kv_cells=4096, max_batch=1, batch_tokens=256),
               load_policy("rr", {"quantum": 6})).start()
    yield e
    e.close()


def test_more_agents_than_slots_all_finish_with_preemptions(small_engine):
    e = small_engine
    hs = [e.submit(_req(f"Story number {i}: Once upon a time", 24, owner=10 + i)) for i in range(5)]
    results = [h.wait(180) for h in hs]
    assert all(r.finish_reason == "length" and r.completion_tokens == 24 for r in results), results
    assert all(r.text.strip() for r in results)
    assert e.stats.preemptions > 0
    assert sum(r.preemptions for r in results) > 0


def test_swapped_sequence_continues_as_an_unswapped_one(small_engine):
    """Same greedy tokens with and without context switches, under the same batch composition (one per step)."""
    e = small_engine
    alone = e.submit(_req("The history of the printing press", 40, owner=1)).wait(120)
    e.call(e.clear_idle_caches)
    a = e.submit(_req("The history of the printing press", 40, owner=1))
    others = [e.submit(_req(f"A recipe for soup number {i}", 40, owner=2 + i)) for i in range(3)]
    shared = a.wait(180)
    for h in others:
        h.wait(180)
    assert shared.preemptions > 0, "the sequence was never switched out; the test proves nothing"
    assert shared.text == alone.text


def test_switching_policy_at_run_time_keeps_running_agents_intact(model):
    e = Engine(model, EngineSettings(n_ctx=1024, n_slots=3, kv_cells=4096), load_policy("fifo", {})).start()
    try:
        hs = [e.submit(_req(f"Chapter {i}.", 60, owner=20 + i)) for i in range(4)]
        while e.stats.generated_tokens < 20:
            time.sleep(0.01)
        e.set_policy(load_policy("rr", {"quantum": 4}))
        e.call(lambda: None)
        while e.stats.generated_tokens < 80:
            time.sleep(0.01)
        e.set_policy(load_policy("fair", {}))
        results = [h.wait(180) for h in hs]
        assert all(r.finish_reason == "length" and r.completion_tokens == 60 and r.error is None for r in results)
        assert e.stats.policy == "fair"
    finally:
        e.close()
