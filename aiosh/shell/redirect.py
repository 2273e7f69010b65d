"""Redirections: files opened relative to the shell's cwd, here-documents, and descriptor duplication.

Each file is attached through a pump thread; the closers returned run once the command has finished, so a file is
complete before the next command reads it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiosh.kernel.streams import Pipe

from . import plumbing
from .errors import ShellError
from .expand import ExpandEnv, expand_string, expand_target
from .filepipe import FilePipe, ReadWritePipe
from .lexer import is_digits
from .nodes import HereDoc, Redir, Word
from .state import IO

if TYPE_CHECKING:
    from .state import ShellState
    from .variables import Variables

# `{name}>file`: the descriptor outlives the command; its owner keeps it (new fd table, closers)
KeepNamed = Callable[[int, IO, IO, list[Callable[[], None]]], None]


class Redirects:
    """Applying redirections for one interpreter: targets expand in `env` (the interpreter, which may run
    command substitutions), files open relative to its cwd, and `{name}>file` descriptors go to `keep_named`."""

    def __init__(self, env: ExpandEnv, state: ShellState, variables: Variables, keep_named: KeepNamed) -> None:
        self.env = env
        self.state = state
        self.variables = variables
        self.keep_named = keep_named

    def redirect(self, redirs: list[Redir], io: IO) -> tuple[IO, list[Callable[[], None]]]:
        """Apply redirections in order; returns the new descriptors and the closers to run afterwards."""
        if not redirs:
            return io, []
        new = io.copy()
        closers: list[Callable[[], None]] = []
        try:
            for r in redirs:
                before = len(closers)
                self._redirect_one(r, new, closers)
                if r.fd_var is not None:  # `{name}>file` stays open after the command, as in bash
                    self._persist_named(r, io, new, closers[before:])
                    del closers[before:]
        except BaseException:
            for fn in closers:
                fn()
            raise
        return new, closers

    def _persist_named(self, r: Redir, io: IO, new: IO, closers: list[Callable[[], None]]) -> None:
        assert r.fd_var is not None
        value = self.env.get_var(r.fd_var)
        if value is None or not is_digits(value):
            return
        self.keep_named(int(value), io, new, closers)

    def _redirect_one(self, r: Redir, io: IO, closers: list[Callable[[], None]]) -> None:
        if r.fd_var is not None:
            r = self._named_fd(r, io)
        op = r.op
        env = self.env
        if isinstance(r.target, HereDoc):
            doc = r.target
            assert doc.body is not None
            text = expand_string(env, doc.body) if doc.expand else doc.text
            io.fds[0 if r.fd is None else r.fd] = plumbing.closed_pipe(text, "here-doc")
            return
        if op == "<<<":
            text = expand_string(env, r.target) + "\n"
            io.fds[0 if r.fd is None else r.fd] = plumbing.closed_pipe(text, "here-string")
            return
        target = expand_target(env, r.target)
        if op in (">&", "<&"):
            fd = r.fd if r.fd is not None else (1 if op == ">&" else 0)
            if target == "-":
                if fd > 2:
                    io.fds.pop(fd, None)  # closed: later use is `Bad file descriptor`, as in bash
                else:
                    io.fds[fd] = plumbing.null_pipe() if op == ">&" else plumbing.closed_pipe()
                return
            if target.endswith("-") and is_digits(target[:-1]):  # `N>&M-`: move M to N
                src = int(target[:-1])
                if src not in io.fds:
                    raise ShellError(f"{target[:-1]}: Bad file descriptor")
                io.fds[fd] = io.fds.pop(src)
                return
            if is_digits(target):
                src = int(target)
                if src not in io.fds:
                    raise ShellError(f"{target}: Bad file descriptor")
                io.fds[fd] = io.fds[src]
                return
            if op != ">&":
                raise ShellError(f"{r.target.raw}: ambiguous redirect")
            op = "&>" if r.fd is None else ">"  # `>&file` is `&>file`; `1>&file` is `1>file` (bash)
        special = self._dev_path(target, io)
        if special is not None:
            if op == "&>" or op == "&>>":
                io.fds[1] = io.fds[2] = special
            else:
                io.fds[(0 if op in ("<", "<>") else 1) if r.fd is None else r.fd] = special
            return
        path = os.path.join(self.state.cwd, target)
        if op in ("<", "<>"):
            f = self._open(target, path, "rb" if op == "<" else "rw")
            pipe: Pipe = FilePipe(os.dup(f.fileno()), target) if op == "<" else ReadWritePipe(os.dup(f.fileno()), target)
            f.close()
            closers.append(pipe.close_reader)
            io.fds[0 if r.fd is None else r.fd] = pipe
            return
        mode = "ab" if op in (">>", "&>>") else "wb"
        if op in (">", "&>") and self.state.noclobber and os.path.isfile(path):
            raise ShellError(f"{target}: cannot overwrite existing file")  # `set -C`; `>|` still may
        f = self._open(target, path, mode)
        pipe = plumbing.FileSink(f, target)
        closers.append(pipe.close)
        if op in ("&>", "&>>"):
            io.fds[1] = io.fds[2] = pipe
        else:
            io.fds[1 if r.fd is None else r.fd] = pipe

    def _named_fd(self, r: Redir, io: IO) -> Redir:
        """`{name}>file` picks a free descriptor from 10 up and stores it in $name; `{name}>&-` closes $name's."""
        assert r.fd_var is not None
        target = r.target
        if r.op in (">&", "<&") and isinstance(target, Word) and target.literal() == "-":
            value = self.env.get_var(r.fd_var)
            if value is None or not is_digits(value):
                raise ShellError(f"{r.fd_var}: ambiguous redirect")
            return Redir(r.op, target, int(value))
        fd = 10
        while fd in io.fds:
            fd += 1
        self.variables.assign(r.fd_var, str(fd))
        return Redir(r.op, target, fd)

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
            if mode == "rw":  # `<>`: created if missing, never truncated; a FIFO opens without waiting
                return _RawFd(os.open(path, os.O_RDWR | os.O_CREAT, 0o666))
            if mode == "rb":  # a directory opens too (reading it fails, as in bash)
                return _RawFd(os.open(path, os.O_RDONLY))
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


class _RawFd:
    """An open descriptor with the two methods the redirection code uses of a file object."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        os.close(self._fd)
