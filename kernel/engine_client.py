"""The local backend as the kernel sees it: an engine process, started on demand and supervised.

`EngineProcess` implements the `Backend` interface over a child process (`kernel.engine_process`). It starts the
child at the first LLM call (or when a front end asks for it early, `start()`), queues calls while the engine is
starting, and forwards each call's text and end, which come back once per engine step.

When the child dies (any signal, any exit) every call it was serving ends with one line,
`engine crashed (SIGSEGV); restarting`, and a new child starts; calls made meanwhile wait for it (their agents show
as waiting, S). Three crashes within a minute stop the restarts: calls fail at once, saying why and where the log
is, until `restart()` (`sched engine restart`). If the child dies while loading or before its first decode with
llama.cpp's extra buffer types on, it is started again once with them off, and its calls are sent again (none has
seen a token).

One supervisor thread starts every child: PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, so
that thread lives as long as the backend.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backend import LOCAL, BackendStats, RequestTracker
from .cpu import ExtraBuffers
from .engine_spawn import default_log_path, spawn, take_prestarted
from .engine_types import EngineInfo, EngineSettings, EngineStats, SeqStats, StepRecord
from .grammar_check import check_grammar_text
from .model_info import ModelInfo
from .requests import REQUEST_IDS, EngineError, GenRequest, GenResult, RequestHandle
from .scheduler import Policy

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

CRASH_LOOP = 3  # crashes …
CRASH_WINDOW_S = 60.0  # … within this long stop the restarts
SCHED_SYNC_S = 0.1  # how often renice/class changes of running calls reach the engine
LOG_TAIL = 5  # log lines shown with a crash


@dataclass
class EngineSpec:
    """Everything the child needs to load the model and run the engine (pickled to it)."""

    model_path: str
    n_gpu_layers: int
    chat_template: str
    extra_buffers: ExtraBuffers
    settings: EngineSettings
    policy: str
    policy_params: dict
    plugin_paths: list[str]
    boost_after_s: float
    verbose: bool = False
    log_path: str = ""


@dataclass
class _Call:
    """A call on its way to or in the engine process: what only this side knows of it (its request, prompt size
    and counts are the handle's)."""

    handle: RequestHandle
    t_submit: float  # for the result this side makes when it ends the call itself (cancelled unsent, a crash)
    sent: bool = False
    last_sched: tuple = ()
    started: bool = False  # the engine has it (its prompt size is known: handle.n_prompt)

    @property
    def req(self) -> GenRequest:
        return self.handle.request


def signal_name(returncode: int) -> str:
    """SIGSEGV for -11, 'exit 3' for 3: how the child ended."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


def _rss_of(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class EngineProcess:
    """The local engine in its own supervised process, behind the `Backend` interface."""

    kind = LOCAL

    def __init__(self, spec: EngineSpec, info: ModelInfo, *, notice: Callable[[str], None] | None = None) -> None:
        self.name = LOCAL
        self.spec = spec
        self.settings = spec.settings
        self.log_path = Path(spec.log_path) if spec.log_path else default_log_path()
        self.model_info = info  # from the GGUF header until the engine reports its own
        self.n_threads = spec.settings.n_threads or os.cpu_count() or 1
        self.tracker = RequestTracker()
        self._notice = notice or (lambda line: None)
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._calls: dict[int, _Call] = {}
        self._listeners: list[Callable[[StepRecord], None]] = []
        self._steps: deque[StepRecord] = deque(maxlen=spec.settings.step_history)
        self._stats = EngineStats(kv_capacity=spec.settings.effective_kv_cells,
                                  kv_bytes_per_token=info.kv_bytes_per_token, slots=spec.settings.n_slots,
                                  policy=spec.policy)
        self._conn: Connection | None = None
        self._proc: subprocess.Popen | None = None
        self.state = "stopped"
        self.restarts = 0
        self.last_error = ""
        self._crashes: deque[float] = deque()
        self._decoded = False  # the current child has finished a step (a decode ran)
        self._retried_extra = False
        self._wanted = threading.Event()
        self._ready = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._supervise, name="aiosh-engine-supervisor", daemon=True)
        self._thread.start()

    # --- the Backend interface --------------------------------------------------------------------------------
    def submit(self, req: GenRequest) -> RequestHandle:
        rid = next(REQUEST_IDS)
        handle = RequestHandle(rid, req, self._cancel)
        call = _Call(handle, time.monotonic())
        handle.add_done_callback(self._finished)
        if req.grammar is not None:
            try:
                check_grammar_text(req.grammar)  # refused here: llama.cpp would abort the engine on it
            except EngineError as exc:
                self._end(call, str(exc))
                return handle
        with self._lock:
            if self.state == "failed" or self._closed:
                self._end(call, self.last_error or "engine is not running")
                return handle
            self._calls[rid] = call
            ready = self.state == "ready"
            if ready:
                self._mark_sent(call)
            else:
                self._wanted.set()
        if ready:  # sent outside the lock: the supervisor's reader must never wait on a blocked send
            self._send(("submit", rid, req))
        return handle

    def _finished(self, result: GenResult) -> None:
        result.backend = LOCAL
        self.tracker.finished(result)

    def _cancel(self, rid: int) -> None:
        with self._lock:
            call = self._calls.get(rid)
            if call is None:
                return
            if not call.sent:
                self._calls.pop(rid, None)
                call.handle._finish(GenResult(finish_reason="cancelled", t_submit=call.t_submit,
                                              t_end=time.monotonic()))
                return
        self._send(("cancel", rid))

    def wake(self) -> None:
        self._sync_sched(force=True)

    def set_policy(self, policy: Policy) -> None:
        self.spec.policy = policy.name
        self.spec.policy_params = dict(policy.params)
        self._stats = replace(self._stats, policy=policy.name)
        self._send(("policy", policy.name, dict(policy.params), list(self.spec.plugin_paths)))

    def add_step_listener(self, fn: Callable[[StepRecord], None]) -> None:
        self._listeners.append(fn)

    def seqs(self) -> tuple[SeqStats, ...]:
        live = self._stats.seqs
        known = {s.rid for s in live}
        with self._lock:  # calls that wait for an engine (starting, restarting) are waiting, not running
            waiting = tuple(
                SeqStats(rid=c.handle.id, owner=c.req.sched.owner, state="waiting", slot=None, kv_tokens=0,
                         kv_bytes=0, swapped_bytes=0, prompt_tokens=c.handle.n_prompt, generated=0, switches=0,
                         boosted=False, service=0.0)
                for c in self._calls.values() if c.handle.id not in known and not c.started)
        return live + waiting

    @property
    def n_ctx(self) -> int:
        return self.settings.n_ctx

    @property
    def stats(self) -> EngineStats:
        return self._stats

    def steps(self, last: int | None = None) -> list[StepRecord]:
        recs = list(self._steps)
        return recs[-last:] if last else recs

    def backend_stats(self) -> list[BackendStats]:
        st = self._stats
        waiting = sum(1 for s in self.seqs() if s.slot is None)
        return [BackendStats(
            name=LOCAL, kind=LOCAL, pool=LOCAL, model=self.model_info.description, url=self.model_info.path,
            healthy=self.state not in ("crashed", "failed"), queued=waiting,
            in_flight=sum(1 for s in st.seqs if s.slot is not None), max_concurrent=st.slots,
            requests=self.tracker.requests, errors=self.tracker.errors, retries=0, ttft_s=self.tracker.ttft(),
            tokens_per_s=self.tracker.rate(), last_error=self.last_error,
        )]

    def forget_conversation(self, key: str) -> None:
        self._send(("forget", key))

    def clear_idle_caches(self, timeout: float = 10.0) -> None:
        """Drop idle KV caches (tests and benchmarks); returns once fresh stats have arrived."""
        before = self._stats
        self._send(("clear_idle",))
        deadline = time.monotonic() + timeout
        while self._stats is before and time.monotonic() < deadline and self.state == "ready":
            time.sleep(0.01)

    def engine_info(self) -> EngineInfo:
        proc = self._proc
        pid = proc.pid if proc is not None and proc.poll() is None else None
        return EngineInfo(pid=pid, state=self.state, restarts=self.restarts, rss_bytes=_rss_of(pid),
                          extra_buffers=self.spec.extra_buffers.describe(), log_path=str(self.log_path),
                          last_error=self.last_error)

    def log_tail(self, n: int = LOG_TAIL) -> list[str]:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - 16384))
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []
        return [ln for ln in lines if ln.strip()][-n:]

    def start(self, wait: float | None = None) -> bool:
        """Start the engine now (an interactive shell does, in the background); wait up to `wait` s for it."""
        with self._lock:
            if self.state == "failed" or self._closed:
                return False
            if self.state == "stopped":
                self.state = "starting"  # at once: `sched` right after a start says so
            self._wanted.set()
            if wait is None:
                return self.state == "ready"
            deadline = time.monotonic() + wait
            while self.state != "ready" and self.state != "failed":
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            return self.state == "ready"

    def restart(self) -> None:
        """`sched engine restart`: forget the crash count, end the current child (if any), start a new one."""
        with self._lock:
            self._crashes.clear()
            self.last_error = ""
            if self.state == "failed":
                self.state = "stopped"
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()  # its calls end as in a crash; the supervisor starts the next one
        self._wanted.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            proc = self._proc
            calls = list(self._calls.values())
            self._calls.clear()
        for call in calls:
            self._end(call, "engine shut down", reason="cancelled")
        self._wanted.set()
        if not self._send(("stop",)) and proc is not None and proc.poll() is None:
            proc.kill()  # still loading (no connection to ask it on): nothing of it is worth waiting for
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._thread.join(timeout=5)
        try:
            self.log_path.unlink()
        except OSError:
            pass

    # --- talking to the child ---------------------------------------------------------------------------------
    def _send(self, msg: tuple) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            with self._send_lock:
                conn.send(msg)
            return True
        except (OSError, ValueError):  # the child is gone; the supervisor sees it too
            return False

    def _mark_sent(self, call: _Call) -> None:
        call.sent = True
        call.last_sched = _sched_key(call.req)

    def _sync_sched(self, force: bool = False) -> None:
        """renice, class changes, STOP/CONT of agents with a call in the engine: their new values, to the engine."""
        changed: dict[int, tuple] = {}
        with self._lock:
            for rid, call in self._calls.items():
                key = _sched_key(call.req)
                if call.sent and key != call.last_sched:
                    call.last_sched = key
                    changed[rid] = key
        if changed or force:
            self._send(("sched", changed))

    # --- the supervisor thread --------------------------------------------------------------------------------
    def _supervise(self) -> None:
        while True:
            self._wanted.wait()
            with self._lock:
                if self._closed:
                    return
                if self.state == "failed":
                    self._wanted.clear()
                    continue
            self._run_child()
            with self._lock:
                if self._closed:
                    return
                if self.state != "failed":
                    self._wanted.set()  # a crash: start the next one at once (calls wait for it)

    def _spawn(self) -> tuple[subprocess.Popen, Connection]:
        from multiprocessing.connection import (
            Connection,  # not imported by commands that never start an engine
        )

        got = take_prestarted(self.log_path, self.spec.verbose)  # one the front end started early, if any
        proc, sock = got if got is not None else spawn(self.log_path, self.spec.verbose)
        return proc, Connection(sock.detach())

    def _run_child(self) -> None:
        with self._lock:
            self.state = "starting" if not self.restarts and not self._crashes else "restarting"
            self._decoded = False
        try:
            proc, conn = self._spawn()
        except OSError as exc:
            self._fail(f"engine: cannot start: {exc.strerror or exc}")
            return
        self._proc = proc
        try:
            conn.send(("spec", self._child_spec()))
            reply = conn.recv()
        except (EOFError, OSError):
            reply = None
        if reply is not None and reply[0] == "fatal":  # a model or context it cannot load: not a crash
            conn.close()
            proc.wait()
            self._fail(reply[1])
            return
        if reply is not None and reply[0] == "ready":
            self._on_ready(conn, reply[1])
            self._serve(conn)
        conn.close()
        with self._lock:
            self._conn = None
        rc = proc.wait()
        self._on_exit(rc)

    def _child_spec(self) -> dict[str, Any]:
        s = self.spec
        return {"model_path": s.model_path, "n_gpu_layers": s.n_gpu_layers, "chat_template": s.chat_template,
                "extra_buffers": s.extra_buffers.enabled, "settings": s.settings, "policy": s.policy,
                "policy_params": s.policy_params, "plugin_paths": s.plugin_paths, "boost_after_s": s.boost_after_s}

    def _on_ready(self, conn: Connection, info: dict) -> None:
        with self._lock:
            self._conn = conn
            self.model_info = info["model"]
            self.n_threads = info["n_threads"]
            self._stats = info["stats"]
            self.state = "ready"
            waiting = [c for c in self._calls.values() if not c.sent]
            for call in waiting:
                self._mark_sent(call)
            self._ready.notify_all()
        for call in waiting:
            self._send(("submit", call.handle.id, call.req))

    def _serve(self, conn: Connection) -> None:
        last_sync = time.monotonic()
        while True:
            try:
                msg = None if not conn.poll(SCHED_SYNC_S) else conn.recv()
            except (EOFError, OSError):
                return
            if msg is not None:
                self._dispatch(msg)
            now = time.monotonic()
            if now - last_sync >= SCHED_SYNC_S:
                last_sync = now
                self._sync_sched()

    def _dispatch(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "started":
            _, rid, n_prompt = msg
            with self._lock:
                call = self._calls.get(rid)
                if call is not None:
                    call.started = True
                    call.handle.n_prompt = n_prompt
            return
        if kind != "batch":
            return
        _, texts, dones, steps, stats = msg
        self._stats = stats
        if steps:
            self._decoded = True
        for rec in steps:  # accounting first, so a call's last tokens are counted before its agent can exit
            self._steps.append(rec)
            if rec.sampled:
                self.tracker.tokens(len(rec.sampled), rec.t)
            for fn in self._listeners:
                try:
                    fn(rec)
                except Exception:  # noqa: BLE001 - a listener must not stop the engine's messages
                    pass
        with self._lock:
            calls = self._calls
            for rid, text, n_gen in texts:
                call = calls.get(rid)
                if call is not None:
                    call.handle.n_generated = n_gen
                    _write(call.handle, text)
            ended = [(calls.pop(rid, None), res) for rid, res in dones]
        for call, res in ended:
            if call is not None:
                call.handle.n_generated = res.completion_tokens
                call.handle._finish(res)

    def _on_exit(self, returncode: int) -> None:
        """The child is gone: its calls end with one line (or go again after an extra-buffers retry)."""
        how = signal_name(returncode)
        now = time.monotonic()
        with self._lock:
            if self._closed:
                self.state = "stopped"
                return
            self.state = "crashed"
            # nothing of the dead engine's KV or sequences is left
            self._stats = replace(self._stats, seqs=(), slots_busy=0, kv_used=0, kv_cached_idle=0, swapped_bytes=0)
            tail = self.log_tail()
            # every crash counts towards the loop bound, the one retried without extra buffers too
            self._crashes.append(now)
            while self._crashes and self._crashes[0] < now - CRASH_WINDOW_S:
                self._crashes.popleft()
            looping = len(self._crashes) >= CRASH_LOOP
            retry_extra = (self.spec.extra_buffers.enabled and not self._decoded and not self._retried_extra
                           and not looping)
            if retry_extra:
                self._retried_extra = True
                self.spec.extra_buffers = ExtraBuffers(
                    False, f"retry: the engine crashed ({how}) with them on, before its first decode")
                resend = [c for c in self._calls.values() if c.sent]
                for c in resend:  # nobody has seen a token: send them again to the next engine
                    c.sent = c.started = False
                self.last_error = f"engine crashed ({how}) with llama.cpp's extra buffer types on; retrying without"
                self.restarts += 1
                self._notice(f"{self.last_error} (model.extra_buffers = false skips the try)")
                return
            self.last_error = (f"engine crashed ({how})" + (f"; last log line: {tail[-1]}" if tail else ""))
            dead = [c for c in self._calls.values() if c.sent]
            for c in dead:
                self._calls.pop(c.handle.id, None)
            if looping:
                self.state = "failed"
                self.last_error = (f"engine crashed {len(self._crashes)} times in a minute (last: {how}); not "
                                   f"restarting: see its log ({self.log_path}), then type 'sched engine restart'")
            else:
                self.restarts += 1
        why = f"engine crashed ({how}); restarting" if not looping else self.last_error
        for c in dead:
            self._end(c, why)
        if looping:
            self._fail_waiting(self.last_error)

    def _fail(self, message: str) -> None:
        with self._lock:
            self.state = "failed"
            self.last_error = message
            self._ready.notify_all()
        self._fail_waiting(message)

    def _fail_waiting(self, message: str) -> None:
        with self._lock:
            calls = list(self._calls.values())
            self._calls.clear()
            self._ready.notify_all()
        for c in calls:
            self._end(c, message)

    def _end(self, call: _Call, error: str, reason: str = "error") -> None:
        call.handle._finish(GenResult(finish_reason=reason, error=error if reason == "error" else None,
                                      t_submit=call.t_submit, t_end=time.monotonic()))


def _sched_key(req: GenRequest) -> tuple:
    s = req.sched
    return (s.nice, s.sched_class, s.stopped, s.group)


def _write(handle: RequestHandle, text: str) -> None:
    try:
        if not handle.pipe.closed:
            handle.pipe.write(text)
    except ValueError:
        pass
