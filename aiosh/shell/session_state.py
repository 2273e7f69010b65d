"""`Session`: what every interpreter of one shell shares with the shell that owns it.

The `Shell` builds one and hands it to its main `Interp`, which passes it to every subshell: the shell's own
streams, its flags (interactive, `$0`, `$$`), the job table, the builtin table, the agent host, and the signal state
of the main thread. An interpreter reads these here and never reaches back into the `Shell` (which is only the
public front: run entry points and the REPL's helpers).
"""

from __future__ import annotations

import os
import signal as _signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .jobs import JobTable
from .procs import AgentProc
from .state import Foreground

if TYPE_CHECKING:
    from aiosh.kernel.streams import Pipe

    from .agents import AgentHost
    from .builtins import BuiltinRegistry

__all__ = ["Session", "Signals"]


class Signals:
    """The main shell's signal state: Ctrl-C seen, trapped signals waiting to run, and the handlers `trap` replaced.

    `interrupted` and `pending` are written from Python signal handlers: plain attribute writes and list appends,
    no locks.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self.pending: list[int] = []  # signals with a `trap` action that reached this process, oldest first
        self._saved: dict[int, object] = {}

    def sync_trap(self, num: int, action: str | None) -> None:
        """`trap` changed signal NUM's action (None: reset) in the main shell: a handler that queues it for the
        shell (run after the current command, as bash does), SIG_IGN for an empty action, or what was there."""
        if num in (_signal.SIGKILL, _signal.SIGSTOP) or threading.current_thread() is not threading.main_thread():
            return
        try:
            if num not in self._saved:
                self._saved[num] = _signal.getsignal(num)
            if action is None:
                old = self._saved.pop(num)
                _signal.signal(num, old if old is not None else _signal.SIG_DFL)  # type: ignore[arg-type]
            elif action == "":
                _signal.signal(num, _signal.SIG_IGN)
            else:
                _signal.signal(num, self._queue)
        except (ValueError, OSError):
            pass

    def restore(self) -> None:
        """Put back the handlers `trap` replaced (a script run by an embedding program has ended)."""
        for num, old in list(self._saved.items()):
            try:
                _signal.signal(num, old if old is not None else _signal.SIG_DFL)  # type: ignore[arg-type]
            except (ValueError, OSError):
                pass
        self._saved.clear()

    def _queue(self, signum: int, _frame: object) -> None:
        self.pending.append(signum)


class Session:
    """The owner's side of every interpreter of one shell (see the module docstring)."""

    def __init__(
        self,
        *,
        stdin: Pipe | None,
        stdout: Pipe,
        stderr: Pipe,
        builtins: BuiltinRegistry,
        agents: AgentHost | None,
        interactive: bool,
        argv0: str,
        host_programs: bool,
    ) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        # Where background jobs' lines for the terminal go: the same streams unless the front end keeps them apart
        # (aiosh/terminal.py never lets one land inside a half-written foreground line).
        self.bg_stdout: Pipe = stdout
        self.bg_stderr: Pipe = stderr
        self.exec_fds: dict | None = None  # descriptors set by `exec >file …` in the main shell
        self.flush_output: Callable[[], None] = lambda: None  # the front end's: what was written is on screen
        self.builtins = builtins
        self.agents = agents
        self.interactive = interactive
        self.argv0 = argv0
        self.host_programs = host_programs
        self.pid = os.getpid()
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.jobs = JobTable(interactive=interactive)
        self.fg = Foreground()  # the main shell's foreground jobs: where Ctrl-C and Ctrl-Z go
        self.signals = Signals()
        self.abort_lines = interactive  # a fatal expansion error ends the line, not the shell (bash -i)
        # `time pipeline`: called before the pipeline; what it returns is called after and adds lines to the
        # report (the kernel's decode time and tokens of the agents it ran)
        self.timing: Callable[[], Callable[[], str]] | None = None
        self.lines = 0  # lines run at the prompt (`exit` warns once about jobs, again after another line)
        self._exit_warned_at: int | None = None
        self._agent_procs: dict[int, AgentProc] = {}
        self._agent_lock = threading.Lock()
        if agents is not None and hasattr(agents, "add_listener"):
            agents.add_listener(self._agent_event)

    def io_fds(self) -> dict[int, Pipe | None]:
        """The main shell's descriptors: its streams, or what `exec` redirected them to."""
        if self.exec_fds is not None:
            return dict(self.exec_fds)
        return {0: self.stdin, 1: self.stdout, 2: self.stderr}

    def foreground_signal(self, sig: int) -> bool:
        """Forward a terminal signal (SIGINT from Ctrl-C, SIGTSTP from Ctrl-Z) to the foreground job.

        Safe to call from a Python signal handler: it takes no lock itself and delivers on a helper thread (the
        interrupted main thread may hold the locks delivery needs). Returns whether a foreground job was there.
        SIGINT also ends the running command line, as in bash.
        """
        if sig == _signal.SIGINT:
            self.signals.interrupted = True
        if not self.fg.jobs():
            return False
        threading.Thread(target=self.fg.signal, args=(sig,), name="fg-signal", daemon=True).start()
        return True

    def exit_warning(self) -> str | None:
        """bash's one-time warning when `exit` would leave jobs behind; None when exiting may proceed."""
        stopped, running = self.jobs.stopped(), self.jobs.running()
        if not stopped and not running:
            return None
        if self._exit_warned_at is not None and self._exit_warned_at >= self.lines - 1:
            return None
        self._exit_warned_at = self.lines
        return "There are stopped jobs." if stopped else "There are running jobs."

    # -- agent events: the host reports stops and exits by pid; the process object that waits on it hears them --
    def register_agent(self, proc: AgentProc) -> None:
        with self._agent_lock:
            self._agent_procs[proc.pid] = proc
        proc.add_watcher(self._forget_agent)

    def _forget_agent(self, proc: object) -> None:
        if isinstance(proc, AgentProc) and proc.finished:
            with self._agent_lock:
                self._agent_procs.pop(proc.pid, None)

    def _agent_event(self, pid: int, event: str, status: int | None) -> None:
        with self._agent_lock:
            proc = self._agent_procs.get(pid)
        if proc is not None:
            proc.on_event(event, status)
