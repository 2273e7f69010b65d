"""The contract between the shell and whoever runs agents (the kernel), and the shell-side run options.

The shell codes against `AgentHost` only; the kernel bridge implements it. Common options such as `--nice 5` or
`--max-tokens 100` are taken off the front of an agent's arguments by the shell, so every agent gets them the same
way and `ulimit` can supply defaults.
"""

from __future__ import annotations

from collections.abc import Callable
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


class AgentDocs(Protocol):
    """Optional extras of an AgentHost, from each agent's one declaration: `agents`, `help NAME`, `NAME --help`
    and run options anywhere among an agent's own options use them when present."""

    def agent_flags(self, name: str) -> tuple[dict[str, bool], bool] | None:
        """(spelling → takes a value, intermixed) of a declared agent; None when it declares nothing."""
        ...

    def agent_help(self, name: str) -> str | None: ...

    def agent_description(self, name: str) -> str: ...


class Renicer(Protocol):
    """Optional extra of an AgentHost: change a running agent's nice value (LookupError if it is gone).

    `renice` uses it when present; `nice`/`--nice` at start need only `options['nice']`.
    """

    def renice(self, pid: int, nice: int) -> int | None: ...


LIMIT_KEYS = ("max_tokens", "max_time", "max_kv")


def run_options() -> dict:
    """The run options every agent takes (flag → RunOption), declared once beside the agents' own options, with
    the help `chat --help` prints. Imported on first use: the shell library loads no kernel module but streams."""
    from aiosh.kernel.argspec import RUN_FLAGS

    return RUN_FLAGS


def parse_options(
    name: str, args: list[str], options: dict | None = None, agent_flags: dict[str, bool] | None = None,
    intermixed: bool = False,
) -> tuple[dict, list[str]]:
    """Take the shell's common run options out of `args`, wherever they stand among the agent's own options.

    agent_flags: the agent's declared options (spelling → takes a value), which are kept, with their values, for
    the agent; without it, scanning stops at the first word that is not a run option (as for `run OPTS AGENT`).
    Scanning stops at `--` and at the first operand (past operands too when the agent is `intermixed`).
    Returns (options, the remaining args in order). A bad value raises ShellError(`NAME: --nice: invalid number
    'x'`, 2).
    """
    opts = dict(options or {})
    table = run_options()
    kept: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            if agent_flags is None:
                i += 1
            break
        flag, eq, inline = arg.partition("=")
        spec = table.get(flag)
        if spec is None or (agent_flags is not None and flag in agent_flags):
            if agent_flags is None:
                break
            if arg.startswith("-") and arg != "-":
                kept.append(arg)
                i += 1
                if agent_flags.get(flag) and not eq and i < len(args):
                    kept.append(args[i])  # the value of the agent's own option
                    i += 1
                continue
            if not intermixed:
                break
            kept.append(arg)
            i += 1
            continue
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
            opts[spec.key] = [*opts.get(spec.key, []), *parsed] if spec.accumulate else parsed
        except ValueError as exc:
            if spec.accumulate and exc.args and exc.args[0] != value:
                raise ShellError(f"{name}: {flag}: {spec.what} '{exc.args[0]}'", 2) from None
            raise ShellError(f"{name}: {flag}: {spec.what} '{value}'", 2) from None
    return opts, kept + args[i:]


def declared_flags(host: object, name: str) -> tuple[dict[str, bool] | None, bool]:
    """An agent's declared options (spelling → takes a value) and whether they may follow operands, from a host
    that knows them (`agent_flags`); (None, False) when it does not: run options are then taken off the front."""
    fn = getattr(host, "agent_flags", None)
    got = fn(name) if fn is not None else None
    return (None, False) if got is None else got


def with_limits(options: dict, limits: dict[str, object]) -> dict:
    """Fill max_tokens/max_time/max_kv from the shell's `ulimit` defaults where a run did not give them."""
    out = dict(options)
    for key in LIMIT_KEYS:
        if key not in out and limits.get(key) is not None:
            out[key] = limits[key]
    return out
