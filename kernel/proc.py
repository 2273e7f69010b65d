"""Process and syscall records: what `ps`, `wait`, the monitor and storage know about each agent.

A `Process` is mutable and owned by the kernel (guarded by its lock); callers only ever see `ProcInfo`
copies, so a snapshot is consistent even while agents run.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .requests import RequestHandle, SchedInfo

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
    state: str = "S"
    wchan: str = ""
    activity: str = "run"  # run | llm | child | stdin | timer | tool
    decode_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    switches: int = 0
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
    llm_tokens: int = 0  # generated tokens of finished LLM calls (what the token limit counts)
    limit_hit: str = ""  # set when a limit ended the process: the one-line reason
    child_event: asyncio.Event | None = None  # set when one of its children exits
    ctx: object | None = None  # its AgentContext (for closing its stdio after SIGKILL)

    def note_output(self, text: str) -> None:
        self.recent.append(text)
        self.recent_len += len(text)
        while self.recent_len > RECENT_OUTPUT_CHARS and len(self.recent) > 1:
            self.recent_len -= len(self.recent.popleft())

    def recent_output(self) -> str:
        return "".join(self.recent)[-RECENT_OUTPUT_CHARS:]
