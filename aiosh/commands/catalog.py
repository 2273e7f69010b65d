"""What the kernel-aware builtins are called and what `help` says of them, without loading them: their modules
are imported at a command's first use (`commands.register`), so a script that uses none of them does not pay
for them (nor for the kernel modules they import)."""

from __future__ import annotations

OBSERVE_HELP = {
    "ps": ("list agent processes", "ps [-f] [-o COL,…] [--sort [-]COL] [-p PID,…] [--json]"),
    "sched": ("show or set the scheduling policy; the engine process",
              "sched [-l | POLICY [key=value …] | engine [start|restart]]"),
    "free": ("KV cache and memory use", "free [-b]"),
}

STORAGE_USAGE = {
    "logs": "logs [-m|--messages] [-s|--syscalls] [--run N] PID|RUN:PID|%JOB",
    "last": "last [-n N] [--run N]",
    "history": "history [-n N]",
    "memsearch": "memsearch [-n N] [--pid PID|RUN:PID] [--run N] [--messages|--memories] WORDS...",
}

STORAGE_HELP = {
    "logs": "an agent's transcript and syscalls (also of earlier runs)",
    "last": "finished agents, newest first: status, tokens, times",
    "history": "shell command history across runs",
    "memsearch": "full-text search over stored messages and memories",
}

TOOLS_HELP = {
    "tools": ("list the tools agents can call, with their arguments", "tools [-l] [NAME...]"),
    "audit": ("access decisions (allowed, denied, asked and the answer), newest last",
              "audit [-n N] [--all] [--pid PID]"),
}

# family module -> its commands
FAMILIES: dict[str, tuple[str, ...]] = {
    "observe": (*OBSERVE_HELP, "time"),
    "storage": tuple(STORAGE_HELP),
    "tools": tuple(TOOLS_HELP),
}
TIME_HELP = ("run a command; report wall time, decode time and tokens", "time COMMAND [ARGS…]")


def help_of(name: str) -> tuple[str, str]:
    """(one-line help, usage) of a kernel-aware builtin."""
    if name == "time":
        return TIME_HELP
    if name in STORAGE_HELP:
        return STORAGE_HELP[name], STORAGE_USAGE[name]
    return {**OBSERVE_HELP, **TOOLS_HELP}[name]
