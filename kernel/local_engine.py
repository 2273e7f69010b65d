"""The local engine, set up for a kernel: start-up checks, the backend (a process, or a thread for tests), the
vocabulary the kernel tokenises with.

At start-up only the GGUF header is read (`model_info.read_gguf_facts`, milliseconds): a window larger than the
model's trained context, or a KV pool or step budget beyond what the window, the slots and the machine's memory
allow, is one line before anything is loaded. The weights are loaded by the engine process when the first LLM
call comes (or an interactive shell asks for it in the background); the kernel itself tokenises with a
vocabulary-only load of the same GGUF (no weights, no native compute in the shell's process), made at its first use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config, ConfigError
from .cpu import decide_extra_buffers
from .engine_types import EngineSettings
from .model_info import GGUFFacts, ModelInfo, check_gguf, find_embedded_model, read_gguf_facts
from .requests import EngineError
from .scheduler import Policy

if TYPE_CHECKING:
    from .model import Model

LOGITS_BYTES = 4  # one float per vocabulary entry for every token whose logits llama.cpp keeps


def engine_settings(c: Config) -> EngineSettings:
    k = c.kernel
    return EngineSettings(n_ctx=c.model.n_ctx, n_slots=k.slots, kv_cells=k.kv_cells, max_batch=k.max_batch,
                          batch_tokens=k.batch_tokens, n_threads=c.model.n_threads, unified_kv=k.unified_kv)


def _mem_available() -> int:
    """MemAvailable (bytes) from /proc/meminfo; 0 where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def check_limits(c: Config, facts: GGUFFacts, path: Path, mem_available: int | None = None) -> None:
    """Refuse settings that would abort llama.cpp or exhaust memory, naming the key and the limit."""
    origin = c.source[-1] if getattr(c, "source", None) else "<config>"
    if facts.n_ctx_train and c.model.n_ctx > facts.n_ctx_train:
        raise EngineError(f"{path}: model.n_ctx {c.model.n_ctx} is larger than the model's trained context "
                          f"{facts.n_ctx_train}")
    s = engine_settings(c)
    window = max(s.n_ctx, facts.n_ctx_train)
    most_cells = s.n_slots * window  # no sequence can hold more than the model's trained context
    if c.kernel.kv_cells > most_cells:
        raise ConfigError(origin, f"{c.kernel.kv_cells} is more than kernel.slots × the model's trained context "
                          f"= {s.n_slots} × {window} = {most_cells}", "kernel", "kv_cells")
    cells = s.effective_kv_cells
    if s.batch_tokens > cells:
        raise ConfigError(origin, f"{s.batch_tokens} is more than the KV pool holds ({cells} cells: "
                          "kernel.kv_cells, or kernel.slots × 2048)", "kernel", "batch_tokens")
    avail = _mem_available() if mem_available is None else mem_available
    if avail:
        kv = cells * facts.kv_bytes_per_token
        if kv > avail:
            raise ConfigError(origin, f"{cells} cells need {kv / 2**20:.0f} MiB of KV cache; this machine has "
                              f"{avail / 2**20:.0f} MiB available (at most {avail // max(1, facts.kv_bytes_per_token)}"
                              " cells)", "kernel", "kv_cells" if c.kernel.kv_cells else "slots")
        step = (s.batch_tokens + s.n_slots) * max(1, facts.n_vocab) * LOGITS_BYTES
        if step > avail:
            raise ConfigError(origin, f"{s.batch_tokens} tokens a step need {step / 2**20:.0f} MiB of logits; "
                              f"this machine has {avail / 2**20:.0f} MiB available", "kernel", "batch_tokens")


def model_path(c: Config) -> Path:
    return Path(c.model.path).expanduser() if c.model.path else find_embedded_model()


def provisional_info(path: Path, facts: GGUFFacts) -> ModelInfo:
    """What the header says, until the engine reports the loaded model's own figures."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    return ModelInfo(path=str(path), description=f"{facts.architecture} (loading)" if facts.architecture else "",
                     n_ctx_train=facts.n_ctx_train, n_vocab=facts.n_vocab, n_layer=facts.n_layer, n_params=0,
                     size_bytes=size, kv_bytes_per_token=facts.kv_bytes_per_token)


class Vocabulary:
    """The model's tokeniser and chat template in the kernel's process: a vocabulary-only load, at first use."""

    def __init__(self, path: Path, chat_template: str, info: Callable[[], ModelInfo], verbose: bool,
                 loaded: Model | None = None) -> None:
        self.path = path
        self._template_override = chat_template
        self._info = info
        self._verbose = verbose
        self._model = loaded  # a model the caller loaded already (and closes)
        self._lock = threading.Lock()

    def _get(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from .model import Model

                    self._model = Model(self.path, chat_template=self._template_override, verbose=self._verbose,
                                        vocab_only=True)
        return self._model

    @property
    def info(self) -> ModelInfo:
        return self._info()

    @property
    def template(self):
        return self._get().template

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        return self._get().tokenize(text, add_bos=add_bos, special=special)

    def token_text(self, token: int) -> str:
        return self._get().token_text(token)

    def detokenize(self, tokens: list[int]) -> str:
        return self._get().detokenize(tokens)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load it now (from a worker thread: it takes a few hundred ms that the kernel loop must not block)."""
        self._get()


def make_local(c: Config, make_policy: Callable[[], Policy], *, verbose: bool = False,
               progress: Callable[[float], None] | None = None, notice: Callable[[str], None] | None = None,
               model: Model | None = None):
    """(backend, model) for a kernel: the engine process (shipped), or the engine in a thread
    (`kernel.engine_process = false`, for fast tests: the model loads now, in this process).

    `model`: the configured GGUF loaded already: the thread engine's model (it must have its weights) and the
    tokeniser of either; ValueError when it is another file."""
    path = model_path(c)
    if model is not None and Path(model.path).resolve() != path.resolve():
        raise ValueError(f"the model given ({model.path}) is not the configured one ({path})")
    check_gguf(path)
    facts = read_gguf_facts(path)
    check_limits(c, facts, path)
    settings = engine_settings(c)
    if not c.kernel.engine_process:
        from .backend import LocalBackend
        from .engine import Engine
        from .model import Model

        if model is None:
            model = Model(path, n_gpu_layers=c.model.n_gpu_layers, verbose=verbose, progress=progress,
                          chat_template=c.model.chat_template, extra_buffers=c.model.extra_buffers)
        elif model.vocab_only:
            raise ValueError(f"{path}: a vocabulary-only model cannot run the engine in a thread")
        engine = Engine(model, settings, make_policy())
        engine.scheduler.boost_after_s = c.scheduler.boost_after_s
        return LocalBackend(engine), model
    from .engine_client import EngineProcess, EngineSpec

    policy = make_policy()
    extra = decide_extra_buffers(c.model.extra_buffers)
    if verbose:
        os.write(2, f"aiosh: llama.cpp extra buffer types {extra.describe()}\n".encode())
    spec = EngineSpec(model_path=str(path), n_gpu_layers=c.model.n_gpu_layers, chat_template=c.model.chat_template,
                      extra_buffers=extra, settings=settings, policy=policy.name, policy_params=dict(policy.params),
                      plugin_paths=list(c.plugins.paths), boost_after_s=c.scheduler.boost_after_s, verbose=verbose)
    backend = EngineProcess(spec, provisional_info(path, facts), notice=notice)
    return backend, Vocabulary(path, c.model.chat_template, lambda: backend.model_info, verbose, model)
