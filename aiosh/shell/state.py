"""What a shell (or subshell) carries: its variables and options, its file descriptors, its foreground jobs."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiosh.kernel.streams import Pipe

from . import plumbing

if TYPE_CHECKING:
    from .jobs import Job
    from .nodes import Command


class Indexed(dict):
    """An indexed array: sparse, int index → value; iteration in index order is `items_sorted`."""

    unset = False  # `declare -a x` without a value: declared, but not set yet

    def values_sorted(self) -> list[str]:
        return [self[k] for k in sorted(self)]

    def keys_sorted(self) -> list[str]:
        return [str(k) for k in sorted(self)]


class Assoc(dict):
    """An associative array: key → value, in insertion order."""

    unset = False  # `declare -a x` without a value: declared, but not set yet

    def values_sorted(self) -> list[str]:
        return list(self.values())

    def keys_sorted(self) -> list[str]:
        return list(self.keys())


Array = Indexed | Assoc


# `shopt` options and bash's defaults (the ones aiosh acts on: lastpipe, extglob, nullglob, failglob, dotglob,
# globskipdots, nocaseglob; the others are accepted so scripts that set them run)
SHOPT_DEFAULTS = {
    "checkwinsize": True, "cmdhist": True, "complete_fullquote": True, "expand_aliases": False,
    "extglob": False, "extquote": True, "force_fignore": True, "globasciiranges": True, "hostcomplete": True,
    "interactive_comments": True, "inherit_errexit": False, "lastpipe": False, "nocaseglob": False,
    "nocasematch": False, "nullglob": False, "failglob": False, "dotglob": False, "globstar": False, "globskipdots": True,
    "progcomp": True, "promptvars": True, "sourcepath": True, "xpg_echo": False,
}  # fmt: skip


@dataclass
class ShellState:
    """Everything a subshell copies: variables, exports, positional parameters, cwd, options, limits."""

    vars: dict[str, str]
    exported: set[str]
    positional: list[str]
    argv0: str
    cwd: str
    errexit: bool = False
    pipefail: bool = False
    jobtags: bool = False  # `set -o jobtags`: background output lines start with `[n] `
    noglob: bool = False
    xtrace: bool = False
    noclobber: bool = False  # `set -C`: `>` refuses to overwrite a file (`>|` may)
    verbose: bool = False  # `set -v`: input lines are echoed to stderr as they are read
    nounset: bool = False
    last_status: int = 0
    last_bg_pid: int | None = None
    limits: dict[str, object] = field(default_factory=dict)
    functions: dict[str, Command] = field(default_factory=dict)
    arrays: dict[str, Array] = field(default_factory=dict)
    readonly: set[str] = field(default_factory=set)
    integer: set[str] = field(default_factory=set)
    allexport: bool = False
    traps: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    shown_traps: dict[str, str] | None = None  # a subshell's `trap` lists the parent's until it sets its own
    getopts_last: tuple[int, int] = (0, 0)  # (OPTIND, letter position) after the last getopts
    shopts: dict[str, bool] | None = None
    hashed: dict[str, str] | None = None  # command name → path found on PATH (`hash`)
    hash_hits: dict[str, int] = field(default_factory=dict)

    def clone(self) -> ShellState:
        """A subshell's copy: containers copied, function bodies (immutable AST) shared."""
        new = copy.copy(self)
        new.vars = dict(self.vars)
        new.exported = set(self.exported)
        new.positional = list(self.positional)
        new.limits = dict(self.limits)
        new.functions = dict(self.functions)
        new.arrays = {k: type(v)(v) for k, v in self.arrays.items()}
        new.readonly = set(self.readonly)
        new.integer = set(self.integer)
        new.hashed = None if self.hashed is None else dict(self.hashed)
        new.hash_hits = dict(self.hash_hits)
        new.aliases = dict(self.aliases)
        new.traps = {k: v for k, v in self.traps.items() if v == ""}  # only ignored signals stay ignored
        new.shown_traps = dict(self.traps if self.shown_traps is None else self.shown_traps)
        return new

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment a program or agent gets: exported variables, plus `NAME=value cmd` ones."""
        env = {k: self.vars[k] for k in self.exported if k in self.vars}
        if extra:
            env.update(extra)
        return env

    def flags(self) -> str:
        pairs = (("a", self.allexport), ("e", self.errexit), ("f", self.noglob), ("u", self.nounset),
                 ("v", self.verbose), ("x", self.xtrace), ("C", self.noclobber))
        return "".join(f for f, on in pairs if on)


@dataclass
class IO:
    """A command's file descriptors; 0 may be None (no stdin at all)."""

    fds: dict[int, Pipe | None]

    @property
    def stdin(self) -> Pipe | None:
        return self.fds.get(0)

    @property
    def stdout(self) -> Pipe:
        out = self.fds.get(1)
        return out if out is not None else plumbing.null_pipe()

    @property
    def stderr(self) -> Pipe:
        err = self.fds.get(2)
        return err if err is not None else plumbing.null_pipe()

    def copy(self) -> IO:
        return IO(dict(self.fds))


class Foreground:
    """The jobs a thread of control is waiting for: where Ctrl-C / Ctrl-Z (or a forwarded signal) go."""

    def __init__(self) -> None:
        self._jobs: list[Job] = []
        self._lock = threading.RLock()

    def jobs(self) -> list[Job]:
        return list(self._jobs)  # a copy without the lock: callable from a signal handler

    def push(self, job: Job) -> None:
        with self._lock:
            self._jobs.append(job)

    def pop(self, job: Job) -> None:
        with self._lock:
            if job in self._jobs:
                self._jobs.remove(job)

    def signal(self, sig: int) -> bool:
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:
            try:
                job.signal(sig)
            except LookupError:
                pass
        return bool(jobs)
