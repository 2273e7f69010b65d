"""fifo: first come, first admitted into free slots, all batched together, never preempted (llama.cpp's server)."""

from aiosh.api import Policy, SeqState


class Fifo(Policy):
    name = "fifo"
    description = "first come, first served into free slots, batched, never preempted (llama.cpp's server)"
    preemptive = False

    def key(self, seq: SeqState, now: float) -> tuple:
        return (seq.arrival, seq.rid)
