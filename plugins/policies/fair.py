"""fair: weighted fair share of tokens, in the spirit of Linux CFS and the VTC paper (Sheng et al., OSDI '24).

Service is counted in tokens, a prompt token weighing `prompt_weight` of a generated one, and divided by the
weight of the agent's nice level (CFS's table: nice 0 = 1024, each level ~1.25x): that is its virtual service,
and the least served run first. Scheduling is two-level, as CFS group scheduling: a job (process group) has its own
virtual service, charged at the mean weight of its active agents, and the job that has had least runs first; within
it, the agent that has had least. So a job of four agents and a job of one each get half, and two single-agent jobs
at nice 0 and nice 5 get 1024:335 (3.06:1).

Virtual service is kept per agent and per job across their calls. A job or agent that wakes (a new call, or a
continue after a stop) is lifted to the least virtual service among the active ones of its level, so time spent
idle cannot be banked and spent later in a burst, while service it got recently still counts against it.
Like CFS it is work conserving: weights decide who gets a batch place or a slot when there are more takers than
places; when everyone fits, everyone runs."""

import heapq

from aiosh.api import NICE_0_WEIGHT, Policy, SeqState, nice_weight

MAX_REMEMBERED = 4096  # agents and jobs whose virtual service is kept while they are inactive


def agent_key(seq: SeqState) -> tuple:
    return ("pid", seq.sched.owner) if seq.sched.owner else ("rid", seq.rid)


def group_key(seq: SeqState) -> tuple:
    return ("pgid", seq.sched.group) if seq.sched.group else agent_key(seq)


class Fair(Policy):
    name = "fair"
    description = "weighted fair share of tokens (CFS/VTC): by job, then by agent; nice sets the weight"
    params = {"prompt_weight": 0.25}
    preemptive = True

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.vt_agent: dict[tuple, float] = {}
        self.vt_group: dict[tuple, float] = {}
        self._group_weight: dict[tuple, float] = {}

    def check(self) -> None:
        if self.params["prompt_weight"] < 0:
            raise ValueError("scheduling policy 'fair': parameter 'prompt_weight' must be >= 0, "
                             f"got {self.params['prompt_weight']}")

    # waking: no banking of idle time
    def on_wake(self, seq: SeqState, active: list[SeqState]) -> None:
        others = [a for a in active if a.rid != seq.rid and a.runnable]
        ak, gk = agent_key(seq), group_key(seq)
        group_mates = [a for a in others if group_key(a) == gk]
        if not group_mates:  # the job as a whole wakes: lift it among the active jobs
            floor = min((self.vt_group.get(group_key(a), 0.0) for a in others), default=None)
            self.vt_group[gk] = max(self.vt_group.get(gk, 0.0), floor if floor is not None else 0.0)
        # The agent wakes within a busy job: lift it among its job's active agents. If its job wakes with it,
        # among all active agents: only order within a job counts, but so a lone agent's service reads alike.
        mates = [a for a in group_mates if agent_key(a) != ak] or [a for a in others if agent_key(a) != ak]
        floor = min((self.vt_agent.get(agent_key(a), 0.0) for a in mates), default=0.0)
        self.vt_agent[ak] = max(self.vt_agent.get(ak, 0.0), floor)
        seq.service = self.vt_agent[ak]

    def rank(self, seqs: list[SeqState], now: float) -> list[SeqState]:
        """Jobs take places in turn by virtual service, as if each place were one token charged to its job at
        the job's weight; within a job, its agents in order of their own virtual service. So a batch of four
        shared by two equal jobs goes two and two, not four to whichever job is behind by a token."""
        for s in seqs:  # sequences never reported awake (e.g. queued before this policy was in force)
            if agent_key(s) not in self.vt_agent or group_key(s) not in self.vt_group:
                self.on_wake(s, seqs)
        groups: dict[tuple, list[SeqState]] = {}
        weights: dict[tuple, dict[tuple, int]] = {}
        for s in seqs:
            groups.setdefault(group_key(s), []).append(s)
            weights.setdefault(group_key(s), {})[agent_key(s)] = nice_weight(s.sched.nice)
        self._group_weight = {g: sum(w.values()) / len(w) for g, w in weights.items()}
        self._forget(groups, seqs)
        heap = []
        for g, members in groups.items():
            members.sort(key=lambda s: (self.vt_agent[agent_key(s)], s.arrival, s.rid), reverse=True)
            heap.append((self.vt_group[g], members[-1].arrival, members[-1].rid, g))
        heapq.heapify(heap)
        order: list[SeqState] = []
        while heap:
            vt, _, _, g = heapq.heappop(heap)
            members = groups[g]
            order.append(members.pop())
            if members:
                nxt = members[-1]
                heapq.heappush(heap, (vt + NICE_0_WEIGHT / self._group_weight[g], nxt.arrival, nxt.rid, g))
        return order

    def account(self, seq: SeqState, prompt_tokens: int, generated_tokens: int) -> None:
        cost = generated_tokens + self.params["prompt_weight"] * prompt_tokens
        ak, gk = agent_key(seq), group_key(seq)
        weight = nice_weight(seq.sched.nice)
        self.vt_agent[ak] = self.vt_agent.get(ak, 0.0) + cost * NICE_0_WEIGHT / weight
        gw = self._group_weight.get(gk, weight)
        self.vt_group[gk] = self.vt_group.get(gk, 0.0) + cost * NICE_0_WEIGHT / gw
        seq.service = self.vt_agent[ak]

    def _forget(self, members: dict, seqs: list[SeqState]) -> None:
        """Bound memory: past MAX_REMEMBERED entries, inactive agents and jobs are forgotten (a forgotten one that
        wakes is lifted to the least active service, which is what it would mostly get anyway)."""
        if len(self.vt_agent) > MAX_REMEMBERED:
            active = {agent_key(s) for s in seqs}
            self.vt_agent = {k: v for k, v in self.vt_agent.items() if k in active}
        if len(self.vt_group) > MAX_REMEMBERED:
            self.vt_group = {k: v for k, v in self.vt_group.items() if k in members}
