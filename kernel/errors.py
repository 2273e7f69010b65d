"""The kernel's one-line errors that front ends catch, in a leaf module: the shell and the start-up checks name
them without importing the kernel (which `aiosh -c 'echo hi'` never starts)."""

from __future__ import annotations


class EngineError(Exception):
    """A request the engine refused or could not finish; the message is one line."""


class KernelError(Exception):
    """A request to the kernel that cannot be done; the message is one line."""


class NoSuchProcess(KernelError, LookupError):
    pass


class UnknownAgent(KernelError, LookupError):
    pass


class TooManyProcesses(KernelError):
    """`limits.max_procs` agent processes are alive: a runaway spawner meets this instead of exhausting the host."""
