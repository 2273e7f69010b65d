"""`< FILE` as a Pipe that reads the file only when someone reads the Pipe, so a host program started in the
middle gets the real descriptor at the offset the shell's readers reached — in bash a child inherits the file
offset and takes only what it reads (`while read l; do prog; done < f` loses no lines).
"""

from __future__ import annotations

import codecs
import os
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

    def _fill(self) -> None:
        with self._fill_lock:
            if self._eof or self.has_data or self.reader_gone:
                return
            try:
                data = os.read(self.fd, CHUNK)
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

    def read_nowait(self) -> str | None:
        self._fill()
        return super().read_nowait()

    def read(self, timeout: float | None = None) -> str | None:
        self._fill()
        return super().read(0 if timeout is None else min(timeout, 0.0))

    def handoff(self) -> int:
        """The descriptor, moved back over text read from it that nobody consumed yet (for a child to inherit)."""
        with self._fill_lock:
            pending = (reader.take_pushback(self) or "") + (super().read_nowait() or "")
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


def seekable(fd: int) -> bool:
    try:
        os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        return False
    return True
