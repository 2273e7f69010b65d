"""Builtin options declared once, the way bash declares them: `Options("rsea:d:n:")`.

A letter is a switch; a letter followed by `:` takes a value, attached (`-d:`) or as the next word (`-d :`); a
letter followed by `;` takes an optional one (bash's own mark, for ulimit): attached, or the next word unless that
looks like an option (`-u 5`, `-u -a`). `long=("max-tokens;",)` declares `--max-tokens` the same way (`--name=V`
attaches a value). Clusters (`-rs`) work, `--` ends the options and is dropped, a lone `-` is an operand. With
`plus=True` a `+x` turns an attribute off (declare and its family). Scanning yields each option in order, so a
builtin that checks a value (`read -n x`) still fails at that option, before a later bad one, as bash does. A bad
option raises OptionError with bash's words (`-x: invalid option`, `-d: option requires an argument`);
`Builtin.call` turns it into the builtin's usage error (status 2), so no builtin checks for it.

kill reads its options bash's way, one word at a time: `clusters=False` takes a declared letter only as a word of
its own (`-l`, `-s SIG`), and every other word that starts with `-` goes to the `other` hook, which turns it into a
Flag (`-9`, `-TERM`, `-sTERM`) or returns None to end the options there (a second `-9` is a process group).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

__all__ = ["Flag", "OptionError", "Options", "Scan"]


class OptionError(Exception):
    """A bad option: the message is bash's (`-x: invalid option`), printed with the builtin's usage line; with
    `usage=False` (kill's `-s` without a signal) only the message, status 1. An empty message prints only the usage."""

    def __init__(self, message: str = "", *, usage: bool = True) -> None:
        super().__init__(message)
        self.usage = usage


class Flag(NamedTuple):
    """One option as given: its letter (`--name` for a long one), its value (None for a switch or an optional
    value not given), and False for a `+x` form."""

    letter: str
    value: str | None = None
    on: bool = True


OtherHook = Callable[[str, "list[Flag]"], "Flag | None"]


class Options:
    """One builtin's option letters (see the module docstring)."""

    def __init__(self, letters: str, *, plus: bool = False, long: Sequence[str] = (), clusters: bool = True,
                 other: OtherHook | None = None, needarg_usage: bool = True) -> None:  # fmt: skip
        self.bare: set[str] = set()  # switches
        self.valued: set[str] = set()
        self.optional: set[str] = set()  # `x;`: a value if one is there
        for i, c in enumerate(letters):
            if c in ":;":
                continue
            mark = letters[i + 1 : i + 2]
            (self.valued if mark == ":" else self.optional if mark == ";" else self.bare).add(c)
        self.long: dict[str, str] = {}  # name → "", ":" or ";"
        for name in long:
            mark = name[-1] if name[-1] in ":;" else ""
            self.long[name.rstrip(":;")] = mark
        self.plus = plus
        self.clusters = clusters
        self.other = other  # words the letters do not take (kill's `-9`, `-TERM`)
        self.needarg_usage = needarg_usage

    def scan(self, args: Sequence[str]) -> Scan:
        return Scan(self, list(args))

    def switches(self, args: Sequence[str]) -> tuple[dict[str, bool], list[str]]:
        """For options that are all switches: ({letter: on}, operands)."""
        scan = self.scan(args)
        return {f.letter: f.on for f in scan}, scan.rest

    def is_option(self, word: str) -> bool:
        if self.other is not None and word.startswith("-"):
            return True  # the hook decides, `-` included (kill: an empty signal name)
        return len(word) >= 2 and word[0] in ("-+" if self.plus else "-")

    def takes_optional(self, word: str) -> bool:
        """Whether the word after an optional-value option is its value (bash: unless it looks like an option)."""
        return not word.startswith("-") or word == "-"


class Scan:
    """Iterate for the options (OptionError at a bad one); then `rest` is the operands, and `used` how many words
    the options took, `--` included. `seen` is the options so far (the `other` hook reads it)."""

    def __init__(self, spec: Options, args: list[str]) -> None:
        self.spec = spec
        self.args = args
        self.used = 0
        self.seen: list[Flag] = []

    @property
    def rest(self) -> list[str]:
        return self.args[self.used :]

    def __iter__(self) -> Iterator[Flag]:
        for flag in self._flags():
            self.seen.append(flag)
            yield flag

    def _value(self, name: str, mark: str, attached: str | None) -> str | None:
        """The value of an option that takes one (`:`) or may (`;`), consuming the next word when it is that."""
        if attached:
            return attached
        args = self.args
        if self.used < len(args) and (mark == ":" or self.spec.takes_optional(args[self.used])):
            self.used += 1
            return args[self.used - 1]
        if mark == ":":
            raise OptionError(f"{name}: option requires an argument", usage=self.spec.needarg_usage)
        return None

    def _flags(self) -> Iterator[Flag]:
        spec, args = self.spec, self.args
        while self.used < len(args):
            word = args[self.used]
            if word == "--":
                self.used += 1
                return
            if not spec.is_option(word):
                return
            if word.startswith("--") and spec.long:
                name, eq, attached = word[2:].partition("=")
                if name not in spec.long:
                    raise OptionError(f"--{name}: invalid option")
                self.used += 1
                mark = spec.long[name]
                value = self._value(f"--{name}", mark, attached if eq else None) if mark else None
                yield Flag(f"--{name}", value)
                continue
            if not spec.clusters and not (len(word) == 2 and word[1] in spec.bare | spec.valued | spec.optional):
                flag = spec.other(word, self.seen) if spec.other is not None else None
                if flag is None:
                    if spec.other is None:
                        raise OptionError(f"{word}: invalid option")
                    return
                self.used += 1
                yield flag
                continue
            self.used += 1
            sign = word[0]
            for i, c in enumerate(word[1:], 1):
                if c in spec.valued or c in spec.optional:
                    mark = ":" if c in spec.valued else ";"
                    yield Flag(c, self._value(f"{sign}{c}", mark, word[i + 1 :]), sign == "-")
                    break
                if c not in spec.bare:
                    raise OptionError(f"{sign}{c}: invalid option")
                yield Flag(c, None, sign == "-")
