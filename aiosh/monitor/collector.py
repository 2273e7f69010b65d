"""Collection, separate from rendering: two consecutive kernel snapshots → plain dataclasses the widgets draw.

`Collector.collect()` runs on a worker thread (never the UI thread): it calls `kernel.snapshot()` and, while an
agent's detail screen is open, `kernel.syscalls(pid)`; then it derives what a snapshot alone cannot say — rates
(tokens/s, steps/s, context switches/s), each agent's %TOK, the scheduler's queues, the throughput history — by
comparing with the previous snapshot. Nothing here imports Textual; every time comes from the snapshots (never
the wall clock), so a fixed sequence of snapshots always gives the same picture.

%TOK is top's %CPU for the engine: an agent's share of all tokens the engine evaluated (prompt + generated)
in the last interval, i.e. its share of decode time, since the kernel charges each step's time per token.
TOK/S is the agent's generated tokens per second over the same interval.
"""

from __future__ import annotations

import os
import resource
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the monitor needs only the kernel's public API, and at run time no import of it at all
    from aiosh.kernel.kernel import KernelSnapshot
    from aiosh.kernel.proc import ProcInfo, SyscallRecord

HISTORY_S = 60.0  # the throughput sparkline's window
HISTORY_BUCKETS = 60  # one value per second of that window
SNAPSHOT_STEPS = 400  # step records asked for: the timeline's history


# --- the plain data the widgets render --------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentRow:
    pid: int
    ppid: int
    state: str  # R S T Z
    stat: str  # state + '<' (nice < 0) or 'N' (nice > 0), as ps prints it
    wchan: str
    nice: int
    pri: int
    sched_class: str
    tok_pct: float  # share of the tokens the engine evaluated in the last interval
    tok_s: float  # generated tokens per second in the last interval
    tokens_in: int  # IN: prompt tokens evaluated, total (as ps, logs and storage count them)
    tokens_out: int  # OUT: tokens generated, total
    kv_tokens: int | None  # None: unknown (an agent on a remote backend: the server holds its KV)
    kv_bytes: int | None
    swapped_bytes: int
    decode_s: float  # TIME: its share of decode time
    elapsed: float
    cmd: str
    agent: str
    status: int | None
    boosted: bool
    switches: int
    syscalls: int
    backend: str = "local"  # the server of its LLM call in flight, else its backend's name


@dataclass(frozen=True)
class Queue:
    key: str  # decode | prefill | ready | swapped | stopped | child | tool | user | timer | zombie
    label: str
    pids: tuple[int, ...]


@dataclass(frozen=True)
class SchedulerView:
    policy: str
    description: str
    preemptive: bool
    params: tuple[tuple[str, Any], ...]
    queues: tuple[Queue, ...]
    batch: int  # sequences in the last step's batch
    slots: int
    slots_busy: int
    steps_per_s: float
    switches_per_s: float  # preemptions per second (context switches)
    preemptions: int
    swaps_out: int
    swaps_in: int
    recomputes: int


@dataclass(frozen=True)
class TimelineStep:
    step: int
    t: float  # monotonic, end of the step
    duration: float
    decoded: frozenset[int]
    prefilled: frozenset[int]


@dataclass(frozen=True)
class TimelineView:
    steps: tuple[TimelineStep, ...]
    pids: tuple[int, ...]  # the strips, in pid order: every agent that got tokens in these steps
    labels: tuple[tuple[int, str], ...]  # pid → short label (agent name)
    states: tuple[tuple[int, str], ...]  # pid → its state now (R S T Z, '-' once collected)


@dataclass(frozen=True)
class AgentMemory:
    pid: int
    label: str
    kv_tokens: int | None  # None: held by a remote server, unknown here
    kv_bytes: int | None
    swapped_bytes: int
    backend: str = "local"


@dataclass(frozen=True)
class MemoryView:
    kv_used: int
    kv_capacity: int
    kv_cached_idle: int
    kv_bytes_per_token: int
    swapped_bytes: int
    rss_bytes: int
    model_bytes: int
    agents: tuple[AgentMemory, ...]  # by KV held, largest first
    short_term: tuple[tuple[int, int], ...] | None  # pid → bytes of short-term memory (None: no provider yet)


@dataclass(frozen=True)
class ThroughputView:
    gen_tok_s: float
    prompt_tok_s: float
    gen_history: tuple[float, ...]  # HISTORY_BUCKETS values, oldest first
    prompt_history: tuple[float, ...]
    gen_peak: float
    gen_avg: float  # over the part of the window the monitor has seen
    generated_tokens: int
    prompt_tokens: int
    cached_tokens: int


@dataclass(frozen=True)
class BackendRow:
    """One server, as the backends panel shows it (the kernel's BackendStats, without importing the kernel)."""

    name: str  # "local", or a [backends.NAME] entry
    kind: str  # local | openai
    pool: str  # the name agents route by: "local", or the model a remote pool's replicas share
    model: str
    url: str
    healthy: bool
    queued: int  # the pool's queue (replicas of one model show the same number)
    in_flight: int
    max_concurrent: int
    requests: int
    errors: int
    retries: int
    ttft_s: float | None  # mean time to first token over recent requests (None: none yet)
    tokens_per_s: float
    last_error: str = ""

    @property
    def remote(self) -> bool:
        return self.kind not in ("local", "mcp")


def backend_row(b: Any) -> BackendRow:
    """A BackendRow from a kernel BackendStats (read by attribute, so any object with those fields will do)."""
    return BackendRow(
        name=str(b.name), kind=str(b.kind), pool=str(b.pool), model=str(b.model), url=str(b.url),
        healthy=bool(b.healthy), queued=int(b.queued), in_flight=int(b.in_flight),
        max_concurrent=int(b.max_concurrent), requests=int(b.requests), errors=int(b.errors),
        retries=int(b.retries), ttft_s=None if b.ttft_s is None else float(b.ttft_s),
        tokens_per_s=float(b.tokens_per_s), last_error=str(getattr(b, "last_error", "") or ""),
    )


def mcp_row(m: Any) -> BackendRow:
    """An MCP server ([mcp.NAME]) as a row of the backends panel: its state, tools, calls, errors and restarts."""
    return BackendRow(
        name=f"mcp:{m.name}", kind="mcp", pool="tools", model=f"{m.tools} tools, {m.state}", url=str(m.target),
        healthy=m.state in ("running", "stopped", "starting"), queued=0, in_flight=0, max_concurrent=0,
        requests=int(m.calls), errors=int(m.errors), retries=int(m.restarts), ttft_s=None, tokens_per_s=0.0,
        last_error=str(m.last_error or ""),
    )


@dataclass(frozen=True)
class HeaderView:
    model: str
    model_path: str
    n_params: int
    n_threads: int
    n_gpu_layers: int
    uptime: float
    n_agents: int
    n_running: int  # state R: the decoding, prefilling and working queues together
    policy: str
    n_stopped: int = 0
    engine: str = ""  # the engine process: "engine ready pid 123 · 340 MB" ("" for a kernel without one)


@dataclass(frozen=True)
class AgentDetail:
    pid: int
    info: ProcInfo | None  # None once the process has been collected
    syscalls: tuple[SyscallRecord, ...]


@dataclass(frozen=True)
class MonitorData:
    t: float
    seq: int  # how many snapshots went into it (1 = the first: no rates yet)
    header: HeaderView
    agents: tuple[AgentRow, ...]
    scheduler: SchedulerView
    timeline: TimelineView
    memory: MemoryView
    throughput: ThroughputView
    backends: tuple[BackendRow, ...] = ()
    detail: AgentDetail | None = None

    def agent(self, pid: int) -> AgentRow | None:
        for a in self.agents:
            if a.pid == pid:
                return a
        return None


# --- the collector -----------------------------------------------------------------------------------------------


def read_rss() -> int:
    """This process's resident memory in bytes (/proc/self/statm; the peak from getrusage elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class _Sample:
    t0: float
    t1: float
    gen: float
    prompt: float


@dataclass
class Collector:
    """Turns kernel snapshots into `MonitorData`; keeps what rates need. Used by one thread at a time."""

    kernel: Any
    rss_reader: Callable[[], int] | None = None  # default: read_rss
    # Per-agent short-term memory: snapshot → {pid: tokens held in RAM}. None shows a placeholder.
    memory_hook: Callable[[KernelSnapshot], dict[int, int]] | None = None
    steps: int = SNAPSHOT_STEPS
    _prev: KernelSnapshot | None = None
    _last: MonitorData | None = None
    _rates: dict[int, tuple[float, float]] = field(default_factory=dict)  # pid → (tok_pct, tok_s)
    _gen_s: float = 0.0
    _prompt_s: float = 0.0
    _steps_s: float = 0.0
    _switch_s: float = 0.0
    _samples: deque[_Sample] = field(default_factory=lambda: deque(maxlen=4096))
    _count: int = 0
    _names: dict[int, str] = field(default_factory=dict)  # pid → agent name, kept after collection

    def collect(self, detail_pid: int | None = None) -> MonitorData:
        snap = self.kernel.snapshot(self.steps)
        detail = self._detail(snap, detail_pid) if detail_pid is not None else None
        prev = self._prev
        if prev is not None and snap.t <= prev.t and self._last is not None:
            # No time has passed (a frozen or replayed state): keep the rates; only the detail may differ.
            return replace(self._last, detail=detail)
        if prev is not None:
            self._update_rates(prev, snap)
        self._prev = snap
        self._count += 1
        data = self.build(snap, detail)
        self._last = data
        return data

    def _detail(self, snap: KernelSnapshot, pid: int) -> AgentDetail:
        info = next((p for p in snap.procs if p.pid == pid), None)
        try:
            calls = tuple(self.kernel.syscalls(pid))
        except LookupError:
            calls = ()
        return AgentDetail(pid=pid, info=info, syscalls=calls)

    def _update_rates(self, prev: KernelSnapshot, snap: KernelSnapshot) -> None:
        dt = snap.t - prev.t
        before = {p.pid: p for p in prev.procs}
        evaluated: dict[int, int] = {}
        generated: dict[int, int] = {}
        for p in snap.procs:
            b = before.get(p.pid)
            d_in = p.tokens_in - (b.tokens_in if b else 0)
            d_out = p.tokens_out - (b.tokens_out if b else 0)
            evaluated[p.pid] = max(0, d_in) + max(0, d_out)
            generated[p.pid] = max(0, d_out)
        total = sum(evaluated.values())
        self._rates = {
            pid: ((100.0 * evaluated[pid] / total) if total else 0.0, generated[pid] / dt) for pid in evaluated
        }
        e0, e1 = prev.engine, snap.engine
        self._gen_s = max(0, e1.generated_tokens - e0.generated_tokens) / dt
        self._prompt_s = max(0, e1.prompt_tokens - e0.prompt_tokens) / dt
        self._steps_s = max(0, e1.steps - e0.steps) / dt
        self._switch_s = max(0, e1.preemptions - e0.preemptions) / dt
        self._samples.append(_Sample(prev.t, snap.t, self._gen_s, self._prompt_s))
        while self._samples and self._samples[0].t1 < snap.t - HISTORY_S - 5:
            self._samples.popleft()

    # -- building the views (pure, given the rates) ----------------------------------------------------------------
    def build(self, snap: KernelSnapshot, detail: AgentDetail | None = None) -> MonitorData:
        agents = tuple(self._row(p, snap.t) for p in snap.procs)
        running = sum(1 for a in agents if a.state == "R")
        stopped = sum(1 for a in agents if a.state == "T")
        model = snap.model
        header = HeaderView(
            model=model.description, model_path=model.path, n_params=model.n_params, n_threads=snap.n_threads,
            n_gpu_layers=snap.n_gpu_layers, uptime=snap.uptime, n_agents=len(agents), n_running=running, n_stopped=stopped,
            policy=str(snap.policy.get("policy", snap.engine.policy)),
            engine=engine_label(getattr(snap, "engine_info", None)),
        )
        return MonitorData(
            t=snap.t, seq=self._count, header=header, agents=agents, scheduler=self._scheduler(snap),
            timeline=self._timeline(snap), memory=self._memory(snap), throughput=self._throughput(snap),
            backends=tuple(backend_row(b) for b in snap.backends)
            + tuple(mcp_row(m) for m in getattr(snap, "mcp", ())), detail=detail,
        )

    def _row(self, p: ProcInfo, now: float) -> AgentRow:
        pct, rate = self._rates.get(p.pid, (0.0, 0.0))
        suffix = "<" if p.nice < 0 else ("N" if p.nice > 0 else "")
        return AgentRow(
            pid=p.pid, ppid=p.ppid, state=p.state, stat=p.state + suffix, wchan=p.wchan, nice=p.nice, pri=p.pri,
            sched_class=p.sched_class, tok_pct=pct, tok_s=rate, tokens_in=p.tokens_in, tokens_out=p.tokens_out,
            kv_tokens=p.kv_tokens, kv_bytes=p.kv_bytes, swapped_bytes=p.swapped_bytes, decode_s=p.decode_s,
            elapsed=max(0.0, (p.ended or now) - p.created), cmd=p.cmd, agent=p.agent, status=p.status,
            boosted=p.boosted, switches=p.switches, syscalls=p.syscalls, backend=p.backend,
        )

    def _scheduler(self, snap: KernelSnapshot) -> SchedulerView:
        e = snap.engine
        procs = {p.pid: p for p in snap.procs}
        # Each agent in one queue, chosen by its state (the same state ps and the header show): a stopped agent
        # only under "stopped", whatever its sequence was doing; R under decoding, prefilling or working.
        engine_state: dict[int, str] = {}
        for s in e.seqs:
            if s.owner in procs and engine_state.get(s.owner) not in ("decode", "prefill"):
                engine_state[s.owner] = s.state
        by_state: dict[str, list[int]] = {"decode": [], "prefill": [], "ready": [], "swapped": [], "work": []}
        for pid, p in procs.items():
            seq = engine_state.get(pid, "")
            if p.state == "R":
                by_state[seq if seq in ("decode", "prefill") else "work"].append(pid)
            elif p.state == "S" and (p.wchan == "slot" or seq in ("waiting", "swapped")):
                by_state["swapped" if seq == "swapped" else "ready"].append(pid)
        stopped = [pid for pid, p in procs.items() if p.state == "T"]

        def waiting_on(*chans: str) -> tuple[int, ...]:
            return tuple(sorted(pid for pid, p in procs.items() if p.state == "S" and p.wchan in chans))

        queues = (  # two columns in the panel: the engine's queues, then what agents wait on
            Queue("decode", "decoding", tuple(sorted(by_state["decode"]))),
            Queue("prefill", "prefilling", tuple(sorted(by_state["prefill"]))),
            Queue("work", "working", tuple(sorted(by_state["work"]))),  # R: its own code or a tool
            Queue("ready", "ready", tuple(sorted(by_state["ready"]))),
            Queue("swapped", "swapped", tuple(sorted(by_state["swapped"]))),
            Queue("stopped", "stopped", tuple(sorted(stopped))),
            Queue("child", "on child", waiting_on("child")),
            Queue("tool", "on tool", waiting_on("tool")),
            Queue("user", "on user", waiting_on("stdin", "user", "read")),
            Queue("timer", "sleeping", waiting_on("timer")),
            Queue("zombie", "exited", tuple(sorted(pid for pid, p in procs.items() if p.state == "Z"))),
        )
        pol = snap.policy
        params = tuple(sorted((str(k), v) for k, v in dict(pol.get("params") or {}).items()))
        return SchedulerView(
            policy=str(pol.get("policy", e.policy)), description=str(pol.get("description", "")),
            preemptive=bool(pol.get("preemptive", False)), params=params, queues=queues, batch=e.last_batch,
            slots=e.slots, slots_busy=e.slots_busy, steps_per_s=self._steps_s, switches_per_s=self._switch_s,
            preemptions=e.preemptions, swaps_out=e.swaps_out, swaps_in=e.swaps_in, recomputes=e.recomputes,
        )

    def _timeline(self, snap: KernelSnapshot) -> TimelineView:
        steps = tuple(
            TimelineStep(
                step=r.step, t=r.t, duration=r.duration, decoded=frozenset(o for o, _ in r.decoded),
                prefilled=frozenset(o for o, _, _ in r.prefilled),
            )
            for r in snap.steps
        )
        procs = {p.pid: p for p in snap.procs}
        for p in snap.procs:  # remembered, so a strip keeps its name after its agent has been collected
            self._names[p.pid] = p.agent
        while len(self._names) > 4096:
            self._names.pop(next(iter(self._names)))
        seen = {pid for s in steps for pid in (s.decoded | s.prefilled)}
        # Live agents first (in pid order), then those that have exited: a strip of a live agent is never the one
        # hidden when there are more strips than room.
        pids = sorted(seen, key=lambda pid: (pid not in procs or procs[pid].state == "Z", pid))
        labels = tuple((pid, self._names.get(pid, f"pid {pid}")) for pid in pids)
        states = tuple((pid, procs[pid].state if pid in procs else "-") for pid in pids)
        return TimelineView(steps=steps, pids=tuple(pids), labels=labels, states=states)

    def _memory(self, snap: KernelSnapshot) -> MemoryView:
        e = snap.engine
        # Agents holding KV here, largest first; then live agents on remote backends (their KV is the server's,
        # unknown here: listed, never counted as 0).
        agents = sorted(
            (AgentMemory(p.pid, p.agent, p.kv_tokens, p.kv_bytes, p.swapped_bytes, p.backend)
             for p in snap.procs
             if p.kv_tokens or p.swapped_bytes or (p.kv_tokens is None and p.state != "Z")),
            key=lambda m: (m.kv_tokens is None, -(m.kv_tokens or 0), -m.swapped_bytes, m.pid),
        )
        short_term = None
        if self.memory_hook is not None:
            short_term = tuple(sorted(self.memory_hook(snap).items()))
        rss = (self.rss_reader or read_rss)()
        return MemoryView(
            kv_used=e.kv_used, kv_capacity=e.kv_capacity, kv_cached_idle=e.kv_cached_idle,
            kv_bytes_per_token=e.kv_bytes_per_token or snap.model.kv_bytes_per_token, swapped_bytes=e.swapped_bytes,
            rss_bytes=rss, model_bytes=snap.model.size_bytes, agents=tuple(agents), short_term=short_term,
        )

    def _throughput(self, snap: KernelSnapshot) -> ThroughputView:
        now = snap.t
        width = HISTORY_S / HISTORY_BUCKETS
        gen: list[float] = []
        prompt: list[float] = []
        samples = list(self._samples)
        for i in range(HISTORY_BUCKETS):
            mid = now - HISTORY_S + (i + 0.5) * width
            hit = next((s for s in samples if s.t0 < mid <= s.t1), None)
            gen.append(hit.gen if hit else 0.0)
            prompt.append(hit.prompt if hit else 0.0)
        seen = [s for s in samples if s.t1 > now - HISTORY_S]
        span = sum(min(s.t1, now) - max(s.t0, now - HISTORY_S) for s in seen)
        avg = sum(s.gen * (min(s.t1, now) - max(s.t0, now - HISTORY_S)) for s in seen) / span if span > 0 else 0.0
        e = snap.engine
        return ThroughputView(
            gen_tok_s=self._gen_s, prompt_tok_s=self._prompt_s, gen_history=tuple(gen), prompt_history=tuple(prompt),
            gen_peak=max((s.gen for s in seen), default=0.0), gen_avg=avg, generated_tokens=e.generated_tokens,
            prompt_tokens=e.prompt_tokens, cached_tokens=e.cached_tokens,
        )


def engine_label(e) -> str:
    """The engine process for the header: state, pid, restarts, RSS ("" when the snapshot has none)."""
    if e is None or (not e.pid and e.state == "ready"):  # an engine thread in this process (tests)
        return ""
    parts = [f"engine {e.state}"]
    if e.pid:
        parts.append(f"pid {e.pid}")
    if e.restarts:
        parts.append(f"{e.restarts} restarts")
    if e.rss_bytes:
        parts.append(f"{e.rss_bytes / 2**20:.0f} MB")
    return " ".join(parts)
