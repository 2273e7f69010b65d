"""The interpreter: walks the AST with bash's semantics for statuses, `set -e`, pipelines, jobs and redirections.

One `Interp` runs one shell or subshell. Subshells (pipeline stages, `( … )`, `$( … )`, background lists) get a
copy of the state, so `cd` or assignments there do not leak back, as in bash. Simple commands run in the calling
thread when they are builtins; agents and host programs become processes of a job, and multi-stage pipelines and
background lists run their shell-code stages on threads (`ThreadProc`).
"""

from __future__ import annotations

import copy
import os
import random
import shlex
import shutil
import signal as _signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kernel.streams import Pipe

from . import patterns, plumbing
from .agents import parse_options, with_limits
from .builtins import Builtin, BuiltinContext
from .errors import BreakLoop, Cancelled, ContinueLoop, ExitShell, ShellError, ShellSyntaxError
from .expand import expand_pattern, expand_string, expand_target, expand_words
from .jobs import Job, JobTable
from .lexer import is_digits, is_name
from .nodes import (
    AndOr,
    Case,
    Command,
    CommandList,
    For,
    Group,
    HereDoc,
    If,
    Lit,
    Pipeline,
    Redir,
    SimpleCommand,
    Subshell,
    While,
    Word,
)
from .parser import Parser
from .procs import AgentProc, DoneProc, HostProc, Proc, ThreadProc

if TYPE_CHECKING:
    from .shell import Shell

# -- state -------------------------------------------------------------------------------------------------------


@dataclass
class ShellState:
    """Everything a subshell copies: variables, exports, positional parameters, cwd, options, limits."""

    vars: dict[str, str]
    exported: set[str]
    positional: list[str]
    argv0: str
    cwd: str
    errexit: bool = False
    pipefail: bool = False
    noglob: bool = False
    xtrace: bool = False
    nounset: bool = False
    last_status: int = 0
    last_bg_pid: int | None = None
    limits: dict[str, object] = field(default_factory=dict)

    def clone(self) -> ShellState:
        return copy.deepcopy(self)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment a program or agent gets: exported variables, plus `NAME=value cmd` ones."""
        env = {k: self.vars[k] for k in self.exported if k in self.vars}
        if extra:
            env.update(extra)
        return env

    def flags(self) -> str:
        pairs = (("e", self.errexit), ("f", self.noglob), ("u", self.nounset), ("x", self.xtrace))
        return "".join(f for f, on in pairs if on)


@dataclass
class IO:
    """A command's file descriptors; 0 may be None (no stdin at all)."""

    fds: dict[int, Pipe | None]

    @property
    def stdin(self) -> Pipe | None:
        return self.fds.get(0)

    @property
    def stdout(self) -> Pipe:
        out = self.fds.get(1)
        return out if out is not None else plumbing.null_pipe()

    @property
    def stderr(self) -> Pipe:
        err = self.fds.get(2)
        return err if err is not None else plumbing.null_pipe()

    def copy(self) -> IO:
        return IO(dict(self.fds))


class Foreground:
    """The jobs a thread of control is waiting for: where Ctrl-C / Ctrl-Z (or a forwarded signal) go."""

    def __init__(self) -> None:
        self._jobs: list[Job] = []
        self._lock = threading.RLock()

    def jobs(self) -> list[Job]:
        return list(self._jobs)  # a copy without the lock: callable from a signal handler

    def push(self, job: Job) -> None:
        with self._lock:
            self._jobs.append(job)

    def pop(self, job: Job) -> None:
        with self._lock:
            if job in self._jobs:
                self._jobs.remove(job)

    def signal(self, sig: int) -> bool:
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:
            try:
                job.signal(sig)
            except LookupError:
                pass
        return bool(jobs)


@dataclass
class Resolved:
    """What a command name turned out to be."""

    kind: str  # builtin | agent | host | error
    argv: list[str]
    builtin: Builtin | None = None
    path: str = ""
    options: dict = field(default_factory=dict)
    status: int = 0
    message: str = ""


# -- the interpreter ---------------------------------------------------------------------------------------------


class Interp:
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
        except ExitShell as exc:
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
            raise ExitShell(127 if self.main else 1)  # bash's statuses: 127 for the shell, 1 for a subshell
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
        bg_io = io.copy()
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
        if self.shell.interactive and self.main:
            plumbing.safe_write(self.shell.stderr, f"[{job.id}] {job.last_pid}\n")
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
                except ExitShell as exc:
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
                    if exc.levels > 1:
                        raise BreakLoop(exc.levels - 1) from None
                    status = 0
                    break
                except ContinueLoop as exc:
                    if exc.levels > 1:
                        raise ContinueLoop(exc.levels - 1) from None
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
                    if exc.levels > 1:
                        raise BreakLoop(exc.levels - 1) from None
                    status = 0
                    break
                except ContinueLoop as exc:
                    if exc.levels > 1:
                        raise ContinueLoop(exc.levels - 1) from None
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

    def resolve(self, argv: list[str]) -> Resolved:
        """builtins, then agents, then host programs; `run` and `nice` are prefixes that pick/adjust an agent."""
        options: dict = {}
        while True:
            name = argv[0]
            if name == "run" and len(argv) > 1:
                try:
                    options, rest = parse_options("run", argv[1:], options)
                except ShellError as exc:
                    return Resolved("error", argv, status=exc.status, message=exc.message)
                if not rest:
                    return Resolved("error", argv, status=2, message="run: usage: run [OPTIONS] AGENT [ARGS...]")
                if rest[0] not in self.agent_names():
                    return Resolved("error", rest, status=127, message=f"run: {rest[0]}: no such agent")
                return Resolved("agent", rest, options=options)
            if name == "nice" and len(argv) > 1:
                adj, rest, err = _nice_args(argv[1:])
                if err:
                    return Resolved("error", argv, status=125, message=f"nice: {err}")
                if rest:
                    options["nice"] = max(-20, min(19, int(options.get("nice", 0)) + adj))
                    argv = rest
                    continue
            b = self.shell.builtins.get(name)
            if b is not None:
                return Resolved("builtin", argv, builtin=b, options=options)
            if name in self.agent_names():
                return Resolved("agent", argv, options=options)
            if not self.shell.host_programs:
                return Resolved("error", argv, status=127, message=f"{name}: command not found")
            path, status, message = self.find_program(name)
            if path is None:
                return Resolved("error", argv, status=status, message=message)
            return Resolved("host", argv, path=path, options=options)

    def agent_names(self) -> list[str]:
        if self.shell.agents is None:
            return []
        try:
            return list(self.shell.agents.agent_names())
        except Exception:  # noqa: BLE001 - a broken host must not break builtins
            return []

    def find_program(self, name: str) -> tuple[str | None, int, str]:
        if "/" in name:
            full = os.path.join(self.state.cwd, os.path.expanduser(name))
            if not os.path.exists(full):
                return None, 127, f"{name}: No such file or directory"
            if os.path.isdir(full):
                return None, 126, f"{name}: Is a directory"
            if not os.access(full, os.X_OK):
                return None, 126, f"{name}: Permission denied"
            return full, 0, ""
        for d in self.state.vars.get("PATH", "").split(":"):
            base = os.path.join(self.state.cwd, d or ".")
            cand = os.path.join(base, name)
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return cand, 0, ""
        return None, 127, f"{name}: command not found"

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
        assert resolved.builtin is not None
        try:
            io2, closers = self.redirect(cmd.redirs, io)
        except ShellError as exc:
            return self.fail(io, exc)
        saved = {k: self.state.vars.get(k) for k in env}
        self.state.vars.update(env)
        try:
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

    # -- processes -------------------------------------------------------------------------------------------
    def start_external(
        self, cmd: SimpleCommand, resolved: Resolved, env: dict[str, str], io: IO, job: Job, table: JobTable
    ) -> Proc:
        """Start an agent or host program as a process of `job` (redirections close when it finishes)."""
        text = cmd.render()
        try:
            io2, closers = self.redirect(cmd.redirs, io)
        except ShellError as exc:
            proc: Proc = DoneProc(text, self.fail(io, exc))
            table.watch(job, proc)
            return proc
        try:
            if resolved.kind == "agent":
                proc = self.start_agent(resolved, env, io2, job)
            else:
                proc = self.start_host(resolved, env, io2)
        except ShellError as exc:
            for fn in closers:
                fn()
            proc = DoneProc(text, self.fail(io2, exc))
            table.watch(job, proc)
            return proc
        proc.text = text
        for fn in closers:
            proc.add_cleanup(fn)
        table.watch(job, proc)
        return proc

    def start_agent(self, resolved: Resolved, env: dict[str, str], io: IO, job: Job) -> AgentProc:
        host = self.shell.agents
        assert host is not None
        name, args = resolved.argv[0], resolved.argv[1:]
        options, args = parse_options(name, args, resolved.options)
        options = with_limits(options, self.state.limits)
        out = Pipe(f"{name}.stdout")
        err = out if io.stderr is io.stdout else Pipe(f"{name}.stderr")
        pumps = [plumbing.pump_pipe(out, io.stdout, close_dst=False)]
        if err is not out:
            pumps.append(plumbing.pump_pipe(err, io.stderr, close_dst=False))
        stop = threading.Event()
        stdin = None
        if io.stdin is not None:
            stdin = Pipe(f"{name}.stdin")
            plumbing.pump_pipe(io.stdin, stdin, close_dst=True, stop=stop)
        try:
            pid = host.start(
                name,
                args,
                stdin=stdin,
                stdout=out,
                stderr=err,
                pgid=job.agent_pgid,
                cwd=self.state.cwd,
                env=self.state.env(env),
                options=options,
            )
        except LookupError:
            _close_all(out, err, stdin, stop)
            raise ShellError(f"{name}: command not found", 127) from None
        except ValueError as exc:
            _close_all(out, err, stdin, stop)
            raise ShellError(f"{name}: {exc}", 2) from None
        except Exception as exc:  # noqa: BLE001 - the kernel refusing must read as "cannot run"
            _close_all(out, err, stdin, stop)
            raise ShellError(f"{name}: cannot run: {exc}", 126) from None
        if job.agent_pgid is None:
            job.agent_pgid = pid
        proc = AgentProc(host, pid, name)

        def close_proxies() -> None:
            stop.set()
            out.close()
            err.close()
            for t in pumps:
                t.join(2.0)

        proc.add_cleanup(close_proxies)
        self.shell.register_agent(proc)
        proc.start_waiter()
        return proc

    def start_host(self, resolved: Resolved, env: dict[str, str], io: IO) -> HostProc:
        argv = list(resolved.argv)
        path = resolved.path
        if "nice" in resolved.options and shutil.which("nice"):
            argv = ["nice", "-n", str(resolved.options["nice"]), path, *argv[1:]]
            path = shutil.which("nice") or path
        merged = io.stderr is io.stdout
        try:
            popen = subprocess.Popen(
                argv,
                executable=path,
                cwd=self.state.cwd,
                env=self.state.env(env),
                stdin=subprocess.DEVNULL if io.stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                bufsize=0,
                process_group=0,
                close_fds=True,
            )
        except PermissionError:
            raise ShellError(f"{argv[0]}: Permission denied", 126) from None
        except FileNotFoundError:
            raise ShellError(f"{argv[0]}: No such file or directory", 127) from None
        except OSError as exc:
            raise ShellError(f"{argv[0]}: cannot execute: {exc.strerror}", 126) from None
        except ValueError as exc:
            raise ShellError(f"{argv[0]}: cannot execute: {exc}", 126) from None
        pumps = [plumbing.stream_to_pipe(popen.stdout, io.stdout)]  # type: ignore[arg-type]
        if not merged:
            pumps.append(plumbing.stream_to_pipe(popen.stderr, io.stderr))  # type: ignore[arg-type]
        proc = HostProc(popen, argv[0], pumps)
        if io.stdin is not None:
            stop = threading.Event()
            plumbing.pipe_to_stream(io.stdin, popen.stdin, stop)  # type: ignore[arg-type]
            proc.add_cleanup(stop.set)
        return proc

    # -- redirections ----------------------------------------------------------------------------------------
    def redirect(self, redirs: list[Redir], io: IO) -> tuple[IO, list[Callable[[], None]]]:
        """Apply redirections in order; returns the new descriptors and the closers to run afterwards."""
        if not redirs:
            return io, []
        new = io.copy()
        closers: list[Callable[[], None]] = []
        try:
            for r in redirs:
                self._redirect_one(r, new, closers)
        except BaseException:
            for fn in closers:
                fn()
            raise
        return new, closers

    def _redirect_one(self, r: Redir, io: IO, closers: list[Callable[[], None]]) -> None:
        op = r.op
        if isinstance(r.target, HereDoc):
            doc = r.target
            assert doc.body is not None
            text = expand_string(self, doc.body) if doc.expand else doc.text
            io.fds[0 if r.fd is None else r.fd] = plumbing.closed_pipe(text, "here-doc")
            return
        if op == "<<<":
            text = expand_string(self, r.target) + "\n"
            io.fds[0 if r.fd is None else r.fd] = plumbing.closed_pipe(text, "here-string")
            return
        target = expand_target(self, r.target)
        if op in (">&", "<&"):
            fd = r.fd if r.fd is not None else (1 if op == ">&" else 0)
            if target == "-":
                io.fds[fd] = plumbing.null_pipe() if op == ">&" else plumbing.closed_pipe()
                return
            if is_digits(target):
                src = int(target)
                if src not in io.fds:
                    raise ShellError(f"{target}: Bad file descriptor")
                io.fds[fd] = io.fds[src]
                return
            if op == ">&" and r.fd is None:
                op = "&>"
            else:
                raise ShellError(f"{r.target.raw}: ambiguous redirect")
        special = self._dev_path(target, io)
        if special is not None:
            if op == "&>" or op == "&>>":
                io.fds[1] = io.fds[2] = special
            else:
                io.fds[(0 if op in ("<", "<>") else 1) if r.fd is None else r.fd] = special
            return
        path = os.path.join(self.state.cwd, target)
        if op in ("<", "<>"):
            mode = "rb" if op == "<" else "r+b"
            if op == "<>" and not os.path.exists(path):
                open(path, "ab").close()
            f = self._open(target, path, mode)
            pipe, _thread = plumbing.file_reader(f, target)
            closers.append(pipe.close_reader)
            io.fds[0 if r.fd is None else r.fd] = pipe
            return
        mode = "ab" if op in (">>", "&>>") else "wb"
        f = self._open(target, path, mode)
        pipe, thread = plumbing.file_writer(f, target)

        def close(pipe: Pipe = pipe, thread: threading.Thread = thread) -> None:
            pipe.close()
            thread.join(5.0)

        closers.append(close)
        if op in ("&>", "&>>"):
            io.fds[1] = io.fds[2] = pipe
        else:
            io.fds[1 if r.fd is None else r.fd] = pipe

    def _dev_path(self, target: str, io: IO) -> Pipe | None:
        fd = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}.get(target)
        if fd is None and target.startswith("/dev/fd/") and is_digits(target[8:]):
            fd = int(target[8:])
        if fd is None:
            return None
        pipe = io.fds.get(fd)
        if pipe is None:
            raise ShellError(f"{target}: Bad file descriptor")
        return pipe

    @staticmethod
    def _open(shown: str, path: str, mode: str):  # noqa: ANN205 - a binary file object
        try:
            return open(path, mode)  # noqa: SIM115 - closed by the pump thread
        except FileNotFoundError:
            raise ShellError(f"{shown}: No such file or directory") from None
        except IsADirectoryError:
            raise ShellError(f"{shown}: Is a directory") from None
        except PermissionError:
            raise ShellError(f"{shown}: Permission denied") from None
        except OSError as exc:
            raise ShellError(f"{shown}: {exc.strerror}") from None
        except ValueError:  # a NUL in the name
            raise ShellError(f"{shown}: No such file or directory") from None


def _nice_args(args: list[str]) -> tuple[int, list[str], str]:
    """`nice [-n N | -N | --adjustment=N] COMMAND…` → (adjustment, command, error)."""
    adj = 10
    i = 0
    if i < len(args):
        a = args[i]
        try:
            if a == "-n" or a == "--adjustment":
                if i + 1 >= len(args):
                    return 0, [], f"option requires an argument -- '{a.lstrip('-')}'"
                adj = int(args[i + 1])
                i += 2
            elif a.startswith("--adjustment="):
                adj = int(a.split("=", 1)[1])
                i += 1
            elif a.startswith("-n") and len(a) > 2:
                adj = int(a[2:])
                i += 1
            elif len(a) > 1 and a[0] == "-" and is_digits(a[1:].lstrip("-")):
                adj = int(a[1:])
                i += 1
        except ValueError:
            bad = args[i + 1] if args[i] in ("-n", "--adjustment") else args[i]
            return 0, [], f"invalid adjustment '{bad}'"
    if i < len(args) and args[i] == "--":
        i += 1
    return adj, args[i:], ""


def _close_all(out: Pipe, err: Pipe, stdin: Pipe | None, stop: threading.Event) -> None:
    stop.set()
    out.close()
    err.close()
    if stdin is not None:
        stdin.close()
