"""The builtins' command lines, declared: each command lists its options once (`Opt`, as agents do), and
`Syntax.parse` reads argv with the kernel's one option parser (kernel/argspec.py) instead of a hand-written loop.

A usage error is `UsageError` (one line, status 2 unless said otherwise); the shell prints `aiosh: CMD: …` and
the command's usage line. A value's converter raises it with its own words (the parser lets it through).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiosh.kernel import argspec
from aiosh.kernel.argspec import Opt, opt

__all__ = ["Opt", "Syntax", "UsageError", "count", "opt", "option_rows"]


class UsageError(Exception):
    """A bad command line or a request that cannot be done: the message is one line; `status` 2 for usage."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Syntax:
    """A command's options and how its operands mix with them.

    `intermixed`: options may follow operands (`logs 3 -m`); `end_of_options`: `--` ends the options (else it is
    an unknown option, as for commands that never took it); `unknown`: the words of an unknown option's error."""

    options: tuple[Opt, ...]
    intermixed: bool = False
    end_of_options: bool = True
    unknown: str = "unknown option"

    def parse(self, argv: Sequence[str], operand: Callable[[str], object] | None = None) -> argspec.Parsed:
        """The values and operands of argv; `operand(text)` checks each operand where it stands."""
        try:
            return argspec.parse(self.options, argv, intermixed=self.intermixed, run_options=False,
                                 help_option=False, end_of_options=self.end_of_options, unknown=self.unknown,
                                 operand=operand)
        except argspec.UsageError as exc:
            raise UsageError(str(exc)) from None


def count(label: str, lo: int = 1) -> Callable[[str], int]:
    """A whole number of at least `lo`, its errors worded `LABEL: 'x': not a number` / `must be at least LO`."""

    def convert(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise UsageError(f"{label}: '{value}': not a number") from None
        if n < lo:
            raise UsageError(f"{label}: '{value}': must be at least {lo}")
        return n

    return convert


def option_rows(options: Sequence[Opt], width: int) -> list[str]:
    """`help CMD`'s option lines, from the same declaration the parser reads."""
    rows = []
    for o in options:
        spelled = ", ".join(o.flags) + (f" {o.metavar}" if o.takes_value else "")
        rows.append(f"  {spelled:<{width}} {o.help}".rstrip())
    return rows
