"""The builtin table: name → (function, one-line help, usage), and the context a builtin function receives.

Other parts of aiosh add their own commands without touching the interpreter:

    from aiosh.shell.builtins import registry          # the defaults every new Shell copies
    registry.register("ps", ps_main, "list agent processes", "ps [-l]")

    shell.builtins.register("top", top_main, "live process view", "top")   # one shell only

A builtin is `fn(ctx: BuiltinContext) -> int`; it writes with `ctx.write(...)`, reports with
`return ctx.error("bad thing")` (→ `aiosh: NAME: bad thing` on stderr, status 1) or `ctx.usage_error(...)` (status 2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiosh.kernel.streams import Pipe

from .. import reader
from ..errors import Cancelled
from .getopt import OptionError

if TYPE_CHECKING:
    from ..interp import Interp
    from ..session_state import Session
    from ..state import IO, ShellState

BuiltinFn = Callable[["BuiltinContext"], int]


@dataclass
class Builtin:
    name: str
    fn: BuiltinFn
    help: str = ""
    usage: str = ""
    details: str | Callable[[], str] = ""  # `help NAME`: options and meanings, beyond the one-line help (a function:
    # made when asked, from a module loaded then)

    def details_text(self) -> str:
        return self.details() if callable(self.details) else self.details

    def call(self, ctx: BuiltinContext) -> int:
        """Run it; a bad option (declared options, getopt.py) is bash's usage error, status 2."""
        try:
            return self.fn(ctx)
        except OptionError as exc:
            if not exc.usage:
                return ctx.error(str(exc))
            return ctx.usage_error(str(exc) or None)


class BuiltinRegistry:
    def __init__(self) -> None:
        self._table: dict[str, Builtin] = {}

    def register(self, name: str, fn: BuiltinFn, help: str = "", usage: str = "", *,  # noqa: A002
                 details: str | Callable[[], str] = "") -> None:
        """Add or replace a builtin; `usage` defaults to the bare name."""
        self._table[name] = Builtin(name, fn, help, usage or name, details)

    def unregister(self, name: str) -> None:
        self._table.pop(name, None)

    def get(self, name: str) -> Builtin | None:
        return self._table.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def names(self) -> list[str]:
        return sorted(self._table)

    def copy(self) -> BuiltinRegistry:
        new = BuiltinRegistry()
        new._table = dict(self._table)
        return new

    def builtin(self, name: str, help: str = "", usage: str = "") -> Callable[[BuiltinFn], BuiltinFn]:  # noqa: A002
        """Decorator form of `register`."""

        def deco(fn: BuiltinFn) -> BuiltinFn:
            self.register(name, fn, help, usage)
            return fn

        return deco


class BuiltinContext:
    """What a builtin gets: its argv, its three streams (after redirections), and the shell."""

    def __init__(self, argv: list[str], io: IO, interp: Interp) -> None:
        self.argv = argv
        self.io = io
        self.interp = interp

    @property
    def name(self) -> str:
        return self.argv[0]

    @property
    def args(self) -> list[str]:
        return self.argv[1:]

    @property
    def stdin(self) -> Pipe | None:
        return self.io.stdin

    @property
    def stdout(self) -> Pipe:
        return self.io.stdout

    @property
    def stderr(self) -> Pipe:
        return self.io.stderr

    @property
    def state(self) -> ShellState:
        """Variables, cwd, options, positional parameters of the shell (or subshell) running the builtin."""
        return self.interp.state

    @property
    def session(self) -> Session:
        """What the shell's interpreters share: agents, job table, builtin registry, flags, streams."""
        return self.interp.session

    @property
    def shell(self) -> Session:
        """The name builtins used before `session` (it holds the same attributes: agents, jobs, builtins)."""
        return self.interp.session

    def write(self, text: str) -> None:
        """Write to stdout; in a pipeline whose reader is gone this ends the builtin like SIGPIPE (141)."""
        self.interp.write_out(self.io.stdout, text)

    def write_err(self, text: str) -> None:
        self.interp.write_out(self.io.stderr, text)

    def error(self, message: str, status: int = 1) -> int:
        """`aiosh: NAME: message` on stderr (with bash's `line N:` part in scripts); returns status."""
        self.interp.diag(self.io, f"{self.name}: {message}")
        return status

    def usage_error(self, message: str | None = None, status: int = 2) -> int:
        if message:
            self.error(message)
        b = self.interp.session.builtins.get(self.name)
        if b is not None and b.usage:
            self.write_err(f"{self.name}: usage: {b.usage}\n")
        return status

    def run(self, argv: list[str]) -> int:
        """Run a command with this builtin's streams and wait for it (what `time CMD` or `nice CMD` need)."""
        return self.interp.run_argv(argv, self.io)

    def run_source(self, text: str) -> int:
        """Run shell text in the current shell with this builtin's streams (what `eval` does)."""
        return self.interp.run_text(text, source_name=self.interp.source_name, io=self.io, nested=True)

    def read_line(self, delim: str = "\n") -> tuple[str, bool]:
        """One line of stdin (without the delimiter) and whether a whole line came; the rest stays unread."""
        if self.io.stdin is None:
            return "", False
        return reader.read_line(self.io.stdin, delim, self.checkpoint)

    def checkpoint(self) -> None:
        """Raise Cancelled when the thread running this builtin was signalled (Ctrl-C, kill)."""
        self.interp.checkpoint()

    def read_chunks(self) -> Iterator[str]:
        """stdin's text as it arrives, until end of file; honours signals while blocked."""
        src = self.io.stdin
        if src is None:
            return
        while True:
            self.checkpoint()
            chunk = reader.read(src, 0.1)
            if chunk == "":
                return
            if chunk:
                yield chunk


registry = BuiltinRegistry()
"""The default table; each new Shell starts from a copy of it."""


def _load_defaults() -> None:
    from . import declare, files, flow, info, jobctl, lang, printf, vars

    for mod in (files, flow, vars, declare, lang, printf, jobctl, info):
        mod.register(registry)


_load_defaults()


__all__ = ["Builtin", "BuiltinContext", "BuiltinRegistry", "Cancelled", "registry"]
