"""The engine process: llama.cpp, the batcher, the samplers, the KV cache and the step scheduler, away from the shell.

A native fault in llama.cpp (a segfault, a C++ `std::terminate` on a grammar, the OOM killer) ends the process that
holds it. Here that is this child, started and supervised by the kernel (`kernel.engine_client.EngineProcess`), as
Ollama runs its runner and vLLM its EngineCore; the kernel turns the death into an error for the calls in flight
and starts a new one.

The child sits in a session of its own (a Ctrl-C typed at the terminal reaches the shell's process group, not this
one), has no terminal (stdin is /dev/null, stdout and stderr a log file that llama.cpp's log lines go to), and dies
with the kernel however the kernel dies: `PR_SET_PDEATHSIG` covers SIGKILL, and EOF on the connection covers the
rest. Messages travel over one `multiprocessing.connection.Connection` (pickled tuples). Text, finished results,
step records and stats go back once per engine step, one message per step, never one per token.

Start-up is the critical path of a fresh shell's first chat, so the child begins on the first message it gets: the
model's load arguments (`("load", …)`, sent by a front end that started the child early, before the kernel) or
the whole spec (`("spec", …)`). A loading thread loads the model and makes the llama context (native code, with
llama.cpp logging straight to fd 2, so it needs no Python lock) while this thread imports the rest of the engine
(with llama.cpp's ctypes bindings only: `llama_bindings`). A spec whose load arguments differ from what is
loading gets a fresh load.

Run as `python -m aiosh.kernel.engine_process FD PARENT_PID [VERBOSE_FD]`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .llama_context import LlamaContext
    from .model import Model

PR_SET_PDEATHSIG = 1
TEST_CRASH_ENV = "AIOSH_ENGINE_TEST_CRASH"  # tests: "extra-buffers" = die with SIGSEGV after loading with them on
LOAD_KEYS = ("model_path", "n_gpu_layers", "chat_template", "extra_buffers", "settings")


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the thread that started it ends (SIGKILL of aiosh included)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the connection's EOF still ends us
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


class Loading:
    """The model and its llama context, loaded on a thread of their own (see the module's text)."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = {k: args[k] for k in LOAD_KEYS}
        self._model: Model | None = None
        self._context: LlamaContext | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._load, name="aiosh-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        from .llama_context import create_context
        from .model import Model

        a = self.args
        try:
            self._model = Model(a["model_path"], n_gpu_layers=a["n_gpu_layers"], chat_template=a["chat_template"],
                                extra_buffers=a["extra_buffers"], verbose=True, defer_template=True)
            if os.environ.get(TEST_CRASH_ENV) == "extra-buffers" and self._model.extra_buffers.enabled:
                os.kill(os.getpid(), signal.SIGSEGV)
            self._context = create_context(self._model, a["settings"])
            self._model.template  # noqa: B018 - (compiled last: the native work above needs no interpreter lock)
        except BaseException as exc:  # (raised again by `result`, in the thread that reports it)
            self._error = exc

    def matches(self, spec: dict[str, Any]) -> bool:
        return all(spec[k] == self.args[k] for k in LOAD_KEYS)

    def result(self) -> tuple[Model, LlamaContext]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._model is not None and self._context is not None
        return self._model, self._context

    def discard(self) -> None:
        self._thread.join()
        if self._context is not None:
            self._context.free()
        if self._model is not None:
            self._model.close()


def main(argv: list[str]) -> int:
    fd, parent = int(argv[0]), int(argv[1])
    mirror = int(argv[2]) if len(argv) > 2 else None
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the kernel ends us (a stray INT is not a crash)
    conn = Connection(fd)
    from .model import set_llama_logging  # (llama.cpp's bindings only: see llama_bindings)

    set_llama_logging(True, mirror_fd=mirror, native=True)  # into the log file (fd 2); the terminal too: --verbose
    try:
        kind, first = conn.recv()
    except (EOFError, OSError):
        return 0
    loading = Loading(first)
    from .engine_child import ChildEngine  # (the rest of the engine, imported while the model loads)
    from .errors import EngineError
    from .model import ModelError
    from .scheduler import load_policy

    try:
        spec: dict[str, Any] = first if kind == "spec" else conn.recv()[1]
    except (EOFError, OSError):
        return 0
    if not loading.matches(spec):  # (a front end's guess of the settings was wrong: load what the kernel says)
        loading.discard()
        loading = Loading(spec)
    try:
        model, context = loading.result()
        policy = load_policy(spec["policy"], spec["policy_params"], extra_paths=spec["plugin_paths"])
        engine = ChildEngine(conn, model, spec["settings"], policy, context)
        engine.scheduler.boost_after_s = spec["boost_after_s"]
    except (ModelError, EngineError, ValueError) as exc:
        conn.send(("fatal", str(exc)))
        return 3
    sys.stderr.write(f"aiosh engine: pid {os.getpid()}, extra buffer types {model.extra_buffers.describe()}\n")
    sys.stderr.flush()
    conn.send(("ready", {
        "pid": os.getpid(), "model": model.info, "n_threads": engine.n_threads,
        "extra_buffers": (model.extra_buffers.enabled, model.extra_buffers.reason), "stats": engine.stats,
    }))
    engine.start()
    engine.serve()  # until the kernel says stop or goes away
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
