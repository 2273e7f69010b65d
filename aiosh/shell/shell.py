"""`Shell`: the public face of the shell library — state, job table, builtins, and the run entry points.

The caller (CLI, REPL, tests) gives it Pipes or callables for output and an optional AgentHost, then feeds it text
with `run_source` (scripts, `-c`) or `run_line` (the REPL). Nothing here touches the terminal.
"""

from __future__ import annotations

import os
import signal as _signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiosh.kernel.streams import Pipe

from . import plumbing
from .agents import AgentHost
from .builtins import BuiltinRegistry, registry
from .errors import BreakLoop, Cancelled, ContinueLoop, ExitShell, ShellSyntaxError
from .interp import Interp
from .parser import Parser
from .procs import AgentProc
from .session_state import Session
from .state import ShellState

Output = Pipe | Callable[[str], object] | None
RECURSION_LIMIT = 40_000
_SIGNALS = frozenset(int(s) for s in _signal.Signals)


def _shared(name: str) -> property:
    """A Shell attribute that lives in its Session (read and written there)."""

    def get(self: Shell) -> Any:  # noqa: ANN401 - whatever the session holds
        return getattr(self.session, name)

    def put(self: Shell, value: object) -> None:
        setattr(self.session, name, value)

    return property(get, put, doc=f"Session.{name}")


def _shell_variables() -> dict[str, str]:
    """Variables bash sets for itself (not exported): ids, host, OS type, and the default IFS/PS4."""
    import socket
    import sys

    return {
        "PPID": str(os.getppid()), "UID": str(os.getuid()), "EUID": str(os.geteuid()),
        "HOSTNAME": socket.gethostname(), "OSTYPE": sys.platform.replace("linux", "linux-gnu"),
        "IFS": " \t\n", "PS4": "+ ", "OPTIND": "1",
    }  # fmt: skip


class Shell:
    """One aiosh shell: variables, cwd, options, positional parameters, jobs and builtins.

    agents: who runs agents (None: no agents). stdout/stderr: Pipes or callables taking text. stdin: a Pipe or
    None (commands then read end of file). host_programs: whether PATH programs may run. interactive: REPL rules
    (job notices, `[1] PID` on `&`, Ctrl-Z returns control, `exit` warns about jobs).
    """

    def __init__(
        self,
        *,
        agents: AgentHost | None = None,
        stdout: Output = None,
        stderr: Output = None,
        stdin: Pipe | None = None,
        cwd: str | None = None,
        host_programs: bool = True,
        argv0: str = "aiosh",
        args: Sequence[str] = (),
        interactive: bool = False,
        env: Mapping[str, str] | None = None,
        builtins: BuiltinRegistry | None = None,
    ) -> None:
        # Nesting (functions, compound commands, parentheses) recurses in Python: bash's practical depths need
        # more than the default 1000 frames; past this, one line and status 2 (Interp.recursion_limit).
        sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
        self.session = Session(
            stdin=stdin, stdout=plumbing.as_pipe(stdout, "stdout"), stderr=plumbing.as_pipe(stderr, "stderr"),
            builtins=(registry if builtins is None else builtins).copy(), agents=agents, interactive=interactive,
            argv0=argv0, host_programs=host_programs,
        )  # fmt: skip
        variables = dict(os.environ if env is None else env)
        cwd = os.path.abspath(cwd or _logical_cwd(variables.get("PWD")))
        variables["PWD"] = cwd
        exported = set(variables)
        for name, value in _shell_variables().items():
            variables.setdefault(name, value)
        variables["_"] = argv0
        # A PS1 exported by the parent (a virtualenv's activate script does this) is a bash prompt; aiosh uses
        # only one set in the session itself
        variables.pop("PS1", None)
        exported.discard("PS1")
        state = ShellState(vars=variables, exported=exported, positional=list(args), argv0=argv0, cwd=cwd,
                           readonly={"UID", "EUID", "PPID"})
        self.interp = Interp(self.session, state, self.session.jobs, fg=self.session.fg, main=True)
        self.exited: int | None = None

    # The session's parts, as the Shell's attributes they always were (front ends set some of them).
    stdin = _shared("stdin")
    stdout = _shared("stdout")
    stderr = _shared("stderr")
    bg_stdout = _shared("bg_stdout")
    bg_stderr = _shared("bg_stderr")
    flush_output = _shared("flush_output")
    timing = _shared("timing")
    exec_fds = _shared("exec_fds")
    abort_lines = _shared("abort_lines")
    agents = _shared("agents")
    builtins = _shared("builtins")
    jobs = _shared("jobs")
    interactive = _shared("interactive")
    argv0 = _shared("argv0")
    host_programs = _shared("host_programs")
    pid = _shared("pid")
    started = _shared("started")
    started_wall = _shared("started_wall")

    @property
    def interrupted(self) -> bool:
        return self.session.signals.interrupted

    @interrupted.setter
    def interrupted(self, on: bool) -> None:
        self.session.signals.interrupted = on

    @property
    def pending_signals(self) -> list[int]:
        return self.session.signals.pending

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def state(self) -> ShellState:
        return self.interp.state

    @property
    def vars(self) -> dict[str, str]:
        return self.state.vars

    @property
    def env(self) -> dict[str, str]:
        """The exported variables: what agents and programs receive."""
        return self.state.env()

    @property
    def cwd(self) -> str:
        return self.state.cwd

    @property
    def last_status(self) -> int:
        return self.state.last_status

    @property
    def errexit(self) -> bool:
        return self.state.errexit

    @errexit.setter
    def errexit(self, on: bool) -> None:
        self.state.errexit = on

    # -- running ---------------------------------------------------------------------------------------------
    def run_source(self, text: str, *, filename: str | None = None) -> int:
        """Run a script or `-c` text command by command; returns the last status.

        filename: None (input read by the shell itself), "-c" (bash's `-c` message shapes) or the script's name
        (used in `NAME: line N:` diagnostics). A non-interactive shell waits for its background jobs at the end.
        """
        self.interrupted = False
        status = self._run(text, filename)
        self.interp.run_signal_traps(self.interp.shell_io())
        trap_status = self.interp.run_exit_trap(self.interp.shell_io(), status)
        if trap_status is not None:
            status = self.state.last_status = trap_status
        self.restore_signal_handlers()
        if not self.interactive:
            self.wait_background()
        return status

    def run_line(self, line: str) -> int:
        """Run one line typed at the prompt (it may hold several commands, or a whole compound command)."""
        self.session.lines += 1
        self.interrupted = False
        return self._run(line, None)

    def _run(self, text: str, filename: str | None) -> int:
        interp = self.interp
        try:
            status = interp.run_text(text, source_name=filename, io=interp.shell_io())
        except ExitShell as exc:
            status = exc.status
            self.exited = status
        except Cancelled as exc:
            status = exc.status
        except (BreakLoop, ContinueLoop):
            status = 0
        # No catch-all here: the caller's signal handlers may raise through us (aiosh's SIGTERM handler does).
        self.state.last_status = status
        return status

    def is_complete(self, text: str) -> bool:
        """False when the text ends inside a quote, a compound command or a here-document (the REPL then asks
        for another line); True for complete text, including text with a real syntax error (run it to see it)."""
        parser = Parser(text)
        try:
            parser.parse_all()
        except ShellSyntaxError as exc:
            return "end of file" not in exc.message and "unexpected EOF" not in exc.message
        return not any("here-document" in message for _line, message in parser.warnings)

    # -- jobs and signals ------------------------------------------------------------------------------------
    def sync_signal_trap(self, num: int) -> None:
        """`trap` changed signal NUM's action in the main shell (Signals.sync_trap)."""
        action = self.state.traps.get(_signal.Signals(num).name[3:]) if num in _SIGNALS else None
        self.session.signals.sync_trap(num, action)

    def restore_signal_handlers(self) -> None:
        """Put back the handlers `trap` replaced (a script run by an embedding program has ended)."""
        self.session.signals.restore()

    def foreground_signal(self, sig: int) -> bool:
        """Forward a terminal signal to the foreground job (Session.foreground_signal)."""
        return self.session.foreground_signal(sig)

    def take_notices(self) -> list[str]:
        """Job state changes to print before the next prompt (`[1]+  Done                    sleep 1`)."""
        return self.jobs.take_notices()

    def exit_warning(self) -> str | None:
        """bash's one-time warning when `exit` would leave jobs behind; None when exiting may proceed."""
        return self.session.exit_warning()

    def hangup(self) -> None:
        """Send SIGHUP (and SIGCONT to stopped ones) to the jobs, as bash does when an interactive shell exits;
        also to a foreground job still running (the shell is being terminated under it)."""
        for job in self.session.fg.jobs():
            try:
                job.signal(_signal.SIGHUP)
            except LookupError:
                pass
        for job in list(self.jobs.jobs.values()):
            if job.nohup or job.state == "done":
                continue
            stopped = job.state == "stopped"
            for sig in (_signal.SIGHUP, _signal.SIGCONT) if stopped else (_signal.SIGHUP,):
                try:
                    job.signal(sig)
                except LookupError:
                    pass

    def wait_background(self, timeout: float | None = None) -> None:
        """Wait for every job still running (a script's jobs must not outlive the kernel)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in list(self.jobs.jobs.values()):
            while job.state == "running":
                if deadline is not None and time.monotonic() > deadline:
                    return
                with self.jobs.cond:
                    self.jobs.cond.wait(0.05)

    def register_agent(self, proc: AgentProc) -> None:
        self.session.register_agent(proc)


def _logical_cwd(pwd: str | None) -> str:
    """The folder we start in, by the inherited $PWD when it names it (a path through a symlink, as bash keeps)."""
    here = os.getcwd()
    if pwd and os.path.isabs(pwd) and pwd != here:
        try:
            a, b = os.stat(pwd), os.stat(here)
            if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) and "/./" not in pwd + "/" and "/../" not in pwd + "/":
                return pwd
        except OSError:
            pass
    return here
