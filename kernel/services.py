"""The one door between a process and the kernel: what its context and the managers serving it may use.

Two objects, both handed out by the kernel and defined here, in a leaf module, so that the context (agent.py) and
the managers (memory, tools, context window, the OpenAI door) need neither the `Kernel` nor each other:

- `Syscalls`, one per process: the only way to make a syscall. `call(kind, detail, wchan=…)` passes the gate (a
  killed process may make none, a stopped one waits for CONT), records the call, puts the process in state S on
  `wchan` while it waits, and finishes the record (its outcome to storage, one committed write). The process's
  facts an agent's managers need (pid, agent, backend, limits, cwd) are read through it.
- `Services`, one per kernel: the managers and the few kernel operations a context uses (spawn, wait for a child,
  track an LLM call, the tokeniser). Nothing else of the kernel is reachable from an agent.

This module imports only the leaf records (proc, requests); never the kernel, the agent API or a manager.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from .proc import Limits, Process, SyscallRecord

__all__ = ["Call", "LimitExceeded", "LLMError", "ProcessKilled", "Services", "Syscalls"]


class ProcessKilled(Exception):
    """Raised by every context call of an agent that received SIGKILL."""


class LimitExceeded(Exception):
    """A per-agent limit (tokens, time, KV) was crossed; the agent ends with status 152."""

    def __init__(self, limit: str, value: float) -> None:
        super().__init__(f"{limit} limit ({value:g}) exceeded")
        self.limit = limit
        self.value = value


class LLMError(Exception):
    """An LLM call the engine refused or could not finish (bad request, engine failure)."""


@dataclass
class Services:
    """What an agent's context and the managers may use of the kernel (built by the Kernel; nobody else holds it).

    The managers are typed loosely on purpose: naming their classes here would tie this leaf back to them."""

    config: Any  # config.Config
    storage: Any  # storage.Storage
    access: Any  # access.AccessManager
    memory: Any  # memory.MemoryManager
    context: Any  # context.ContextManager
    tools: Any  # tools.ToolManager
    agents: Any  # plugins.AgentRegistry
    backends: Any  # routing.Backends
    door: Any  # door.Door
    pool: Executor  # blocking work, never on the loop
    spawn: Callable[..., int]  # Kernel.spawn
    await_child: Callable[[Process, int | None], Awaitable[tuple[int, int]]]
    track_call: Callable[[Process, SyscallRecord, Any], None]  # an LLM call's steps charged to its record
    vocabulary_ready: Callable[..., Awaitable[None]]  # the tokeniser loaded (off the loop)
    default_limits: Callable[[], Limits]
    process: Callable[[int], Process | None]  # a process record by pid (None when reaped)


_syscall_ids = itertools.count(1)


class Call:
    """One syscall in progress (from `Syscalls.call`): set `outcome` to say how it ended (default "ok")."""

    def __init__(self, rec: SyscallRecord) -> None:
        self.rec = rec
        self.outcome = ""


class Syscalls:
    """One process's door to the kernel: gate, record, wait channel, finish — the one way every syscall goes."""

    def __init__(self, proc: Process, save: Callable[[SyscallRecord], None], cwd: str = ".") -> None:
        self._proc = proc
        self._save = save
        self.cwd = cwd
        # The process's facts its managers read (fixed at spawn; the parent can change: see `ppid`).
        self.pid: int = proc.pid
        self.agent: str = proc.agent
        self.backend: str = proc.backend
        self.limits: Limits = proc.limits

    @property
    def ppid(self) -> int:
        return self._proc.ppid

    @property
    def proc(self) -> Process:
        """The record itself, for the kernel's own managers (agents never get this object)."""
        return self._proc

    # --- the steps of a syscall -----------------------------------------------------------------------------
    def check_alive(self) -> None:
        if self._proc.killed:
            raise ProcessKilled(f"process {self._proc.pid} was killed")

    async def gate(self) -> None:
        """Every syscall passes here: a killed process may make none, a stopped one waits for CONT."""
        self.check_alive()
        resumed = self._proc.resumed
        if resumed is not None and not resumed.is_set():
            await resumed.wait()
            self.check_alive()

    async def while_stopped(self) -> None:
        """Wait while the process is stopped (a token sampled before a STOP waits for CONT: none escapes)."""
        resumed = self._proc.resumed
        if resumed is not None and not resumed.is_set():
            await resumed.wait()

    def record(self, kind: str, detail: str = "") -> SyscallRecord:
        rec = SyscallRecord(id=next(_syscall_ids), pid=self._proc.pid, kind=kind, detail=detail[:200],
                            t_queued=time.time())
        self._proc.syscall_count += 1
        self._proc.syscalls.append(rec)
        return rec

    def finish(self, rec: SyscallRecord, outcome: str, t_finished: float = 0.0) -> None:
        """A syscall ended: its record is final and goes to storage (one record, committed at once)."""
        rec.t_finished, rec.outcome = t_finished or time.time(), outcome
        self._save(rec)

    @asynccontextmanager
    async def wchan(self, name: str) -> AsyncIterator[None]:
        """State S, waiting on `name` (stdin, llm, child, timer, tool, user, memory …), for the block's length."""
        p = self._proc
        prev = (p.activity, p.wchan)
        p.activity, p.wchan = name, name
        try:
            yield
        finally:
            p.activity, p.wchan = prev

    @asynccontextmanager
    async def call(self, kind: str, detail: str = "", *, wchan: str | None = None, started: bool = True,
                   cancellable: bool = False) -> AsyncIterator[Call]:
        """One syscall: gate, record (`started`: it starts at once, not when the scheduler admits it), the wait
        channel while the block runs, and the record finished with `call.outcome` ("ok" unless set) — or, when
        the block raises, "denied: …" (PermissionError) or "error: …", unless it set one first. A signal
        (CancelledError) leaves the record to the kernel, which marks it "interrupted" when the process ends;
        `cancellable` calls (LLM, tools) record "cancelled" at once instead."""
        await self.gate()
        rec = self.record(kind, detail)
        if started:
            rec.t_started = rec.t_queued
        call = Call(rec)
        try:
            if wchan is None:
                yield call
            else:
                async with self.wchan(wchan):
                    yield call
        except BaseException as exc:
            if not rec.t_finished and (call.outcome or cancellable or not _is_cancel(exc)):
                self.finish(rec, call.outcome or _outcome_of(exc))
            raise
        if not rec.t_finished:
            self.finish(rec, call.outcome or "ok")

    # --- the token account ----------------------------------------------------------------------------------
    def tokens_left(self) -> int | None:
        """Tokens the process may still generate (its `max_tokens` limit), None without a limit."""
        lim = self._proc.limits.max_tokens
        return None if not lim else max(0, lim - self._proc.tokens_out)

    def check_token_limit(self) -> None:
        """After each LLM call, its tokens counted: LimitExceeded once the limit is reached."""
        lim = self._proc.limits.max_tokens
        if lim and self._proc.tokens_out >= lim:
            raise LimitExceeded("token", lim)


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError | GeneratorExit)


def _outcome_of(exc: BaseException) -> str:
    if _is_cancel(exc):
        return "cancelled"
    if isinstance(exc, PermissionError):
        return f"denied: {exc}"
    return f"error: {exc}"
