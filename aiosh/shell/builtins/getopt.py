"""Builtin options declared once, the way bash declares them: `Options("rsea:d:n:")`.

A letter is a switch; a letter followed by `:` takes a value, attached (`-d:`) or as the next word (`-d :`).
Clusters (`-rs`) work, `--` ends the options and is dropped, a lone `-` is an operand. With `plus=True` a `+x`
turns an attribute off (declare and its family). Scanning yields each option in order, so a builtin that checks
a value (`read -n x`) still fails at that option, before a later bad one, as bash does. A bad option raises
OptionError with bash's words (`-x: invalid option`, `-d: option requires an argument`); `Builtin.call` turns it
into the builtin's usage error (status 2), so no builtin checks for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

__all__ = ["Flag", "OptionError", "Options", "Scan"]


class OptionError(Exception):
    """A bad option: the message is bash's (`-x: invalid option`), printed with the builtin's usage line."""


class Flag(NamedTuple):
    """One option as given: its letter, its value (None for a switch), and False for a `+x` form."""

    letter: str
    value: str | None = None
    on: bool = True


class Options:
    """One builtin's option letters (see the module docstring)."""

    def __init__(self, letters: str, *, plus: bool = False, assignment_ends: bool = False) -> None:
        self.bare: set[str] = set()  # switches
        self.valued: set[str] = set()
        for i, c in enumerate(letters):
            if c == ":":
                continue
            (self.valued if letters[i + 1 : i + 2] == ":" else self.bare).add(c)
        self.plus = plus
        self.assignment_ends = assignment_ends  # `declare -a=x`: a word with `=` is an operand

    def scan(self, args: Sequence[str]) -> Scan:
        return Scan(self, list(args))

    def switches(self, args: Sequence[str]) -> tuple[dict[str, bool], list[str]]:
        """For options that are all switches: ({letter: on}, operands)."""
        scan = self.scan(args)
        return {f.letter: f.on for f in scan}, scan.rest

    def is_option(self, word: str) -> bool:
        if len(word) < 2 or word[0] not in ("-+" if self.plus else "-"):
            return False
        return not (self.assignment_ends and "=" in word)


class Scan:
    """Iterate for the options (OptionError at a bad one); then `rest` is the operands, and `used` how many words
    the options took, `--` included."""

    def __init__(self, spec: Options, args: list[str]) -> None:
        self.spec = spec
        self.args = args
        self.used = 0

    @property
    def rest(self) -> list[str]:
        return self.args[self.used :]

    def __iter__(self) -> Iterator[Flag]:
        spec, args = self.spec, self.args
        while self.used < len(args):
            word = args[self.used]
            if word == "--":
                self.used += 1
                return
            if not spec.is_option(word):
                return
            self.used += 1
            sign = word[0]
            for i, c in enumerate(word[1:], 1):
                if c in spec.valued:
                    value = word[i + 1 :]
                    if not value:
                        if self.used >= len(args):
                            raise OptionError(f"{sign}{c}: option requires an argument")
                        value = args[self.used]
                        self.used += 1
                    yield Flag(c, value, sign == "-")
                    break
                if c not in spec.bare:
                    raise OptionError(f"{sign}{c}: invalid option")
                yield Flag(c, None, sign == "-")
