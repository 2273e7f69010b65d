"""Reading from a Pipe with pushback, so `read` can take one line and leave the rest for the next reader.

A Pipe hands out whatever is buffered; the shell's readers (builtins, the pumps that feed agents and programs)
all go through `read()` here, which first returns text a line reader put back.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

from aiosh.kernel.streams import Pipe

_pushback: weakref.WeakKeyDictionary[Pipe, str] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def unread(pipe: Pipe, text: str) -> None:
    """Put text back at the front of the pipe, for the next reader."""
    if not text:
        return
    with _lock:
        _pushback[pipe] = text + _pushback.get(pipe, "")


def take_pushback(pipe: Pipe) -> str | None:
    """Remove and return the text put back on a pipe (a FilePipe handing its descriptor to a child)."""
    with _lock:
        return _pushback.pop(pipe, None)


def read(pipe: Pipe, timeout: float | None = None, *, small: bool = False) -> str | None:
    """Like Pipe.read: text, '' at end of file, None on timeout; put-back text first. `small`: a line reader's
    read, which takes no byte past the next character from a descriptor that cannot seek (see FilePipe)."""
    with _lock:
        back = _pushback.pop(pipe, None)
    if back:
        return back
    if small and getattr(pipe, "careful", False):
        return pipe.read_char(timeout)  # type: ignore[attr-defined]
    return pipe.read(timeout)


def read_line(pipe: Pipe, delim: str = "\n", checkpoint: Callable[[], None] | None = None) -> tuple[str, bool]:
    """One line (without the delimiter) and whether the delimiter was seen (False: end of file came first)."""
    parts: list[str] = []
    while True:
        if checkpoint is not None:
            checkpoint()
        chunk = read(pipe, 0.1, small=True)
        if chunk is None:
            continue
        if chunk == "":
            return "".join(parts), False
        at = chunk.find(delim)
        if at >= 0:
            parts.append(chunk[:at])
            unread(pipe, chunk[at + len(delim) :])
            return "".join(parts), True
        parts.append(chunk)


def read_upto(
    pipe: Pipe,
    count: int | None,
    delim: str | None,
    checkpoint: Callable[[], None] | None = None,
    deadline: float | None = None,
) -> tuple[str, str]:
    """Read until `count` characters, the delimiter (None: no delimiter), end of file or the deadline.

    Returns (text, how) with how one of "delim", "count", "eof", "timeout"; the delimiter is consumed, not
    returned, and nothing past what was asked for is taken from the pipe."""
    import time

    parts: list[str] = []
    have = 0
    while True:
        if count is not None and have >= count:
            return "".join(parts), "count"
        if checkpoint is not None:
            checkpoint()
        wait = 0.1
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return "".join(parts), "timeout"
            wait = min(wait, left)
        chunk = read(pipe, wait, small=True)
        if chunk is None:
            continue
        if chunk == "":
            return "".join(parts), "eof"
        if count is not None and have + len(chunk) > count:
            unread(pipe, chunk[count - have :])
            chunk = chunk[: count - have]
        if delim is not None:
            at = chunk.find(delim)
            if at >= 0:
                parts.append(chunk[:at])
                unread(pipe, chunk[at + len(delim) :])
                return "".join(parts), "delim"
        parts.append(chunk)
        have += len(chunk)


def has_pushback(pipe: Pipe) -> bool:
    with _lock:
        return bool(_pushback.get(pipe))
