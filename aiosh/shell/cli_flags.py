"""bash's start-up flags (`-c`, `-e`, `-u`, `-x`, `-f`, `-i`, `-o NAME`, `--norc` …) for `aiosh` and
`python -m aiosh.shell`, so that scripts calling `$SH -e -c '…'` get what they get from bash."""

from __future__ import annotations

from dataclasses import dataclass, field

LETTER_OPTIONS = {"e": "errexit", "u": "nounset", "x": "xtrace", "f": "noglob"}
ACCEPTED_LETTERS = frozenset("ilsvhmBCEHPT")  # bash's others: accepted, mostly without effect here
LONG_IGNORED = frozenset({"--norc", "--noprofile", "--posix", "--login", "--noediting", "--restricted"})


class FlagError(Exception):
    """A usage error in the start-up flags (status 2)."""


@dataclass
class Flags:
    command: str | None = None
    script: str | None = None
    args: list[str] = field(default_factory=list)
    options: dict[str, bool] = field(default_factory=dict)  # set -o names → on/off
    interactive: bool = False
    read_stdin: bool = False  # -s


def parse_flags(argv: list[str]) -> Flags:
    """Split argv as bash does: options, then `-c STRING [ARG0 [ARGS…]]` or `SCRIPT [ARGS…]`."""
    flags = Flags()
    want_command = False
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--" or a == "-":
            i += 1
            break
        if a in LONG_IGNORED:
            i += 1
            continue
        if a in ("--rcfile", "--init-file"):
            i += 2
            continue
        if a.startswith("--"):
            raise FlagError(f"{a}: invalid option")
        if a[:1] not in ("-", "+") or len(a) < 2:
            break
        on = a[0] == "-"
        i += 1
        for c in a[1:]:
            if c == "c" and on:
                want_command = True
            elif c == "o":
                if i >= len(argv):
                    raise FlagError(f"{a[0]}o: option requires an argument")
                flags.options[argv[i]] = on
                i += 1
            elif c in LETTER_OPTIONS:
                flags.options[LETTER_OPTIONS[c]] = on
            elif c == "i":
                flags.interactive = on
            elif c == "s":
                flags.read_stdin = on
            elif c not in ACCEPTED_LETTERS:
                raise FlagError(f"{a[0]}{c}: invalid option")
    rest = argv[i:]
    if want_command:
        if not rest:
            raise FlagError("-c: option requires an argument")
        flags.command = rest[0]
        flags.args = rest[1:]
    elif rest and not flags.read_stdin:
        flags.script, flags.args = rest[0], rest[1:]
    else:
        flags.args = rest
    return flags
