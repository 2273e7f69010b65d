"""The interpreter: walks the AST with bash's semantics for statuses, `set -e`, pipelines, jobs and redirections.

One `Interp` runs one shell or subshell. Subshells (pipeline stages, `( … )`, `$( … )`, background lists) get a
copy of the state, so `cd` or assignments there do not leak back, as in bash. Simple commands run in the calling
thread when they are builtins; agents and host programs become processes of a job, and multi-stage pipelines and
background lists run their shell-code stages on threads (`ThreadProc`).
"""

from __future__ import annotations

import random
import shlex
import signal as _signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiosh.kernel.streams import Pipe

from . import patterns, plumbing
from .bgout import BackgroundOutput
from .builtins import BuiltinContext
from .errors import (
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
from .launch import LaunchMixin, Resolved
from .lexer import is_digits, is_name
from .nodes import (
    AndOr,
    Case,
    Command,
    CommandList,
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
from .parser import Parser
from .procs import DoneProc, Proc, ThreadProc
from .redirect import RedirectMixin
from .state import IO, Foreground, ShellState

if TYPE_CHECKING:
    from .shell import Shell

__all__ = ["IO", "Foreground", "Interp", "Resolved", "ShellState"]

MAX_FUNCTION_DEPTH = 60  # each call costs Python stack frames; bash's FUNCNEST, with a default


class Interp(LaunchMixin, RedirectMixin):
    """Runs AST nodes for one shell or subshell; also the ExpandEnv its words are expanded in."""

    def __init__(
        self,
        shell: Shell,
        state: ShellState,
        jobs: JobTable,
        *,
        proc: ThreadProc | None = None,
        fg: Foreground | None = None,
        main: bool = False,
    ) -> None:
        self.shell = shell
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
        self.locals: list[dict[str, str | None]] = []  # per function call: saved values of its `local` names

    # -- ExpandEnv -------------------------------------------------------------------------------------------
    @property
    def cwd(self) -> str:
        return self.state.cwd

    @property
    def noglob(self) -> bool:
        return self.state.noglob

    @property
    def nounset(self) -> bool:
        return self.state.nounset

    def get_var(self, name: str) -> str | None:
        value = self.state.vars.get(name)
        if value is None and name in ("LINENO", "RANDOM", "SECONDS"):
            if name == "LINENO":
                return str(self.lineno)
            if name == "RANDOM":
                return str(random.randrange(32768))
            return str(int(time.monotonic() - self.shell.started))
        return value

    def set_var(self, name: str, value: str) -> None:
        self.state.vars[name] = value

    def positional(self) -> list[str]:
        return self.state.positional

    def special_param(self, name: str) -> str | None:
        st = self.state
        if name == "?":
            return str(st.last_status)
        if name == "$":
            return str(self.shell.pid)
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
        self.subst_status = status
        out.close()
        return out.read_all()

    # -- helpers ---------------------------------------------------------------------------------------------
    def shell_io(self) -> IO:
        return IO({0: self.shell.stdin, 1: self.shell.stdout, 2: self.shell.stderr})

    def subshell(self, *, same_thread: bool, proc: ThreadProc | None = None) -> Interp:
        """A child interpreter on a copy of the state; same-thread ones share our foreground (Ctrl-C reaches them)."""
        sub = Interp(
            self.shell,
            self.state.clone(),
            JobTable(interactive=False),
            proc=self.proc if same_thread else proc,
            fg=self.fg if same_thread else Foreground(),
        )
        sub.lineno = self.lineno
        sub.source_name = self.source_name
        sub.no_errexit = self.no_errexit  # inside an `if` condition, `set -e` stays off in subshells too
        sub.func_depth = self.func_depth
        sub.source_depth = self.source_depth
        sub.locals = [{} for _ in self.locals]
        return sub

    def foreground_signal(self, sig: int) -> bool:
        """Same as Shell.foreground_signal (the REPL may hold either object)."""
        return self.shell.foreground_signal(sig)

    def run_argv(self, argv: list[str], io: IO, env: dict[str, str] | None = None) -> int:
        """Run an already-expanded command (builtin, agent or program) and wait: for wrappers such as `time`."""
        if not argv:
            return 0
        words = [Word([Lit(a, True)], shlex.quote(a)) for a in argv]
        cmd = SimpleCommand(words=words, line=self.lineno)
        resolved = self.resolve(list(argv))
        if resolved.kind in ("agent", "host"):
            job = Job(cmd.render(), self.state.cwd, pipefail=self.state.pipefail)
            self.start_external(cmd, resolved, env or {}, io, job, self.jobs)
            return self.wait_foreground(job)
        return self.finish_simple(cmd, resolved, env or {}, io)

    def checkpoint(self) -> None:
        """Where signals to shell code take effect: a thread's cancel/stop, or Ctrl-C in the main thread."""
        if self.proc is not None:
            self.proc.checkpoint()
        elif self.shell.interrupted:
            raise Cancelled(128 + _signal.SIGINT)

    def diag_prefix(self, line: int | None = None) -> str:
        """bash's prefix for runtime errors: `aiosh: ` interactively, else `aiosh: line N: ` / `FILE: line N: `."""
        line = self.lineno if line is None else line
        argv0 = self.shell.argv0
        name = self.source_name
        if name is None and self.shell.interactive:
            return f"{argv0}: "
        if name is None or name == "-c":
            return f"{argv0}: line {line}: "
        return f"{name}: line {line}: "

    def syntax_prefix(self, line: int) -> str:
        """bash's prefix for syntax errors, which names `-c` where runtime errors do not."""
        if self.source_name == "-c":
            return f"{self.shell.argv0}: -c: line {line}: "
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
        saved = self.source_name
        self.source_name = source_name
        status = 0
        try:
            while True:
                try:
                    lst = parser.parse_next()
                except ShellSyntaxError as exc:
                    self._warnings(parser, io)
                    self.report_syntax(exc, io)
                    status = 2
                    self.state.last_status = 2
                    break
                self._warnings(parser, io)
                if lst is None:
                    break
                status = self.run_list(lst, io)
        finally:
            self.source_name = saved
        return status

    def _warnings(self, parser: Parser, io: IO) -> None:
        while parser.warnings:
            line, message = parser.warnings.pop(0)
            plumbing.safe_write(io.stderr, self.diag_prefix(line) + message + "\n")

    def report_syntax(self, exc: ShellSyntaxError, io: IO) -> None:
        prefix = self.syntax_prefix(exc.line)
        text = prefix + exc.message + "\n"
        if exc.source_line is not None and not (self.shell.interactive and self.source_name is None):
            text += f"{prefix}`{exc.source_line}'\n"
        plumbing.safe_write(io.stderr, text)

    def write_out(self, dst: Pipe, text: str) -> None:
        if not plumbing.safe_write(dst, text) and self.proc is not None:
            raise Cancelled(128 + _signal.SIGPIPE)

    def fail(self, io: IO, exc: ShellError) -> int:
        self.diag(io, exc.message)
        if exc.fatal and (self.proc is not None or not self.main or not self.shell.interactive):
            raise ExitShell(exc.exit_status if self.main else 1)
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
        return status

    def run_andor(self, ao: AndOr, io: IO) -> int:
        status = self.run_pipeline(ao.first, io, exempt=bool(ao.rest))
        for i, (op, pipeline) in enumerate(ao.rest):
            if (op == "&&") == (status == 0):
                status = self.run_pipeline(pipeline, io, exempt=i < len(ao.rest) - 1)
        return status

    def run_pipeline(self, p: Pipeline, io: IO, *, exempt: bool = False) -> int:
        self.checkpoint()
        if p.negate:
            self.no_errexit += 1
        try:
            if len(p.commands) == 1:
                status = self.run_command(p.commands[0], io)
            else:
                job = Job(p.render(), self.state.cwd, pipefail=self.state.pipefail)
                self.launch_pipeline(p, io, job)
                status = self.wait_foreground(job)
        finally:
            if p.negate:
                self.no_errexit -= 1
        if p.negate:
            status = 0 if status else 1
        self.state.last_status = status
        if status and not p.negate and not exempt and not self.no_errexit and self.state.errexit:
            raise ExitShell(status)
        return status

    def start_background(self, ao: AndOr, io: IO) -> int:
        """`list &`: a job of its own; agents/programs run directly, shell code on a thread."""
        job = Job(ao.render(), self.state.cwd, pipefail=self.state.pipefail)
        job.background = True
        tags = (lambda: f"[{job.id}] ") if self.state.jobtags else None
        lines = BackgroundOutput(self.shell, job, io, tags)  # whole lines, after the `[1] PID` line
        bg_io = lines.io
        bg_io.fds[0] = plumbing.closed_pipe(name="bg-stdin")
        if not ao.rest and not ao.first.negate:
            self.launch_pipeline(ao.first, bg_io, job)
        else:
            sub = self.subshell(same_thread=False)
            proc = self._thread_proc(ao.render(), sub, lambda: sub.run_andor(ao, bg_io))
            self.jobs.watch(job, proc)
            proc.start()
        lines.close_after(job)
        self.jobs.add(job)
        self.state.last_bg_pid = job.last_pid
        if self.shell.interactive and self.main:
            plumbing.safe_write(self.shell.stderr, f"[{job.id}] {job.last_pid}\n")
            self.shell.flush_output()
        lines.announced.set()
        return 0

    def launch_pipeline(self, p: Pipeline, io: IO, job: Job) -> None:
        """Start every stage of a pipeline as a process of `job`, connected by Pipes (stages run concurrently)."""
        n = len(p.commands)
        pipes = [Pipe(f"pipe{i}") for i in range(n - 1)]
        for i, cmd in enumerate(p.commands):
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
                return sub.start_external(cmd, resolved, env, io, job, self.jobs)
            proc = self._thread_proc(text, sub, lambda: sub.finish_simple(cmd, resolved, env, io))
        else:
            proc = self._thread_proc(text, sub, lambda: sub.run_command(cmd, io))
        self.jobs.watch(job, proc)
        return proc

    def _thread_proc(self, text: str, sub: Interp, body: Callable[[], int]) -> ThreadProc:
        def run(_proc: ThreadProc) -> int:
            try:
                return body()
            except (BreakLoop, ContinueLoop):
                return 0
            except ReturnFromFunction as exc:
                return exc.status

        proc = ThreadProc(text, run, stderr_write=lambda t: plumbing.safe_write(self.shell.stderr, t))
        sub.proc = proc
        proc.forward = sub.fg.signal
        return proc

    def wait_foreground(self, job: Job) -> int:
        """Wait for a foreground job; in an interactive shell a stop hands control back (status 128+sig)."""
        on_stop = self.shell.interactive and self.proc is None
        self.fg.push(job)
        late = self.proc.cancel_signal if self.proc is not None else (
            _signal.SIGINT if self.shell.interrupted else None
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
            table = self.shell.jobs
            table.add(job)
            job.reported = "running"
        if status == 128 + _signal.SIGINT and self.proc is None and self.shell.interactive:
            self.shell.interrupted = True  # like bash, Ctrl-C in a child ends the whole command line
        return status

    # -- commands --------------------------------------------------------------------------------------------
    def run_command(self, cmd: Command, io: IO) -> int:
        if isinstance(cmd, SimpleCommand):
            return self.run_simple(cmd, io)
        if isinstance(cmd, FunctionDef):
            self.state.functions[cmd.name] = cmd.body
            return 0
        self.lineno = cmd.line
        self.cur_io = io
        try:
            io2, closers = self.redirect(cmd.redirs, io)
        except ShellError as exc:
            return self.fail(io, exc)
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
            if isinstance(cmd, Subshell):
                sub = self.subshell(same_thread=True)
                try:
                    return sub.run_list(cmd.body, io2)
                except (ExitShell, ReturnFromFunction) as exc:
                    return exc.status
                except (BreakLoop, ContinueLoop):
                    return 0
            raise AssertionError(f"unknown command node {cmd!r}")
        finally:
            for fn in closers:
                fn()

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
                self.state.vars[node.name] = value
                try:
                    status = self.run_list(node.body, io)
                except BreakLoop as exc:
                    _pass_outer_levels(exc)
                    status = 0
                    break
                except ContinueLoop as exc:
                    _pass_outer_levels(exc)
                    status = 0
                    continue
        finally:
            self.loop_depth -= 1
        return status

    def run_case(self, node: Case, io: IO) -> int:
        try:
            value = expand_string(self, node.word)
            status = 0
            fall = False
            for item in node.items:
                if fall or any(patterns.match(expand_pattern(self, p), value) for p in item.patterns):
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
                    if (cond == 0) == node.until:
                        break
                    status = self.run_list(node.body, io)
                except BreakLoop as exc:
                    _pass_outer_levels(exc)
                    status = 0
                    break
                except ContinueLoop as exc:
                    _pass_outer_levels(exc)
                    status = 0
                    continue
        finally:
            self.loop_depth -= 1
        return status

    # -- simple commands -------------------------------------------------------------------------------------
    def run_simple(self, cmd: SimpleCommand, io: IO) -> int:
        prepared = self.prepare(cmd, io)
        if isinstance(prepared, int):
            return prepared
        _argv, env, resolved = prepared
        if resolved.kind in ("agent", "host"):
            job = Job(cmd.render(), self.state.cwd, pipefail=self.state.pipefail)
            self.start_external(cmd, resolved, env, io, job, self.jobs)
            return self.wait_foreground(job)
        return self.finish_simple(cmd, resolved, env, io)

    def prepare(self, cmd: SimpleCommand, io: IO) -> tuple[list[str], dict[str, str], Resolved] | int:
        """Expand and resolve a simple command; an int is a final status (assignments only, or an error)."""
        self.lineno = cmd.line
        self.checkpoint()
        self.cur_io = io
        self.subst_status = None
        try:
            argv = expand_words(self, cmd.words)
            if not argv:
                return self.assign_only(cmd, io)
            env: dict[str, str] = {}
            for a in cmd.assigns:
                value = expand_string(self, a.value)
                if a.name.endswith("+"):
                    name = a.name[:-1]
                    env[name] = env.get(name, self.state.vars.get(name, "")) + value
                else:
                    env[a.name] = value
        except ShellError as exc:
            return self.fail(io, exc)
        if self.state.xtrace:
            plumbing.safe_write(io.stderr, "+ " + " ".join(argv) + "\n")
        return argv, env, self.resolve(argv)

    def assign_only(self, cmd: SimpleCommand, io: IO) -> int:
        for a in cmd.assigns:
            value = expand_string(self, a.value)
            if a.name.endswith("+"):
                name = a.name[:-1]
                self.state.vars[name] = self.state.vars.get(name, "") + value
            else:
                self.state.vars[a.name] = value
        try:
            _io2, closers = self.redirect(cmd.redirs, io)
        except ShellError as exc:
            return self.fail(io, exc)
        for fn in closers:
            fn()
        return self.subst_status or 0

    def finish_simple(self, cmd: SimpleCommand, resolved: Resolved, env: dict[str, str], io: IO) -> int:
        """Run a resolved builtin (or report a resolution error) in this thread."""
        if resolved.kind == "error":
            try:
                _io2, closers = self.redirect(cmd.redirs, io)
            except ShellError as exc:
                return self.fail(io, exc)
            self.diag(_io2, resolved.message)
            for fn in closers:
                fn()
            return resolved.status
        try:
            io2, closers = self.redirect(cmd.redirs, io)
        except ShellError as exc:
            return self.fail(io, exc)
        saved = {k: self.state.vars.get(k) for k in env}
        self.state.vars.update(env)
        try:
            if resolved.kind == "function":
                return self.call_function(resolved.argv, io2)
            assert resolved.builtin is not None
            ctx = BuiltinContext(resolved.argv, io2, self)
            try:
                return resolved.builtin.fn(ctx)
            except ShellError as exc:
                return self.fail(io2, exc)
        finally:
            for k, v in saved.items():
                if k in env and self.state.vars.get(k) == env[k]:
                    if v is None:
                        self.state.vars.pop(k, None)
                    else:
                        self.state.vars[k] = v
            for fn in closers:
                fn()

    def call_function(self, argv: list[str], io: IO) -> int:
        """Run a shell function: its own positional parameters and `local` scope, `return` ends it."""
        body = self.state.functions.get(argv[0])
        if body is None:
            self.diag(io, f"{argv[0]}: command not found")
            return 127
        if self.func_depth >= MAX_FUNCTION_DEPTH:
            self.diag(io, f"{argv[0]}: maximum function nesting level exceeded ({MAX_FUNCTION_DEPTH})")
            return 1
        st = self.state
        saved_args = st.positional
        st.positional = argv[1:]
        self.func_depth += 1
        self.locals.append({})
        try:
            return self.run_command(body, io)
        except ReturnFromFunction as exc:
            return exc.status
        except RecursionError:
            if self.func_depth > 1:
                raise  # unwind to the outermost call, where there is stack left to report it
            self.diag(io, f"{argv[0]}: maximum function nesting level exceeded")
            return 1
        finally:
            for name, old in self.locals.pop().items():
                if old is None:
                    st.vars.pop(name, None)
                else:
                    st.vars[name] = old
            self.func_depth -= 1
            st.positional = saved_args


def _pass_outer_levels(exc: LoopControl) -> None:
    """A loop caught `break N` / `continue N`: one level is its own; with more, the rest go to the enclosing loop."""
    if exc.levels > 1:
        raise type(exc)(exc.levels - 1) from None
