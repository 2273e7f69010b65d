"""The contract between the shell and whoever runs agents (the kernel), and the shell-side run options.

The shell codes against `AgentHost` only; the kernel bridge implements it. Common options such as `--nice 5` or
`--max-tokens 100` are taken off the front of an agent's arguments by the shell, so every agent gets them the same
way and `ulimit` can supply defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from aiosh.kernel.streams import Pipe

from .errors import ShellError

Listener = Callable[[int, str, "int | None"], None]


@runtime_checkable
class AgentHost(Protocol):
    """Runs agent processes for the shell. Pids are never reused; a negative target names a process group."""

    def agent_names(self) -> list[str]:
        """Known agent types ("chat", "sleep", …)."""
        ...

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        stdin: Pipe | None,
        stdout: Pipe,
        stderr: Pipe,
        pgid: int | None,
        cwd: str,
        env: dict[str, str],
        options: dict,
    ) -> int:
        """Start an agent and return its pid; pgid None = a new group led by this pid.

        argv holds the agent's arguments only (not its name), as `Kernel.spawn` takes them. stdout/stderr are
        Pipes made for this agent alone (the host may close them at exit); stdin is None or such a Pipe.
        options: max_tokens, seed, temperature, nice, sched_class, max_time, max_kv, backend, allow and deny
        (lists of capability strings), yes (True) — only those given.
        Raises LookupError for an unknown agent, ValueError for a bad option value.
        """
        ...

    def wait(self, pid: int, timeout: float | None = None) -> int | None:
        """Exit status (and reap), None on timeout."""
        ...

    def signal(self, target: int, sig: int) -> None:
        """target > 0: a pid; < 0: a process group. Raises LookupError('no such process')."""
        ...

    def state(self, pid: int) -> str | None:
        """'R', 'S', 'T', 'Z', or None when gone."""
        ...

    def add_listener(self, fn: Listener) -> None:
        """fn(pid, 'stopped'|'continued'|'exited', status) is called from another thread on changes.

        'stopped' carries 128+signal (148 for SIGTSTP), 'exited' the exit status, 'continued' None. The shell also
        polls `state()` while it waits in the foreground, so a host that sends no events still works.
        """
        ...


class Renicer(Protocol):
    """Optional extra of an AgentHost: change a running agent's nice value (LookupError if it is gone).

    `renice` uses it when present; `nice`/`--nice` at start need only `options['nice']`.
    """

    def renice(self, pid: int, nice: int) -> int | None: ...


SCHED_CLASSES = ("interactive", "normal", "batch", "idle")
LIMIT_KEYS = ("max_tokens", "max_time", "max_kv")


@dataclass(frozen=True)
class OptionSpec:
    flag: str
    key: str
    parse: Callable[[str], object]
    what: str
    takes_value: bool = True
    accumulate: bool = False  # a list: each use adds to it (--allow a --allow b)


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
    from aiosh.kernel.access import parse_capability

    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(text)
    for p in parts:
        try:
            parse_capability(p)
        except ValueError:
            raise ValueError(p) from None
    return parts


OPTIONS = {
    spec.flag: spec
    for spec in (
        OptionSpec("--max-tokens", "max_tokens", _count, "invalid number"),
        OptionSpec("--seed", "seed", _int, "invalid number"),
        OptionSpec("--temperature", "temperature", _float, "invalid number"),
        OptionSpec("--nice", "nice", _nice, "invalid number"),
        OptionSpec("--class", "sched_class", _class, "invalid scheduling class"),
        OptionSpec("--max-time", "max_time", _float, "invalid number"),
        OptionSpec("--max-kv", "max_kv", _count, "invalid number"),
        OptionSpec("--backend", "backend", _backend, "invalid backend name"),
        OptionSpec("--allow", "allow", _caps, "invalid capability", accumulate=True),
        OptionSpec("--deny", "deny", _caps, "invalid capability", accumulate=True),
        OptionSpec("--yes", "yes", lambda _text: True, "", takes_value=False),
    )
}


def parse_options(name: str, args: list[str], options: dict | None = None) -> tuple[dict, list[str]]:
    """Take the shell's common run options off the front of `args`; stop at the first other word or `--`.

    Returns (options, remaining args). A bad value raises ShellError(`NAME: --nice: invalid number 'x'`, 2).
    """
    opts = dict(options or {})
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        flag, eq, inline = arg.partition("=")
        spec = OPTIONS.get(flag)
        if spec is None:
            break
        if not spec.takes_value:
            if eq:
                raise ShellError(f"{name}: {flag}: takes no value", 2)
            opts[spec.key] = spec.parse("")
            i += 1
            continue
        if eq:
            value = inline
            i += 1
        else:
            if i + 1 >= len(args):
                raise ShellError(f"{name}: {flag}: option requires an argument", 2)
            value = args[i + 1]
            i += 2
        try:
            parsed = spec.parse(value)
            opts[spec.key] = [*opts.get(spec.key, []), *parsed] if spec.accumulate else parsed  # type: ignore
        except ValueError as exc:
            if spec.accumulate and exc.args and exc.args[0] != value:
                raise ShellError(f"{name}: {flag}: {spec.what} '{exc.args[0]}'", 2) from None
            raise ShellError(f"{name}: {flag}: {spec.what} '{value}'", 2) from None
    return opts, args[i:]


def with_limits(options: dict, limits: dict[str, object]) -> dict:
    """Fill max_tokens/max_time/max_kv from the shell's `ulimit` defaults where a run did not give them."""
    out = dict(options)
    for key in LIMIT_KEYS:
        if key not in out and limits.get(key) is not None:
            out[key] = limits[key]
    return out
