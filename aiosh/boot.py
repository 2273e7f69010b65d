"""Start a kernel for a front end: config, model load with progress on a terminal, errors as one line."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

from aiosh.kernel.config import Config, ConfigError, load_config
from aiosh.kernel.model_info import ModelError
from aiosh.kernel.remote import BackendError
from aiosh.kernel.requests import EngineError
from aiosh.kernel.storage import StorageError


class BootError(Exception):
    """aiosh cannot start; `status` is the exit status (2 for a usage/config problem, 1 otherwise)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def read_config(path: str | None, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
    try:
        return load_config(path, overrides=overrides)
    except ConfigError as exc:
        raise BootError(str(exc), 2) from None


def start_kernel(config: Config, *, verbose: bool = False, show_progress: bool | None = None):
    """Load the model and start the kernel; a rich progress bar while loading, only on a terminal."""
    from aiosh.kernel import Kernel

    if show_progress is None:
        show_progress = sys.stderr.isatty()
    try:
        if not show_progress:
            kernel = Kernel(config, verbose=verbose)
        else:
            from rich.progress import BarColumn, Progress, TextColumn

            with Progress(TextColumn("loading model"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                          transient=True, console=_stderr_console()) as bar:
                task = bar.add_task("load", total=1.0)
                kernel = Kernel(config, verbose=verbose, progress=lambda v: bar.update(task, completed=v))
    except ConfigError as exc:  # found only when starting (e.g. a backend's key variable is not set)
        raise BootError(str(exc), 2) from None
    except (ModelError, EngineError, StorageError, BackendError) as exc:
        raise BootError(str(exc), 1) from None
    except ValueError as exc:  # e.g. an unknown scheduling policy named in the config
        raise BootError(f"scheduler.policy: {exc}", 2) from None
    for line in kernel.warnings:
        print(f"aiosh: warning: {line}", file=sys.stderr)
    return kernel


_WORD = re.compile(r"[A-Za-z_][\w.-]*")


def start_engine_if_named(kernel, source: str) -> bool:
    """Start the engine in the background when a script or `-c` names an agent that calls the model, right after
    the kernel starts: the engine process loads while the shell sets itself up, so the first LLM call does not wait
    for the whole load. A script of builtins and programs (`aiosh -c 'echo hi'`) never starts it; a name that is
    only mentioned (`echo chat`) costs an engine that is stopped at exit."""
    words = set(_WORD.findall(source))
    if any(spec.uses_model for name, spec in kernel.agents.all().items() if name in words):
        kernel.engine_start()
        return True
    return False


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)
