"""`Shell`: the public face of the shell library — state, job table, builtins, and the run entry points.

The caller (CLI, REPL, tests) gives it Pipes or callables for output and an optional AgentHost, then feeds it text
with `run_source` (scripts, `-c`) or `run_line` (the REPL). Nothing here touches the terminal.
"""

from __future__ import annotations

import os
import signal as _signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from aiosh.kernel.streams import Pipe

from . import plumbing
from .agents import AgentHost
from .builtins import BuiltinRegistry, registry
from .errors import BreakLoop, Cancelled, ContinueLoop, ExitShell, ShellSyntaxError
from .interp import Interp
from .jobs import JobTable
from .parser import Parser
from .procs import AgentProc
from .state import ShellState

Output = Pipe | Callable[[str], object] | None
RECURSION_LIMIT = 40_000
_SIGNALS = frozenset(int(s) for s in _signal.Signals)


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
        self.agents = agents
        self.stdout = plumbing.as_pipe(stdout, "stdout")
        self.stderr = plumbing.as_pipe(stderr, "stderr")
        # Where background jobs' lines for the terminal go: the same streams unless the front end keeps them apart
        # (aiosh/terminal.py never lets one land inside a half-written foreground line).
        self.bg_stdout: Pipe = self.stdout
        self.bg_stderr: Pipe = self.stderr
        self.flush_output: Callable[[], None] = lambda: None  # the front end's: what was written is on screen
        self.stdin = stdin
        self.host_programs = host_programs
        self.interactive = interactive
        self.argv0 = argv0
        # Nesting (functions, compound commands, parentheses) recurses in Python: bash's practical depths need
        # more than the default 1000 frames; past this, one line and status 2 (Interp.recursion_limit).
        sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
        self.pid = os.getpid()
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.builtins = (registry if builtins is None else builtins).copy()
        self.jobs = JobTable(interactive=interactive)
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
        self.interp = Interp(self, state, self.jobs, main=True)
        self.interrupted = False
        self.abort_lines = interactive  # a fatal expansion error ends the line, not the shell (bash -i)
        # signals with a `trap` action that reached this process, for the main shell to run between commands
        self.pending_signals: list[int] = []
        self._saved_handlers: dict[int, object] = {}
        self.exited: int | None = None
        # `time pipeline`: called before the pipeline; what it returns is called after and adds lines to the
        # report (the kernel's decode time and tokens of the agents it ran)
        self.timing: Callable[[], Callable[[], str]] | None = None
        self.exec_fds: dict | None = None  # descriptors set by `exec >file …` in the main shell
        self._agent_procs: dict[int, AgentProc] = {}
        self._agent_lock = threading.Lock()
        self._lines = 0
        self._exit_warned_at: int | None = None
        if agents is not None and hasattr(agents, "add_listener"):
            agents.add_listener(self._agent_event)

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
        self._lines += 1
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
        """`trap` changed signal NUM's action in the main shell: a handler that queues it for the shell (run
        after the current command, as bash does), SIG_IGN for an empty action, or whatever was there before."""
        if num in (_signal.SIGKILL, _signal.SIGSTOP) or threading.current_thread() is not threading.main_thread():
            return
        action = self.state.traps.get(_signal.Signals(num).name[3:]) if num in _SIGNALS else None
        try:
            if num not in self._saved_handlers:
                self._saved_handlers[num] = _signal.getsignal(num)
            if action is None:
                old = self._saved_handlers.pop(num)
                _signal.signal(num, old if old is not None else _signal.SIG_DFL)  # type: ignore[arg-type]
            elif action == "":
                _signal.signal(num, _signal.SIG_IGN)
            else:
                _signal.signal(num, self._queue_signal)
        except (ValueError, OSError):
            pass

    def restore_signal_handlers(self) -> None:
        """Put back the handlers `trap` replaced (a script run by an embedding program has ended)."""
        for num, old in list(self._saved_handlers.items()):
            try:
                _signal.signal(num, old if old is not None else _signal.SIG_DFL)  # type: ignore[arg-type]
            except (ValueError, OSError):
                pass
        self._saved_handlers.clear()

    def _queue_signal(self, signum: int, _frame: object) -> None:
        self.pending_signals.append(signum)

    def foreground_signal(self, sig: int) -> bool:
        """Forward a terminal signal (SIGINT from Ctrl-C, SIGTSTP from Ctrl-Z) to the foreground job.

        Safe to call from a Python signal handler: it takes no lock itself and delivers on a helper thread (the
        interrupted main thread may hold the locks delivery needs). Returns whether a foreground job was there.
        SIGINT also ends the running command line, as in bash.
        """
        if sig == _signal.SIGINT:
            self.interrupted = True
        fg = self.interp.fg
        if not fg.jobs():
            return False
        threading.Thread(target=fg.signal, args=(sig,), name="fg-signal", daemon=True).start()
        return True

    def take_notices(self) -> list[str]:
        """Job state changes to print before the next prompt (`[1]+  Done                    sleep 1`)."""
        return self.jobs.take_notices()

    def exit_warning(self) -> str | None:
        """bash's one-time warning when `exit` would leave jobs behind; None when exiting may proceed."""
        stopped, running = self.jobs.stopped(), self.jobs.running()
        if not stopped and not running:
            return None
        if self._exit_warned_at is not None and self._exit_warned_at >= self._lines - 1:
            return None
        self._exit_warned_at = self._lines
        return "There are stopped jobs." if stopped else "There are running jobs."

    def hangup(self) -> None:
        """Send SIGHUP (and SIGCONT to stopped ones) to the jobs, as bash does when an interactive shell exits;
        also to a foreground job still running (the shell is being terminated under it)."""
        for job in self.interp.fg.jobs():
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

    # -- agent events ----------------------------------------------------------------------------------------
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
