"""Declared command-line options: one declaration per agent gives its parser, its usage line and its `--help`.

The shell's kernel-aware builtins (aiosh/commands) declare theirs with the same `Opt` and parse with `parse(…,
run_options=False, help_option=False)`: one parser for every command line aiosh reads options from.

An agent lists its options (`Opt("-c", "--continue", help=…)`) and names its operands (`"[PROMPT...]"`) in
`@agent(...)`; the kernel parses `ctx.argv` with them before the agent runs (a usage error is one line and status
2, `--help` prints the help and status 0), so no agent carries its own argv loop. The run options every agent
takes (`--max-tokens`, `--seed`, `--nice`, …) are declared here too: the shell takes them off an agent's options
wherever they stand, and a child started with them in its argv gets their per-call values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .requests import SCHED_CLASSES


class UsageError(Exception):
    """A bad command line: the message names the option (`--words: invalid number 'x'`); `show_usage` adds the
    usage line (an unknown option, a missing value), as the agents' hand-written messages did."""

    def __init__(self, message: str, show_usage: bool = True) -> None:
        super().__init__(message)
        self.show_usage = show_usage


class HelpRequested(Exception):
    """`--help` was given."""


@dataclass(frozen=True)
class Opt:
    """One option of an agent: its spellings, where its value goes, and what `--help` says about it.

    metavar "" makes it a switch (True when given, or `const`); otherwise it takes a value (`--words N`,
    `--words=N`, `-jN`), converted by `type` (ValueError → "invalid …"; a UsageError it raises is the message),
    checked against `min`. `multiple` collects repeated uses. `missing`: the words after `NAME: ` when the value
    is missing (default "missing " + the metavar)."""

    flags: tuple[str, ...]
    dest: str
    help: str = ""
    metavar: str = ""
    type: Callable[[str], Any] = str
    default: Any = None
    min: float | None = None
    multiple: bool = False
    what: str = "invalid value"  # the words of a conversion error: "invalid number"
    missing: str = ""
    const: Any = None

    @property
    def takes_value(self) -> bool:
        return bool(self.metavar)

    def convert(self, value: str, spelled: str = "") -> Any:
        spelled = spelled or self.flags[-1]
        try:
            got = self.type(value)
        except ValueError:
            raise UsageError(f"{spelled}: {self.what} '{value}'", False) from None
        if self.min is not None and got < self.min:
            raise UsageError(f"{spelled}: {self.what} '{value}'", False)
        return got


def opt(*flags: str, dest: str = "", help: str = "", metavar: str = "", type: Callable[[str], Any] = str,  # noqa: A002
        default: Any = None, min: float | None = None, multiple: bool = False,  # noqa: A002
        missing: str = "", const: Any = None) -> Opt:
    """Declare an option: `opt("-s", "--session", metavar="NAME", help="…")`; dest defaults to the long name."""
    long = next((f for f in flags if f.startswith("--")), flags[-1])
    what = "invalid number" if type in (int, float) else "invalid value"
    return Opt(tuple(flags), dest or long.lstrip("-").replace("-", "_"), help, metavar, type, default, min, multiple,
               what, missing, const)


# -- the run options every agent takes (the shell parses them; see aiosh/shell/agents.py) -------------------------

def _int(text: str) -> int:
    return int(text, 10)


def _count(text: str) -> int:
    """A count that cannot be negative (--max-tokens -5 is a usage error before the run, not a failure in it)."""
    value = int(text, 10)
    if value < 0:
        raise ValueError(text)
    return value


def _nice(text: str) -> int:
    return max(-20, min(19, int(text, 10)))


def _float(text: str) -> float:
    value = float(text)
    if value != value or value < 0:  # NaN or negative
        raise ValueError(text)
    return value


def _class(text: str) -> str:
    if text not in SCHED_CLASSES:
        raise ValueError(text)
    return text


def _backend(text: str) -> str:
    """A backend's name; whether one of that name exists is the kernel's to say."""
    if not text or not all(c.isalnum() or c in "_.-:/" for c in text):
        raise ValueError(text)
    return text


def _caps(text: str) -> list[str]:
    """`tool:calculator,read:docs/,spawn` → ["tool:calculator", "read:docs/", "spawn"], each checked."""
    from .access import parse_capability

    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(text)
    for p in parts:
        try:
            parse_capability(p)
        except ValueError:
            raise ValueError(p) from None
    return parts


@dataclass(frozen=True)
class RunOption:
    """A run option: `flag` → options[key]; `what` words a bad value; `metavar` "" = a switch."""

    flag: str
    key: str
    parse: Callable[[str], Any]
    what: str
    metavar: str = "N"
    help: str = ""
    accumulate: bool = False  # a list: each use adds to it (--allow a --allow b)

    @property
    def takes_value(self) -> bool:
        return bool(self.metavar)


RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption("--max-tokens", "max_tokens", _count, "invalid number", "N", "at most N tokens per LLM call"),
    RunOption("--seed", "seed", _int, "invalid number", "N", "sampling seed (same seed, same text)"),
    RunOption("--temperature", "temperature", _float, "invalid number", "T", "sampling temperature (0 = greedy)"),
    RunOption("--nice", "nice", _nice, "invalid number", "N", "nice value, -20..19 (higher yields)"),
    RunOption("--class", "sched_class", _class, "invalid scheduling class", "C",
              "scheduling class: " + "|".join(SCHED_CLASSES)),
    RunOption("--max-time", "max_time", _float, "invalid number", "S", "end it after S seconds (status 152)"),
    RunOption("--max-kv", "max_kv", _count, "invalid number", "N", "at most N KV cells (status 152)"),
    RunOption("--backend", "backend", _backend, "invalid backend name", "NAME", "where its LLM calls go"),
    RunOption("--allow", "allow", _caps, "invalid capability", "CAPS", "grant capabilities (tool:NAME,read:DIR/,…)",
              accumulate=True),
    RunOption("--deny", "deny", _caps, "invalid capability", "CAPS", "withhold capabilities", accumulate=True),
    RunOption("--yes", "yes", lambda _text: True, "", "", "answer yes to its confirmations"),
)
RUN_FLAGS = {o.flag: o for o in RUN_OPTIONS}
PER_CALL_KEYS = ("max_tokens", "seed", "temperature")  # what a child's own argv may set for its calls


# -- parsing and help ---------------------------------------------------------------------------------------------

@dataclass
class Parsed:
    values: dict[str, Any] = field(default_factory=dict)
    operands: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)  # run options found among the agent's own


def flag_table(options: Sequence[Opt]) -> dict[str, Opt]:
    return {f: o for o in options for f in o.flags}


def parse(options: Sequence[Opt], argv: Sequence[str], *, intermixed: bool = False, run_options: bool = True,
          help_option: bool = True, end_of_options: bool = True, unknown: str = "unknown option",
          operand: Callable[[str], object] | None = None) -> Parsed:
    """Parse argv against the declared options (and the run options, unless not `run_options`). Options end at
    `--` (unless not `end_of_options`: then it is an unknown option), and at the first operand unless
    `intermixed` (then, as GNU getopt and `llm` do, options may follow operands too). `help_option`: `--help`
    raises HelpRequested; `unknown`: the words of an unknown option's error; `operand` is called on each operand
    where it stands (it may raise UsageError: errors come in the order of the command line).

    Raises UsageError (unknown option, missing or bad value) or HelpRequested."""
    table = flag_table(options)
    out = Parsed(values={o.dest: ([] if o.multiple else (False if not o.takes_value and o.default is None
                                                          else o.default)) for o in options})
    args = list(argv)
    operands: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--" and end_of_options:
            i += 1
            break
        if not a.startswith("-") or a == "-":
            if not intermixed:
                break
            if operand is not None:
                operand(a)
            operands.append(a)
            i += 1
            continue
        if a == "--help" and "--help" not in table and help_option:
            raise HelpRequested()
        name, eq, inline = a.partition("=") if a.startswith("--") else (a, "", "")
        if run_options and name in RUN_FLAGS and name not in table:
            ro = RUN_FLAGS[name]
            if ro.takes_value:
                value, i = _value(args, i, name, eq, inline, ro.metavar)
                try:
                    got = ro.parse(value)
                except ValueError:
                    raise UsageError(f"{name}: {ro.what} '{value}'", False) from None
                out.run[ro.key] = [*out.run.get(ro.key, []), *got] if ro.accumulate else got
            else:
                out.run[ro.key] = True
                i += 1
            continue
        o = table.get(name)
        if o is None and not a.startswith("--") and len(a) > 2 and a[:2] in table and table[a[:2]].takes_value:
            o, eq, inline, name = table[a[:2]], "=", a[2:], a[:2]  # -j4
        if o is None:
            raise UsageError(f"{a}: {unknown}")
        if o.takes_value:
            value, i = _value(args, i, name, eq, inline, o.metavar, o.missing)
            got = o.convert(value, name)
            if o.multiple:
                out.values[o.dest].append(got)
            else:
                out.values[o.dest] = got
        else:
            if eq:
                raise UsageError(f"{name}: takes no value")
            out.values[o.dest] = True if o.const is None else o.const
            i += 1
    if operand is not None:
        for a in args[i:]:
            operand(a)
    out.operands = operands + args[i:]
    return out


def _value(args: list[str], i: int, name: str, eq: str, inline: str, metavar: str,
           missing: str = "") -> tuple[str, int]:
    if eq:
        return inline, i + 1
    if i + 1 >= len(args):
        raise UsageError(f"{name}: {missing or 'missing ' + metavar.lower()}")
    return args[i + 1], i + 2


def usage_line(name: str, options: Sequence[Opt], operands: str) -> str:
    parts = [name]
    for o in options:
        spelled = "|".join(o.flags)
        parts.append(f"[{spelled} {o.metavar}]" if o.takes_value else f"[{spelled}]")
    if operands:
        parts.append(operands)
    return " ".join(parts)


def help_text(name: str, description: str, usage: str, options: Sequence[Opt] | None, *,
              run_options: bool = True) -> str:
    """What `NAME --help` and `help NAME` print: usage, description, the agent's options, the run options."""
    lines = [f"usage: {usage or name}"]
    if description:
        lines += ["", description]
    rows: list[tuple[str, str]] = []
    for o in options or ():
        spelled = ", ".join(o.flags) + (f" {o.metavar}" if o.takes_value else "")
        extra = f" (default {o.default})" if o.default not in (None, False, "") else ""
        rows.append((spelled, o.help + extra))
    if rows:
        lines += ["", "options:"]
        width = max(len(r[0]) for r in rows)
        lines += [f"  {a:<{width}}  {b}".rstrip() for a, b in rows]
    if run_options:
        lines += ["", "run options (any agent, anywhere among its options):"]
        cells = [(o.flag + (f" {o.metavar}" if o.takes_value else ""), o.help) for o in RUN_OPTIONS]
        width = max(len(c[0]) for c in cells)
        lines += [f"  {a:<{width}}  {b}" for a, b in cells]
        lines.append(f"  {'--help':<{width}}  this text")
    return "\n".join(lines) + "\n"
