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


class Screen:
    """What the stdout and stderr pumps share: one terminal, one cursor. `at_bol` is whether the last character
    put on it ended a line; background lines wait while a foreground line is half written."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.at_bol = True


class Pump:
    """A thread that copies one Pipe to a text stream looked up at each write (sys.stdout may be swapped).

    `side` is a second Pipe of whole lines from background jobs: they are written only at the start of a line
    (never inside the foreground's half-written line), held while another program owns the screen, and let out
    in order."""

    def __init__(self, pipe: Pipe, which: str = "stdout", *, side: Pipe | None = None,
                 screen: Screen | None = None) -> None:
        self.pipe = pipe
        self.side = side
        self.which = which
        self.screen = screen or Screen()
        self.line_mode = False
        self.holding = False  # while a full-screen app (the monitor) owns the terminal
        self._held = ""
        self._side_held: list[str] = []
        self._lock = self.screen.lock
        self._thread = threading.Thread(target=self._run, name=f"aiosh-pump-{which}", daemon=True)
        self._side_thread = threading.Thread(target=self._run_side, name=f"aiosh-pump-bg-{which}", daemon=True)
        self._idle = threading.Event()
        self._idle.set()

    def start(self) -> Pump:
        self._thread.start()
        if self.side is not None:
            self._side_thread.start()
        return self

    def _run_side(self) -> None:
        assert self.side is not None
        while True:
            chunk = self.side.read(0.05)
            if chunk == "":
                self.flush()
                return
            if chunk:
                with self._lock:
                    self._side_held.append(chunk)
                    self._release_side()

    def _release_side(self) -> None:
        """Write held background lines if the cursor is at the start of a line (or the prompt shows: then
        prompt-toolkit prints them above it). Called with the lock held."""
        if not self._side_held or self.holding:
            return
        if not (self.screen.at_bol or self.line_mode):
            return
        text = "".join(self._side_held)
        self._side_held = []
        self._write(text)

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
            if self._side_held and not self.screen.at_bol and "\n" in text:
                # background lines wait for the foreground's open line: they go out as soon as it ends, before
                # what the foreground wrote after it (`fg-end\nEND` read in one chunk kept them after END)
                cut = text.index("\n") + 1
                self._write(text[:cut])
                self._release_side()
                text = text[cut:]
            self._write(text)
            self._release_side()

    def set_line_mode(self, on: bool) -> None:
        """Line mode on while the prompt shows; turning it off releases a held partial line."""
        with self._lock:
            self.line_mode = on
            if on and self._side_held and not self.screen.at_bol:
                self._write("\n")  # the foreground left a line open: background lines start on their own
            self._release_side()
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
            self._release_side()

    def _write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            out = self._target()
            try:
                out.write(text)
                out.flush()
            except (OSError, ValueError):  # the terminal went away: nothing to show it on
                return
            self.screen.at_bol = text.endswith("\n")

    def note_written(self, text: str) -> None:
        """Text that reached the terminal another way (a notice, an echoed ^C): keep the cursor state right."""
        if text:
            with self._lock:
                self.screen.at_bol = text.endswith("\n")

    def drain(self, timeout: float = 1.0) -> None:
        """Wait until what was written to the pipes so far has been copied out."""
        deadline = threading.Event()
        waited = 0.0
        while waited < timeout:
            side_busy = self.side is not None and self.side.has_data
            if not self.pipe.has_data and self._idle.is_set() and not side_busy:
                break
            deadline.wait(0.01)
            waited += 0.01
        self.flush()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
        if self.side is not None and self._side_thread.is_alive():
            self._side_thread.join(timeout)
