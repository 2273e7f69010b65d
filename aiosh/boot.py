"""Start a kernel for a front end: config, start-up checks, the kernel at its first use, errors as one line.

A script of builtins and host programs (`aiosh -c 'echo hi'`) never needs the kernel: the front end checks at
start-up what the kernel would refuse (configuration, model file and limits; remote servers start the kernel at
once, since probing them is the check), and `KernelHandle` starts the kernel when a command first asks
for it (an agent, `ps`, `sched`, the door for a host program).
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiosh.kernel.config import Config, ConfigError, load_config
from aiosh.kernel.engine_spawn import dismiss_prestarted
from aiosh.kernel.errors import EngineError
from aiosh.kernel.model_info import ModelError

if TYPE_CHECKING:
    from aiosh.kernel import Kernel


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


def preflight(config: Config) -> None:
    """What the kernel would refuse at its start, checked now, cheaply (no kernel, no llama.cpp): the model file
    and the limits it sets. (The storage is opened by the kernel: a script that starts no agent records nothing.)"""
    from aiosh.kernel.startup_checks import check_model

    try:
        check_model(config)
    except ConfigError as exc:
        raise BootError(str(exc), 2) from None
    except (ModelError, EngineError) as exc:
        raise BootError(str(exc), 1) from None


def start_kernel(config: Config, *, verbose: bool = False, show_progress: bool | None = None) -> Kernel:
    """Start the kernel; a rich progress bar while a model loads in this process, only on a terminal."""
    from aiosh.kernel import Kernel
    from aiosh.kernel.remote import BackendError
    from aiosh.kernel.storage import StorageError

    if show_progress is None:
        show_progress = sys.stderr.isatty() and not config.kernel.engine_process  # (the engine loads elsewhere)
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


class KernelHandle:
    """The kernel of one aiosh run, started at its first use (thread-safe: background jobs may be first).

    `script`: the text of a script or `-c` about to run: when the kernel starts, an engine is started at once if
    the text names an agent that calls the model, so the first LLM call does not wait for the whole load.
    `on_fail`: what a start that fails after start-up does (print the one line, end aiosh with its status); the
    start-up checks (`preflight`) leave little that can."""

    def __init__(self, config: Config, *, verbose: bool = False, script: str | None = None,
                 on_fail: Callable[[BootError], None] | None = None) -> None:
        self.config = config
        self._verbose = verbose
        self.script = script
        self._on_fail = on_fail
        self._kernel: Kernel | None = None
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def running(cls, kernel: Kernel) -> KernelHandle:
        """A handle on a kernel started already (tests, embedders)."""
        handle = cls(kernel.config)
        handle._kernel = kernel
        return handle

    @property
    def started(self) -> bool:
        return self._kernel is not None

    def get(self) -> Kernel:
        """The kernel, started now if it is not yet (BootError when it cannot start and no `on_fail` ends aiosh)."""
        kernel = self._kernel
        if kernel is not None:
            return kernel
        with self._lock:
            if self._kernel is None:
                try:
                    self._kernel = start_kernel(self.config, verbose=self._verbose)
                except BootError as exc:
                    if self._on_fail is not None:
                        self._on_fail(exc)
                    raise
                if self.script is not None and not start_engine_if_named(self._kernel, self.script):
                    dismiss_prestarted()  # (the guess of aiosh.prestart was wrong: no model agent is named)
            return self._kernel

    def shutdown(self) -> None:
        """Stop the kernel if it ever started."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._kernel is not None:
                self._kernel.shutdown()
            dismiss_prestarted()


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
