"""`< FILE` (and the shell's own stdin) as a Pipe that reads the descriptor only when someone reads the Pipe, so a
host program started in the middle gets the real descriptor at the offset the shell's readers reached — in bash a
child inherits the descriptor and takes only what it reads (`while read l; do prog; done < f` loses no lines).

A descriptor that cannot seek (a pipe, a FIFO, a terminal) cannot be moved back over text read ahead, so line
readers (`read`, an agent's readline) take it one byte at a time there, as bash's `read` does.
"""

from __future__ import annotations

import codecs
import os
import select
import threading

from aiosh.kernel.streams import Pipe

from . import reader

CHUNK = 65536


class FilePipe(Pipe):
    """A Pipe over a readable, seekable descriptor, filled on demand."""

    def __init__(self, fd: int, name: str, *, owned: bool = True) -> None:
        super().__init__(name)
        self.fd = fd
        self.owned = owned
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._fill_lock = threading.Lock()
        self._eof = False
        self.careful = not seekable(fd)  # read no further than a line reader asks

    def _fill(self, timeout: float | None = None, size: int = CHUNK) -> None:
        with self._fill_lock:
            if self._eof or self.has_data or self.reader_gone:
                return
            if self.careful and not self._ready(timeout):
                return
            try:
                data = os.read(self.fd, size)
            except OSError:
                data = b""
            if data:
                text = self._dec.decode(data)
                if text:
                    super().write(text)
                return
            tail = self._dec.decode(b"", final=True)
            if tail:
                super().write(tail)
            self._eof = True
            super().close()

    def _ready(self, timeout: float | None) -> bool:
        try:
            return bool(select.select([self.fd], [], [], timeout)[0])
        except (OSError, ValueError):
            return True  # let os.read report it

    def read_nowait(self) -> str | None:
        self._fill(0)
        return super().read_nowait()

    def read(self, timeout: float | None = None) -> str | None:
        self._fill(timeout)
        return super().read(0)

    def read_char(self, timeout: float | None = None) -> str | None:
        """At most one character, reading no byte past it from a descriptor that cannot seek: '' at end of
        file, None on timeout (text already buffered comes first, whole)."""
        if not self.careful or self.has_data:
            return self.read(timeout)
        while True:
            self._fill(timeout, 1)
            got = super().read(0)
            if got is None and not self._eof and self._dec.getstate()[0]:
                continue  # the middle of a multi-byte character: its next byte is on its way
            return got

    def ready(self) -> bool:
        """Input can be read now without waiting (`read -t 0`)."""
        return not self.careful or self.has_data or self._eof or self._ready(0)

    def handoff(self) -> int:
        """The descriptor, moved back over text read from it that nobody consumed yet (for a child to inherit).

        A descriptor that cannot seek keeps such text for the shell's next reader (line readers leave none)."""
        with self._fill_lock:
            pending = (reader.take_pushback(self) or "") + (super().read_nowait() or "")
            if self.careful:
                reader.unread(self, pending)
            else:
                undecoded, _flag = self._dec.getstate()
                back = len(pending.encode("utf-8", "surrogateescape")) + len(undecoded)
                self._dec.reset()
                if back:
                    try:
                        os.lseek(self.fd, -back, os.SEEK_CUR)
                    except OSError:
                        pass
            self._eof = False
            self._closed = False  # more may be read after the child
            return self.fd

    def close_reader(self) -> None:
        super().close_reader()
        if self.owned:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.owned = False


class ReadWritePipe(FilePipe):
    """`N<>FILE`: read on demand like `<`, and a write goes to the descriptor at once, where the reading got to
    (`read l <&8; echo more >&8` puts `more` after the first line, as in bash)."""

    def write(self, text: str) -> None:
        if not text:
            return
        fd = self.handoff()  # the descriptor's offset back at what readers consumed
        data = text.encode("utf-8", "surrogateescape")
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError:
            pass
        self.bytes_written += len(text)

    def close(self) -> None:
        pass  # a writer finishing is no end of file for the readers


def seekable(fd: int) -> bool:
    try:
        os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        return False
    return True
