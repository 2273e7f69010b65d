"""The KV cache manager of the engine: one llama context's sequence slots and the cells behind their tokens.

It keeps a model of the cells (each token's cell, reference-counted: a prefix copied from another sequence with
`seq_cp` shares that sequence's cells), chooses a slot for a request (its conversation's, else the longest cached
prefix, else an empty or the least recently used one), reuses a resident prefix (its own or another slot's),
truncates, frees idle caches when a step needs cells, and saves or drops a sequence's KV when it is preempted —
whichever its cost model (refined by measurement) says is cheaper: swap (`llama_state_seq_get/set_data`, to RAM)
or recompute (prefill again). Engine thread only.
"""

from __future__ import annotations

import ctypes
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from .llama_bindings import ll

MIN_SHARED_PREFIX = 8  # below this, copying a prefix between slots is not worth evicting anything


@dataclass
class Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # tokens whose KV this sequence holds, positions 0..n-1
    cells: list[int] = field(default_factory=list)  # our model of the KV cells behind those tokens
    active: Any = None  # the engine's request holding it (None: idle, its KV a cache)
    conversation: str | None = None
    last_used: float = 0.0


class KVCache:
    """Slots and cells of one llama context (see the module's doc)."""

    def __init__(self, ctx: Any, n_slots: int) -> None:
        self.ctx = ctx
        self.mem = ll.llama_get_memory(ctx)
        self.n_cells = ll.llama_n_ctx(ctx)
        self.slots = [Slot(seq=i) for i in range(n_slots)]
        self._cell_ids = itertools.count()
        self._cell_refs: dict[int, int] = {}
        self.swap_cost_per_byte = 1e-9  # seconds, refined by measurement
        self.prefill_cost_per_token = 1e-3  # seconds, refined by measurement

    # --- reading --------------------------------------------------------------------------------------------
    @property
    def used(self) -> int:
        """Cells in use (a shared cell once)."""
        return len(self._cell_refs)

    def cached_idle(self) -> int:
        """Cells only idle slots hold (caches that can be freed)."""
        if not any(s.active is None and s.cells for s in self.slots):
            return 0
        active_cells: set[int] = set()
        for s in self.slots:
            if s.active is not None:
                active_cells.update(s.cells)
        return self.used - len(active_cells)

    def resident_prefix(self, prompt: list[int]) -> int:
        """The longest prefix of `prompt` any slot holds."""
        return max((common_prefix(s.tokens, prompt) for s in self.slots), default=0)

    # --- choosing and filling a slot ------------------------------------------------------------------------
    def choose(self, prompt: list[int], conversation: str | None, swapped: bool) -> Slot | None:
        """An idle slot for a request: a swapped-out one gets the emptiest; else its conversation's slot, else the
        longest cached prefix; with nothing worth reusing, an empty slot, else the least recently used cache
        (so that an idle conversation's KV survives for its next turn). None when every slot is busy."""
        idle = [s for s in self.slots if s.active is None]
        if not idle:
            return None
        if swapped:
            return min(idle, key=lambda s: (len(s.tokens), s.last_used))
        if conversation:
            for s in idle:
                if s.conversation == conversation:
                    return s

        def score(s: Slot) -> tuple:
            return (common_prefix(s.tokens, prompt), -len(s.tokens) if not s.tokens else 0, -s.last_used)

        best = max(idle, key=score)
        if common_prefix(best.tokens, prompt) < MIN_SHARED_PREFIX:
            best = min(idle, key=lambda s: (len(s.tokens) > 0, s.conversation is not None, s.last_used))
        return best

    def reuse_prefix(self, slot: Slot, prompt: list[int]) -> int:
        """Keep what `slot` holds of `prompt`, or copy a longer prefix another slot holds (a shared system prompt:
        its cells are shared); the rest of the slot is dropped. Returns the tokens kept (never the last one of
        the prompt: its logits start generation)."""
        keep = common_prefix(slot.tokens, prompt)
        donor, donor_len = None, keep
        for other in self.slots:
            if other is slot:
                continue
            n = common_prefix(other.tokens, prompt)
            if n > donor_len + MIN_SHARED_PREFIX:
                donor, donor_len = other, n
        limit = len(prompt) - 1
        if donor is not None:
            donor_len = min(donor_len, limit)
            self.truncate(slot, 0)
            ll.llama_memory_seq_cp(self.mem, donor.seq, slot.seq, 0, donor_len)
            slot.tokens = list(prompt[:donor_len])
            slot.cells = list(donor.cells[:donor_len])
            for cid in slot.cells:
                self._cell_refs[cid] += 1
            return donor_len
        keep = min(keep, limit)
        self.truncate(slot, keep)
        return keep

    def truncate(self, slot: Slot, keep: int) -> None:
        """Drop this sequence's KV from position keep on (the cells stay while another sequence shares them)."""
        if keep >= len(slot.tokens):
            return
        if not ll.llama_memory_seq_rm(self.mem, slot.seq, keep, -1):
            ll.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
            keep = 0
        for cid in slot.cells[keep:]:
            self._cell_refs[cid] -= 1
            if self._cell_refs[cid] == 0:
                del self._cell_refs[cid]
        del slot.tokens[keep:]
        del slot.cells[keep:]

    def forget(self, slot: Slot) -> None:
        """An idle slot's cache given up: its KV dropped, its conversation no longer its."""
        self.truncate(slot, 0)
        slot.conversation = None

    # --- a decode step --------------------------------------------------------------------------------------
    def ensure_cells(self, needed: int) -> None:
        """Free idle caches, least recently used first, until a step's new tokens fit in the KV pool."""
        if self.n_cells - self.used >= needed:
            return
        for slot in sorted((s for s in self.slots if s.active is None and s.tokens), key=lambda s: s.last_used):
            self.forget(slot)
            if self.n_cells - self.used >= needed:
                return

    def written(self, slot: Slot) -> None:
        """The tokens appended to `slot.tokens` were decoded: each gets a cell of its own."""
        for _ in range(len(slot.tokens) - len(slot.cells)):
            cid = next(self._cell_ids)
            self._cell_refs[cid] = 1
            slot.cells.append(cid)

    def unwritten(self, slot: Slot) -> int:
        """A refused decode: drop the tokens appended for it (no cell was written); returns how many."""
        extra = len(slot.tokens) - len(slot.cells)
        if extra > 0:
            ll.llama_memory_seq_rm(self.mem, slot.seq, len(slot.cells), -1)
            del slot.tokens[len(slot.cells):]
        return max(0, extra)

    def learn_prefill(self, seconds_per_token: float) -> None:
        self.prefill_cost_per_token = 0.8 * self.prefill_cost_per_token + 0.2 * seconds_per_token

    # --- the context switch ---------------------------------------------------------------------------------
    def swap_out(self, slot: Slot) -> tuple[ctypes.Array, list[int]] | None:
        """Save the sequence's KV to RAM if that is estimated cheaper than recomputing it: (buffer, tokens), or
        None (recompute). The slot's KV is emptied either way (its holder leaves it: the engine's `_detach`)."""
        n = len(slot.tokens)
        size = ll.llama_state_seq_get_size(self.ctx, slot.seq) if n else 0
        saved = None
        if n and 2 * size * self.swap_cost_per_byte <= n * self.prefill_cost_per_token:
            t0 = time.perf_counter()
            buf = (ctypes.c_uint8 * size)()
            got = ll.llama_state_seq_get_data(self.ctx, buf, size, slot.seq)
            dt = time.perf_counter() - t0
            if got:
                self.swap_cost_per_byte = 0.8 * self.swap_cost_per_byte + 0.2 * (dt / max(1, got))
                saved = (buf, list(slot.tokens))
        self.forget(slot)
        slot.last_used = time.monotonic()
        return saved

    def swap_in(self, slot: Slot, buf: ctypes.Array, tokens: list[int]) -> bool:
        """Restore a saved sequence into `slot`; False if llama.cpp could not (no room): recompute it then."""
        self.truncate(slot, 0)
        t0 = time.perf_counter()
        ok = ll.llama_state_seq_set_data(self.ctx, buf, len(buf), slot.seq)
        dt = time.perf_counter() - t0
        if not ok:
            return False
        self.swap_cost_per_byte = 0.8 * self.swap_cost_per_byte + 0.2 * (dt / max(1, len(buf)))
        slot.tokens = tokens
        slot.cells = []
        self.written(slot)  # a restored sequence owns fresh cells (it no longer shares any)
        return True


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
