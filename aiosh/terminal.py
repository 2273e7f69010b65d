"""Copy the shell's output pipes to the real terminal (or to whatever stdout/stderr are).

While the prompt is on screen, text is released a whole line at a time (prompt-toolkit's `patch_stdout` then prints
it above the prompt without tearing it); while a foreground command runs, text goes out as it arrives, so an
agent's answer streams token by token.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from aiosh.kernel.streams import Pipe


class Pump:
    """A thread that copies one Pipe to a text stream looked up at each write (sys.stdout may be swapped)."""

    def __init__(self, pipe: Pipe, which: str = "stdout") -> None:
        self.pipe = pipe
        self.which = which
        self.line_mode = False
        self.holding = False  # while a full-screen app (the monitor) owns the terminal
        self._held = ""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"aiosh-pump-{which}", daemon=True)
        self._idle = threading.Event()
        self._idle.set()

    def start(self) -> Pump:
        self._thread.start()
        return self

    def _target(self) -> TextIO:
        return sys.stdout if self.which == "stdout" else sys.stderr

    def _run(self) -> None:
        while True:
            chunk = self.pipe.read(0.05)
            if chunk == "":
                self.flush()
                return
            if chunk:
                self._idle.clear()
                self._emit(chunk)
            if not self.pipe.has_data:
                self._idle.set()

    def _emit(self, chunk: str) -> None:
        with self._lock:
            text = self._held + chunk
            if self.holding:
                self._held = text
                return
            if self.line_mode:
                cut = text.rfind("\n") + 1
                text, self._held = text[:cut], text[cut:]
            else:
                self._held = ""
            self._write(text)

    def set_line_mode(self, on: bool) -> None:
        """Line mode on while the prompt shows; turning it off releases a held partial line."""
        with self._lock:
            self.line_mode = on
        if not on:
            self.flush()

    def hold(self, on: bool) -> None:
        """Keep output back while another program owns the screen; releasing it shows what came meanwhile."""
        with self._lock:
            self.holding = on
        if not on:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if self.holding:
                return
            text, self._held = self._held, ""
        self._write(text)

    def _write(self, text: str) -> None:
        if not text:
            return
        out = self._target()
        try:
            out.write(text)
            out.flush()
        except (OSError, ValueError):  # the terminal went away: nothing to show it on
            pass

    def drain(self, timeout: float = 1.0) -> None:
        """Wait until what was written to the pipe so far has been copied out."""
        deadline = threading.Event()
        waited = 0.0
        while waited < timeout:
            if not self.pipe.has_data and self._idle.is_set():
                break
            deadline.wait(0.01)
            waited += 0.01
        self.flush()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
