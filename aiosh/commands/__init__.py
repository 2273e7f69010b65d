"""The shell's kernel-aware builtins, one module per family; the shell library (aiosh/shell) knows nothing of them.

- observe: `ps`, `sched`, `free`, `time` (and the `time` keyword's kernel figures)
- storage: `logs`, `last`, `history`, `memsearch` (what the store kept, also of earlier runs)
- tools:   `tools`, `audit`
- top:     `top`, the monitor over the running kernel (needs the terminal)

Each command declares its options once (`argv.Syntax`, the `Opt`s agents declare theirs with) and is a plain
function of (kernel, argv) that returns text (or a status), testable without a shell; `register` adds them all
to a shell's builtin table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import observe, storage, tools


def register(registry: Any, kernel_getter: Callable[[], Any]) -> None:
    """Add every kernel-aware builtin (except `top`, see top.register_top) to a shell's builtin registry."""
    observe.register(registry, kernel_getter)
    storage.register(registry, kernel_getter)
    tools.register(registry, kernel_getter)
