"""priority: static priority from nice (lower runs first, ties in arrival order), preemptive, with aging: a
sequence that waits gains one nice level every `aging_s` seconds of waiting, so a nice 19 agent behind busy
nice 0 ones gets through after about 19 * aging_s seconds; it drops back to its own level once it has run."""

from aiosh.api import Policy, SeqState


class Priority(Policy):
    name = "priority"
    description = "static priority from nice, preemptive; waiting ages a sequence one level per `aging_s` seconds"
    params = {"aging_s": 0.5}
    preemptive = True

    def check(self) -> None:
        if self.params["aging_s"] <= 0:
            raise ValueError(f"scheduling policy 'priority': parameter 'aging_s' must be > 0, got {self.params['aging_s']}")

    def effective(self, seq: SeqState, now: float) -> float:
        waited = now - seq.waiting_since if seq.waiting_since else 0.0
        return seq.sched.nice - max(0.0, waited) / self.params["aging_s"]

    def key(self, seq: SeqState, now: float) -> tuple:
        return (self.effective(seq, now), seq.arrival, seq.rid)
