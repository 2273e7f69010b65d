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

Run as `python -m aiosh.kernel.engine_process FD PARENT_PID [VERBOSE_FD]`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .engine import Engine
from .engine_types import EngineStats
from .model import Model, ModelError, set_llama_logging
from .requests import EngineError, GenRequest, GenResult, RequestHandle
from .scheduler import load_policy

PR_SET_PDEATHSIG = 1
TEST_CRASH_ENV = "AIOSH_ENGINE_TEST_CRASH"  # tests: "extra-buffers" = die with SIGSEGV after loading with them on


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the thread that started it ends (SIGKILL of aiosh included)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the connection's EOF still ends us
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def main(argv: list[str]) -> int:
    fd, parent = int(argv[0]), int(argv[1])
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the kernel ends us (a stray INT is not a crash)
    conn = Connection(fd)
    try:
        spec: dict[str, Any] = conn.recv()
    except (EOFError, OSError):
        return 0
    mirror = int(argv[2]) if len(argv) > 2 else None
    set_llama_logging(True, mirror_fd=mirror)  # into the log file (fd 2), and to the terminal with --verbose
    try:
        model = Model(spec["model_path"], n_gpu_layers=spec["n_gpu_layers"], chat_template=spec["chat_template"],
                      extra_buffers=spec["extra_buffers"], verbose=True)
        if os.environ.get(TEST_CRASH_ENV) == "extra-buffers" and model.extra_buffers.enabled:
            os.kill(os.getpid(), signal.SIGSEGV)
        policy = load_policy(spec["policy"], spec["policy_params"], extra_paths=spec["plugin_paths"])
        engine = ChildEngine(conn, model, spec["settings"], policy)
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


class _Sink:
    """Stands in for a handle's pipe in this process: text goes into the next step's message."""

    closed = False

    def __init__(self, engine: ChildEngine, rid: int) -> None:
        self._engine, self._rid = engine, rid

    def write(self, text: str) -> None:
        if text:
            self._engine._out_text.setdefault(self._rid, []).append(text)

    def close(self) -> None:
        pass


class ChildEngine(Engine):
    """The engine core with handles that forward to the kernel, a flush after every step, and the command loop."""

    def __init__(self, conn: Connection, model, settings, policy) -> None:
        engine = self

        class _Handle(RequestHandle):  # one class per engine: its pipe and its end report to this engine
            def __init__(self, rid: int, req: GenRequest, canceller: Callable[[int], None]) -> None:
                super().__init__(rid, req, canceller)
                self.pipe = _Sink(engine, rid)  # type: ignore[assignment]

            def _finish(self, result) -> None:
                engine._out_done.append((self.id, result))
                super()._finish(result)

        self.handle_factory = _Handle
        self._conn = conn
        self._send_lock = threading.Lock()
        self._out_text: dict[int, list[str]] = {}
        self._out_done: list[tuple[int, GenResult]] = []  # (rid, result): its counts are the result's
        self._out_steps: list = []
        self._live: dict[int, Any] = {}
        self._sent_stats: EngineStats | None = None
        super().__init__(model, settings, policy)
        self.add_step_listener(self._out_steps.append)

    def _step(self) -> None:
        super()._step()
        self.flush()

    def _drain_commands(self, block: bool) -> bool:
        ok = super()._drain_commands(block)
        self.flush()
        return ok

    def flush(self) -> None:
        """One message with everything since the last one: text, ends, step records, stats (if they changed)."""
        with self._send_lock:
            texts, self._out_text = self._out_text, {}
            dones, self._out_done = self._out_done, []
            steps, self._out_steps[:] = list(self._out_steps), []
            stats = self.stats
            if stats is self._sent_stats and not texts and not dones and not steps:
                return
            self._sent_stats = stats
            gen = {rid: h.n_generated for rid, h in self._live.items() if rid in texts}
            text_events = [(rid, "".join(parts), gen.get(rid, 0)) for rid, parts in texts.items()]
            for rid, _res in dones:
                self._live.pop(rid, None)
            try:
                self._conn.send(("batch", text_events, dones, steps, stats))
            except (OSError, ValueError):
                os._exit(0)  # the kernel is gone

    def serve(self) -> None:
        """Read the kernel's commands until it says stop or its end of the connection closes."""
        conn = self._conn
        early_cancels: set[int] = set()
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the kernel is gone: nobody is left to serve
            kind = msg[0]
            if kind == "submit":
                _, rid, req = msg
                with self._send_lock:  # the handle is known before its first step is flushed
                    handle = self.submit(req, rid=rid)
                    self._live[rid] = handle
                    self._conn.send(("started", rid, handle.n_prompt))
                if rid in early_cancels:  # its cancel overtook it on the way here
                    early_cancels.discard(rid)
                    self.cancel(rid)
                if handle.done:
                    self.flush()
            elif kind == "cancel":
                if msg[1] not in self._live:
                    early_cancels.add(msg[1])
                self.cancel(msg[1])
            elif kind == "sched":
                for rid, (nice, klass, stopped, group) in msg[1].items():
                    h = self._live.get(rid)
                    if h is not None:
                        s = h.request.sched
                        s.nice, s.sched_class, s.stopped, s.group = nice, klass, stopped, group
                self.wake()
            elif kind == "policy":
                _, name, params, paths = msg
                self.set_policy(load_policy(name, params, extra_paths=paths))
            elif kind == "forget":
                self.forget_conversation(msg[1])
            elif kind == "clear_idle":
                self.call(self._clear_and_publish)
                self.flush()
            elif kind == "stop":
                self.close()
                os._exit(0)

    def _clear_and_publish(self) -> None:
        self.clear_idle_caches()
        self._publish_stats()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
