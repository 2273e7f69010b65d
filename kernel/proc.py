"""Process and syscall records: what `ps`, `wait`, the monitor and storage know about each agent.

A `Process` is mutable and owned by the kernel (guarded by its lock); callers only ever see `ProcInfo`
copies, so a snapshot is consistent even while agents run.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .requests import GenResult, RequestHandle, SchedInfo

STATE_DOC = {
    "R": "decoding or in a tool call",
    "S": "waiting: in a queue, for a slot, for a child, for input",
    "T": "stopped: keeps its memory, gets no tokens",
    "Z": "exited, status not yet collected",
}
RECENT_OUTPUT_CHARS = 4000


@dataclass
class Limits:
    """Per-agent limits, like ulimit; 0 means none. Crossing one ends the agent with status 152 (128+XCPU)."""

    max_tokens: int = 0  # generated tokens over the agent's life
    max_time: float = 0.0  # wall seconds
    max_kv: int = 0  # KV tokens held by one of its sequences


    def inherited(self, parent: Limits) -> Limits:
        """A child's limits: its own, but never more than its parent's (0 = none, so a parent's limit applies)."""
        return Limits(_least(self.max_tokens, parent.max_tokens), _least(self.max_time, parent.max_time),
                      _least(self.max_kv, parent.max_kv))


def _least(a: float, b: float) -> Any:
    """The tighter of two limits where 0 means none."""
    if not a:
        return b
    if not b:
        return a
    return min(a, b)


@dataclass
class SyscallRecord:
    """One call an agent made through its context; waiting time and turnaround come from these times."""

    id: int
    pid: int
    kind: str  # llm | spawn | wait | read | sleep | tool
    detail: str = ""
    t_queued: float = 0.0
    t_started: float = 0.0
    t_first: float = 0.0
    t_finished: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    outcome: str = ""  # ok | error: … | cancelled | …

    @property
    def waiting_time(self) -> float:
        return max(0.0, (self.t_started or self.t_finished) - self.t_queued)

    @property
    def turnaround(self) -> float:
        return max(0.0, self.t_finished - self.t_queued) if self.t_finished else 0.0


@dataclass(frozen=True)
class ProcInfo:
    """A copy of one process record, safe to keep and show."""

    pid: int
    ppid: int
    pgid: int
    agent: str
    argv: tuple[str, ...]
    state: str
    wchan: str  # what it waits for, when S: slot | llm | child | stdin | timer | tool | user | ""
    nice: int
    sched_class: str
    pri: int
    boosted: bool
    created: float  # wall-clock (time.time)
    started: float
    ended: float
    decode_s: float
    tokens_in: int
    tokens_out: int
    kv_tokens: int | None  # None: unknown (a remote backend's KV is the server's own)
    kv_bytes: int | None
    swapped_bytes: int
    switches: int
    syscalls: int
    status: int | None
    limits: Limits
    recent_output: str
    backend: str = "local"  # where its LLM calls go: the server of the call in flight, else its backend's name

    @property
    def cmd(self) -> str:
        return " ".join((self.agent, *self.argv))

    @property
    def elapsed(self) -> float:
        return (self.ended or time.time()) - self.created


@dataclass
class Process:
    pid: int
    ppid: int
    pgid: int
    agent: str
    argv: list[str]
    sched: SchedInfo
    limits: Limits
    die_with_parent: bool = False
    detached: bool = False  # outlives a parent ended by a limit (other children end with such a parent)
    from_shell: bool = True  # spawned by the shell (pid 0's own child), so the shell's job table collects it
    created: float = field(default_factory=time.time)
    started: float = 0.0
    ended: float = 0.0
    wchan: str = ""
    activity: str = "run"  # run | llm | child | stdin | timer | tool
    # Its token counts, charged step by step as the backends report them (Kernel._account): the one place `ps`,
    # `time`, the monitor, storage and the token limit read them from.
    decode_s: float = 0.0
    tokens_in: int = 0  # prompt tokens evaluated
    tokens_out: int = 0  # tokens generated (what limits.max_tokens counts)
    switches: int = 0  # context switches of its finished LLM calls (fold_result)
    syscall_count: int = 0
    status: int | None = None
    killed: bool = False  # SIGKILL: every later call on its context raises
    pending_signal: int = 0
    task: asyncio.Task | None = None
    resumed: asyncio.Event = field(default_factory=asyncio.Event)  # set while not stopped (set when it starts)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)  # set while stopped
    exit_future: asyncio.Future | None = None
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=256))
    recent_len: int = 0
    syscalls: deque[SyscallRecord] = field(default_factory=lambda: deque(maxlen=200))
    current_llm: RequestHandle | None = None  # the llm call in flight
    backend: str = "local"  # the backend its LLM calls go to (--backend, inherited by its children)
    limit_hit: str = ""  # set when a limit ended the process: the one-line reason
    child_event: asyncio.Event | None = None  # set when one of its children exits
    ctx: object | None = None  # its AgentContext (for closing its stdio after SIGKILL)

    @property
    def is_stopped(self) -> bool:
        """Stopped (T): the one fact behind `sched.stopped` (which the scheduler reads), `resumed` and `stopped`."""
        return self.sched.stopped

    def set_stopped(self, stopped: bool) -> bool:
        """Stop or continue: the flag the scheduler reads and the two events agents wait on change together,
        here only (on the kernel loop). Returns whether anything changed."""
        if self.sched.stopped == stopped:
            return False
        self.sched.stopped = stopped
        if self.resumed is not None:
            if stopped:
                self.resumed.clear()
            else:
                self.resumed.set()
        if self.stopped is not None:
            if stopped:
                self.stopped.set()
            else:
                self.stopped.clear()
        return True

    def note_output(self, text: str) -> None:
        self.recent.append(text)
        self.recent_len += len(text)
        while self.recent_len > RECENT_OUTPUT_CHARS and len(self.recent) > 1:
            self.recent_len -= len(self.recent.popleft())

    def recent_output(self) -> str:
        return "".join(self.recent)[-RECENT_OUTPUT_CHARS:]


def fold_result(proc: Process, rec: SyscallRecord, result: GenResult) -> None:
    """An LLM call ended: what only its result says goes into its process and its record, here only (its tokens
    were charged step by step): the context switches it suffered, and the engine's own timings of the call."""
    proc.switches += result.preemptions
    wall = time.time() - time.monotonic()
    rec.t_queued = result.t_submit + wall
    rec.t_started = (result.t_admit or result.t_end) + wall
    rec.t_first = (result.t_first + wall) if result.t_first else 0.0


class ProcessTable:
    """The one owner of the process records: pids, spawn (`add`), exit (`exited`: status kept, Z), reap
    (collection by a parent's wait, or at once for an orphan), and the wait for a child — the shell's (on its
    own thread) and an agent's (on the kernel loop) — decided by one rule (`collect`).

    Thread-safe: `lock` (re-entrant) guards every record; `cond` is notified when a process exits."""

    USAGE_KEPT = 4096  # collected processes whose usage `time` can still ask for

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self._procs: dict[int, Process] = {}
        self._pids = itertools.count(1)
        self.last_pid = 0  # the highest pid handed out (pids grow and are never reused)
        self._usage_of_reaped: dict[int, tuple[int, int, float]] = {}

    # --- reading ------------------------------------------------------------------------------------------
    def get(self, pid: int) -> Process | None:
        with self.lock:
            return self._procs.get(pid)

    def all(self) -> list[Process]:
        """Every record (live and zombie), by pid."""
        with self.lock:
            return sorted(self._procs.values(), key=lambda p: p.pid)

    def live(self) -> list[Process]:
        with self.lock:
            return [p for p in self._procs.values() if p.status is None]

    def children(self, ppid: int) -> list[Process]:
        with self.lock:
            return [p for p in self._procs.values() if p.ppid == ppid]

    def group(self, pgid: int) -> list[Process]:
        with self.lock:
            return [p for p in self._procs.values() if p.pgid == pgid]

    def usage(self, pids: range | list[int]) -> tuple[int, int, float]:
        """Tokens in, tokens out and decode seconds of these pids, live or already collected (for `time`)."""
        tin = tout = 0
        dec = 0.0
        with self.lock:
            for pid in pids:
                p = self._procs.get(pid)
                got = (p.tokens_in, p.tokens_out, p.decode_s) if p is not None else self._usage_of_reaped.get(pid)
                if got:
                    tin, tout, dec = tin + int(got[0]), tout + int(got[1]), dec + float(got[2])
        return tin, tout, dec

    # --- the life of a process ------------------------------------------------------------------------------
    def next_pid(self) -> int:
        """A new pid (under `lock`, with the checks that go before a spawn)."""
        with self.lock:
            pid = next(self._pids)
            self.last_pid = pid
            return pid

    def add(self, proc: Process) -> None:
        with self.lock:
            self._procs[proc.pid] = proc

    def exited(self, proc: Process, status: int, doomed: Callable[[Process, Process], bool],
               persist: Callable[[Process], None]) -> list[int] | None:
        """`proc` ended with `status`: kept as a zombie until collected, its children reparented to pid 0 (and
        those `doomed(proc, child)` returned to be killed), orphans that ended collected at once; `persist(proc)`
        before any waiter wakes. None if it had ended already."""
        with self.cond:
            if proc.status is not None:
                return None
            proc.status = status
            proc.ended = time.time()
            proc.sched.stopped = False  # a zombie is not stopped (its events are the loop's: see set_stopped)
            to_kill = []
            for child in self._procs.values():
                if child.ppid == proc.pid:
                    if child.status is None and doomed(proc, child):
                        to_kill.append(child.pid)
                    child.ppid = 0
                    child.from_shell = False
            for pid in [p.pid for p in self._procs.values() if p.ppid == 0 and not p.from_shell and p.status is not None]:
                self.reap(pid)
            persist(proc)
            if proc.ppid == 0 and not proc.from_shell:
                self.reap(proc.pid)  # an orphan is collected by "init" at once
            self.cond.notify_all()
            return to_kill

    def wait_ended(self, pid: int, timeout: float) -> bool:
        """Block until `pid` has ended (or was never there / is collected); False on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while (proc := self._procs.get(pid)) is not None and proc.status is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def reap(self, pid: int) -> Process | None:
        with self.lock:
            proc = self._procs.pop(pid, None)
            if proc is not None:
                self._usage_of_reaped[pid] = (proc.tokens_in, proc.tokens_out, proc.decode_s)
                while len(self._usage_of_reaped) > self.USAGE_KEPT:
                    self._usage_of_reaped.pop(next(iter(self._usage_of_reaped)))
            return proc

    def collect(self, parent: int, pid: int | None, missing: Callable[[str], Exception]) -> tuple[int, int] | None:
        """One look for a child of `parent` (0 = the shell: the children it started) that has exited: `pid`, or
        the one that ended first; reaped and returned as (pid, status). None: none has ended yet. `missing(why)`
        is raised when there is nothing to wait for."""
        with self.lock:
            if pid is not None:
                p = self._procs.get(pid)
                if p is None or (parent and p.ppid != parent):
                    raise missing(f"pid {pid} is not a child of "
                                  + (f"process {parent}" if parent else "this shell"))
                if p.status is None:
                    return None
                self.reap(pid)
                return pid, p.status
            kids = [p for p in self._procs.values()
                    if p.ppid == parent and (parent or p.from_shell)]
            if not kids:
                raise missing(f"process {parent} has no children" if parent else "no child processes")
            done = [p for p in kids if p.status is not None]
            if not done:
                return None
            first = min(done, key=lambda p: p.ended)
            self.reap(first.pid)
            return first.pid, first.status  # type: ignore[return-value]

    def wait(self, pid: int | None, timeout: float | None, missing: Callable[[str], Exception]
             ) -> tuple[int, int] | None:
        """The shell's wait (blocks its thread): `collect` until a child has exited; None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while True:
                got = self.collect(0, pid, missing)
                if got is not None:
                    return got
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self.cond.wait(left if left is not None else 1.0)

    async def await_child(self, parent: Process, pid: int | None) -> tuple[int, int]:
        """An agent's wait for its own child (on the kernel loop): `collect`, woken by its children's exits."""
        if parent.child_event is None:
            parent.child_event = asyncio.Event()
        while True:
            got = self.collect(parent.pid, pid, ChildProcessError)
            if got is not None:
                return got
            parent.child_event.clear()
            await parent.child_event.wait()
