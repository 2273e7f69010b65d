"""The kernel's public API: spawn, signal, wait, renice, ps, snapshot.

Threads: the engine thread owns the llama context; one kernel thread runs the asyncio loop all agents share;
a small pool runs blocking work (tools); a watchdog names an agent that blocks the loop. The shell and the
monitor call this API from their own threads: every method here is thread-safe, and none of them runs agent
code on the caller's thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import signals as sig
from .access import AccessManager, Question, parse_capabilities
from .agent import AgentContext, AgentSpec, check_run_options
from .backend import LOCAL, BackendStats
from .config import Config, load_config
from .context import ContextManager
from .door import Door
from .engine_types import EngineStats, SeqStats, StepRecord
from .errors import KernelError as KernelError
from .errors import NoSuchProcess as NoSuchProcess
from .errors import TooManyProcesses as TooManyProcesses
from .errors import UnknownAgent as UnknownAgent
from .local_engine import make_local
from .mcp import McpManager
from .memory import MemoryManager
from .model_info import ModelError, ModelInfo
from .plugins import AgentRegistry
from .proc import Limits, Process, ProcessTable, ProcInfo, SyscallRecord, fold_result
from .requests import SCHED_CLASSES, GenRequest, GenResult, RequestHandle, SchedInfo
from .routing import Backends, RemotePool, make_pools, probe_pools
from .scheduler import Policy, load_policy
from .services import LimitExceeded, LLMError, ProcessKilled, Services
from .storage import Storage, open_storage
from .streams import Pipe
from .tools import ToolManager, ToolSpec

if TYPE_CHECKING:
    from .model import Model  # (llama_cpp is imported by the engine's process, not at the kernel's import)
Listener = Callable[[int, str, int | None], None]  # (pid, "stopped" | "continued" | "exited", status)


SIGNAL_APPLY_TIMEOUT = 5.0  # seconds `signal()` waits for the loop to apply a signal (a wedged loop must not hang kill)


@dataclass(frozen=True)
class KernelSnapshot:
    """Everything the monitor shows, taken at one moment."""

    t: float
    uptime: float
    procs: tuple[ProcInfo, ...]
    engine: EngineStats
    steps: tuple[StepRecord, ...]
    policy: dict
    model: ModelInfo
    n_threads: int
    n_gpu_layers: int
    backends: tuple[BackendStats, ...] = ()
    engine_info: Any = None  # EngineInfo: the engine process's pid, state, restarts, RSS
    mcp: tuple = ()  # McpServerState of each [mcp.NAME] server


class Kernel:
    """One model, one engine, many agent processes."""

    def __init__(
        self, config: Config | None = None, *, verbose: bool = False,
        progress: Callable[[float], None] | None = None, model: Model | None = None,
    ) -> None:
        """`model`: the configured GGUF, loaded already (tests share one): the engine's model when the engine
        runs in a thread (`kernel.engine_process = false`), and the tokeniser in the kernel's process in either
        mode, instead of loading them again. The caller keeps it and closes it after the kernel."""
        self.config = config or load_config()
        c = self.config
        # Storage first: a bad database path is a one-line StorageError before the model is loaded; then the remote
        # servers (a missing key variable or a server that does not answer is one line before the model loads).
        self.storage: Storage = open_storage(c.storage)
        self.policy_params = {"quantum": c.scheduler.quantum, "prompt_weight": c.scheduler.prompt_weight}
        pools: list[RemotePool] = []
        self.warnings: list[str] = []  # one line each, for the front end to show at start-up
        try:
            make_policy = self._policy_factory(c.scheduler.policy)
            pools = make_pools(c.backends, make_policy, boost_after_s=c.scheduler.boost_after_s,
                               count_prompt=self._count_prompt)
            for pool in pools:
                pool.start()
            self.warnings = probe_pools(pools)
            # The local engine: checked now (GGUF header, limits), started at the first LLM call (its process).
            local, self.model = make_local(c, make_policy, verbose=verbose, progress=progress,
                                           notice=self._notice, model=model)
            self._policy = make_policy()  # the kernel's copy, for describing it (each backend has its own)
            self.backends = Backends(local, pools, c.kernel.backend)
        except BaseException:
            for pool in pools:
                pool.close()
            self.storage.close()
            raise
        self.storage.set_run_info(model=self.local.model_info.path)
        self.access = AccessManager(audit=self.storage.audit, allow=c.access.allow, deny=c.access.deny,
                                    confirm_irreversible=c.access.confirm_irreversible)
        self.memory = MemoryManager(
            self.storage, per_agent_tokens=c.memory.per_agent_tokens, total_tokens=c.memory.total_tokens,
            count_tokens=lambda text: len(self.model.tokenize(text, special=False)), access=self.access,
        )
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="aiosh-pool")
        self.context = ContextManager(self.model, self.storage, c, self.backends, self.pool, self.track_call)
        self._acc_lock = threading.Lock()  # backends account from their own threads
        self.backends.add_step_listener(self._on_step)
        self.agents = AgentRegistry(c.plugins.paths)
        self.tools = ToolManager(self.agents, self.access, self.memory, self.context.conversations_of,
                                 lambda: self._loop_thread)
        self.mcp = McpManager(c.mcp)  # MCP servers' tools as NAME.TOOL; servers start at first use
        self.tools.add_provider(self.mcp)
        self.started_at = time.time()
        self.procs = ProcessTable()  # the one owner of the process records
        self._lock = self.procs.lock
        self._cond = self.procs.cond
        self._listeners: list[Listener] = []
        # The LLM call in flight per request id: each step's tokens go to its record and to its Process (the one
        # place every reader, ps, top, logs and storage, takes them from); `_early` holds a step that came before
        # the call was tracked.
        self._calls: dict[int, SyscallRecord] = {}
        self._early: dict[int, list[float]] = {}
        self.door = Door(self)  # the OpenAI-compatible door for host programs; its server starts at first use
        # What an agent's context may use of the kernel (never the Kernel itself).
        self.services = Services(
            config=c, storage=self.storage, access=self.access, memory=self.memory, context=self.context,
            tools=self.tools, agents=self.agents, backends=self.backends, door=self.door, pool=self.pool,
            spawn=self.spawn, await_child=self.await_child, track_call=self.track_call,
            vocabulary_ready=self.vocabulary_ready, default_limits=self.default_limits, process=self.process,
        )
        self.watchdog_events: list[str] = []
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._run_loop, name="aiosh-kernel", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="aiosh-watchdog", daemon=True)
        self._closing = False
        self._beat = time.monotonic()
        if not c.kernel.engine_process:
            self.local.start()  # the engine thread (its model is loaded already)
        self._loop_thread.start()
        self._watchdog.start()

    def loop_thread(self) -> threading.Thread:
        """The thread that runs the kernel's loop (work that waits for the loop must not run on it)."""
        return self._loop_thread

    # --- lifecycle --------------------------------------------------------------------------------------------
    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def shutdown(self, grace: float = 2.0) -> None:
        """HUP every live agent, give them `grace` seconds, KILL the rest, stop the threads."""
        if self._closing:
            return
        live = [p.pid for p in self._live()]
        for pid in live:
            self._post(pid, sig.SIGHUP)
        deadline = time.monotonic() + grace
        with self._cond:
            while self.procs.live() and time.monotonic() < deadline:
                self._cond.wait(0.05)
        killed = self._live()
        for p in killed:
            self._post(p.pid, sig.SIGKILL)
        self._closing = True
        if killed:
            time.sleep(0.05)  # let the killed agents' tasks end before the loop stops
        self.door.close()
        self.mcp.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(timeout=5)
        self.backends.close()
        self.tools.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.storage.close()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # --- spawning ---------------------------------------------------------------------------------------------
    def spawn(
        self, agent: str, argv: list[str] | None = None, *, stdin: Pipe | None = None, stdout: Pipe | None = None,
        stderr: Pipe | None = None, nice: int = 0, sched_class: str | None = None, ppid: int = 0,
        pgid: int | None = None, limits: Limits | None = None, die_with_parent: bool = False,
        options: dict | None = None, cwd: str = ".", env: dict[str, str] | None = None, detached: bool = False,
        spec: AgentSpec | None = None,
    ) -> int:
        """Start an agent process; returns its pid. UnknownAgent or ValueError for bad arguments; TooManyProcesses
        when `limits.max_procs` processes are alive already.

        `detached`: a child that outlives a parent ended by a limit (otherwise such a parent takes its children).
        `spec` runs that code under the name `agent` instead of looking the name up (the door's host processes
        are named after their programs)."""
        if self._closing:
            raise KernelError("kernel is shutting down")
        check_run_options(options or {})
        spec = spec or self.agents.get(agent)
        if spec is None:
            raise UnknownAgent(f"{agent}: no such agent")
        klass = sched_class or spec.sched_class
        if klass not in SCHED_CLASSES:
            raise ValueError(f"unknown scheduling class '{klass}' (one of {', '.join(SCHED_CLASSES)})")
        lim = limits or self.default_limits()
        opts = options or {}
        for caps in (opts.get("allow"), opts.get("deny"), spec.needs):
            if caps is not None:
                parse_capabilities(caps)  # ValueError now, before a pid is handed out
        backend = self.backends.resolve(opts.get("backend"))  # ValueError for an unknown name
        with self._lock:
            parent = self.procs.get(ppid)
            if ppid and (parent is None or parent.status is not None):
                raise NoSuchProcess(f"({ppid}) - No such process")
            max_procs = self.config.limits.max_procs
            if max_procs and len(self.procs.live()) >= max_procs:
                raise TooManyProcesses(f"fork: retry: Resource temporarily unavailable ({max_procs} agent processes "
                                       "alive: limits.max_procs)")
            pid = self.procs.next_pid()
            group = pgid if pgid is not None else pid
            proc = Process(
                pid=pid, ppid=ppid, pgid=group, agent=agent, argv=list(argv or []),
                sched=SchedInfo(owner=pid, group=group, nice=_clamp_nice(nice), sched_class=klass),
                limits=lim, die_with_parent=die_with_parent, from_shell=(ppid == 0), detached=detached,
                backend=backend.name,
            )
            self.access.admit(pid, agent=agent, cwd=cwd, needs=spec.needs, allow=opts.get("allow"),
                              deny=opts.get("deny"), yes=bool(opts.get("yes")), parent=ppid)
            self.procs.add(proc)
        out = stdout or Pipe(f"{agent}[{pid}] stdout")
        err = stderr or Pipe(f"{agent}[{pid}] stderr")
        ctx = AgentContext(self.services, proc, stdin, out, err, cwd, env or {}, options or {})
        proc.ctx = ctx
        self.loop.call_soon_threadsafe(self._start, proc, spec, ctx)
        return pid

    def _start(self, proc: Process, spec: AgentSpec, ctx: AgentContext) -> None:
        proc.resumed = asyncio.Event()
        proc.resumed.set()
        proc.stopped = asyncio.Event()
        proc.exit_future = self.loop.create_future()
        proc.started = time.time()
        proc.task = self.loop.create_task(self._run_agent(proc, spec, ctx), name=f"agent:{proc.pid}")
        proc.task.add_done_callback(lambda _t: self._ended_before_start(proc, ctx))
        self._persist(proc)
        if proc.limits.max_time:
            self.loop.call_later(proc.limits.max_time, self._time_limit, proc, ctx)

    async def _run_agent(self, proc: Process, spec: AgentSpec, ctx: AgentContext) -> None:
        status = 0
        try:
            value = await spec.main(ctx)
            status = (value & 0xFF) if isinstance(value, int) else 0
        except asyncio.CancelledError:
            status = self._status_for_cancel(proc, ctx)
        except LimitExceeded as exc:
            proc.limit_hit = proc.limit_hit or str(exc)
            self._limit_message(proc, ctx, str(exc))
            status = 128 + sig.SIGXCPU
        except ProcessKilled:
            status = 128 + sig.SIGKILL
        except LLMError as exc:
            _safe_write(ctx.stderr.pipe, f"aiosh: {proc.agent}: llm: {exc}\n")
            status = 1
        except KernelError as exc:  # the kernel refused a request (a spawn past limits.max_procs …): one line
            _safe_write(ctx.stderr.pipe, f"aiosh: {proc.agent}[{proc.pid}]: {' '.join(str(exc).split())}\n")
            status = 1
        except PermissionError as exc:  # a denied capability the agent did not handle: "cannot run"
            msg = " ".join(str(exc).split()) or "permission denied"
            _safe_write(ctx.stderr.pipe, f"aiosh: {proc.agent}[{proc.pid}]: permission denied: {msg}\n")
            status = 126
        except Exception:  # noqa: BLE001 - an agent's bug ends that agent only
            _safe_write(ctx.stderr.pipe, traceback.format_exc())
            status = 1
        finally:
            if proc.killed:
                status = 128 + sig.SIGKILL
            self._exit(proc, status, ctx)

    def _ended_before_start(self, proc: Process, ctx: AgentContext) -> None:
        """A signal that arrives before the agent's first step cancels the task before `_run_agent` can run."""
        if proc.status is None:
            self._exit(proc, self._status_for_cancel(proc, ctx), ctx)

    def _status_for_cancel(self, proc: Process, ctx: AgentContext) -> int:
        if proc.killed:
            return 128 + sig.SIGKILL
        if proc.limit_hit:
            self._limit_message(proc, ctx, proc.limit_hit)
            return 128 + sig.SIGXCPU
        return 128 + (proc.pending_signal or sig.SIGTERM)

    def _limit_message(self, proc: Process, ctx: AgentContext, what: str) -> None:
        _safe_write(ctx.stderr.pipe, f"aiosh: {proc.agent}[{proc.pid}]: {what}\n")

    def _time_limit(self, proc: Process, ctx: AgentContext) -> None:
        if proc.status is None and proc.task is not None:
            proc.limit_hit = f"time limit ({proc.limits.max_time:g} s) exceeded"
            # Its children go at once, not when its task has unwound: a child's own (inherited) timer started
            # later and must not win the race against the parent's.
            with self._lock:
                doomed = [c.pid for c in self.procs.children(proc.pid) if c.status is None and not c.detached]
            for pid in doomed:
                self._deliver(pid, sig.SIGKILL)
            self._cancel_task(proc)

    def _exit(self, proc: Process, status: int, ctx: AgentContext | None) -> None:
        """The process ends: status kept (Z) until collected; stdio closed; children reparented or killed."""
        orphans_to_kill = self.procs.exited(proc, status, _doomed, self._persist)
        if orphans_to_kill is None:
            return
        for rec in list(proc.syscalls):  # a call the process never returned from (killed, signalled)
            if not rec.t_finished:
                rec.outcome = rec.outcome or "interrupted"
                self.storage.save_syscall(rec)
        self.memory.release(proc.pid)
        self.context.release(proc.pid)
        self.access.forget(proc.pid)
        if ctx is not None:
            for pipe in (ctx.stdout.pipe, ctx.stderr.pipe):
                pipe.close()
        if proc.exit_future is not None and not proc.exit_future.done():
            proc.exit_future.set_result(status)
        parent = self.procs.get(proc.ppid)
        if parent is not None and parent.child_event is not None:
            parent.child_event.set()
        for pid in orphans_to_kill:
            self._deliver(pid, sig.SIGKILL)
        self._notify(proc.pid, "exited", status)

    def usage(self, pids: range | list[int]) -> tuple[int, int, float]:
        """Tokens in, tokens out and decode seconds of these pids, live or already collected (for `time`)."""
        return self.procs.usage(pids)

    @property
    def last_pid(self) -> int:
        """The highest pid handed out so far (pids grow and are never reused)."""
        return self.procs.last_pid

    # --- signals ----------------------------------------------------------------------------------------------
    def signal(self, target: int, signum: int | str = sig.SIGTERM) -> list[int]:
        """Send a signal to a pid (target > 0) or a process group (target < 0); returns the pids signalled."""
        num = sig.parse_signal(signum) if isinstance(signum, str) else signum
        if num not in sig.NAMES and num != 0:
            raise ValueError(f"{signum}: invalid signal specification")
        with self._lock:
            if target > 0:
                p = self.procs.get(target)
                if p is None:
                    raise NoSuchProcess(f"({target}) - No such process")
                pids = [target] if p.status is None else []
                if p.status is not None:
                    return []  # a zombie ignores signals, as on Unix
            elif target < 0:
                group = self.procs.group(-target)
                pids = [p.pid for p in group if p.status is None]
                if not pids and not group:
                    raise NoSuchProcess(f"({target}) - No such process")
            else:
                raise NoSuchProcess("(0) - No such process")
        self._post_all(pids, num)
        return pids

    def _post(self, pid: int, num: int) -> None:
        self._post_all([pid], num)

    def _post_all(self, pids: list[int], num: int) -> None:
        """Apply a signal to these pids before returning: `kill -STOP` returns with the process in T, and no
        later signal can overtake it. On the loop's own thread (an agent signalling) it is applied in place;
        from any other thread it runs on the loop and this waits for it (bounded, should the loop be wedged)."""
        if num == sig.SIGKILL:
            with self._lock:
                for pid in pids:
                    p = self.procs.get(pid)
                    if p is not None and p.status is None:
                        p.killed = True  # from now on every context call raises, even before the loop runs
        if not pids:
            return
        if threading.current_thread() is self._loop_thread:
            for pid in pids:
                self._deliver(pid, num)
            return
        applied = threading.Event()

        def deliver() -> None:
            try:
                for pid in pids:
                    self._deliver(pid, num)
            finally:
                applied.set()

        try:
            self.loop.call_soon_threadsafe(deliver)
        except RuntimeError:  # loop closed during shutdown
            return
        owned = getattr(self._lock, "_is_owned", lambda: False)()  # a signal handler that interrupted a holder
        if self._loop_thread.is_alive() and not self._closing and not owned:
            applied.wait(SIGNAL_APPLY_TIMEOUT)

    def _deliver(self, pid: int, num: int) -> None:
        """On the kernel loop: apply one signal's default action (or hand it to the agent)."""
        p = self.procs.get(pid)
        if p is None or p.status is not None or num == 0 or num in sig.IGNORED_BY_DEFAULT:
            return
        if num == sig.SIGKILL:
            p.killed = True
            self._cancel_llm(p)
            self._cancel_task(p)
            if p.resumed is not None:
                p.resumed.set()
            self._exit(p, 128 + sig.SIGKILL, None)
            self._close_stdio_later(p)
            return
        if num in sig.STOPPING:
            if p.set_stopped(True):
                self.backends.wake()
                self._persist(p)
                self._notify(pid, "stopped", 128 + num)
            return
        if num == sig.SIGCONT:
            self._continue(p)
            return
        # TERM, INT, HUP, USR1 …: a stopped process is continued so it can act on it (bash does the same).
        self._continue(p)
        p.pending_signal = num
        if isinstance(p.ctx, AgentContext):
            p.ctx.signal = num
        self._cancel_llm(p)
        self._cancel_task(p)

    def _continue(self, p: Process) -> None:
        if p.set_stopped(False):
            self.backends.wake()
            self._persist(p)
            self._notify(p.pid, "continued", None)

    def _cancel_llm(self, p: Process) -> None:
        handle = p.current_llm
        if handle is not None:
            handle.cancel()  # frees its slot and KV at once

    def _cancel_task(self, p: Process) -> None:
        if p.task is not None and not p.task.done():
            p.task.cancel()

    def _close_stdio_later(self, p: Process) -> None:
        """After SIGKILL the task may still unwind; its pipes must reach EOF now so readers do not hang."""
        ctx = p.ctx
        if isinstance(ctx, AgentContext):
            ctx.stdout.pipe.close()
            ctx.stderr.pipe.close()

    # --- confirmations of irreversible actions ---------------------------------------------------------------
    @property
    def interactive_confirmations(self) -> bool:
        """True while a front end (the REPL) answers `questions()`; False (batch mode): irreversible actions
        are refused unless the policy or the run's --yes allows them."""
        return self.access.interactive

    @interactive_confirmations.setter
    def interactive_confirmations(self, value: bool) -> None:
        self.access.interactive = bool(value)

    def questions(self) -> list[Question]:
        """y/N questions waiting for the user, oldest first (each agent waits in state S, wchan "user")."""
        return self.access.questions()

    def answer(self, qid: int, yes: bool) -> bool:
        """Answer a question; False if it is no longer waiting (answered already, or its agent ended)."""
        return self.access.answer(qid, yes)

    def add_question_listener(self, fn: Callable[[Question], None]) -> None:
        """fn(question) is called on the kernel's loop thread when an agent asks; keep it short."""
        self.access.add_question_listener(fn)

    def capabilities(self, pid: int) -> list[str]:
        """What a live process may do (its capabilities and grants; path capabilities absolute)."""
        return self.access.capabilities(pid)

    # --- waiting ----------------------------------------------------------------------------------------------
    def wait(self, pid: int | None = None, timeout: float | None = None) -> tuple[int, int] | None:
        """Block (on the caller's thread) until pid, or any child of the shell, has exited; collect it.

        Returns (pid, status), or None on timeout. NoSuchProcess if there is nothing to wait for.
        """
        return self.procs.wait(pid, timeout, NoSuchProcess)

    async def await_child(self, parent: Process, pid: int | None) -> tuple[int, int]:
        """An agent waits for its own child (on the kernel loop)."""
        return await self.procs.await_child(parent, pid)

    # --- priorities and policy --------------------------------------------------------------------------------
    def default_limits(self) -> Limits:
        """The limits of an agent started without its own ([limits] in aiosh.toml)."""
        cfg = self.config.limits
        return Limits(cfg.max_tokens, cfg.max_time, cfg.max_kv)

    def renice(self, pid: int, nice: int) -> int:
        """Set a live process's nice (clamped to −20…19, as renice does); returns the value set."""
        with self._lock:
            p = self.procs.get(pid)
            if p is None or p.status is not None:
                raise NoSuchProcess(f"({pid}) - No such process")
            p.sched.nice = _clamp_nice(nice)
            return p.sched.nice

    def set_policy(self, name: str, **params: float) -> Policy:
        """Switch the scheduling policy at run time; running agents keep their slots and KV."""
        make = self._policy_factory(name, params)
        self.backends.set_policy(make)
        self._policy = make()
        return self._policy

    def _policy_factory(self, name: str, params: dict | None = None) -> Callable[[], Policy]:
        """A maker of fresh instances of one policy (each backend's queue has its own); ValueError now if the name
        or a parameter is wrong."""
        values = {**self.policy_params, **(params or {})}
        paths = list(self.config.plugins.paths)
        load_policy(name, values, extra_paths=paths)
        return lambda: load_policy(name, values, extra_paths=paths)

    def _count_prompt(self, req: GenRequest) -> int:
        """Prompt tokens of a request as the local model counts them: a remote server's own count replaces this
        estimate when it reports usage."""
        if req.tokens is not None:
            return len(req.tokens)
        if req.messages is not None:
            return self.context.count(req.messages)
        return len(self.model.tokenize(req.prompt or ""))

    @property
    def policy(self) -> Policy:
        return self._policy

    # --- the local engine (through its backend: a process, or a thread in tests) -------------------------------
    @property
    def local(self):
        """The local backend (EngineProcess, or LocalBackend in tests): engine_info, restart, start, stats."""
        return self.backends.local

    def engine_info(self):
        """The engine's pid, state (stopped, starting, ready, restarting, crashed, failed), restarts and RSS."""
        return self.local.engine_info()

    def engine_start(self, wait: float | None = None) -> bool:
        """Start the engine now (in the background unless `wait`), as an interactive shell does."""
        return self.local.start(wait)  # (the tokeniser loads at its first use: no GIL work while the prompt draws)

    async def vocabulary_ready(self, backend: str | None = "") -> None:
        """The tokeniser is loaded at its first use, off the kernel loop (the loop keeps serving meanwhile).

        `backend`: the LLM call's backend name; if that is the local engine, its start overlaps the load."""
        if backend != "" and self.backends.resolve(backend).kind == LOCAL:
            self.local.start()
        if not getattr(self.model, "loaded", True):
            try:
                await asyncio.get_running_loop().run_in_executor(self.pool, self.model.load)
            except ModelError as exc:  # a GGUF whose header passed the start-up checks but llama.cpp refuses
                raise LLMError(str(exc)) from None

    def engine_restart(self) -> None:
        """`sched engine restart`: forget the crash count and start a new engine."""
        self.local.restart()

    def engine_log(self, lines: int = 20) -> list[str]:
        """The last lines of llama.cpp's log (the engine process writes it to a file)."""
        return self.local.log_tail(lines)

    def _notice(self, line: str) -> None:
        """Something the user should know that happened after start-up (e.g. the extra-buffers retry)."""
        self.warnings.append(line)
        try:
            import sys

            sys.stderr.write(f"aiosh: warning: {line}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    # --- storage: the record of every process, and the shell's history ----------------------------------------
    def _persist(self, proc: Process) -> None:
        """A state change (spawn, stop, continue, exit): the whole process record, one committed write."""
        if self.storage.enabled:
            with self._lock:
                self.storage.save_process(self._info(proc, self.backends.seqs()))

    def history_add(self, line: str) -> None:
        """Append a command line to the shell history (kept across runs in storage)."""
        self.storage.history_add(line)

    def history_list(self, limit: int | None = None) -> list[str]:
        """Command lines of this and earlier runs, oldest first (the last `limit`)."""
        return self.storage.history_list(limit)

    # --- observation ------------------------------------------------------------------------------------------
    def agent_types(self) -> dict[str, AgentSpec]:
        return self.agents.all()

    def tool_types(self) -> dict[str, ToolSpec]:
        """The tools agents can call (built-in, user folders, entry points, MCP servers), by name."""
        return self.tools.all()

    def ps(self) -> list[ProcInfo]:
        seqs = self.backends.seqs()
        with self._lock:
            return [self._info(p, seqs) for p in self.procs.all()]

    def proc(self, pid: int) -> ProcInfo:
        with self._lock:
            p = self.procs.get(pid)
            if p is None:
                raise NoSuchProcess(f"({pid}) - No such process")
            return self._info(p, self.backends.seqs())

    def state(self, pid: int) -> str | None:
        with self._lock:
            p = self.procs.get(pid)
            return None if p is None else self._state_of(p, self.backends.seqs())

    def process(self, pid: int) -> Process | None:
        """The kernel's own record of a process (for its managers: the door), None once it was collected."""
        with self._lock:
            return self.procs.get(pid)

    def syscalls(self, pid: int) -> list[SyscallRecord]:
        with self._lock:
            p = self.procs.get(pid)
            if p is None:
                raise NoSuchProcess(f"({pid}) - No such process")
            return [replace(r) for r in p.syscalls]

    def snapshot(self, steps: int = 200) -> KernelSnapshot:
        stats = self.local.stats
        seqs = self.backends.seqs()
        with self._lock:
            procs = tuple(self._info(p, seqs) for p in self.procs.all())
        return KernelSnapshot(
            t=time.time(), uptime=time.time() - self.started_at, procs=procs, engine=stats,
            steps=tuple(self.local.steps(steps)), policy=self.policy.describe(), model=self.local.model_info,
            n_threads=self.local.n_threads, n_gpu_layers=self.config.model.n_gpu_layers,
            backends=self.backends.stats(), engine_info=self.engine_info(), mcp=tuple(self.mcp.states()),
        )

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def _notify(self, pid: int, kind: str, status: int | None) -> None:
        for fn in list(self._listeners):
            try:
                fn(pid, kind, status)
            except Exception:  # noqa: BLE001 - a listener's bug must not break the kernel
                traceback.print_exc()

    def _state_of(self, p: Process, seqs: tuple[SeqStats, ...]) -> str:
        if p.status is not None:
            return "Z"
        if p.is_stopped:
            return "T"
        if p.activity == "llm":
            for s in seqs:
                if s.owner == p.pid and s.slot is not None and s.state in ("prefill", "decode"):
                    return "R"
            return "S"
        return "R" if p.activity in ("run", "tool") else "S"

    def _info(self, p: Process, seqs: tuple[SeqStats, ...]) -> ProcInfo:
        mine = [s for s in seqs if s.owner == p.pid]
        remote = self.backends.resolve(p.backend).kind != LOCAL  # its KV is the server's: unknown here
        kv: int | None = None if remote else sum(s.kv_tokens for s in mine)
        swapped = sum(s.swapped_bytes for s in mine)
        # Switches of calls still in flight; a finished call's are in p.switches (added when it ended), so a
        # sequence still in a stale engine picture after its call ended is not counted twice.
        live_switches = sum(s.switches for s in mine if s.rid in self._calls)
        boosted = any(s.boosted for s in mine)
        state = self._state_of(p, seqs)
        wchan = "" if state in ("R", "Z", "T") else ("slot" if p.activity == "llm" else p.wchan)
        return ProcInfo(
            pid=p.pid, ppid=p.ppid, pgid=p.pgid, agent=p.agent, argv=tuple(p.argv), state=state, wchan=wchan,
            nice=p.sched.nice, sched_class=p.sched.sched_class, pri=20 + p.sched.nice - (10 if boosted else 0),
            boosted=boosted, created=p.created, started=p.started, ended=p.ended, decode_s=p.decode_s,
            tokens_in=p.tokens_in, tokens_out=p.tokens_out, kv_tokens=kv,
            kv_bytes=None if kv is None else kv * self.local.model_info.kv_bytes_per_token,
            swapped_bytes=swapped, switches=p.switches + live_switches, syscalls=p.syscall_count,
            status=p.status, limits=p.limits, recent_output=p.recent_output(),
            backend=mine[0].backend if mine else p.backend,
        )

    # --- accounting (engine thread) ---------------------------------------------------------------------------
    def _on_step(self, rec: StepRecord) -> None:
        with self._acc_lock:
            self._account(rec)

    def _account(self, rec: StepRecord) -> None:
        """Charge one step to its processes and to their calls' records: a token counted once, read everywhere."""
        units = rec.n_tokens or 1
        share = rec.duration / units
        for owner, rid in rec.decoded:
            self._charge(owner, rid, 0, 0, share)
        for owner, rid in rec.sampled:
            self._charge(owner, rid, 0, 1, 0.0)
        for owner, rid, n in rec.prefilled:
            self._charge(owner, rid, n, 0, share * n)

    def _charge(self, owner: int, rid: int, tin: int, tout: int, secs: float) -> None:
        p = self.procs.get(owner)
        if p is None:
            return
        p.tokens_in += tin
        p.tokens_out += tout
        p.decode_s += secs
        call = self._calls.get(rid)
        if call is None:  # the step came before the agent tracked its call: kept until it does
            early = self._early.setdefault(rid, [0, 0, 0.0])
            early[0], early[1] = early[0] + tin, early[1] + tout
            early[2] = early[2] or time.time()
            while len(self._early) > 256:
                self._early.pop(next(iter(self._early)))
            return
        call.tokens_in += tin
        call.tokens_out += tout
        if not call.t_started:
            call.t_started = time.time()  # admitted: its first step
        if tout and not call.t_first:
            call.t_first = time.time()

    def track_call(self, proc: Process, rec: SyscallRecord, handle: RequestHandle) -> None:
        """An LLM call in flight: its steps are charged to `rec` and `proc` live (so a running or cancelled call
        shows what was done), and its result is folded in once, when it ends (before its caller sees the end)."""
        with self._acc_lock:
            self._calls[handle.id] = rec
            early = self._early.pop(handle.id, None)
            if early is not None:
                rec.tokens_in += int(early[0])
                rec.tokens_out += int(early[1])
                rec.t_started = rec.t_started or early[2]

        def ended(result: GenResult) -> None:
            with self._acc_lock:
                self._calls.pop(handle.id, None)
                fold_result(proc, rec, result)
                if rec.t_finished:  # cancelled: the record was saved at the cancel; now with its last step too
                    self.storage.save_syscall(rec)

        handle.add_done_callback(ended)

    def _live(self) -> list[Process]:
        return self.procs.live()

    # --- watchdog ---------------------------------------------------------------------------------------------
    def _watch(self) -> None:
        limit = self.config.kernel.watchdog_ms / 1000.0
        reported: int | None = None
        while not self._closing:
            sent = time.monotonic()
            try:
                self.loop.call_soon_threadsafe(self._heartbeat)
            except RuntimeError:
                return
            time.sleep(limit / 2)
            blocked = time.monotonic() - self._beat
            if self._beat >= sent:
                reported = None
                continue
            if blocked > limit:
                task = asyncio.current_task(self.loop) if self.loop.is_running() else None
                name = task.get_name() if task is not None else ""
                if name.startswith("agent:") and reported != id(task):
                    reported = id(task)
                    pid = int(name.split(":", 1)[1])
                    p = self.procs.get(pid)
                    what = f"{p.agent}[{pid}]" if p else f"pid {pid}"
                    line = f"aiosh: watchdog: {what} blocks the kernel loop (>{limit * 1000:.0f} ms); " \
                           f"blocking work belongs in ctx.run_blocking"
                    self.watchdog_events.append(line)
                    if p is not None and isinstance(p.ctx, AgentContext):
                        _safe_write(p.ctx.stderr.pipe, line + "\n")

    def _heartbeat(self) -> None:
        self._beat = time.monotonic()


def _doomed(parent: Process, child: Process) -> bool:
    """A child ends with its parent if started so, or if a limit ended the parent and it was not detached."""
    return child.die_with_parent or bool(parent.limit_hit and not child.detached)


def _clamp_nice(nice: int) -> int:
    return max(-20, min(19, int(nice)))


def _safe_write(pipe: Pipe, text: str) -> None:
    try:
        if not pipe.closed:
            pipe.write(text)
    except ValueError:
        pass
