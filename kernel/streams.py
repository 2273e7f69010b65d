"""Text pipes between agents, the shell and host programs.

An agent's stdin/stdout/stderr are `Pipe`s. Writers may be on any thread (the kernel loop, a pump thread of the
shell, a tool worker); readers either block on a thread (`read`) or await on an asyncio loop (`aread`). Text is
buffered without a bound: agents produce tokens slowly, and a blocked writer would stall the kernel loop.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio


class Pipe:
    """A one-way text stream with an end-of-file, safe across threads and event loops."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._chunks: deque[str] = deque()
        self._closed = False
        self._reader_gone = False
        self._cond = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.bytes_written = 0

    # -- writer side -------------------------------------------------------------------------------------------
    def write(self, text: str) -> None:
        """Append text; a write after the reader went away is dropped (like a pipe whose reader closed)."""
        if not text:
            return
        with self._cond:
            if self._closed:
                raise ValueError(f"write to closed pipe {self.name!r}")
            if self._reader_gone:
                return
            self._chunks.append(text)
            self.bytes_written += len(text)
            self._wake()

    def close(self) -> None:
        """End of file for readers; idempotent."""
        with self._cond:
            if not self._closed:
                self._closed = True
                self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def close_reader(self) -> None:
        """The reader will read no more (e.g. `head` exited): later writes are discarded."""
        with self._cond:
            self._reader_gone = True
            self._chunks.clear()
            self._wake()

    @property
    def has_data(self) -> bool:
        """Text is buffered and not yet read."""
        return bool(self._chunks)

    @property
    def reader_gone(self) -> bool:
        return self._reader_gone

    def _wake(self) -> None:
        self._cond.notify_all()
        waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_set_done, fut)

    # -- reader side -------------------------------------------------------------------------------------------
    def read_nowait(self) -> str | None:
        """Everything buffered now; '' at end of file; None when nothing is buffered yet."""
        with self._cond:
            return self._take()

    def _take(self) -> str | None:
        if self._chunks:
            text = "".join(self._chunks)
            self._chunks.clear()
            return text
        if self._closed or self._reader_gone:
            return ""
        return None

    def read(self, timeout: float | None = None) -> str | None:
        """Block until text or end of file; '' at EOF, None on timeout."""
        with self._cond:
            got = self._take()
            if got is None:
                self._cond.wait(timeout)
                got = self._take()
            return got

    def read_all(self) -> str:
        """Block until end of file and return everything."""
        parts: list[str] = []
        while True:
            got = self.read()
            if got == "":
                return "".join(parts)
            if got:
                parts.append(got)

    async def aread(self) -> str:
        """Await text; '' at end of file."""
        loop = _running_loop()
        while True:
            with self._cond:
                got = self._take()
                if got is not None:
                    return got
                fut: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, fut))
            await fut

    async def aread_all(self) -> str:
        parts = []
        while chunk := await self.aread():
            parts.append(chunk)
        return "".join(parts)

    async def areadline(self) -> str:
        """One line with its newline; the last line may lack it; '' at end of file."""
        loop = _running_loop()
        while True:
            with self._cond:
                buf = "".join(self._chunks)
                nl = buf.find("\n")
                if nl >= 0 or ((self._closed or self._reader_gone) and buf) or (
                    (self._closed or self._reader_gone) and not buf
                ):
                    line, rest = (buf[: nl + 1], buf[nl + 1 :]) if nl >= 0 else (buf, "")
                    self._chunks.clear()
                    if rest:
                        self._chunks.append(rest)
                    return line
                fut: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, fut))
            await fut


def _running_loop() -> asyncio.AbstractEventLoop:
    """The caller's loop. asyncio is imported here, when a loop is running (so it is loaded already), not at this
    module's import: the shell reads and writes Pipes on threads, and `aiosh -c 'echo hi'` need not load it."""
    import asyncio

    return asyncio.get_running_loop()


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
