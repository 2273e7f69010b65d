"""Finding and starting what a command name means: a builtin, an agent (through AgentHost), or a host program.

Agents get fresh Pipes that the shell pumps to and from the command's streams, so an agent (or the kernel) closing
its stdout at exit can never close a stream the shell shares with other commands.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiosh.kernel.streams import Pipe

from . import plumbing
from .agents import declared_flags, parse_options, with_limits
from .builtins import Builtin
from .childfds import ExtraFds
from .errors import ShellError
from .filepipe import FilePipe
from .hostdoor import open_door
from .jobs import Job, JobTable
from .lexer import is_digits
from .nodes import SimpleCommand
from .procs import AgentProc, DoneProc, HostProc, Proc
from .pullpipe import PullPipe
from .state import IO

if TYPE_CHECKING:
    from .redirect import Redirects
    from .session_state import Session
    from .state import ShellState


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


class Launcher:
    """Command resolution and process start-up for one interpreter: names resolve against its state (functions,
    hashed paths, cwd) and the session (builtins, agents); `fail` reports a failed start in the interpreter's shape.
    """

    def __init__(self, state: ShellState, session: Session, redirects: Redirects,
                 fail: Callable[[IO, ShellError], int]) -> None:
        self.state = state
        self.session = session
        self.redirects = redirects
        self.fail = fail

    def resolve(self, argv: list[str], *, skip_functions: bool = False) -> Resolved:
        """builtins, then agents, then host programs; `run` and `nice` are prefixes that pick/adjust an agent."""
        options: dict = {}
        while True:
            name = argv[0]
            if name in self.state.functions and not options and not skip_functions:
                return Resolved("function", argv)
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
            b = self.session.builtins.get(name)
            if b is not None:
                return Resolved("builtin", argv, builtin=b, options=options)
            if name in self.agent_names():
                return Resolved("agent", argv, options=options)
            if not self.session.host_programs:
                return Resolved("error", argv, status=127, message=f"{name}: command not found")
            path, status, message = self.find_program(name)
            if path is None:
                return Resolved("error", argv, status=status, message=message)
            return Resolved("host", argv, path=path, options=options)

    def agent_names(self) -> list[str]:
        if self.session.agents is None:
            return []
        return list(self.session.agents.agent_names())

    def find_program(self, name: str) -> tuple[str | None, int, str]:
        if "/" in name:
            full = os.path.join(self.state.cwd, os.path.expanduser(name))
            try:
                os.stat(full)
            except OSError as exc:
                if exc.errno == errno.ENAMETOOLONG:
                    return None, 126, f"{name}: File name too long"
                return None, 127, f"{name}: No such file or directory"
            if os.path.isdir(full):
                return None, 126, f"{name}: Is a directory"
            if not os.access(full, os.X_OK):
                return None, 126, f"{name}: Permission denied"
            return full, 0, ""
        st = self.state
        if st.hashed is not None and name in st.hashed:  # bash remembers where it found a command
            path = st.hashed[name]
            if os.path.isfile(path) and os.access(path, os.X_OK):
                st.hash_hits[name] = st.hash_hits.get(name, 0) + 1
                return path, 0, ""
            return None, 127, f"{path}: No such file or directory"
        for d in st.vars.get("PATH", "").split(":"):
            base = os.path.join(st.cwd, d or ".")
            cand = os.path.join(base, name)
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                if st.hashed is None:
                    st.hashed = {}
                st.hashed[name] = cand
                st.hash_hits[name] = 1
                return cand, 0, ""
        return None, 127, f"{name}: command not found"

    # -- processes -------------------------------------------------------------------------------------------
    def start_external(
        self, cmd: SimpleCommand, resolved: Resolved, env: dict[str, str], io: IO, job: Job, table: JobTable
    ) -> Proc:
        """Start an agent or host program as a process of `job` (redirections close when it finishes)."""
        text = cmd.render()
        try:
            io2, closers = self.redirects.redirect(cmd.redirs, io)
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
        host = self.session.agents
        assert host is not None
        name, args = resolved.argv[0], resolved.argv[1:]
        options, args = parse_options(name, args, resolved.options, *declared_flags(host, name))
        options = with_limits(options, self.state.limits)
        out = Pipe(f"{name}.stdout")
        err = out if io.stderr is io.stdout else Pipe(f"{name}.stderr")
        lines = job.background  # background output reaches the terminal line by line
        pumps = [plumbing.pump_pipe(out, io.stdout, close_dst=False, whole_lines=lines)]
        if err is not out:
            pumps.append(plumbing.pump_pipe(err, io.stderr, close_dst=False, whole_lines=lines))
        stop = threading.Event()
        stdin = None
        if io.stdin is not None:
            stdin = PullPipe(io.stdin, f"{name}.stdin", stop)  # the agent takes only what it reads
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
        self.session.register_agent(proc)
        proc.start_waiter()
        return proc

    def start_host(self, resolved: Resolved, env: dict[str, str], io: IO) -> HostProc:
        argv = list(resolved.argv)
        path = resolved.path
        if "nice" in resolved.options and shutil.which("nice"):
            argv = ["nice", "-n", str(resolved.options["nice"]), path, *argv[1:]]
            path = shutil.which("nice") or path
        merged = io.stderr is io.stdout
        door_env, bind_door = open_door(self.session.agents, resolved.argv, resolved.options, self.state.cwd)
        started = False
        shared_fd = io.stdin.handoff() if isinstance(io.stdin, FilePipe) else None
        if _no_interpreter_line(path):  # bash runs such a file as a script of its own language
            argv = [sys.executable, "-m", "aiosh.shell", argv[0] if "/" in argv[0] else path, *argv[1:]]
            path = sys.executable
        extra = ExtraFds(io.fds)
        try:
            popen = subprocess.Popen(
                argv,
                executable=path,
                pass_fds=extra.keep,
                preexec_fn=extra.install if extra.targets else None,
                cwd=self.state.cwd,
                env={**({} if resolved.options.get("clear_env") else self.state.env(env)), **door_env},
                stdin=shared_fd if shared_fd is not None else subprocess.DEVNULL if io.stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                bufsize=0,
                process_group=0,
                close_fds=True,
            )
            started = True
        except PermissionError:
            extra.abandon()
            raise ShellError(f"{argv[0]}: Permission denied", 126) from None
        except FileNotFoundError:
            extra.abandon()
            raise ShellError(f"{argv[0]}: No such file or directory", 127) from None
        except OSError as exc:
            extra.abandon()
            raise ShellError(f"{argv[0]}: cannot execute: {exc.strerror}", 126) from None
        except (ValueError, subprocess.SubprocessError) as exc:
            extra.abandon()
            raise ShellError(f"{argv[0]}: cannot execute: {exc}", 126) from None
        finally:
            if not started:
                bind_door(None)  # its kernel process ends too
        extra.after_spawn()
        pumps = [plumbing.stream_to_pipe(popen.stdout, io.stdout)]  # type: ignore[arg-type]
        if not merged:
            pumps.append(plumbing.stream_to_pipe(popen.stderr, io.stderr))  # type: ignore[arg-type]
        proc = HostProc(popen, argv[0], pumps)
        bind_door(proc)  # its stops and exit reach its kernel process (the door's caller)
        if io.stdin is not None and shared_fd is None:
            stop = threading.Event()
            plumbing.pipe_to_stream(io.stdin, popen.stdin, stop)  # type: ignore[arg-type]
            proc.add_cleanup(stop.set)
        return proc


def _no_interpreter_line(path: str) -> bool:
    """An executable text file without `#!` and not a binary: the kernel would refuse it (ENOEXEC)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return False
    return not (head.startswith((b"#!", b"\x7fELF")) or b"\0" in head)


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
