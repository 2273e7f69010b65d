"""The scheduling mechanism, driven by a scripted fake engine (no model).

`FakeEngine` does what kernel/engine.py's `_step` does with a plan, minus llama.cpp: it preempts `plan.preempt`
(the KV is swapped out), admits `plan.admit` into free slots in order (stopping at the first that finds none),
runs `plan.run` (those holding a slot): one token for each decoding sequence, then prompt chunks from the
remaining token budget in run order; the step that completes a prompt samples the first token; then it retires
finished requests. The bookkeeping is the engine's own code, not a copy: `SeqState.preempted` / `admitted` and
`Scheduler.end_step` (waiting times, accounting). Each step takes `step_s` seconds of a scripted clock. Every plan
is checked against the contract on the way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
from aiosh.kernel.requests import SchedInfo
from aiosh.kernel.scheduler import (
    NICE_TO_WEIGHT,
    Plan,
    Policy,
    Scheduler,
    SeqState,
    available_policies,
    load_policy,
    nice_weight,
)


@dataclass
class _Req:
    seq: SeqState
    max_tokens: int
    pending: bool = False  # a sampled token waits to be decoded (the sequence is decoding)


@dataclass
class StepLog:
    plan: Plan
    decoded: list[int] = field(default_factory=list)  # rids that decoded a token
    prefilled: dict[int, int] = field(default_factory=dict)  # rid -> prompt tokens
    admitted: list[int] = field(default_factory=list)
    preempted: list[int] = field(default_factory=list)

    @property
    def served(self) -> list[int]:
        return self.decoded + [r for r in self.prefilled if r not in self.decoded]


class FakeEngine:
    def __init__(
        self, policy: Policy | str = "fair", n_slots: int = 4, max_batch: int | None = None,
        token_budget: int = 512, step_s: float = 0.01, boost_after_s: float = 5.0, **params,
    ) -> None:
        if isinstance(policy, str):
            policy = load_policy(policy, params)
        self.scheduler = Scheduler(policy, n_slots, max_batch or n_slots, token_budget, boost_after_s=boost_after_s)
        self.n_slots = n_slots
        self.step_s = step_s
        self.now = 1000.0
        self.actives: dict[int, _Req] = {}
        self.rid = 0
        self.log: list[StepLog] = []
        self.tokens: Counter[int] = Counter()  # rid -> tokens served (prompt + generated)
        self.decoded: Counter[int] = Counter()  # rid -> generated tokens decoded
        self.generated: Counter[int] = Counter()  # rid -> tokens sampled
        self.finished: dict[int, float] = {}  # rid -> time it finished
        self.failed_admissions = 0
        self.owner_of: dict[int, int] = {}  # rid -> owner pid, also after the request is retired

    @property
    def policy(self) -> Policy:
        return self.scheduler.policy

    def submit(self, prompt: int = 8, max_tokens: int = 10_000, sched: SchedInfo | None = None, **kw) -> SeqState:
        self.rid += 1
        sched = sched or SchedInfo(**kw)
        seq = SeqState(rid=self.rid, sched=sched, arrival=self.now, prompt_len=prompt, waiting_since=self.now)
        self.actives[seq.rid] = _Req(seq, max_tokens)
        self.owner_of[seq.rid] = sched.owner
        self.policy.on_wake(seq, [a.seq for a in self.actives.values()])
        return seq

    def cancel(self, seq: SeqState) -> None:
        seq.state = "finished"
        seq.has_slot = False
        self.actives.pop(seq.rid, None)

    def step(self) -> StepLog:
        seqs = [a.seq for a in self.actives.values()]
        plan = self.scheduler.plan(seqs, self.now)
        log = StepLog(plan)
        self._check(plan)
        for v in plan.preempt:
            assert v.has_slot
            v.preempted(swapped=True)
            log.preempted.append(v.rid)
        for s in plan.admit:
            if sum(1 for a in self.actives.values() if a.seq.has_slot) >= self.n_slots:
                self.failed_admissions += 1
                break
            s.admitted(self.actives[s.rid].pending)
            log.admitted.append(s.rid)
        running = [s for s in plan.run if s.rid in self.actives and s.has_slot]
        assert not any(s.sched.stopped for s in running), "a stopped sequence was planned to run"
        budget = plan.token_budget or self.scheduler.token_budget
        for s in running:
            if self.actives[s.rid].pending:
                log.decoded.append(s.rid)
                budget -= 1
        for s in running:
            if not self.actives[s.rid].pending:
                take = min(s.pending_prompt, max(0, budget))
                if take > 0:
                    log.prefilled[s.rid] = take
                    budget -= take
        self.log.append(log)
        if not log.decoded and not log.prefilled:
            self.now += self.step_s
            return log
        for rid in log.decoded:
            self._sampled(self.actives[rid])
        for rid, take in log.prefilled.items():
            req = self.actives[rid]
            req.seq.n_prefilled += take
            if req.seq.pending_prompt == 0:
                self._sampled(req)
        self.now += self.step_s
        served = [(self.actives[rid].seq, log.prefilled.get(rid, 0), int(rid in log.decoded)) for rid in log.served]
        self.scheduler.end_step(served, [a.seq for a in self.actives.values()], self.now)
        for seq, p, g in served:
            self.tokens[seq.rid] += p + g
            self.decoded[seq.rid] += g
        for rid in list(self.actives):
            if self.actives[rid].seq.state == "finished":
                self.actives[rid].seq.has_slot = False
                del self.actives[rid]
                self.finished[rid] = self.now
        return log

    def _sampled(self, req: _Req) -> None:
        self.generated[req.seq.rid] += 1
        req.seq.state = "decode"
        req.pending = True
        if self.generated[req.seq.rid] >= req.max_tokens:
            req.pending = False
            req.seq.state = "finished"

    def _check(self, plan: Plan) -> None:
        run_ids = [s.rid for s in plan.run]
        assert len(run_ids) == len(set(run_ids)), "a sequence twice in one plan"
        assert len(plan.run) <= plan.max_batch <= self.scheduler.max_batch
        assert {s.rid for s in plan.admit} <= set(run_ids), "admitted but not run"
        assert not {s.rid for s in plan.preempt} & set(run_ids), "preempted and run"
        assert all(not s.has_slot for s in plan.admit)
        holders = sum(1 for a in self.actives.values() if a.seq.has_slot)
        assert holders - len(plan.preempt) + len(plan.admit) <= self.n_slots, "more slots than there are"

    def run(self, steps: int) -> list[StepLog]:
        return [self.step() for _ in range(steps)]

    def run_until_idle(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not self.actives:
                return
            self.step()
        raise AssertionError("did not finish")


def share(counter: Counter, rids) -> list[int]:
    return [counter[r] for r in rids]


# --- the plan contract ----------------------------------------------------------------------------------------


def test_plan_fills_free_slots_and_batch():
    eng = FakeEngine("fifo", n_slots=4, max_batch=3)
    seqs = [eng.submit() for _ in range(5)]
    log = eng.step()
    assert [s.rid for s in log.plan.run] == [1, 2, 3]
    assert [s.rid for s in log.plan.admit] == [1, 2, 3]  # a 4th free slot is not filled by someone who won't run
    assert not log.plan.preempt
    assert log.plan.token_budget == 512
    assert seqs[3].has_slot is False


def test_prefill_budget_goes_in_run_order():
    eng = FakeEngine("fifo", n_slots=4, token_budget=100)
    a, b, c = eng.submit(prompt=70), eng.submit(prompt=70), eng.submit(prompt=70)
    log = eng.step()
    assert log.prefilled == {a.rid: 70, b.rid: 30}
    log = eng.step()  # a decodes (1 token), b finishes its prompt, c gets the rest
    assert log.decoded == [a.rid] and log.prefilled == {b.rid: 40, c.rid: 59}


def test_finished_and_empty():
    eng = FakeEngine("fair", n_slots=2)
    assert eng.step().plan.run == []
    s = eng.submit(max_tokens=3)
    eng.run_until_idle()
    assert s.state == "finished" and s.rid in eng.finished
    assert eng.failed_admissions == 0


def test_no_admission_fails_and_slots_never_overflow():
    for name in ("serial", "fifo", "rr", "priority", "fair"):
        eng = FakeEngine(name, n_slots=3, max_batch=2, token_budget=64)
        for i in range(9):
            eng.submit(prompt=5 + 11 * i, max_tokens=20 + 7 * i, nice=i % 5 - 2, sched_class=("normal", "batch")[i % 2])
        eng.run_until_idle()
        assert eng.failed_admissions == 0, name
        assert len(eng.finished) == 9, name


# --- classes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["fifo", "rr", "priority", "fair"])
def test_interactive_goes_first(policy):
    eng = FakeEngine(policy, n_slots=4, max_batch=1)
    normals = [eng.submit() for _ in range(2)]
    eng.run(5)
    inter = eng.submit(sched_class="interactive")
    eng.run(40 if policy != "fifo" else 1)
    if policy == "fifo":  # never preempts: the interactive one waits for a slot, but gets the batch place
        assert eng.log[-1].plan.run == [inter] and inter.has_slot
    else:
        assert all(log.plan.run == [inter] for log in eng.log[-20:])
    assert eng.generated[normals[0].rid] > 0


@pytest.mark.parametrize("policy", ["fifo", "rr", "priority", "fair"])
def test_idle_class_runs_only_on_spare_capacity(policy):
    eng = FakeEngine(policy, n_slots=2, max_batch=2)
    idle = eng.submit(sched_class="idle", max_tokens=50)
    eng.run(3)
    assert eng.generated[idle.rid] > 0  # spare capacity: it runs
    busy = [eng.submit(max_tokens=40), eng.submit(max_tokens=40)]
    log = eng.step()
    assert idle.rid in log.preempted  # its slot goes to a normal sequence at once, whatever the policy
    served_before = eng.tokens[idle.rid]
    while any(s.state != "finished" for s in busy):
        eng.step()
        if any(s.state != "finished" for s in busy):
            assert eng.tokens[idle.rid] == served_before
    eng.run_until_idle()
    assert idle.state == "finished"


def test_idle_takes_a_batch_place_nobody_wants():
    eng = FakeEngine("fair", n_slots=4, max_batch=4)
    idle = eng.submit(sched_class="idle")
    normals = [eng.submit() for _ in range(2)]
    eng.run(5)
    assert eng.generated[idle.rid] > 0 and all(eng.generated[s.rid] > 0 for s in normals)


def test_interactive_shrinks_the_batch():
    eng = FakeEngine("fair", n_slots=16, max_batch=16)
    for _ in range(12):
        eng.submit()
    eng.run(3)
    assert len(eng.log[-1].plan.run) == 12
    inter = eng.submit(sched_class="interactive", prompt=40)
    log = eng.step()
    assert log.plan.max_batch == 4 and len(log.plan.run) == 4 and log.plan.run[0] is inter
    assert log.plan.token_budget == 512 // 4  # a quarter of the budget (its own prompt is smaller)
    eng.run(3)
    eng.cancel(inter)
    log = eng.step()
    assert log.plan.max_batch == 16 and len(log.plan.run) == 12 and log.plan.token_budget == 512


def test_interactive_batch_rule():
    sch = Scheduler(Policy(), 16, 16, 512)
    assert sch._interactive_batch(16) == 4
    assert sch._interactive_batch(16, n_interactive=6) == 6
    assert sch._interactive_batch(2) == 1
    assert sch._interactive_batch(1) == 1
    sch.interactive_batch = 2
    assert sch._interactive_batch(16) == 2


def test_interactive_prompt_gets_the_budget():
    eng = FakeEngine("fair", n_slots=4, max_batch=4)
    eng.submit(prompt=300)
    inter = eng.submit(prompt=300, sched_class="interactive")
    log = eng.step()
    assert log.plan.run[0] is inter and log.prefilled[inter.rid] == 300


# --- boost ----------------------------------------------------------------------------------------------------


def test_boost_after_threshold_then_served():
    eng = FakeEngine("fair", n_slots=2, max_batch=1, boost_after_s=0.5, step_s=0.01)
    eng.submit()
    eng.submit()
    low = eng.submit(sched_class="batch")  # behind normal ones: starves without a boost
    waited = 0
    while not eng.tokens[low.rid] and waited < 200:
        assert not low.boosted  # boosted only once it has waited 0.5 s, and then served at once
        log = eng.step()
        waited += 1
    assert 49 <= waited <= 53  # 0.5 s of 10 ms steps
    assert log.plan.run == [low]
    assert low.boosted  # still shown for the step it was served in (the process table's PRI)
    log = eng.step()
    assert not low.boosted and log.plan.run != [low]  # served: the boost is gone, the normal ones go first


def test_boost_lasts_until_served():
    eng = FakeEngine("fifo", n_slots=1, max_batch=1, boost_after_s=0.1)
    first = eng.submit(max_tokens=30)
    second = eng.submit()
    eng.run(20)
    assert second.boosted and eng.tokens[second.rid] == 0  # fifo never preempts: boosted, still waiting
    eng.run(12)
    assert first.state == "finished" and eng.tokens[second.rid] > 0
    eng.step()
    assert not second.boosted


def test_boost_does_not_lift_idle_over_others():
    eng = FakeEngine("fair", n_slots=2, max_batch=1, boost_after_s=0.1)
    eng.submit()
    idle = eng.submit(sched_class="idle")
    eng.run(100)
    assert idle.boosted and eng.tokens[idle.rid] == 0


def test_serial_does_not_boost():
    eng = FakeEngine("serial", n_slots=2, boost_after_s=0.05)
    eng.submit()
    s2 = eng.submit()
    eng.run(30)
    assert not s2.boosted and eng.tokens[s2.rid] == 0


# --- stopped --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["serial", "fifo", "rr", "priority", "fair"])
def test_stopped_never_runs_and_is_preempted_first(policy):
    eng = FakeEngine(policy, n_slots=2, max_batch=2)
    a = eng.submit(max_tokens=200)
    b = eng.submit(max_tokens=200)
    eng.run(3)
    assert a.has_slot and (b.has_slot or policy == "serial")
    a.sched.stopped = True
    eng.run(5)
    assert a.has_slot  # stopped, it keeps its slot while nobody needs it
    served = eng.tokens[a.rid]
    c = eng.submit(max_tokens=200)
    log = eng.step()
    if policy == "serial":  # b runs (serially); c waits for b
        assert not log.preempted
    else:
        assert log.preempted == [a.rid] and c.has_slot  # the stopped one goes, not b
        assert b.has_slot
    eng.run(50)
    assert eng.tokens[a.rid] == served
    a.sched.stopped = False
    eng.run(500)
    assert eng.tokens[a.rid] > served  # continued: it runs again (under fifo once a slot is free)


def test_stopped_while_waiting_is_not_boosted_on_continue():
    eng = FakeEngine("fair", n_slots=1, max_batch=1, boost_after_s=0.5)
    eng.submit()
    b = eng.submit()
    b.sched.stopped = True
    eng.run(100)  # a second passes
    b.sched.stopped = False
    eng.step()
    assert not b.boosted  # its wait starts again when it continues


# --- thrashing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["rr", "priority", "fair"])
def test_minimum_residency(policy):
    eng = FakeEngine(policy, n_slots=2, max_batch=2)
    for _ in range(5):
        eng.submit(nice=0)
    eng.run(400)
    residency = eng.policy.min_residency()
    admitted_at: dict[int, int] = {}
    for i, log in enumerate(eng.log):
        for rid in log.preempted:
            assert i - admitted_at[rid] >= residency, f"{rid} preempted {i - admitted_at[rid]} steps after admission"
        for rid in log.admitted:
            admitted_at[rid] = i
    assert sum(len(log.preempted) for log in eng.log) <= 400 * 2 / residency + 2


# --- discovery ------------------------------------------------------------------------------------------------


def test_builtin_policies_are_found():
    found = available_policies()
    assert {"serial", "fifo", "rr", "priority", "fair"} <= set(found)
    for name, cls in found.items():
        assert cls.name == name and cls.description
        d = cls().describe()
        assert d["policy"] == name and d["params"] == cls.params and d["description"] == cls.description


def test_load_policy_params_and_errors():
    rr = load_policy("rr", {"quantum": 4})
    assert rr.params == {"quantum": 4} and rr.min_residency() == 4
    assert load_policy("fair", {}).params == {"prompt_weight": 0.25}
    # one [scheduler] table carries every policy's knobs: another policy's parameter is ignored
    assert load_policy("rr", {"quantum": 8, "prompt_weight": 0.5}).params == {"quantum": 8}
    with pytest.raises(ValueError, match=r"^unknown scheduling policy 'x' \(known: fair, fifo, priority, rr, serial"):
        load_policy("x", {})
    with pytest.raises(ValueError, match="has no parameter 'quantom' .its parameters: quantum"):
        load_policy("rr", {"quantom": 3})
    with pytest.raises(ValueError, match="'quantum' must be a whole number"):
        load_policy("rr", {"quantum": 2.5})
    with pytest.raises(ValueError, match="'quantum' must be >= 1"):
        load_policy("rr", {"quantum": 0})
    with pytest.raises(ValueError, match="'prompt_weight' must be a number"):
        load_policy("fair", {"prompt_weight": "lots"})
    assert load_policy("fair", {"prompt_weight": 1}).params["prompt_weight"] == 1.0


THIRD_PARTY = '''
from aiosh.kernel.scheduler import Policy


class Lifo(Policy):
    name = "lifo"
    description = "last come, first served"
    params = {"depth": 3}
    preemptive = True

    def key(self, seq, now):
        return (-seq.arrival, -seq.rid)


class Helper:  # not a policy
    pass
'''


def test_third_party_policy_from_extra_path(tmp_path):
    (tmp_path / "lifo.py").write_text(THIRD_PARTY)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "broken.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "_private.py").write_text("raise RuntimeError('never imported')\n")
    errors: list[str] = []
    found = available_policies([str(tmp_path)], errors=errors)
    assert "lifo" in found and "fair" in found
    assert len(errors) == 1 and "broken.py: RuntimeError: boom" in errors[0]
    pol = load_policy("lifo", {"depth": 5, "quantum": 16}, extra_paths=[str(tmp_path)])
    assert pol.params == {"depth": 5} and pol.describe()["policy"] == "lifo"
    eng = FakeEngine(pol, n_slots=1, max_batch=1)
    eng.submit()
    eng.step()
    late = eng.submit()
    eng.run(20)
    assert eng.log[-1].plan.run == [late]
    with pytest.raises(ValueError, match="unknown scheduling policy 'lifo'"):
        load_policy("lifo", {})  # not without its folder


def test_unknown_name_reports_broken_plugins(tmp_path):
    (tmp_path / "broken.py").write_text("import no_such_module_here\n")
    with pytest.raises(ValueError, match="failed to load: .*broken.py: ModuleNotFoundError"):
        load_policy("nope", {}, extra_paths=[str(tmp_path)])


def test_policy_from_entry_point(monkeypatch):
    import importlib.metadata as md

    class EpPolicy(Policy):
        name = "from-ep"
        description = "from an entry point"

    class FakeEP:
        def __init__(self, name, obj):
            self.name, self._obj = name, obj

        def load(self):
            if isinstance(self._obj, Exception):
                raise self._obj
            return self._obj

    eps = [FakeEP("mine", EpPolicy), FakeEP("agent", object()), FakeEP("bad", ImportError("gone"))]
    monkeypatch.setattr(md, "entry_points", lambda group=None: eps if group == "aiosh.plugins" else [])
    errors: list[str] = []
    found = available_policies(errors=errors)
    assert found["from-ep"] is EpPolicy
    assert errors == ["entry point bad: ImportError: gone"]
    assert isinstance(load_policy("from-ep", {}), EpPolicy)


def test_subclass_without_own_name_is_not_registered(tmp_path):
    (tmp_path / "sub.py").write_text(
        "from aiosh.plugins.policies.fair import Fair\n\nclass Tweaked(Fair):\n    pass\n"
    )
    found = available_policies([str(tmp_path)])
    assert found["fair"].__name__ == "Fair"  # an unnamed subclass does not take over its parent's name


def test_nice_weight_table():
    assert nice_weight(0) == 1024 and nice_weight(-20) == 88761 and nice_weight(19) == 15
    assert nice_weight(50) == 15 and nice_weight(-50) == 88761
    assert len(NICE_TO_WEIGHT) == 40


def test_kv_victim_prefers_stopped_then_the_last_ranked():
    eng = FakeEngine("fair", n_slots=3, max_batch=3)
    a = eng.submit(owner=1, nice=-5)
    b = eng.submit(owner=2)
    c = eng.submit(owner=3, sched_class="batch")
    eng.run(3)
    seqs = [x.seq for x in eng.actives.values()]
    assert eng.scheduler.kv_victim(seqs) is c
    b.sched.stopped = True
    assert eng.scheduler.kv_victim(seqs) is b
    b.sched.stopped = False
    c.sched.stopped = False
    eng.cancel(b)
    eng.cancel(c)
    assert eng.scheduler.kv_victim([a]) is None  # never the only runnable holder


def test_no_shrinking_for_an_interactive_sequence_that_cannot_run():
    eng = FakeEngine("fifo", n_slots=8, max_batch=8)
    for _ in range(8):
        eng.submit()
    eng.run(2)
    inter = eng.submit(sched_class="interactive")  # fifo never preempts: no slot for it yet
    log = eng.step()
    assert not inter.has_slot and log.plan.max_batch == 8 and len(log.plan.run) == 8
