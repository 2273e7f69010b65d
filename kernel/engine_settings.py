"""The engine's settings (from `[kernel]` and `[model]`), alone in a module: the start-up checks read them for
every `aiosh` run, which should not pay for the engine's other records."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineSettings:
    n_ctx: int = 2048  # one sequence's window
    n_slots: int = 16
    kv_cells: int = 0  # 0 = n_slots * 2048
    max_batch: int = 0  # 0 = n_slots
    batch_tokens: int = 512
    n_threads: int = 0  # 0 = all cores
    unified_kv: bool = True
    step_history: int = 2000

    @property
    def effective_kv_cells(self) -> int:
        return self.kv_cells or self.n_slots * 2048

    @property
    def effective_max_batch(self) -> int:
        return self.max_batch or self.n_slots
