"""The scheduling mechanism: which sequences hold slots, which decode in this step, who is preempted.

Policy and mechanism are apart, as in vLLM's scheduler. A `Policy` (one small class in plugins/policies/, found by
name with `load_policy`) only orders the runnable sequences and accounts the service they got. The `Scheduler`
here turns that order into a step plan that respects the slots, `max_batch` sequences per step and the per-step
token budget, and applies the rules every policy shares:

* scheduling classes (`SchedInfo.sched_class`, like `chrt`) come before the policy's order: interactive, then
  normal, then batch, then idle. An idle sequence only gets a slot or a batch place nobody else wants, and an idle
  slot holder is taken off its slot as soon as a non-idle sequence needs it, under every policy;
* a sequence runnable but not running for `boost_after_s` is boosted (`seq.boosted`) until it is served: it goes
  first within its class, and a boosted batch sequence is lifted to the normal class (a boost never lifts a
  sequence above interactive ones, nor an idle one above anyone);
* a stopped sequence gets no tokens; when a slot is needed, stopped holders are the first to give theirs up;
* a preemptive policy takes a slot from a lower-ranked holder only once that holder has kept it for
  `policy.min_residency()` steps, so nobody is swapped out right after being swapped in (no thrashing);
* the serial policy bypasses all that: one request at a time, to completion, in arrival order.

Two resources are scheduled: slots (KV residency: changing hands costs a swap) and batch places (free to change
from one step to the next). A sequence holding a slot but left out of this step's batch keeps its KV.

The engine thread calls `plan(seqs, now)` once per step, then `account(seq, prompt_tokens, generated_tokens)` for
each sequence that got tokens in it; nothing here touches llama.cpp. Context switches (`seq.switches`) are
counted by the engine when it preempts, not here.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

from .discovery import scan
from .requests import SCHED_CLASSES, SchedInfo

# Linux CFS's weight for each nice level (kernel/sched/core.c, sched_prio_to_weight): each step is ~1.25x.
NICE_TO_WEIGHT = [
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916,
    9548, 7620, 6100, 4904, 3906, 3121, 2501, 1991, 1586, 1277,
    1024, 820, 655, 526, 423, 335, 272, 215, 172, 137,
    110, 87, 70, 56, 45, 36, 29, 23, 18, 15,
]  # fmt: skip
NICE_0_WEIGHT = 1024

# Scheduling classes (SCHED_CLASSES), most urgent first. An unknown class is treated as normal.
CLASS_RANK = {name: i for i, name in enumerate(SCHED_CLASSES)}

PROMPT_WEIGHT = 0.25  # service of one prompt token against one generated token, for policies that do not say

_SERVED = "sched.boost_served"  # SeqState.extra key: a boosted sequence got tokens


INTERACTIVE_SLOWDOWN = 1.8  # an interactive agent's step may cost at most this many one-sequence steps


def nice_weight(nice: int) -> int:
    return NICE_TO_WEIGHT[max(-20, min(19, int(nice))) + 20]


def class_rank(seq: SeqState) -> int:
    return CLASS_RANK.get(seq.sched.sched_class, CLASS_RANK["normal"])


@dataclass
class SeqState:
    """The scheduler's view of one request; the engine updates it, the scheduler and policies read it."""

    rid: int
    sched: SchedInfo
    arrival: float
    prompt_len: int
    state: str = "waiting"  # waiting | prefill | decode | swapped | finished
    n_prefilled: int = 0  # prompt tokens whose KV is in place
    has_slot: bool = False
    last_ran: float = 0.0  # monotonic time of the last step it got tokens in
    waiting_since: float = 0.0  # since when it is runnable but not running (0 = not waiting)
    service: float = 0.0  # the policy's measure of service received (fair: the agent's virtual service)
    quantum_used: int = 0  # tokens since it last got the CPU (reset when a step leaves it out)
    boosted: bool = False  # waited past boost_after_s; cleared at the plan after it was served
    switches: int = 0  # context switches (counted by the engine when it preempts)
    admitted_step: int = -1  # the scheduler's step number at its last admission (minimum residency)
    tokens: int = 0  # prompt + generated tokens it was served (all policies)
    extra: dict = field(default_factory=dict)  # policy-private state; keys are prefixed with the policy's name

    @property
    def runnable(self) -> bool:
        return not self.sched.stopped and self.state != "finished"

    @property
    def pending_prompt(self) -> int:
        return max(0, self.prompt_len - self.n_prefilled)

    # The engine's bookkeeping of a sequence's slot, here so that the engine and the scheduler tests' fake engine
    # run the same code.
    def admitted(self, decoding: bool) -> None:
        """It got a slot: it decodes when a sampled token waits to be decoded, else it (re)fills its prompt."""
        self.has_slot = True
        if self.state in ("waiting", "swapped"):
            self.state = "decode" if decoding else "prefill"

    def preempted(self, swapped: bool) -> None:
        """Its slot was taken, a context switch: its KV was saved to RAM (`swapped`) or dropped for recompute."""
        self.switches += 1
        self.has_slot = False
        self.state = "swapped" if swapped else "waiting"


# --- policies ---------------------------------------------------------------------------------------------------


class Policy:
    """Orders runnable sequences; the first in the order runs first. Subclasses live in plugins/policies/.

    A policy is one small class with a `name` (how `load_policy` finds it), a one-line `description`, and
    `params`: its tunables with their defaults (an instance's `self.params` holds the values in force). It may
    override:

    * `key(seq, now)`: a sort key, lower runs first (the default: arrival, first come first served);
    * `rank(seqs, now)`: the whole order, when a key per sequence is not enough (default: sorted by `key`);
    * `on_wake(seq, active)`: a sequence became runnable (a new request, or its agent continued after a stop);
      `active` is every live sequence, possibly including `seq` itself;
    * `account(seq, prompt_tokens, generated_tokens)`: the service it got in the step that just ran;
    * `min_residency()`: steps an admitted sequence keeps its slot before a better-ranked one may take it;
    * `check()`: validate `self.params` (raise ValueError with a one-line message).

    `preemptive`: may a waiting sequence take the slot of a lower-ranked holder? `serial`: one request at a time,
    to completion (the mechanism then ignores classes, boosts and the order). Policies must not change a
    sequence's slot or state: that is the engine's.

    The base class itself orders first come, first served and never preempts, so an engine built without a policy
    behaves as `fifo`; it is not registered under a name.
    """

    name: ClassVar[str] = "fifo"
    description: ClassVar[str] = "first come, first served into free slots, batched, never preempted"
    # Each value has its default's type (float, int, bool or str: `_coerce`), which differs by key: Any.
    params: ClassVar[dict[str, Any]] = {}
    preemptive: ClassVar[bool] = False
    serial: ClassVar[bool] = False
    residency: ClassVar[int] = 16  # default minimum residency, in steps

    def __init__(self, **params: float | int | bool | str) -> None:
        defaults = type(self).params
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            known = ", ".join(sorted(defaults)) or "none"
            raise ValueError(
                f"scheduling policy '{self.name}' has no parameter '{unknown[0]}' (its parameters: {known})"
            )
        values = dict(defaults)
        for k, v in params.items():
            values[k] = _coerce(self.name, k, v, defaults[k])
        self.params = values  # type: ignore[misc]  # the instance's values shadow the class's defaults
        self.check()

    def check(self) -> None:
        """Validate self.params; raise ValueError naming the parameter."""

    def key(self, seq: SeqState, now: float) -> tuple:
        return (seq.arrival, seq.rid)

    def rank(self, seqs: list[SeqState], now: float) -> list[SeqState]:
        return sorted(seqs, key=lambda s: self.key(s, now))

    def on_wake(self, seq: SeqState, active: list[SeqState]) -> None:
        """A sequence became runnable (arrived, or continued after a stop)."""

    def account(self, seq: SeqState, prompt_tokens: int, generated_tokens: int) -> None:
        """Service received in the step that just ran (the default: tokens, prompt ones weighted 0.25)."""
        seq.service += generated_tokens + PROMPT_WEIGHT * prompt_tokens

    def min_residency(self) -> int:
        return self.residency

    def describe(self) -> dict:
        return {
            "policy": self.name,
            "description": self.description,
            "preemptive": self.preemptive,
            "params": dict(self.params),
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"<policy {self.name}({args})>"


def _coerce(policy: str, key: str, value: Any, default: object) -> object:
    where = f"scheduling policy '{policy}': parameter '{key}'"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, int | float):
        if isinstance(value, bool):
            raise ValueError(f"{where} must be a number, got {value!r}")
        try:
            num = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be a number, got {value!r}") from None
        if not math.isfinite(num):
            raise ValueError(f"{where} must be a finite number, got {value!r}")
        if isinstance(default, int):
            if num != int(num):
                raise ValueError(f"{where} must be a whole number, got {value!r}")
            return int(num)
        return num
    return str(value)


# --- discovery ---------------------------------------------------------------------------------------------------

def _policies_in(obj: object) -> list[type[Policy]]:
    """Policy classes a module holds (or the class itself): subclasses of Policy that set their own `name`."""
    if inspect.isclass(obj):
        candidates: Iterable[object] = [obj]
    elif isinstance(obj, ModuleType):
        candidates = vars(obj).values()
    else:
        return []
    return [
        c for c in candidates
        if inspect.isclass(c) and issubclass(c, Policy) and c is not Policy
        and isinstance(c.__dict__.get("name"), str) and c.__dict__["name"]
    ]


def available_policies(
    extra_paths: Iterable[str] = (), *, errors: list[str] | None = None
) -> dict[str, type[Policy]]:
    """Every policy findable now, by name: aiosh's own `aiosh.plugins` entry points, then the .py files of the
    extra plugin folders (and their `policies/` subfolders), then other distributions' entry points (one may name
    a Policy subclass or a module holding some). The first found of a name wins. A plugin that fails to import is
    skipped; its one-line reason is appended to `errors` when given."""
    errs: list[str] = errors if errors is not None else []
    found: dict[str, type[Policy]] = {}

    def collect(obj: object, _origin: str) -> None:
        for cls in _policies_in(obj):
            found.setdefault(cls.name, cls)

    scan(extra_paths, ("policies",), collect, errs)
    return dict(sorted(found.items()))


def load_policy(name: str, params: dict | None = None, extra_paths: Iterable[str] = ()) -> Policy:
    """An instance of the policy called `name`, with `params` over its defaults.

    One parameter table may carry every policy's knobs (aiosh.toml's [scheduler] has `quantum` and
    `prompt_weight` side by side): a parameter that some other known policy declares is ignored here, while one
    that no policy declares is an error (a typo). Errors are ValueError with a one-line message."""
    errors: list[str] = []
    known = available_policies(extra_paths, errors=errors)
    cls = known.get(name)
    if cls is None:
        msg = f"unknown scheduling policy '{name}' (known: {', '.join(known) or 'none'})"
        if errors:
            msg += f"; failed to load: {'; '.join(errors)}"
        raise ValueError(msg)
    params = dict(params or {})
    declared_elsewhere = {k for other in known.values() for k in other.params}
    mine = {k: v for k, v in params.items() if k in cls.params or k not in declared_elsewhere}
    return cls(**mine)


# --- the mechanism -----------------------------------------------------------------------------------------------


@dataclass
class Plan:
    run: list[SeqState]  # sequences that take part in this step, most urgent first (budget goes in this order)
    admit: list[SeqState]  # of those, the ones that need a slot now, in order
    preempt: list[SeqState]  # sequences that must give up their slot first
    max_batch: int  # the batch cap in force for this step (smaller while an interactive sequence runs)
    token_budget: int = 0  # tokens this step may take (0 = the scheduler's token_budget)


class Scheduler:
    """Turns a policy's order into a step plan within slots, max_batch and the token budget."""

    def __init__(
        self, policy: Policy, n_slots: int, max_batch: int, token_budget: int, *,
        boost_after_s: float = 5.0, interactive_batch: int = 0,
    ) -> None:
        self.policy = policy
        self.n_slots = n_slots
        self.max_batch = max_batch
        self.token_budget = token_budget
        self.boost_after_s = boost_after_s
        self.interactive_batch = interactive_batch  # 0 = from measured step times (see _interactive_batch)
        self._step_s: dict[int, float] = {}  # decode-only step seconds by batch width (moving average)
        self.steps = 0  # plans made so far: the clock of minimum residency
        self._now = 0.0
        self._was_runnable: dict[int, bool] = {}

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy

    # --- the plan -------------------------------------------------------------------------------------------
    def plan(self, seqs: list[SeqState], now: float | None = None) -> Plan:
        now = time.monotonic() if now is None else now
        self.steps += 1
        self._now = now
        live = [s for s in seqs if s.state != "finished"]
        self._observe(live, now)
        runnable = [s for s in live if s.runnable]
        if self.policy.serial:
            for s in live:
                s.boosted = False
            plan = self._plan_serial(live, runnable)
        else:
            self._update_boosts(live, now)
            order = self.order(runnable, now)
            n_interactive = sum(1 for s in order if class_rank(s) == CLASS_RANK["interactive"])
            plan = self._plan(live, order, self._interactive_batch(self.max_batch, n_interactive)
                              if n_interactive else self.max_batch)
            if n_interactive and not any(class_rank(s) == CLASS_RANK["interactive"] for s in plan.run):
                plan = self._plan(live, order, self.max_batch)  # none can run now (no slot): no point shrinking
        for s in plan.admit:
            s.admitted_step = self.steps
        in_run = {s.rid for s in plan.run}
        for s in live:
            if s.rid not in in_run:
                s.quantum_used = 0
        return plan

    def order(self, runnable: list[SeqState], now: float) -> list[SeqState]:
        """Class first, boosted first within it, then the policy's own order."""
        ranked = self.policy.rank(list(runnable), now)
        pos = {s.rid: i for i, s in enumerate(ranked)}
        return sorted(ranked, key=lambda s: (self._tier(s), not s.boosted, pos[s.rid]))

    @staticmethod
    def _tier(seq: SeqState) -> int:
        tier = class_rank(seq)
        if seq.boosted and tier != CLASS_RANK["idle"]:
            tier = min(tier, CLASS_RANK["normal"])
        return tier

    def _plan(self, live: list[SeqState], order: list[SeqState], max_batch: int) -> Plan:
        holders = [s for s in live if s.has_slot]
        free = self.n_slots - len(holders)
        run: list[SeqState] = []
        admit: list[SeqState] = []
        preempt: list[SeqState] = []
        gone: set[int] = set()  # rids of holders chosen as victims
        placed: set[int] = set()  # rids in run
        for s in order:
            if len(run) >= max_batch:
                break
            if s.rid in gone:
                continue  # a lower-ranked holder whose slot an earlier sequence took
            if s.has_slot:
                run.append(s)
                placed.add(s.rid)
                continue
            if free > 0:
                free -= 1
            else:
                victim = self._victim(s, order, holders, placed | gone)
                if victim is None:
                    continue  # it waits; a lower-ranked sequence that holds a slot may take the batch place
                preempt.append(victim)
                gone.add(victim.rid)
            admit.append(s)
            run.append(s)
            placed.add(s.rid)
        budget = self.token_budget
        if any(class_rank(s) == CLASS_RANK["interactive"] for s in run):
            budget = self._interactive_budget(run)
        return Plan(run=run, admit=admit, preempt=preempt, max_batch=max_batch, token_budget=budget)

    def _victim(
        self, s: SeqState, order: list[SeqState], holders: list[SeqState], taken: set[int]
    ) -> SeqState | None:
        """The holder to give its slot to `s`, or None: stopped holders first (the one idle longest), then idle
        class holders when `s` is not idle, then (preemptive policies only) the lowest-ranked holder that has
        kept its slot for the policy's minimum residency. Holders already in this step's batch are never taken;
        every other runnable holder ranks below `s` (the order is walked from the top)."""
        candidates = [h for h in holders if h.rid not in taken]
        stopped = sorted((h for h in candidates if not h.runnable), key=lambda h: (h.last_ran, h.rid))
        if stopped:
            return stopped[0]
        rank_of = {x.rid: i for i, x in enumerate(order)}
        below = sorted((h for h in candidates if h.rid in rank_of), key=lambda h: -rank_of[h.rid])
        if class_rank(s) != CLASS_RANK["idle"]:
            for h in below:
                if class_rank(h) == CLASS_RANK["idle"]:
                    return h
        if not self.policy.preemptive:
            return None
        residency = self.policy.min_residency()
        for h in below:
            if self.steps - h.admitted_step >= residency:
                return h
        return None

    def kv_victim(self, seqs: list[SeqState], now: float | None = None) -> SeqState | None:
        """The slot holder to swap out when the KV pool is full (for the engine's KV-full path): a stopped holder
        (idle longest) first, then the holder ranked last (class, boost, policy order); never the only runnable
        holder, so the step can make progress. None when there is nobody to take."""
        now = self._now if now is None else now
        holders = [s for s in seqs if s.has_slot and s.state != "finished"]
        stopped = sorted((s for s in holders if not s.runnable), key=lambda s: (s.last_ran, s.rid))
        if stopped:
            return stopped[0]
        running = [s for s in holders if s.runnable]
        if len(running) < 2:
            return None
        if self.policy.serial:
            return max(running, key=lambda s: (s.arrival, s.rid))
        return self.order(running, now)[-1]

    def _plan_serial(self, live: list[SeqState], runnable: list[SeqState]) -> Plan:
        """One request at a time, to completion, in arrival order; classes, nice and boosts do not apply."""
        if not runnable:
            return Plan(run=[], admit=[], preempt=[], max_batch=1, token_budget=self.token_budget)
        first = min(runnable, key=lambda s: (not s.has_slot, s.arrival, s.rid))
        if first.has_slot:
            return Plan(run=[first], admit=[], preempt=[], max_batch=1, token_budget=self.token_budget)
        holders = [s for s in live if s.has_slot]  # none of them is runnable: all stopped
        preempt: list[SeqState] = []
        if len(holders) >= self.n_slots:
            preempt = sorted(holders, key=lambda h: (h.last_ran, h.rid))[:1]
        return Plan(run=[first], admit=[first], preempt=preempt, max_batch=1, token_budget=self.token_budget)

    # --- interactive -----------------------------------------------------------------------------------------
    def _interactive_batch(self, max_batch: int, n_interactive: int = 1) -> int:
        """While an interactive sequence runs, the batch shrinks so that its steps stay short (latency over
        throughput), never below the number of interactive sequences.

        How far: `interactive_batch` if set; else the widest batch whose measured step costs at most
        INTERACTIVE_SLOWDOWN one-sequence steps (on this 2-core CPU a 4-wide step costs ~3x a single one, so the
        interactive agent decodes nearly alone; on a GPU the batch barely shrinks); before any measurement, a
        quarter of max_batch. The batch grows back at the first step with no interactive sequence runnable."""
        cap = self.interactive_batch or self._measured_interactive_cap(max_batch) or math.ceil(max_batch / 4)
        return max(1, min(max_batch, max(n_interactive, cap)))

    def observe_step(self, width: int, seconds: float) -> None:
        """The engine reports each decode-only step: how long a step of this many sequences takes here."""
        prev = self._step_s.get(width)
        self._step_s[width] = seconds if prev is None else 0.8 * prev + 0.2 * seconds

    def _measured_interactive_cap(self, max_batch: int) -> int | None:
        """The widest batch whose step (measured, or interpolated between measured widths) costs at most
        INTERACTIVE_SLOWDOWN x a one-sequence step, so an interactive agent keeps over half its solo speed on
        this machine: on a GPU wide batches are nearly free, on a small CPU they are not. None until a
        one-sequence step and a wider one have been seen (then the quarter rule applies)."""
        t1 = self._step_s.get(1)
        known = sorted(self._step_s.items())
        if t1 is None or len(known) < 2:
            return None
        best = 1
        for w in range(2, max_batch + 1):
            lo = max((k for k in known if k[0] <= w), key=lambda k: k[0])
            hi = min((k for k in known if k[0] >= w), key=lambda k: k[0], default=known[-1])
            est = lo[1] if hi[0] == lo[0] else lo[1] + (hi[1] - lo[1]) * (w - lo[0]) / (hi[0] - lo[0])
            if est > INTERACTIVE_SLOWDOWN * t1:
                break
            best = w
        return best

    def _interactive_budget(self, run: list[SeqState]) -> int:
        """While an interactive sequence runs, other sequences' prompt chunks could stretch its step far more
        than batch width does (a 512-token chunk costs tens of decode steps on CPU). So the step's token budget
        is the interactive sequences' own pending prompt plus one token per sequence in the batch, and at least
        a quarter of the normal budget so prefill elsewhere still progresses."""
        own = sum(s.pending_prompt for s in run if class_rank(s) == CLASS_RANK["interactive"])
        return min(self.token_budget, max(self.token_budget // 4, own + len(run)))

    # --- bookkeeping -----------------------------------------------------------------------------------------
    def _observe(self, live: list[SeqState], now: float) -> None:
        """Notice sequences that became runnable again (continued after a stop): they wake (the policy lifts
        them, as it does new requests, which the engine reports itself) and their wait starts now."""
        seen: dict[int, bool] = {}
        for s in live:
            was = self._was_runnable.get(s.rid)
            if was is False and s.runnable:
                s.waiting_since = now
                s.boosted = False
                self.policy.on_wake(s, [x for x in live if x.runnable])
            seen[s.rid] = s.runnable
        self._was_runnable = seen

    def _update_boosts(self, live: list[SeqState], now: float) -> None:
        for s in live:
            if s.extra.pop(_SERVED, False) or not s.runnable:
                s.boosted = False  # served in the last step (it showed as boosted until then), or stopped
            elif not s.boosted and s.waiting_since and now - s.waiting_since >= self.boost_after_s:
                s.boosted = True  # until served (account clears it)

    def end_step(self, served: Sequence[tuple[SeqState, int, int]], live: Iterable[SeqState], now: float) -> None:
        """The bookkeeping after a step, for the engine and the scheduler tests' fake engine alike: each served
        sequence, (seq, prompt tokens, generated tokens), ran `now` and waits no more; a runnable one of `live` that
        got nothing starts waiting (and may be boosted); then each served one's tokens are accounted."""
        rids = set()
        for s, _, _ in served:
            s.last_ran = now
            s.waiting_since = 0.0
            rids.add(s.rid)
        for s in live:
            if s.rid not in rids and s.runnable and not s.waiting_since:
                s.waiting_since = now
        for s, prompt_tokens, generated_tokens in served:
            self.account(s, prompt_tokens, generated_tokens)

    def account(self, seq: SeqState, prompt_tokens: int, generated_tokens: int) -> None:
        n = prompt_tokens + generated_tokens
        if n <= 0:
            return
        seq.last_ran = self._now
        seq.quantum_used += n
        seq.tokens += n
        if seq.boosted:
            seq.extra[_SERVED] = True  # the boost ends at the next plan: it stays visible for this step's stats
        self.policy.account(seq, prompt_tokens, generated_tokens)
