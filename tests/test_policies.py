"""The built-in policies, each driven through the mechanism by the fake engine of test_scheduler."""

from __future__ import annotations

import pytest
from aiosh.kernel.requests import SchedInfo
from aiosh.kernel.scheduler import nice_weight
from test_scheduler import FakeEngine


def decoded_by_owner(eng: FakeEngine, logs=None) -> dict[int, int]:
    out: dict[int, int] = {}
    for log in logs if logs is not None else eng.log:
        for rid in log.decoded:
            out[eng.owner_of[rid]] = out.get(eng.owner_of[rid], 0) + 1
    return out


# --- serial ---------------------------------------------------------------------------------------------------


def test_serial_runs_one_request_at_a_time_to_completion():
    eng = FakeEngine("serial", n_slots=4, max_batch=4)
    seqs = [eng.submit(prompt=10, max_tokens=5, owner=i + 1) for i in range(3)]
    late_interactive = eng.submit(max_tokens=5, sched_class="interactive", nice=-20)
    eng.run_until_idle()
    assert all(len(log.plan.run) <= 1 for log in eng.log)
    order = [s.rid for s in seqs] + [late_interactive.rid]
    finish = sorted(eng.finished, key=lambda r: eng.finished[r])
    assert finish == order  # arrival order: classes and nice do not apply
    # one at a time: a request never runs after the next one has started
    first_run = {}
    for i, log in enumerate(eng.log):
        for r in log.served:
            first_run.setdefault(r, i)
    for a, b in zip(order, order[1:]):
        assert first_run[b] >= max(i for i, log in enumerate(eng.log) if a in log.served)


def test_serial_waits_for_the_one_running():
    eng = FakeEngine("serial", n_slots=2)
    a = eng.submit(max_tokens=50)
    eng.run(3)
    b = eng.submit(max_tokens=5)
    eng.run(20)
    assert eng.tokens[b.rid] == 0 and eng.generated[a.rid] > 20


# --- fifo -----------------------------------------------------------------------------------------------------


def test_fifo_batches_in_arrival_order_and_never_preempts():
    eng = FakeEngine("fifo", n_slots=2, max_batch=2)
    a = eng.submit(max_tokens=30)
    eng.submit(max_tokens=60)
    eng.run(2)
    c = eng.submit(max_tokens=5, nice=-20, sched_class="interactive")
    d = eng.submit(max_tokens=5)
    for _ in range(200):
        log = eng.step()
        assert not log.preempted
        if a.state != "finished":
            assert c.rid not in log.served and d.rid not in log.served
    assert eng.finished[a.rid] < eng.finished[c.rid] < eng.finished[d.rid]
    assert len(eng.log[0].plan.run) == 2  # batched


def test_fifo_order_when_slots_free():
    eng = FakeEngine("fifo", n_slots=3, max_batch=3)
    seqs = [eng.submit(max_tokens=4) for _ in range(5)]
    log = eng.step()
    assert [s.rid for s in log.plan.run] == [s.rid for s in seqs[:3]]


# --- rr -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_slots", [1, 3])
def test_rr_rotates_every_quantum(n_slots):
    eng = FakeEngine("rr", n_slots=n_slots, max_batch=1, quantum=16)
    seqs = [eng.submit(prompt=1, max_tokens=10_000) for _ in range(3)]
    eng.run(3 * 16 * 6)
    runs = []  # (rid, steps in a row)
    for log in eng.log:
        (rid,) = log.served
        if runs and runs[-1][0] == rid:
            runs[-1][1] += 1
        else:
            runs.append([rid, 1])
    assert [r for r, _ in runs[:6]] == [s.rid for s in seqs] * 2  # turns in arrival order, round and round
    assert all(n == 16 for _, n in runs[:-1])  # each turn is one quantum; the last may be cut off by the test
    if n_slots == 1:
        assert all(s.switches >= 5 for s in seqs)
    else:
        assert all(s.switches == 0 for s in seqs)  # enough slots: rotation costs no swap


def test_rr_quantum_param_and_batch():
    eng = FakeEngine("rr", n_slots=4, max_batch=2, quantum=4)
    seqs = [eng.submit(prompt=1) for _ in range(4)]
    eng.run(4 * 4)
    for s in seqs:  # 2 places, 4 sequences: each gets half the steps, in whole quanta
        assert eng.tokens[s.rid] == 8


def test_rr_all_fit_everyone_runs():
    eng = FakeEngine("rr", n_slots=4, max_batch=4, quantum=2)
    for _ in range(3):
        eng.submit(prompt=1)
    eng.run(10)
    assert all(len(log.served) == 3 for log in eng.log)


# --- priority -------------------------------------------------------------------------------------------------


def test_priority_order_and_preemption():
    eng = FakeEngine("priority", n_slots=2, max_batch=2, aging_s=1000.0)
    lo = eng.submit(nice=10, owner=1)
    mid = eng.submit(nice=0, owner=2)
    eng.run(20)
    hi = eng.submit(nice=-5, owner=3)
    log = eng.step()
    assert [s.rid for s in log.plan.run] == [hi.rid, mid.rid]
    assert log.preempted == [lo.rid]  # the lowest priority gives up its slot (past its residency)


def test_priority_aging_lets_nice_19_run():
    eng = FakeEngine("priority", n_slots=2, max_batch=1, aging_s=0.05, boost_after_s=1e9, step_s=0.01)
    for i in range(3):
        eng.submit(nice=0, owner=i + 1)
    low = eng.submit(nice=19, owner=9)
    eng.run(1000)
    assert eng.tokens[low.rid] > 0
    first = next(i for i, log in enumerate(eng.log) if low.rid in log.served)
    # it needs 19 levels, at 0.05 s per level, 0.01 s per step: about 95 steps of waiting
    assert 80 <= first <= 110
    waits, last = [], None
    for i, log in enumerate(eng.log):
        if low.rid in log.served:
            if last is not None:
                waits.append(i - last)
            last = i
    assert waits and max(waits) < 130  # and again, every time it has aged enough


def test_priority_without_aging_a_nice_19_agent_still_gets_boosted():
    eng = FakeEngine("priority", n_slots=2, max_batch=1, aging_s=1e9, boost_after_s=0.5, step_s=0.01)
    eng.submit(nice=0)
    low = eng.submit(nice=19)
    eng.run(300)
    assert eng.tokens[low.rid] > 0


# --- fair -----------------------------------------------------------------------------------------------------


def ratio(a: int, b: int) -> float:
    return a / max(1, b)


@pytest.mark.parametrize("n_slots", [1, 2])
def test_fair_shares_follow_cfs_weights(n_slots):
    eng = FakeEngine("fair", n_slots=n_slots, max_batch=1)
    eng.submit(prompt=1, owner=1, group=1, nice=0)
    eng.submit(prompt=1, owner=2, group=2, nice=5)
    eng.run(4000)
    got = decoded_by_owner(eng)
    want = nice_weight(0) / nice_weight(5)
    assert want == pytest.approx(3.06, abs=0.01)
    assert ratio(got[1], got[2]) == pytest.approx(want, rel=0.05)


def test_fair_equal_agents_get_equal_shares():
    eng = FakeEngine("fair", n_slots=3, max_batch=2)
    for i in range(3):
        eng.submit(prompt=1, owner=i + 1, group=i + 1)
    eng.run(3000)
    got = decoded_by_owner(eng)
    mean = sum(got.values()) / 3
    assert all(abs(v - mean) / mean < 0.05 for v in got.values())


def test_fair_nice_with_free_capacity_is_work_conserving():
    eng = FakeEngine("fair", n_slots=2, max_batch=2)
    eng.submit(prompt=1, owner=1, nice=0)
    eng.submit(prompt=1, owner=2, nice=19)
    eng.run(100)
    got = decoded_by_owner(eng)
    assert got[1] == got[2]  # both fit in the batch: nobody is held back


def test_fair_prompt_tokens_weigh_less():
    eng = FakeEngine("fair", n_slots=2, max_batch=1, token_budget=64)
    a = eng.submit(prompt=400, owner=1)  # prefill: 400 prompt tokens count as 100 generated ones
    b = eng.submit(prompt=1, owner=2)
    eng.run(1000)
    assert a.service == pytest.approx(b.service, abs=20)
    assert eng.decoded[b.rid] - eng.decoded[a.rid] == pytest.approx(100, abs=20)


def test_fair_wake_up_lift_no_burst():
    eng = FakeEngine("fair", n_slots=3, max_batch=1)
    eng.submit(prompt=1, owner=1, group=1)
    eng.submit(prompt=1, owner=2, group=2)
    eng.run(1000)  # agent 3 was idle all this time
    late = eng.submit(prompt=1, owner=3, group=3)
    start = len(eng.log)
    eng.run(60)
    got = decoded_by_owner(eng, eng.log[start:])
    assert got.get(3, 0) <= 25  # a third, give or take: not a burst of 500 to catch up
    assert got.get(3, 0) >= 15
    assert late.service == pytest.approx(max(s.service for s in (a.seq for a in eng.actives.values())), abs=30)


def test_fair_service_is_per_agent_across_calls():
    """An agent's next call continues its virtual service: many short calls do not beat one long call."""
    eng = FakeEngine("fair", n_slots=2, max_batch=1)
    eng.submit(prompt=1, owner=1, group=1)
    sched2 = SchedInfo(owner=2, group=2)
    for _ in range(2000):
        if not any(a.seq.sched.owner == 2 for a in eng.actives.values()):
            eng.submit(prompt=1, max_tokens=5, sched=sched2)  # its next call, at once
        eng.step()
    got = decoded_by_owner(eng)
    assert ratio(got[1], got[2]) == pytest.approx(1.0, rel=0.1)


def test_fair_wake_after_stop_is_lifted():
    eng = FakeEngine("fair", n_slots=2, max_batch=1)
    a = eng.submit(prompt=1, owner=1, group=1)
    eng.submit(prompt=1, owner=2, group=2)
    eng.run(20)
    a.sched.stopped = True
    eng.run(1000)
    a.sched.stopped = False
    start = len(eng.log)
    eng.run(40)
    got = decoded_by_owner(eng, eng.log[start:])
    assert got.get(1, 0) <= 24  # about half, not 40 in a row


@pytest.mark.parametrize("max_batch", [1, 2])
def test_fair_groups_share_as_groups_first(max_batch):
    eng = FakeEngine("fair", n_slots=5, max_batch=max_batch)
    for i in range(4):
        eng.submit(prompt=1, owner=10 + i, group=10)  # a job of four agents
    eng.submit(prompt=1, owner=20, group=20)  # a job of one
    eng.run(4000)
    got = decoded_by_owner(eng)
    job1 = sum(v for k, v in got.items() if k < 20)
    assert ratio(job1, got[20]) == pytest.approx(1.0, rel=0.05)
    members = [got[10 + i] for i in range(4)]
    assert max(members) - min(members) <= 0.05 * max(members)  # and fairly within the job


def test_fair_two_jobs_interleave_in_one_batch():
    eng = FakeEngine("fair", n_slots=8, max_batch=4)
    for i in range(4):
        eng.submit(prompt=1, owner=10 + i, group=10)
        eng.submit(prompt=1, owner=20 + i, group=20)
    eng.run(10)
    for log in eng.log[2:]:
        groups = [eng.actives[r].seq.sched.group for r in log.decoded]
        assert sorted(groups) == [10, 10, 20, 20]  # two and two each step, not four and then four


def test_fair_nice_between_single_agent_jobs_and_within_a_job():
    eng = FakeEngine("fair", n_slots=4, max_batch=1)
    eng.submit(prompt=1, owner=1, group=1, nice=0)
    eng.submit(prompt=1, owner=2, group=1, nice=5)
    eng.run(4000)
    got = decoded_by_owner(eng)
    assert ratio(got[1], got[2]) == pytest.approx(nice_weight(0) / nice_weight(5), rel=0.05)


def test_fair_default_policy_params_and_renice_live():
    eng = FakeEngine("fair", n_slots=2, max_batch=1)
    a = eng.submit(prompt=1, owner=1)
    eng.submit(prompt=1, owner=2)
    eng.run(500)
    a.sched.nice = 5  # renice applies at the next step
    start = len(eng.log)
    eng.run(4000)
    got = decoded_by_owner(eng, eng.log[start:])
    assert ratio(got[2], got[1]) == pytest.approx(nice_weight(0) / nice_weight(5), rel=0.05)


# --- classes across policies, with groups --------------------------------------------------------------------


def test_batch_class_yields_to_normal():
    eng = FakeEngine("fair", n_slots=3, max_batch=1, boost_after_s=1e9)
    b = eng.submit(prompt=1, sched_class="batch", owner=1)
    n = eng.submit(prompt=1, owner=2)
    eng.run(50)
    assert eng.tokens[b.rid] == 0 and eng.tokens[n.rid] == 50
