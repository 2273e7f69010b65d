"""Exceptions that carry the shell's control flow and its diagnostics.

Control flow (break, continue, exit, `set -e`) unwinds through the interpreter as exceptions so that every node
type gets it for free; none of these escape `Shell.run_source`.
"""

from __future__ import annotations


class ShellSyntaxError(Exception):
    """A parse error, worded as bash words it; `line` is 1-based, `source_line` the text shown under it."""

    def __init__(self, message: str, line: int, source_line: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.source_line = source_line

    def __str__(self) -> str:
        return self.message


class ShellError(Exception):
    """A runtime error of one command (bad substitution, ambiguous redirect …): message printed, status set.

    `fatal` errors (expansion errors: `${x:?}`, `set -u`, arithmetic) end a non-interactive shell, as in bash,
    with `exit_status` (bash uses 127 for the parameter ones, 1 for arithmetic; a subshell always exits 1).
    """

    def __init__(self, message: str, status: int = 1, *, fatal: bool = False, exit_status: int = 1,
                 abort: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.fatal = fatal
        self.exit_status = exit_status
        self.abort = abort  # bash abandons the whole top-level command, then goes on with the next one


class AbortCommand(Exception):
    """An expansion error (`$((1/0))`, `${x;}`) ends the current top-level command, not the script."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ExitShell(Exception):
    """`exit N`, `set -e` tripping, or a fatal error: unwinds to the top of the shell (or subshell)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class LoopControl(Exception):
    """`break N` / `continue N`; `levels` counts the enclosing loops still to leave."""

    def __init__(self, levels: int) -> None:
        super().__init__(levels)
        self.levels = levels


class BreakLoop(LoopControl):
    pass


class ContinueLoop(LoopControl):
    pass


class Cancelled(Exception):
    """The thread running a builtin or compound command was signalled (SIGTERM, SIGINT …): status 128+n."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ReturnFromFunction(Exception):
    """`return N` inside a function (or a sourced file)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status
