"""An agent's stdin that takes from the shell's input only what the agent asks for.

In bash a program inherits the descriptor and consumes only what it reads; pumping the shell's whole input into
an agent's pipe would hand it every remaining line of a `while read` loop. A PullPipe fetches from its source
when the agent reads: a line for `readline`, a chunk for `read`, everything for `read_all`.
"""

from __future__ import annotations

import threading

from aiosh.kernel.streams import Pipe

from . import reader

POLL = 0.05


class PullPipe(Pipe):
    def __init__(self, source: Pipe, name: str, stop: threading.Event) -> None:
        super().__init__(name)
        self.source = source
        self.stop = stop
        self._busy = False
        self._lock = threading.Lock()

    def _pull(self, kind: str) -> None:
        with self._lock:
            if self._busy or self.closed or self.reader_gone or (self.has_data and kind != "all"):
                return
            self._busy = True
        threading.Thread(target=self._fetch, args=(kind,), name=f"pull:{self.name}", daemon=True).start()

    def _fetch(self, kind: str) -> None:
        try:
            if kind == "line":
                text, complete = reader.read_line(self.source, "\n", self._check)
                if text or complete:
                    self.write(text + ("\n" if complete else ""))
                if not complete:
                    self.close()
                return
            while not self.closed:
                chunk = reader.read(self.source, POLL)
                if chunk is None:
                    self._check()
                    continue
                if chunk == "":
                    self.close()
                    return
                self.write(chunk)
                if kind == "chunk":
                    return
        except _Stopped:
            self.close()
        except ValueError:  # closed under us
            pass
        finally:
            with self._lock:
                self._busy = False

    def _check(self) -> None:
        if self.stop.is_set():
            raise _Stopped

    # the reading side, as the kernel's agents use it
    def read(self, timeout: float | None = None) -> str | None:
        self._pull("chunk")
        return super().read(timeout)

    async def aread(self) -> str:
        self._pull("chunk")
        return await super().aread()

    async def aread_all(self) -> str:
        self._pull("all")
        return await super().aread_all()

    async def areadline(self) -> str:
        self._pull("line")
        return await super().areadline()


class _Stopped(Exception):
    """The agent ended while a fetch was waiting for input."""
