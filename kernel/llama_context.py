"""The llama context the engine decodes in: made from the engine's settings, apart from the engine itself.

Creating it is the slowest part of an engine's start after the model load (llama.cpp allocates and clears the
whole KV pool, ~0.5 s for 16 × 2048 cells here), so the engine process makes it on a loading thread while the rest
of the engine is still being imported (`engine_process`), and hands it to the `Engine`. Imports nothing heavier
than llama.cpp's bindings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import EngineError
from .llama_bindings import ll

if TYPE_CHECKING:
    from .engine_settings import EngineSettings
    from .model import Model


@dataclass
class LlamaContext:
    """A llama context and the figures it was made with."""

    ctx: Any  # llama_context_p
    n_batch: int  # the most tokens one llama_decode takes
    n_threads: int  # in force (the settings say 0 for "all cores")

    def free(self) -> None:
        if self.ctx:
            ll.llama_free(self.ctx)
            self.ctx = None


def create_context(model: Model, settings: EngineSettings) -> LlamaContext:
    """A context over `model` with the KV cells, sequences, batch and threads `settings` ask for."""
    s = settings
    if s.n_ctx > model.info.n_ctx_train:
        raise EngineError(
            f"{model.path}: model.n_ctx {s.n_ctx} is larger than the model's trained context {model.info.n_ctx_train}"
        )
    cp = ll.llama_context_default_params()
    cp.n_ctx = s.effective_kv_cells if s.unified_kv else s.n_ctx * s.n_slots
    cp.n_batch = max(s.batch_tokens + s.n_slots, 64)
    cp.n_ubatch = cp.n_batch
    cp.n_seq_max = s.n_slots
    threads = s.n_threads or os.cpu_count() or 1
    cp.n_threads = threads
    cp.n_threads_batch = threads
    cp.kv_unified = s.unified_kv
    cp.no_perf = True
    ctx = ll.llama_init_from_model(model.ptr, cp)
    if not ctx:
        raise EngineError(
            f"{model.path}: llama.cpp could not create a context of {cp.n_ctx} KV cells "
            f"(kernel.kv_cells / kernel.slots too large for this machine?)"
        )
    return LlamaContext(ctx, cp.n_batch, threads)
