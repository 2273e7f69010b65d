"""The processes a job is made of: agents (via AgentHost), host programs (subprocess), and shell threads.

All three look the same to the job table: a pid, a state (running / stopped / exited with a status), `signal()`,
and cleanups run once when the process has finished *and* its output has been copied (so `cmd > f; cat f` and
pipelines see everything). Shell code in a pipeline stage or in the background runs on a `ThreadProc`, which
honours signals at checkpoints between commands, since a thread cannot be killed.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal as _signal
import subprocess
import threading
import time
import traceback
from collections.abc import Callable

from .agents import AgentHost
from .errors import Cancelled, ExitShell

STOP_SIGNALS = frozenset({_signal.SIGSTOP, _signal.SIGTSTP, _signal.SIGTTIN, _signal.SIGTTOU})
IGNORED_BY_DEFAULT = frozenset({_signal.SIGURG, _signal.SIGCHLD, _signal.SIGWINCH})
JOIN_TIMEOUT = 2.0

# Threads get pids above Linux's largest possible pid (2**22), so they never collide with host programs.
_thread_pids = itertools.count(4_194_305)
# Shell threads alive at once (subshells, pipeline stages, background shell code), like `ulimit -u`: a fork bomb
# (`:(){ :|:& };:`) meets this limit with one line per refused start, instead of thousands of "can't start new
# thread" tracebacks and a shell that no longer answers.
MAX_THREAD_PROCS = 2048  # a fork bomb held at this limit: about 250 MB, and the shell still answers at once
_live_threads = 0
_live_lock = threading.Lock()
# Process groups of shell threads. Code running on a shell thread starts its own children (a subshell's background
# jobs, a pipeline's stages) in its group, as bash does where job control is off, so `kill -- -PGID` reaches a
# whole family, grandchildren included. A group killed by a terminating signal is doomed: a member that was being
# started while the signal went round is refused, so the family cannot outrun the kill.
_groups: dict[int, set[ThreadProc]] = {}
_doomed: dict[int, int] = {}
_current = threading.local()  # .proc: the ThreadProc whose code runs on this thread


def live_thread_procs() -> int:
    """Shell threads running now (for tests and `jobs`)."""
    return _live_threads


def current_thread_proc() -> ThreadProc | None:
    """The shell thread this code runs on (None on the shell's main thread)."""
    return getattr(_current, "proc", None)


def thread_group(pgid: int) -> list[ThreadProc]:
    with _live_lock:
        return list(_groups.get(pgid, ()))


def signal_group(pgid: int, sig: int) -> bool:
    """Deliver `sig` to every live shell thread in group `pgid` (children started meanwhile too); False if the
    group has none."""
    terminating = sig not in STOP_SIGNALS and sig not in (0, _signal.SIGCONT)
    with _live_lock:
        members = set(_groups.get(pgid, ()))
        if not members:
            return False
        if terminating:
            _doomed[pgid] = sig
    done: set[ThreadProc] = set()
    while members - done:
        for p in members - done:
            done.add(p)
            try:
                p.signal(sig)
            except LookupError:
                pass
        with _live_lock:
            members = set(_groups.get(pgid, ()))
    return True


class Proc:
    """One process of a job."""

    kind = "proc"

    def __init__(self, pid: int, text: str) -> None:
        self.pid = pid
        self.text = text
        self.status: int | None = None
        self.stopped = False
        self.stop_signal: int = _signal.SIGTSTP
        self.finished_at = 0.0
        self._lock = threading.Lock()
        self._cleanups: list[Callable[[], None]] = []
        self._watchers: list[Callable[[Proc], None]] = []
        self._exit_hooks: list[Callable[[int], None]] = []
        self._done = threading.Event()

    # -- state -------------------------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def add_cleanup(self, fn: Callable[[], None]) -> None:
        """Run fn once the process has finished (at once if it already has)."""
        with self._lock:
            if not self._done.is_set():
                self._cleanups.append(fn)
                return
        _quietly(fn)

    def add_watcher(self, fn: Callable[[Proc], None]) -> None:
        with self._lock:
            self._watchers.append(fn)

    def add_exit_hook(self, fn: Callable[[int], None]) -> bool:
        """Run fn(status) when the process ends, before anyone can see it finished (a program's kernel process
        ends first, so a `ps` right after it does not list it); False when it has finished already."""
        with self._lock:
            if self._done.is_set():
                return False
            self._exit_hooks.append(fn)
            return True

    def _notify(self) -> None:
        for fn in list(self._watchers):
            _quietly(functools.partial(fn, self))

    def set_stopped(self, sig: int) -> None:
        if self.finished:
            return
        self.stopped = True
        self.stop_signal = sig
        self._notify()

    def set_continued(self) -> None:
        if self.finished or not self.stopped:
            return
        self.stopped = False
        self._notify()

    def finish(self, status: int) -> None:
        """Record the exit status, run the cleanups (closing pipes downstream), then tell the watchers."""
        with self._lock:
            if self._done.is_set():
                return
            cleanups, self._cleanups = self._cleanups, []
        for fn in cleanups:
            _quietly(fn)
        with self._lock:
            hooks, self._exit_hooks = self._exit_hooks, []
        for hook in hooks:
            _quietly(functools.partial(hook, status))
        with self._lock:
            self.status = status
            self.stopped = False
            self.finished_at = time.monotonic()
            self._done.set()
            extra, self._cleanups = self._cleanups, []
        for fn in extra:
            _quietly(fn)
        self._notify()

    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self.status

    # -- control -----------------------------------------------------------------------------------------------
    def signal(self, sig: int) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def poll_state(self) -> None:
        """Refresh the stopped flag where events may be missed (agents without listener events)."""


class AgentProc(Proc):
    kind = "agent"

    def __init__(self, host: AgentHost, pid: int, text: str) -> None:
        super().__init__(pid, text)
        self.host = host

    def start_waiter(self) -> None:
        threading.Thread(target=self._wait, name=f"agent-wait:{self.pid}", daemon=True).start()

    def _wait(self) -> None:
        try:
            status = self.host.wait(self.pid)
        except LookupError:
            status = 127
        except Exception:  # noqa: BLE001 - the kernel going away must not kill the shell's thread
            status = 1
        self.finish(1 if status is None else status)

    def signal(self, sig: int) -> None:
        self.host.signal(self.pid, sig)

    def on_event(self, event: str, status: int | None) -> None:
        """An AgentHost listener event for this pid; 'stopped' carries 128+signal (or nothing)."""
        if event == "stopped":
            self.set_stopped(status - 128 if status and status > 128 else _signal.SIGTSTP)
        elif event == "continued":
            self.set_continued()

    def poll_state(self) -> None:
        if self.finished:
            return
        try:
            st = self.host.state(self.pid)
        except LookupError:
            return
        if st == "T" and not self.stopped:
            self.set_stopped(self.stop_signal)
        elif st in ("R", "S") and self.stopped:
            self.set_continued()


class HostProc(Proc):
    """A program from PATH, in its own process group so a signal reaches its children too."""

    kind = "host"

    def __init__(self, popen: subprocess.Popen, text: str, pumps: list[threading.Thread]) -> None:
        super().__init__(popen.pid, text)
        self.popen = popen
        self.pumps = pumps
        threading.Thread(target=self._wait, name=f"host-wait:{self.pid}", daemon=True).start()

    def _wait(self) -> None:
        status = 1
        while True:
            try:
                _, raw = os.waitpid(self.pid, os.WUNTRACED | os.WCONTINUED)
            except ChildProcessError:
                status = self.popen.returncode if self.popen.returncode is not None else 1
                break
            except InterruptedError:
                continue
            if os.WIFSTOPPED(raw):
                self.set_stopped(os.WSTOPSIG(raw))
            elif os.WIFCONTINUED(raw):
                self.set_continued()
            elif os.WIFEXITED(raw):
                status = os.WEXITSTATUS(raw)
                break
            elif os.WIFSIGNALED(raw):
                status = 128 + os.WTERMSIG(raw)
                break
        self.popen.returncode = status
        for t in self.pumps:
            t.join(JOIN_TIMEOUT)
        self.finish(status)

    def signal(self, sig: int) -> None:
        if self.finished:
            raise LookupError("no such process")
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                raise LookupError("no such process") from None
        if sig == _signal.SIGCONT:
            self.set_continued()


class ThreadProc(Proc):
    """Shell code (a builtin, a compound command, a subshell) running on its own thread.

    Signals are cooperative: `checkpoint()` raises Cancelled(128+n) after a terminating signal and blocks while
    stopped; `forward` passes signals on to whatever the code is waiting for (its foreground job).
    """

    kind = "thread"

    def __init__(self, text: str, body: Callable[[ThreadProc], int], *, stderr_write: Callable[[str], object],
                 pgid: int | None = None, limit: int | None = None) -> None:
        super().__init__(next(_thread_pids), text)
        self.limit = limit  # `ulimit -u` of the shell that starts it (MAX_THREAD_PROCS is the hard limit)
        # its process group: given (a pipeline's later stages join the first's), inherited from the shell thread
        # that starts it (no job control below the top level), or a group of its own
        parent = current_thread_proc()
        self.pgid: int = pgid if pgid is not None else (parent.pgid if parent is not None else self.pid)
        self.body = body
        self.cancel_signal: int | None = None
        self.forward: Callable[[int], object] | None = None
        self._resume = threading.Condition()
        self._stderr_write = stderr_write

    def start(self) -> None:
        """Run the body on a thread of its own; past MAX_THREAD_PROCS live ones (or when the host refuses a
        thread) it does not start: one line on stderr and status 1, as bash says when fork fails."""
        global _live_threads
        with _live_lock:
            doomed = _doomed.get(self.pgid)
            refused = doomed is None and _live_threads >= min(MAX_THREAD_PROCS, self.limit or MAX_THREAD_PROCS)
            if doomed is None and not refused:
                _live_threads += 1
                _groups.setdefault(self.pgid, set()).add(self)
        if doomed is not None:  # its group was killed while it was being started
            self.cancel_signal = doomed
            self.finish(128 + doomed)
            return
        if not refused:
            try:
                threading.Thread(target=self._run, name=f"shell:{self.pid}", daemon=True).start()
                return
            except RuntimeError:  # can't start new thread
                self._left()
        _quietly(lambda: self._stderr_write("aiosh: fork: retry: Resource temporarily unavailable\n"))
        self.finish(1)

    def _left(self) -> None:
        global _live_threads
        with _live_lock:
            _live_threads -= 1
            group = _groups.get(self.pgid)
            if group is not None:
                group.discard(self)
                if not group:
                    del _groups[self.pgid]
                    _doomed.pop(self.pgid, None)

    def _run(self) -> None:
        _current.proc = self
        try:
            self._run_body()
        finally:
            self._left()

    def _run_body(self) -> None:
        status = 1
        try:
            status = self.body(self)
        except Cancelled as exc:
            status = exc.status
        except ExitShell as exc:
            status = exc.status
        except Exception:  # noqa: BLE001 - a shell bug must not take the whole shell down
            _quietly(lambda: self._stderr_write(traceback.format_exc()))
            status = 1
        if self.cancel_signal is not None:
            status = 128 + self.cancel_signal  # it was killed, even if it was about to finish anyway
        self.finish(status)

    def signal(self, sig: int) -> None:
        if self.finished:
            raise LookupError("no such process")
        if sig == 0:
            return
        if sig in IGNORED_BY_DEFAULT:
            pass  # shell code in a thread has no handler for them: ignored, as by a process
        elif sig in STOP_SIGNALS:
            self.set_stopped(sig)
        elif sig == _signal.SIGCONT:
            with self._resume:
                self.set_continued()
                self._resume.notify_all()
        else:
            self.cancel_signal = sig
            with self._resume:
                self.stopped = False
                self._resume.notify_all()
        if self.forward is not None:
            fwd = self.forward
            _quietly(lambda: fwd(sig))

    def checkpoint(self) -> None:
        if self.cancel_signal is not None:
            raise Cancelled(128 + self.cancel_signal)
        with self._resume:
            while self.stopped and self.cancel_signal is None:
                self._resume.wait(0.2)
        if self.cancel_signal is not None:
            raise Cancelled(128 + self.cancel_signal)


class DoneProc(Proc):
    """A stage that failed before it could start (bad redirect, not found): already finished."""

    kind = "done"

    def __init__(self, text: str, status: int) -> None:
        super().__init__(next(_thread_pids), text)
        self.finish(status)

    def signal(self, sig: int) -> None:
        raise LookupError("no such process")


def _quietly(fn: Callable[[], object]) -> None:
    """Best effort: one failing cleanup must not skip the others (narrow, so a signal handler's exception that
    lands here on the main thread still propagates)."""
    try:
        fn()
    except (OSError, ValueError, LookupError, RuntimeError):
        pass
