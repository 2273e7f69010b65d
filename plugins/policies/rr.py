"""rr: round robin. Sequences queue in turn; the head of the queue runs, and a sequence that has used `quantum`
tokens (prompt and generated alike) goes to the back. It matters only when more sequences are runnable than fit
in a step's batch (or in the slots): then places change hands on quantum boundaries, never in between."""

import itertools

from aiosh.api import Policy, SeqState

TURN = "rr.turn"


class RoundRobin(Policy):
    name = "rr"
    description = "round robin: each runnable sequence gets `quantum` tokens in turn when the batch is full"
    params = {"quantum": 16}
    preemptive = True

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._turns = itertools.count()

    def check(self) -> None:
        if self.params["quantum"] < 1:
            raise ValueError(f"scheduling policy 'rr': parameter 'quantum' must be >= 1, got {self.params['quantum']}")

    def on_wake(self, seq: SeqState, active: list[SeqState]) -> None:
        seq.extra[TURN] = next(self._turns)  # to the back of the queue

    def rank(self, seqs: list[SeqState], now: float) -> list[SeqState]:
        for s in sorted(seqs, key=lambda s: (s.arrival, s.rid)):  # queued before this policy was in force
            if TURN not in s.extra:
                s.extra[TURN] = next(self._turns)
        return sorted(seqs, key=lambda s: (s.extra[TURN], s.rid))

    def account(self, seq: SeqState, prompt_tokens: int, generated_tokens: int) -> None:
        super().account(seq, prompt_tokens, generated_tokens)
        if seq.quantum_used >= self.params["quantum"]:  # quantum over: to the back, with a fresh quantum
            seq.extra[TURN] = next(self._turns)
            seq.quantum_used = 0

    def min_residency(self) -> int:
        return int(self.params["quantum"])
