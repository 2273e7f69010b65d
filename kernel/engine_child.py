"""The engine core as it runs in the engine process: handles that forward to the kernel, one message per step,
and the loop that reads the kernel's commands (`engine_process` starts it).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .engine import Engine
from .engine_types import EngineStats
from .requests import GenRequest, GenResult, RequestHandle
from .scheduler import load_policy


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

    def __init__(self, conn: Connection, model, settings, policy, context=None) -> None:
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
        super().__init__(model, settings, policy, context)
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
