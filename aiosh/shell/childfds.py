"""Descriptors above 2 for a host program (`prog 3<<EOF`, `prog 5>file`, `exec 4>log; prog >&4` …).

The shell's descriptors are Pipes; a program needs real ones at the same numbers. A file written with `>` is
handed over as the file itself, `< file` as its descriptor at the current offset, a here-document or other
input through an OS pipe fed by a thread, and an output Pipe through an OS pipe drained by a thread.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable

from aiosh.kernel.streams import Pipe

from . import plumbing
from .filepipe import FilePipe

HIGH_FD = 200


class ExtraFds:
    """The descriptors to install in the child, and what the parent does with its ends afterwards."""

    def __init__(self, fds: dict[int, Pipe | None]) -> None:
        self.targets: dict[int, int] = {}  # child fd → parent fd to duplicate there
        self._close_after: list[int] = []
        self._start_after: list[Callable[[], object]] = []
        for num, pipe in sorted(fds.items()):
            if num <= 2 or pipe is None:
                continue
            self._add(num, pipe)

    def _add(self, num: int, pipe: Pipe) -> None:
        if isinstance(pipe, plumbing.FileSink):
            fd = os.dup(pipe.fileno())
            self.targets[num] = fd
            self._close_after.append(fd)
        elif isinstance(pipe, FilePipe):
            self.targets[num] = pipe.handoff()
        elif pipe.has_data or pipe.closed:  # input: a here-document, a here-string, a closed pipe
            r, w = os.pipe()
            self.targets[num] = r
            self._close_after.append(r)
            writer = os.fdopen(w, "wb", buffering=0)
            self._start_after.append(lambda: plumbing.pipe_to_stream(pipe, writer, _never()))
        else:  # output: the terminal, a pipeline's pipe, a Pipe the shell reads
            r, w = os.pipe()
            self.targets[num] = w
            self._close_after.append(w)
            reader = os.fdopen(r, "rb", buffering=0)
            self._start_after.append(lambda: plumbing.stream_to_pipe(reader, pipe))

    @property
    def keep(self) -> tuple[int, ...]:
        return tuple(self.targets)

    def install(self) -> None:
        """In the child, before exec: move every source out of the way, then onto its number."""
        moved = {num: fcntl.fcntl(src, fcntl.F_DUPFD, HIGH_FD) for num, src in self.targets.items()}
        for num, src in moved.items():
            os.dup2(src, num)
            os.close(src)

    def after_spawn(self) -> None:
        for fd in self._close_after:
            try:
                os.close(fd)
            except OSError:
                pass
        for start in self._start_after:
            start()

    def abandon(self) -> None:
        """The program did not start: close what was opened for it."""
        for fd in self._close_after:
            try:
                os.close(fd)
            except OSError:
                pass


def _never():  # noqa: ANN202 - a threading.Event that is never set
    import threading

    return threading.Event()
