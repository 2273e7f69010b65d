"""The shell's kernel-aware builtins, one module per family; the shell library (aiosh/shell) knows nothing of them.

- observe: `ps`, `sched`, `free`, `time` (and the `time` keyword's kernel figures)
- storage: `logs`, `last`, `history`, `memsearch` (what the store kept, also of earlier runs)
- tools:   `tools`, `audit`
- top:     `top`, the monitor over the running kernel (needs the terminal)

Each command declares its options once (`argv.Syntax`, the `Opt`s agents declare theirs with) and is a plain
function of (kernel, argv) that returns text (or a status), testable without a shell; `register` adds them all
to a shell's builtin table, each family's module loaded at the first use of one of its commands (`catalog`).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

from .catalog import FAMILIES, help_of


def register(registry: Any, kernel_getter: Callable[[], Any]) -> None:
    """Add every kernel-aware builtin (except `top`, see top.register_top) to a shell's builtin registry."""
    for family, names in FAMILIES.items():
        loader = _Family(family, kernel_getter)
        for name in names:
            registry.register(name, loader.builtin(name), *help_of(name), details=loader.details(name))


class _Family:
    """One family's builtins, its module imported at the first call (or the first `help NAME`)."""

    def __init__(self, family: str, kernel_getter: Callable[[], Any]) -> None:
        self.family = family
        self.kernel_getter = kernel_getter
        self._table: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._table is None:
                from aiosh.shell.builtins import BuiltinRegistry

                table = BuiltinRegistry()
                importlib.import_module(f"{__name__}.{self.family}").register(table, self.kernel_getter)
                self._table = table
            return self._table

    def builtin(self, name: str) -> Callable[[Any], int]:
        return lambda ctx: self._load().get(name).fn(ctx)

    def details(self, name: str) -> Callable[[], str]:
        def text() -> str:
            details = self._load().get(name).details
            return details() if callable(details) else details

        return text
