"""The interpreter: walks the AST with bash's semantics for statuses, `set -e`, pipelines, jobs and redirections.

One `Interp` runs one shell or subshell. Subshells (pipeline stages, `( … )`, `$( … )`, background lists) get a
copy of the state, so `cd` or assignments there do not leak back, as in bash. Simple commands run in the calling
thread when they are builtins; agents and host programs become processes of a job, and multi-stage pipelines and
background lists run their shell-code stages on threads (`ThreadProc`).
"""

from __future__ import annotations

import os
import random
import shlex
import signal as _signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiosh.kernel.streams import Pipe

from . import arith, conditional, patterns, plumbing
from .bgout import BackgroundOutput
from .builtins import BuiltinContext
from .builtins.lang import exec_without_command
from .errors import (
    AbortCommand,
    BreakLoop,
    Cancelled,
    ContinueLoop,
    ExitShell,
    LoopControl,
    ReturnFromFunction,
    ShellError,
    ShellSyntaxError,
)
from .expand import expand_pattern, expand_string, expand_words
from .jobs import Job, JobTable
from .launch import Launcher, Resolved
from .lexer import is_digits, is_name
from .nodes import (
    AndOr,
    ArithCommand,
    ArithFor,
    Assign,
    Case,
    Command,
    CommandList,
    DBracket,
    For,
    FunctionDef,
    Group,
    If,
    Lit,
    Pipeline,
    SimpleCommand,
    Subshell,
    While,
    Word,
)
from .parser import Parser, _assignment
from .procs import DoneProc, Proc, ThreadProc
from .prompt import PromptView
from .redirect import Redirects
from .state import IO, SHOPT_DEFAULTS, Foreground, Indexed, ShellState
from .variables import Variables, restore_local, save_local

if TYPE_CHECKING:
    from .session_state import Session

__all__ = ["IO", "Foreground", "Interp", "Resolved", "ShellState"]

MAX_FUNCTION_DEPTH = 1000  # bash has no default FUNCNEST; this keeps deep recursion within the Python stack
COMPOUND_NO_ERREXIT = (Group, If, For, While, Case, ArithFor)
DECLARATIONS = frozenset({"declare", "typeset", "local", "readonly", "export"})
DYNAMIC_VARS = frozenset({"LINENO", "RANDOM", "SECONDS", "BASHPID"})


def _fake_subshell_pid(interp: Interp) -> int:
    """Subshells here are threads, not processes: a stable number that differs from $$ (what scripts test)."""
    return interp.session.pid + 1 + (id(interp.state) % 30000)


class Interp:
    """Runs AST nodes for one shell or subshell; also the ExpandEnv its words are expanded in."""

    def __init__(
        self,
        session: Session,
        state: ShellState,
        jobs: JobTable,
        *,
        proc: ThreadProc | None = None,
        fg: Foreground | None = None,
        main: bool = False,
    ) -> None:
        self.session = session
        self.state = state
        self.jobs = jobs
        self.proc = proc
        self.fg = fg or Foreground()
        self.main = main
        self.loop_depth = 0
        self.no_errexit = 0
        self.lineno = 1
        self.cur_io: IO | None = None
        self.subst_status: int | None = None
        self.source_name: str | None = None  # None: the shell's own input; "-c"; or a script's name
        self.func_depth = 0  # functions being run (for `return` and `local`)
        self.source_depth = 0  # files being sourced (`return` works there too)
        self.in_trap = False
        self.redirect_failed = False
        self.exec_closers: list[Callable[[], None]] = []
        self.decl_items: dict[int, list[tuple[str | None, str]]] = {}
        self.locals: list[dict[str, tuple]] = []  # per function call: saved values of its `local` names
        self.variables = Variables(state, self.locals, self.get_var)
        self.redirects = Redirects(self, state, self.variables, self.keep_named_fd)
        self.launcher = Launcher(state, self.session, self.redirects, self.fail)

    # -- ExpandEnv -------------------------------------------------------------------------------------------
    @property
    def cwd(self) -> str:
        return self.state.cwd

    @property
    def noglob(self) -> bool:
        return self.state.noglob

    def _alias(self, name: str) -> str | None:
        """An alias's value, when aliases expand (`shopt -s expand_aliases`, or an interactive shell)."""
        aliases = self.state.aliases
        if not aliases or name not in aliases:
            return None
        return aliases[name] if self.session.interactive or self.shopt("expand_aliases") else None

    def prompt_view(self) -> PromptView:
        """`${x@P}`: the prompt escapes see this shell's variables and cwd, and the session's jobs."""
        return PromptView(self.state.vars, self.state.cwd, self.session.jobs)

    def shopt(self, name: str) -> bool:
        """A `shopt` option's value (bash's default when never set)."""
        if self.state.shopts is None:
            return SHOPT_DEFAULTS.get(name, False)
        return bool(self.state.shopts.get(name))

    @property
    def nounset(self) -> bool:
        return self.state.nounset

    def get_var(self, name: str) -> str | None:
        value = self.lookup(name)
        if value is None and name in DYNAMIC_VARS:
            if name == "LINENO":
                return str(self.lineno)
            if name == "RANDOM":
                return str(random.randrange(32768))
            if name == "BASHPID":
                return str(self.session.pid if self.proc is None and self.main else _fake_subshell_pid(self))
            return str(int(time.monotonic() - self.session.started))
        return value

    def lookup(self, name: str) -> str | None:
        return self.variables.lookup(name)

    def array_values(self, name: str) -> list[str] | None:
        return self.variables.array_values(name)

    def array_keys(self, name: str) -> list[str]:
        return self.variables.array_keys(name)

    def attributes(self, name: str) -> str:
        return self.variables.attributes(name)

    def set_var(self, name: str, value: str) -> None:
        self.variables.assign(name, value)

    def var_names(self, prefix: str) -> list[str]:
        st = self.state
        return sorted(n for n in set(st.vars) | set(st.arrays) if n.startswith(prefix))

    def positional(self) -> list[str]:
        return self.state.positional

    def special_param(self, name: str) -> str | None:
        st = self.state
        if name == "?":
            return str(st.last_status)
        if name == "$":
            return str(self.session.pid)
        if name == "!":
            return "" if st.last_bg_pid is None else str(st.last_bg_pid)
        if name == "#":
            return str(len(st.positional))
        if name in ("@", "*"):
            ifs = st.vars.get("IFS")
            sep = " " if ifs is None else ifs[:1]
            return (sep if name == "*" else " ").join(st.positional)
        if name == "-":
            return st.flags()
        if name == "0":
            return st.argv0
        if is_digits(name):
            n = int(name)
            return st.positional[n - 1] if 0 < n <= len(st.positional) else None
        return None

    def command_subst(self, body: CommandList) -> str:
        out = Pipe("$(…)")
        io = (self.cur_io or self.shell_io()).copy()
        io.fds[1] = out
        sub = self.subshell(same_thread=True)
        sub.state.errexit = False  # bash (not in POSIX mode) does not let `set -e` into $( )
        try:
            status = sub.run_list(body, io)
        except (ExitShell, ReturnFromFunction) as exc:
            status = exc.status
        except (BreakLoop, ContinueLoop):
            status = 0
        except RecursionError:
            if self.func_depth or self.loop_depth:
                raise
            status = sub.recursion_limit(io)
        status = sub.finish_subshell(status, io)
        self.subst_status = status
        out.close()
        return out.read_all()

    # -- helpers ---------------------------------------------------------------------------------------------
    def shell_io(self) -> IO:
        return IO(self.session.io_fds())

    def subshell(self, *, same_thread: bool, proc: ThreadProc | None = None) -> Interp:
        """A child interpreter on a copy of the state; same-thread ones share our foreground (Ctrl-C reaches them)."""
        table = JobTable(interactive=False)
        table.inherited = [*self.jobs.inherited, *sorted(self.jobs.jobs.values(), key=lambda j: j.id)]
        sub = Interp(
            self.session,
            self.state.clone(),
            table,
            proc=self.proc if same_thread else proc,
            fg=self.fg if same_thread else Foreground(),
        )
        sub.lineno = self.lineno
        sub.source_name = self.source_name
        sub.no_errexit = self.no_errexit  # inside an `if` condition, `set -e` stays off in subshells too
        sub.func_depth = self.func_depth
        sub.source_depth = self.source_depth
        sub.locals[:] = [{} for _ in self.locals]
        return sub

    def foreground_signal(self, sig: int) -> bool:
        """Same as Shell.foreground_signal (the REPL may hold either object)."""
        return self.session.foreground_signal(sig)

    def run_argv(self, argv: list[str], io: IO, env: dict[str, str] | None = None, *,
                 skip_functions: bool = False, argv0: str | None = None, clear_env: bool = False) -> int:
        """Run an already-expanded command (builtin, agent or program) and wait: for wrappers such as `time`.
        `argv0` and `clear_env` are exec's -a NAME and -c, for a program."""
        if not argv:
            return 0
        words = [Word([Lit(a, True)], shlex.quote(a)) for a in argv]
        cmd = SimpleCommand(words=words, line=self.lineno)
        resolved = self.launcher.resolve(list(argv), skip_functions=skip_functions)
        if resolved.kind == "host":
            if argv0 is not None:
                resolved.argv[0] = argv0
            if clear_env:
                resolved.options["clear_env"] = True
        if resolved.kind in ("agent", "host"):
            job = Job(cmd.render(), self.state.cwd, pipefail=self.state.pipefail)
            self.launcher.start_external(cmd, resolved, env or {}, io, job, self.jobs)
            return self.wait_foreground(job)
        return self.finish_simple(cmd, resolved, env or {}, io)

    def finish_subshell(self, status: int, io: IO) -> int:
        """A subshell ends: its EXIT trap runs (and an `exit` there sets the status)."""
        changed = self.run_exit_trap(io, status)
        return status if changed is None else changed

    def run_exit_trap(self, io: IO, status: int) -> int | None:
        """Run and clear the EXIT trap with `$?` as the exit status; the status `exit N` gave there, if any."""
        action = self.state.traps.pop("EXIT", None)
        if not action:
            return None
        self.state.last_status = status
        try:
            self.run_text(action, source_name=self.source_name, io=io, nested=True)
        except ExitShell as exc:
            return exc.status
        except (AbortCommand, ReturnFromFunction, BreakLoop, ContinueLoop):
            pass
        return None

    def run_err_trap(self, io: IO, status: int) -> None:
        action = self.state.traps.get("ERR")
        if not action or self.in_trap:
            return
        self.in_trap = True
        try:
            self.run_text(action, source_name=self.source_name, io=io, nested=True)
        finally:
            self.in_trap = False
            self.state.last_status = status

    def run_signal_traps(self, io: IO) -> None:
        """Run the trap of each signal that reached the shell since the last command (main shell only); `$?`
        inside is the status before, and is put back after."""
        pending = self.session.signals.pending
        if not pending or not self.main or self.proc is not None or self.in_trap:
            return
        status = self.state.last_status
        while pending:
            num = pending.pop(0)
            action = self.state.traps.get(_signal.Signals(num).name[3:])
            if not action:
                continue
            self.in_trap = True
            try:
                self.run_text(action, source_name=self.source_name, io=io, nested=True)
            finally:
                self.in_trap = False
                self.state.last_status = status

    def checkpoint(self) -> None:
        """Where signals to shell code take effect: a thread's cancel/stop, or Ctrl-C in the main thread."""
        if self.proc is not None:
            self.proc.checkpoint()
        elif self.session.signals.interrupted:
            raise Cancelled(128 + _signal.SIGINT)

    def diag_prefix(self, line: int | None = None) -> str:
        """bash's prefix for runtime errors: `aiosh: ` interactively, else `aiosh: line N: ` / `FILE: line N: `."""
        line = self.lineno if line is None else line
        argv0 = self.session.argv0
        name = self.source_name
        if name is None and self.session.interactive:
            return f"{argv0}: "
        if name is None or name == "-c":
            return f"{argv0}: line {line}: "
        return f"{name}: line {line}: "

    def syntax_prefix(self, line: int) -> str:
        """bash's prefix for syntax errors, which names `-c` where runtime errors do not."""
        if self.source_name == "-c":
            return f"{self.session.argv0}: -c: line {line}: "
        return self.diag_prefix(line)

    def diag(self, io: IO | None, message: str) -> None:
        """A runtime diagnostic in bash's shape on the command's stderr."""
        err = (io or self.cur_io or self.shell_io()).stderr
        plumbing.safe_write(err, self.diag_prefix() + message + "\n")

    # -- running text ----------------------------------------------------------------------------------------
    def run_text(self, text: str, *, source_name: str | None, io: IO, nested: bool = False) -> int:
        """Parse and run one complete command at a time, so earlier lines run before a later syntax error.

        A syntax error prints bash's two lines (message, then the offending line outside interactive use) and
        ends this text with status 2. `nested` (eval) keeps the caller's line numbering.
        """
        parser = Parser(text, first_line=self.lineno if nested else 1)
        parser.lexer.extglob = lambda: self.shopt("extglob")
        parser.aliases = self._alias
        saved = self.source_name
        self.source_name = source_name
        status = 0
        try:
            while True:
                begin = parser.offset()
                try:
                    lst = parser.parse_next()
                except ShellSyntaxError as exc:
                    self._warnings(parser, io)
                    self.report_syntax(exc, io)
                    status = 2
                    self.state.last_status = 2
                    break
                except RecursionError:
                    if nested:
                        raise
                    self.report_syntax(ShellSyntaxError("syntax error: nesting too deep", parser.peek_line()), io)
                    status = self.state.last_status = 2
                    break
                self._warnings(parser, io)
                if lst is None:
                    break
                if self.state.verbose:
                    read = text[begin:parser.offset()].lstrip("\n")
                    plumbing.safe_write(io.stderr, read if read.endswith("\n") else read + "\n")
                if nested or not self.main:
                    status = self.run_list(lst, io)
                    continue
                try:
                    status = self.run_list(lst, io)
                except AbortCommand as exc:
                    status = self.state.last_status = exc.status
                    if self.state.errexit:
                        raise ExitShell(status) from None
                except RecursionError:
                    status = self.recursion_limit(io)
        finally:
            self.source_name = saved
        return status

    def recursion_limit(self, io: IO) -> int:
        """Nesting past what the interpreter's stack allows: one line and status 2, never a traceback."""
        self.diag(io, "maximum nesting depth exceeded (functions, commands or expressions)")
        self.state.last_status = 2
        return 2

    def _warnings(self, parser: Parser, io: IO) -> None:
        while parser.warnings:
            line, message = parser.warnings.pop(0)
            plumbing.safe_write(io.stderr, self.diag_prefix(line) + message + "\n")

    def report_syntax(self, exc: ShellSyntaxError, io: IO) -> None:
        prefix = self.syntax_prefix(exc.line)
        text = prefix + exc.message + "\n"
        if exc.source_line is not None and not (self.session.interactive and self.source_name is None):
            text += f"{prefix}`{exc.source_line}'\n"
        plumbing.safe_write(io.stderr, text)

    def write_out(self, dst: Pipe, text: str) -> None:
        if not plumbing.safe_write(dst, text) and self.proc is not None:
            raise Cancelled(128 + _signal.SIGPIPE)

    def fail(self, io: IO, exc: ShellError) -> int:
        self.diag(io, exc.message)
        if exc.abort:
            if self.proc is not None or not self.main:
                raise ExitShell(1)
            raise AbortCommand(1)
        if exc.fatal:
            if self.main and self.proc is None and self.session.abort_lines:
                raise AbortCommand(1)  # interactive: the rest of the line is dropped, the shell goes on
            # bash: 127 for the parameter errors, but 1 under `set -e` and in a subshell
            raise ExitShell(exc.exit_status if self.main and not self.state.errexit else 1)
        return exc.status

    # -- lists, and-or, pipelines ----------------------------------------------------------------------------
    def run_list(self, lst: CommandList, io: IO) -> int:
        status = self.state.last_status if not lst.items else 0
        for item in lst.items:
            self.checkpoint()
            if item.background:
                status = self.start_background(item.command, io)
            else:
                status = self.run_andor(item.command, io)
            self.state.last_status = status
            if self.session.signals.pending:
                self.run_signal_traps(io)
        return status

    def run_andor(self, ao: AndOr, io: IO) -> int:
        """`a && b || c`: set -e is off in every part but the last, and in everything those parts call."""
        if not ao.rest:
            return self.run_pipeline(ao.first, io)
        self.no_errexit += 1
        try:
            status = self.run_pipeline(ao.first, io, exempt=True)
        finally:
            self.no_errexit -= 1
        for i, (op, pipeline) in enumerate(ao.rest):
            if (op == "&&") == (status == 0):
                last = i == len(ao.rest) - 1
                if last:
                    status = self.run_pipeline(pipeline, io)
                    continue
                self.no_errexit += 1
                try:
                    status = self.run_pipeline(pipeline, io, exempt=True)
                finally:
                    self.no_errexit -= 1
        return status

    def run_timed(self, p: Pipeline, io: IO, exempt: bool) -> int:
        """`time pipeline`: bash's real/user/sys on stderr after the whole pipeline (plus what the host adds)."""
        t0 = time.monotonic()
        c0 = os.times()
        extra = self.session.timing() if self.session.timing is not None else None
        try:
            if not p.commands:
                return 0
            inner = Pipeline(p.commands, p.negate, p.stderr_too, p.line)
            return self.run_pipeline(inner, io, exempt=exempt)
        finally:
            wall = time.monotonic() - t0
            c1 = os.times()
            user = (c1.user - c0.user) + (c1.children_user - c0.children_user)
            system = (c1.system - c0.system) + (c1.children_system - c0.children_system)
            text = f"\nreal\t{_bash_time(wall)}\nuser\t{_bash_time(user)}\nsys\t{_bash_time(system)}\n"
            if extra is not None:
                text += extra()
            plumbing.safe_write(io.stderr, text)

    def run_pipeline(self, p: Pipeline, io: IO, *, exempt: bool = False) -> int:
        if p.timed:
            return self.run_timed(p, io, exempt)
        self.checkpoint()
        self.redirect_failed = False
        # `! cmd` exempts cmd from set -e only when set -e is on already: a `set -e` inside a negated function
        # then takes effect at once, and an ERR trap still runs inside, as in bash
        suppress = p.negate and self.state.errexit
        if suppress:
            self.no_errexit += 1
        try:
            if len(p.commands) == 1:
                status = self.run_command(p.commands[0], io)
                if not isinstance(p.commands[0], COMPOUND_NO_ERREXIT):  # those leave their last command's
                    self.state.arrays["PIPESTATUS"] = Indexed({0: str(status)})
            elif self.lastpipe():
                status = self.run_lastpipe(p, io)
            else:
                job = Job(p.render(), self.state.cwd, pipefail=self.state.pipefail)
                self.launch_pipeline(p, io, job)
                status = self.wait_foreground(job)
                self.state.arrays["PIPESTATUS"] = Indexed(
                    {i: str(proc.status or 0) for i, proc in enumerate(job.procs)}
                )
        finally:
            if suppress:
                self.no_errexit -= 1
        if p.negate:
            status = 0 if status else 1
        self.state.last_status = status
        if len(p.commands) == 1 and isinstance(p.commands[0], COMPOUND_NO_ERREXIT) and not self.redirect_failed:
            exempt = True  # a failure inside was already judged where it happened (bash: `{ false && x; }` goes on)
        if status and not p.negate and not exempt and not self.no_errexit:
            if "ERR" in self.state.traps:
                self.run_err_trap(io, status)
            if self.state.errexit:
                raise ExitShell(status)
        return status

    def lastpipe(self) -> bool:
        """`shopt -s lastpipe` in a shell without job control: the last stage runs in this shell."""
        return bool(self.state.shopts and self.state.shopts.get("lastpipe")) and not self.session.interactive

    def run_lastpipe(self, p: Pipeline, io: IO) -> int:
        job = Job(p.render(), self.state.cwd, pipefail=self.state.pipefail)
        last_in = self.launch_pipeline(p, io, job, keep_last=True)
        last_io = io.copy()
        last_io.fds[0] = last_in
        try:
            last = self.run_command(p.commands[-1], last_io)
        finally:
            if last_in is not None:
                last_in.close_reader()
        self.wait_foreground(job)
        statuses = [proc.status or 0 for proc in job.procs] + [last]
        self.state.arrays["PIPESTATUS"] = Indexed(dict(enumerate(str(s) for s in statuses)))
        if self.state.pipefail:
            return next((s for s in reversed(statuses) if s), 0)
        return last

    def start_background(self, ao: AndOr, io: IO) -> int:
        """`list &`: a job of its own; agents/programs run directly, shell code on a thread."""
        job = Job(ao.render(), self.state.cwd, pipefail=self.state.pipefail)
        job.background = True
        tags = (lambda: f"[{job.id}] ") if self.state.jobtags else None
        lines = BackgroundOutput(self.session, job, io, tags)  # whole lines, after the `[1] PID` line
        bg_io = lines.io
        bg_io.fds[0] = plumbing.closed_pipe(name="bg-stdin")
        if not ao.rest and not ao.first.negate:
            self.launch_pipeline(ao.first, bg_io, job)
        else:
            sub = self.subshell(same_thread=False)
            proc = self._thread_proc(ao.render(), sub, lambda: sub.run_andor(ao, bg_io))
            self.jobs.watch(job, proc)
            proc.start()
        self.jobs.add(job)
        self.state.last_bg_pid = job.last_pid
        if self.session.interactive and self.main:
            plumbing.safe_write(self.session.stderr, f"[{job.id}] {job.last_pid}\n")
            self.session.flush_output()
        lines.announced.set()
        # After the announcement: a job that already ended (a builtin runs at once) is flushed here, before the
        # next command, instead of waiting out the announcement timeout while `wait` finds it done.
        lines.close_after(job)
        return 0

    def launch_pipeline(self, p: Pipeline, io: IO, job: Job, *, keep_last: bool = False) -> Pipe | None:
        """Start every stage of a pipeline as a process of `job`, connected by Pipes (stages run concurrently).

        keep_last: start all but the last stage and return the pipe the last one reads (shopt -s lastpipe)."""
        n = len(p.commands)
        pipes = [Pipe(f"pipe{i}") for i in range(n - 1)]
        for i, cmd in enumerate(p.commands):
            if keep_last and i == n - 1:
                return pipes[i - 1]
            stage_io = io.copy()
            if i > 0:
                stage_io.fds[0] = pipes[i - 1]
            if i < n - 1:
                stage_io.fds[1] = pipes[i]
                if p.stderr_too[i]:
                    stage_io.fds[2] = pipes[i]
            proc = self.launch_stage(cmd, stage_io, job)
            if i < n - 1:
                proc.add_cleanup(pipes[i].close)
            if i > 0:
                proc.add_cleanup(pipes[i - 1].close_reader)
            if isinstance(proc, ThreadProc):
                proc.start()
        return None

    def launch_stage(self, cmd: Command, io: IO, job: Job) -> Proc:
        sub = self.subshell(same_thread=False)
        text = cmd.render()
        if isinstance(cmd, SimpleCommand):
            prepared = sub.prepare(cmd, io)
            if isinstance(prepared, int):
                proc: Proc = DoneProc(text, prepared)
                self.jobs.watch(job, proc)
                return proc
            argv, env, resolved = prepared
            if resolved.kind in ("agent", "host"):
                return sub.launcher.start_external(cmd, resolved, env, io, job, self.jobs)
            proc = self._thread_proc(text, sub, lambda: sub.finish_simple(cmd, resolved, env, io), job)
        else:
            proc = self._thread_proc(text, sub, lambda: sub.run_command(cmd, io), job)
        self.jobs.watch(job, proc)
        return proc

    def _thread_proc(self, text: str, sub: Interp, body: Callable[[], int], job: Job | None = None) -> ThreadProc:
        """A shell thread for `sub`; a later stage of `job` joins the group of the job's first shell thread."""
        leaders = [p for p in job.procs if isinstance(p, ThreadProc)] if job is not None else []
        pgid = leaders[0].pgid if leaders else None

        def run(_proc: ThreadProc) -> int:
            try:
                status = body()
            except (BreakLoop, ContinueLoop):
                status = 0
            except (ReturnFromFunction, ExitShell) as exc:
                status = exc.status
            except RecursionError:
                status = sub.recursion_limit(sub.cur_io or sub.shell_io())
            return sub.finish_subshell(status, sub.cur_io or sub.shell_io())

        limit = self.state.limits.get("max_procs")
        proc = ThreadProc(text, run, stderr_write=lambda t: plumbing.safe_write(self.session.stderr, t), pgid=pgid,
                          limit=limit if isinstance(limit, int) else None)
        sub.proc = proc
        proc.forward = sub.fg.signal
        return proc

    def wait_foreground(self, job: Job) -> int:
        """Wait for a foreground job; in an interactive shell a stop hands control back (status 128+sig)."""
        on_stop = self.session.interactive and self.proc is None
        self.fg.push(job)
        late = self.proc.cancel_signal if self.proc is not None else (
            _signal.SIGINT if self.session.signals.interrupted else None
        )
        if late is not None:
            try:  # signalled between our last checkpoint and the job's start: pass it on now
                job.signal(late)
            except LookupError:
                pass
        try:
            status = self.jobs.wait_job(job, return_on_stop=on_stop)
        finally:
            self.fg.pop(job)
        assert status is not None
        if job.state == "stopped":
            table = self.session.jobs
            table.add(job)
            job.reported = "running"
        if status == 128 + _signal.SIGINT and self.proc is None and self.session.interactive:
            self.session.signals.interrupted = True  # like bash, Ctrl-C in a child ends the whole command line
        return status

    # -- commands --------------------------------------------------------------------------------------------
    def run_command(self, cmd: Command, io: IO) -> int:
        if isinstance(cmd, SimpleCommand):
            return self.run_simple(cmd, io)
        if isinstance(cmd, FunctionDef):
            if not cmd.valid:
                plumbing.safe_write(io.stderr, f"{self.session.argv0}: `{cmd.name}': not a valid identifier\n")
                return 1
            self.state.functions[cmd.name] = cmd.body
            return 0
        self.lineno = cmd.line
        self.cur_io = io
        try:
            io2, closers = self.redirects.redirect(cmd.redirs, io)
        except ShellError as exc:
            self.redirect_failed = True  # set -e judges this failure at the command itself
            return self.fail(io, exc)
        self.cur_io = io2
        try:
            if isinstance(cmd, If):
                return self.run_if(cmd, io2)
            if isinstance(cmd, For):
                return self.run_for(cmd, io2)
            if isinstance(cmd, While):
                return self.run_while(cmd, io2)
            if isinstance(cmd, Case):
                return self.run_case(cmd, io2)
            if isinstance(cmd, Group):
                return self.run_list(cmd.body, io2)
            if isinstance(cmd, DBracket):
                return self.run_dbracket(cmd, io2)
            if isinstance(cmd, ArithCommand):
                return self.run_arith_command(cmd, io2)
            if isinstance(cmd, ArithFor):
                return self.run_arith_for(cmd, io2)
            if isinstance(cmd, Subshell):
                sub = self.subshell(same_thread=True)
                io2 = io2.copy()  # its own descriptor table: `(exec >f)` leaves the parent's alone
                try:
                    status = sub.run_list(cmd.body, io2)
                except (ExitShell, ReturnFromFunction) as exc:
                    status = exc.status
                except (BreakLoop, ContinueLoop):
                    status = 0
                return sub.finish_subshell(status, io2)
            raise AssertionError(f"unknown command node {cmd!r}")
        finally:
            for fn in closers:
                fn()

    def eval_arith(self, word: Word) -> int:
        text = expand_string(self, word)
        return arith.evaluate(text, self.variables.arith_vars()) if text.strip() else 0

    def run_arith_command(self, node: ArithCommand, io: IO) -> int:
        try:
            if self.state.xtrace:
                plumbing.safe_write(io.stderr, f"+ (({expand_string(self, node.expr)}))\n")
            return 0 if self.eval_arith(node.expr) else 1
        except ShellError as exc:
            self.diag(io, exc.message)
            return 1

    def run_arith_for(self, node: ArithFor, io: IO) -> int:
        status = 0
        self.loop_depth += 1
        try:
            self.eval_arith(node.init)
            while True:
                self.checkpoint()
                self.lineno = node.line  # `$LINENO` in the condition is the loop's line
                if node.cond.raw.strip() and not self.eval_arith(node.cond):
                    break
                status, broke = self._loop_body(node.body, io)
                if broke:
                    break
                self.eval_arith(node.step)
        except ShellError as exc:
            return self.fail(io, exc)
        finally:
            self.loop_depth -= 1
        return status

    def run_dbracket(self, node: DBracket, io: IO) -> int:
        try:
            return 0 if conditional.evaluate(self, node.expr) else 1
        except conditional.CondError as exc:
            self.diag(io, exc.message)
            return exc.status
        except ShellError as exc:
            return self.fail(io, exc) or 1

    def run_condition(self, lst: CommandList, io: IO) -> int:
        self.no_errexit += 1
        try:
            return self.run_list(lst, io)
        finally:
            self.no_errexit -= 1

    def run_if(self, node: If, io: IO) -> int:
        for cond, body in node.clauses:
            if self.run_condition(cond, io) == 0:
                return self.run_list(body, io)
        if node.else_body is not None:
            return self.run_list(node.else_body, io)
        return 0

    def run_for(self, node: For, io: IO) -> int:
        if not is_name(node.name):
            self.diag(io, f"`{node.name}': not a valid identifier")
            return 1
        try:
            items = expand_words(self, node.words) if node.words is not None else list(self.state.positional)
        except ShellError as exc:
            return self.fail(io, exc)
        status = 0
        self.loop_depth += 1
        try:
            for value in items:
                self.checkpoint()
                self.variables.assign(node.name, value)
                status, broke = self._loop_body(node.body, io)
                if broke:
                    break
        finally:
            self.loop_depth -= 1
        return status

    def run_case(self, node: Case, io: IO) -> int:
        try:
            value = expand_string(self, node.word)
            status = 0
            fall = False
            for item in node.items:
                if fall or any(patterns.match(expand_pattern(self, p), value, self.shopt("extglob"))
                               for p in item.patterns):
                    status = self.run_list(item.body, io) if item.body is not None else 0
                    if item.terminator == ";;":
                        return status
                    fall = item.terminator == ";&"
            return status
        except ShellError as exc:
            return self.fail(io, exc)

    def run_while(self, node: While, io: IO) -> int:
        status = 0
        self.loop_depth += 1
        try:
            while True:
                self.checkpoint()
                try:
                    cond = self.run_condition(node.cond, io)
                except LoopControl as exc:  # `while break; do …` (bash allows it)
                    _pass_outer_levels(exc)
                    status = 0
                    if isinstance(exc, BreakLoop):
                        break
                    continue
                if (cond == 0) == node.until:
                    break
                status, broke = self._loop_body(node.body, io)
                if broke:
                    break
        finally:
            self.loop_depth -= 1
        return status

    def _loop_body(self, body: CommandList, io: IO) -> tuple[int, bool]:
        """One pass of a loop's body: its status, and whether `break` ended the loop (`break N`/`continue N`
        for outer loops go on up)."""
        try:
            return self.run_list(body, io), False
        except BreakLoop as exc:
            _pass_outer_levels(exc)
            return 0, True
        except ContinueLoop as exc:
            _pass_outer_levels(exc)
            return 0, False

    # -- simple commands -------------------------------------------------------------------------------------
    def run_simple(self, cmd: SimpleCommand, io: IO) -> int:
        prepared = self.prepare(cmd, io)
        if isinstance(prepared, int):
            return prepared
        _argv, env, resolved = prepared
        if resolved.kind in ("agent", "host"):
            job = Job(cmd.render(), self.state.cwd, pipefail=self.state.pipefail)
            self.launcher.start_external(cmd, resolved, env, io, job, self.jobs)
            return self.wait_foreground(job)
        return self.finish_simple(cmd, resolved, env, io)

    def prepare(self, cmd: SimpleCommand, io: IO) -> tuple[list[str], dict[str, str], Resolved] | int:
        """Expand and resolve a simple command; an int is a final status (assignments only, or an error)."""
        self.lineno = cmd.line
        self.checkpoint()
        self.cur_io = io
        self.subst_status = None
        try:
            first = cmd.words[0].literal() if cmd.words else None
            if first in DECLARATIONS and first not in self.state.functions:
                argv = self.expand_declaration(cmd.words)
            else:
                argv = expand_words(self, cmd.words)
            if not argv:
                return self.assign_only(cmd, io)
            env: dict[str, str] = {}
            shadowed: dict[str, str | None] = {}
            try:
                for a in cmd.assigns:
                    if a.index is not None:
                        continue  # bash ignores `a[i]=v` in front of a command
                    name = a.name[:-1] if a.name.endswith("+") else a.name
                    if name in self.state.readonly:
                        self.diag(io, f"{name}: readonly variable")  # bash: said, left out, the command runs
                        continue
                    if a.items is not None:  # `B=(b c) cmd`: the text, as a string
                        value = "(" + " ".join(w.raw for w in a.items) + ")"
                    else:
                        value = expand_string(self, a.value)
                    if a.name.endswith("+"):
                        value = env.get(name, self.get_var(name) or "") + value
                    env[name] = value
                    shadowed.setdefault(name, self.state.vars.get(name))
                    if name not in self.state.readonly:
                        self.state.vars[name] = value  # `A=1 B=$A cmd`: later bindings see earlier ones
            finally:
                for name, old in shadowed.items():
                    if name in self.state.readonly:
                        continue
                    if old is None:
                        self.state.vars.pop(name, None)
                    else:
                        self.state.vars[name] = old
        except ShellError as exc:
            return self.fail(io, exc)
        if self.state.xtrace:
            plumbing.safe_write(io.stderr, "+ " + " ".join(argv) + "\n")
        last = cmd.words[-1] if cmd.words else None
        if first in DECLARATIONS and last is not None and last.items is not None:
            self.state.vars["_"] = argv[-1].split("=", 1)[0].rstrip("+")  # bash: `declare a=(1 2)` leaves `a`
        else:
            self.state.vars["_"] = argv[-1]
        if "PATH" not in env:
            return argv, env, self.launcher.resolve(argv)
        st = self.state  # `PATH=… cmd`: found on that PATH (and not remembered by `hash`)
        saved_path, saved_hash = st.vars.get("PATH"), st.hashed
        st.vars["PATH"], st.hashed = env["PATH"], None
        try:
            return argv, env, self.launcher.resolve(argv)
        finally:
            st.hashed = saved_hash
            if saved_path is None:
                st.vars.pop("PATH", None)
            else:
                st.vars["PATH"] = saved_path

    def assign_only(self, cmd: SimpleCommand, io: IO) -> int:
        self.state.vars["_"] = ""  # bash: a command of assignments alone has no last argument
        for a in cmd.assigns:
            self.run_assign(a)
        try:
            _io2, closers = self.redirects.redirect(cmd.redirs, io)
        except ShellError as exc:
            return self.fail(io, exc)
        for fn in closers:
            fn()
        return self.subst_status or 0

    def expand_declaration(self, words: list[Word]) -> list[str]:
        """Arguments of declare/local/readonly/export: `name=value` words are not split or globbed, and
        `name=(…)` items are kept aside in `decl_items` by argv position."""
        argv: list[str] = []
        self.decl_items = {}
        for w in words:
            a = _assignment(w) if argv else None
            if a is None:
                argv.extend(expand_words(self, [w]))
                continue
            name = a.name
            if a.index is not None:
                plus = name.endswith("+")
                name = f"{name.rstrip('+')}[{expand_string(self, a.index)}]" + ("+" if plus else "")
            if a.items is not None:
                self.decl_items[len(argv)] = self.array_items(a.items)
                argv.append(name + "=")
                continue
            argv.append(f"{name}={expand_string(self, a.value)}")
        return argv

    def exec_redirections(self, io: IO, new: IO, closers: list[Callable[[], None]]) -> int:
        """`exec >file 3<in`: the redirections stay for the rest of this shell (files close when it ends)."""
        if new is io:  # no redirections (`exec`, `exec -c`): nothing changes
            return 0
        kept = {id(p) for p in new.fds.values()}
        for pipe in io.fds.values():
            if pipe is not None and id(pipe) not in kept and pipe not in (self.session.stdout, self.session.stderr):
                plumbing.finish_writer(pipe)  # `exec 3>&-`: the file is complete for the next reader
        io.fds.clear()
        io.fds.update(new.fds)
        self.exec_closers.extend(closers)
        if self.main and self.proc is None:
            self.session.exec_fds = dict(new.fds)
        return 0

    def keep_named_fd(self, fd: int, io: IO, new: IO, closers: list[Callable[[], None]]) -> None:
        """`{name}>file`: descriptor FD stays open after the command, in the main shell like `exec` (bash)."""
        targets = [io.fds]
        if self.main and self.proc is None:
            session = self.session
            if session.exec_fds is None:
                session.exec_fds = session.io_fds()
            targets.append(session.exec_fds)
        for fds in targets:
            if fd in new.fds:
                fds[fd] = new.fds[fd]
            else:
                fds.pop(fd, None)
        self.exec_closers.extend(closers)

    def run_assign(self, a: Assign) -> None:
        """One `name=value` / `name+=value` / `name[i]=value` / `name=(…)` in the current shell."""
        append = a.name.endswith("+")
        name = a.name[:-1] if append else a.name
        if a.items is not None:
            if a.index is not None:
                raise ShellError(f"{name}[{expand_string(self, a.index)}]: cannot assign list to array member", abort=True)
            self.variables.assign_array(name, self.array_items(a.items), append=append)
            return
        value = expand_string(self, a.value)
        if a.index is not None:
            name = f"{name}[{expand_string(self, a.index)}]"
        self.variables.assign(name, value, append=append)

    def array_items(self, words: list[Word]) -> list[tuple[str | None, str]]:
        """The elements of `(…)`: `[k]=v` items keep their key; other words are expanded (split, globbed)."""
        out: list[tuple[str | None, str]] = []
        for w in words:
            keyed = _keyed_item(w)
            if keyed is not None:
                key, value = keyed
                out.append((expand_string(self, key), expand_string(self, value)))
                continue
            out.extend((None, v) for v in expand_words(self, [w]))
        return out

    def finish_simple(self, cmd: SimpleCommand, resolved: Resolved, env: dict[str, str], io: IO) -> int:
        """Run a resolved builtin (or report a resolution error) in this thread."""
        if resolved.kind == "error":
            try:
                _io2, closers = self.redirects.redirect(cmd.redirs, io)
            except ShellError as exc:
                return self.fail(io, exc)
            self.diag(_io2, resolved.message)
            for fn in closers:
                fn()
            return resolved.status
        try:
            io2, closers = self.redirects.redirect(cmd.redirs, io)
        except ShellError as exc:
            return self.fail(io, exc)
        if resolved.kind == "builtin" and resolved.argv[0] == "exec" and exec_without_command(resolved.argv[1:]):
            status = self.exec_redirections(io, io2, closers)
            if len(resolved.argv) > 1 and resolved.builtin is not None:  # options only, or a bad one to report
                status = resolved.builtin.call(BuiltinContext(resolved.argv, io2, self))
            return status
        if resolved.kind == "function":
            try:
                return self.call_function(resolved.argv, io2, env)
            finally:
                for fn in closers:
                    fn()
        saved = {k: self.state.vars.get(k) for k in env}
        for k, v in env.items():  # (prepare left out readonly names)
            self.state.vars[k] = v
        try:
            assert resolved.builtin is not None
            ctx = BuiltinContext(resolved.argv, io2, self)
            try:
                return resolved.builtin.call(ctx)
            except ShellError as exc:
                return self.fail(io2, exc)
        finally:
            for k, old in saved.items():
                if k in env and self.state.vars.get(k) == env[k]:
                    if old is None:
                        self.state.vars.pop(k, None)
                    else:
                        self.state.vars[k] = old
            for fn in closers:
                fn()

    def call_function(self, argv: list[str], io: IO, temp: dict[str, str] | None = None) -> int:
        """Run a shell function: its own positional parameters and `local` scope, `return` ends it.

        `temp` (`NAME=value f`): bindings in a scope of their own under the function's, exported to the
        programs it runs and gone when it returns, as in bash."""
        body = self.state.functions.get(argv[0])
        if body is None:
            self.diag(io, f"{argv[0]}: command not found")
            return 127
        if self.func_depth >= MAX_FUNCTION_DEPTH:
            self.diag(io, f"{argv[0]}: maximum function nesting level exceeded ({MAX_FUNCTION_DEPTH})")
            raise AbortCommand(2) if self.main and self.proc is None else ExitShell(2)
        st = self.state
        frames = 1
        if temp:
            self.locals.append({k: save_local(st, k) for k in temp})
            frames = 2
            for k, v in temp.items():
                st.vars[k] = v
                st.arrays.pop(k, None)
                st.exported.add(k)
        saved_args = st.positional
        st.positional = argv[1:]
        self.func_depth += 1
        self.locals.append({})
        try:
            return self.run_command(body, io)
        except ReturnFromFunction as exc:
            return exc.status
        finally:
            for _ in range(frames):
                for name, old in self.locals.pop().items():
                    restore_local(st, name, old)
            self.func_depth -= 1
            st.positional = saved_args


def _bash_time(seconds: float) -> str:
    """bash's `0m1.234s`."""
    minutes, secs = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes)}m{secs:.3f}s"


def _keyed_item(word: Word) -> tuple[Word, Word] | None:
    """`[key]=value` inside an array literal: (key word, value word); None for a plain element."""
    first = word.parts[0] if word.parts else None
    if not isinstance(first, Lit) or first.quoted or not first.text.startswith("["):
        return None
    key: list = []
    parts = [Lit(first.text[1:]), *word.parts[1:]]
    for k, p in enumerate(parts):
        if isinstance(p, Lit) and not p.quoted and "]=" in p.text:
            cut = p.text.index("]=")
            if p.text[:cut]:
                key.append(Lit(p.text[:cut]))
            rest = p.text[cut + 2 :]
            value = ([Lit(rest)] if rest else []) + parts[k + 1 :]
            return Word(key, ""), Word(value or [Lit("", True)], "")
        key.append(p)
    return None


def _pass_outer_levels(exc: LoopControl) -> None:
    """A loop caught `break N` / `continue N`: one level is its own; with more, the rest go to the enclosing loop."""
    if exc.levels > 1:
        raise type(exc)(exc.levels - 1) from None
