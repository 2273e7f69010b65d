"""The local engine, set up for a kernel: start-up checks, the backend (a process, or a thread for tests), the
vocabulary the kernel tokenises with.

At start-up only the GGUF header is read (`startup_checks.check_model`, milliseconds). The weights are loaded by the engine process when the first LLM
call comes (or an interactive shell asks for it in the background); the kernel itself tokenises with a
vocabulary-only load of the same GGUF (no weights, no native compute in the shell's process), made at its first use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config
from .cpu import decide_extra_buffers
from .model_info import GGUFFacts, ModelInfo
from .scheduler import Policy
from .startup_checks import check_model, engine_settings, model_path

if TYPE_CHECKING:
    from .model import Model

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
    path, facts = check_model(c)
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
