"""The scheduling mechanism: which sequences hold slots, which decode in this step, who is preempted.

Policy and mechanism are apart, as in vLLM's scheduler: a `Policy` (plugins/policies/) only ranks runnable
sequences and accounts the service they got; the `Scheduler` here turns that ranking into a plan that respects
the slots, `max_batch` sequences per step, and the per-step token budget. The engine thread calls `plan` once per
step and `account` after it; nothing here touches llama.cpp.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kernel.requests import SchedInfo

# Linux CFS's weight for each nice level (kernel/sched/core.c, sched_prio_to_weight): each step is ~1.25x.
NICE_TO_WEIGHT = [
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916,
    9548, 7620, 6100, 4904, 3906, 3121, 2501, 1991, 1586, 1277,
    1024, 820, 655, 526, 423, 335, 272, 215, 172, 137,
    110, 87, 70, 56, 45, 36, 29, 23, 18, 15,
]  # fmt: skip


def nice_weight(nice: int) -> int:
    return NICE_TO_WEIGHT[max(-20, min(19, nice)) + 20]


@dataclass
class SeqState:
    """The scheduler's view of one request; the engine updates it, policies read it."""

    rid: int
    sched: SchedInfo
    arrival: float
    prompt_len: int
    state: str = "waiting"  # waiting | prefill | decode | swapped | finished
    n_prefilled: int = 0  # prompt tokens whose KV is in place
    generated: int = 0
    kv_tokens: int = 0
    has_slot: bool = False
    admitted_at: float = 0.0
    last_ran: float = 0.0  # monotonic time of the last step it took part in
    waiting_since: float = 0.0  # since when it is runnable but not running
    service: float = 0.0  # weighted tokens received (fair share); policies may set it
    quantum_used: int = 0  # tokens since it last got the CPU (round robin)
    boosted: bool = False
    switches: int = 0
    extra: dict = field(default_factory=dict)  # policy-private state

    @property
    def runnable(self) -> bool:
        return not self.sched.stopped and self.state != "finished"

    @property
    def pending_prompt(self) -> int:
        return max(0, self.prompt_len - self.n_prefilled)


class Policy:
    """Ranks runnable sequences; lower `key` runs first. Subclasses live in plugins/policies/."""

    name = "fifo"
    preemptive = False  # may a running sequence lose its slot to a better-ranked waiting one?
    serial = False  # one request at a time, to completion (the AIOS baseline)
    description = "first come, first served into free slots, batched, never preempted"

    def __init__(self, **params: float) -> None:
        self.params = params

    def key(self, seq: SeqState, now: float) -> tuple:
        return (seq.arrival, seq.rid)

    def rank(self, seqs: list[SeqState], now: float) -> list[SeqState]:
        return sorted(seqs, key=lambda s: self.key(s, now))

    def on_wake(self, seq: SeqState, active: list[SeqState]) -> None:
        """A sequence became runnable (arrived, or continued after a stop)."""

    def account(self, seq: SeqState, prompt_tokens: int, generated_tokens: int) -> None:
        """Service received in the step that just ran."""

    def describe(self) -> dict:
        return {"policy": self.name, **self.params}


@dataclass
class Plan:
    run: list[SeqState]  # sequences that take part in this step, most urgent first (budget goes in this order)
    admit: list[SeqState]  # of those, the ones that need a slot now
    preempt: list[SeqState]  # sequences that must give up their slot first
    max_batch: int


class Scheduler:
    """Turns a policy's ranking into a step plan within slots, max_batch and the token budget."""

    def __init__(self, policy: Policy, n_slots: int, max_batch: int, token_budget: int) -> None:
        self.policy = policy
        self.n_slots = n_slots
        self.max_batch = max_batch
        self.token_budget = token_budget
        self.boost_after_s = 5.0

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy

    def plan(self, seqs: list[SeqState], now: float | None = None) -> Plan:
        now = time.monotonic() if now is None else now
        runnable = [s for s in seqs if s.runnable]
        for s in runnable:  # starvation guard: waited too long -> boosted until served
            s.boosted = bool(s.waiting_since and now - s.waiting_since > self.boost_after_s)
        policy = self.policy
        max_batch = self.max_batch
        if any(s.sched.sched_class == "interactive" for s in runnable):
            max_batch = self._interactive_batch(max_batch)
        if policy.serial:
            return self._plan_serial(seqs, runnable, now)
        ranked = sorted(policy.rank(runnable, now), key=lambda s: (not s.boosted,))  # stable: boosted first
        holding = [s for s in seqs if s.has_slot]
        stopped_holding = [s for s in holding if not s.runnable]
        if policy.preemptive:
            wanted = ranked[:max_batch]
        else:
            # Non-preemptive: whoever holds a slot keeps it and runs; newcomers fill the free slots in rank order.
            running = [s for s in ranked if s.has_slot]
            newcomers = [s for s in ranked if not s.has_slot]
            wanted = (running + newcomers)[: max(max_batch, len(running))]
        wanted = wanted[: max(1, max_batch)] if policy.preemptive else wanted
        need = [s for s in wanted if not s.has_slot]
        free = self.n_slots - len(holding)
        preempt: list[SeqState] = []
        if len(need) > free:
            # Victims: stopped agents first, then holders the policy ranks lowest (never one we want now).
            wanted_ids = {s.rid for s in wanted}
            candidates = stopped_holding + [s for s in reversed(ranked) if s.has_slot and s.rid not in wanted_ids]
            if not policy.preemptive:
                candidates = stopped_holding
            for victim in candidates:
                if len(need) <= free + len(preempt):
                    break
                preempt.append(victim)
            admit = need[: free + len(preempt)]
        else:
            admit = need
        admit_ids = {s.rid for s in admit}
        run = [s for s in wanted if s.has_slot or s.rid in admit_ids][:max_batch] if policy.preemptive else [
            s for s in wanted if s.has_slot or s.rid in admit_ids
        ]
        return Plan(run=run, admit=admit, preempt=preempt, max_batch=max_batch)

    def _plan_serial(self, seqs: list[SeqState], runnable: list[SeqState], now: float) -> Plan:
        current = [s for s in runnable if s.has_slot]
        if current:
            return Plan(run=current[:1], admit=[], preempt=[], max_batch=1)
        if not runnable:
            return Plan(run=[], admit=[], preempt=[], max_batch=1)
        first = min(runnable, key=lambda s: (s.arrival, s.rid))
        holding = [s for s in seqs if s.has_slot]
        preempt = holding[:1] if len(holding) >= self.n_slots else []
        return Plan(run=[first], admit=[first], preempt=preempt, max_batch=1)

    def _interactive_batch(self, max_batch: int) -> int:
        """While an interactive agent runs, the batch may shrink so its steps stay short (latency over throughput)."""
        return max_batch

    def account(self, seq: SeqState, prompt_tokens: int, generated_tokens: int) -> None:
        self.policy.account(seq, prompt_tokens, generated_tokens)
