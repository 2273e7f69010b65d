"""Output of background jobs: whole lines only, after the job's `[1] PID`, optionally tagged `[1] ` per line.

Every background job — one agent, a pipeline, `{ …; } &`, a loop — gets its own stdout and stderr Pipes. A pump
passes them on a whole line at a time, so two jobs (or a job and the prompt) never interleave inside a line, even
when the job is shell code that runs agents in the foreground of its own thread (which stream token by token).
Lines bound for the shell's own terminal go to `Session.bg_stdout`/`bg_stderr`, which the terminal side may keep
apart from foreground output (aiosh/terminal.py holds them back while a foreground line is half written).
"""

from __future__ import annotations

import _thread
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiosh.kernel.streams import Pipe

from . import plumbing, reader

if TYPE_CHECKING:
    from .jobs import Job
    from .session_state import Session
    from .state import IO

JOIN_TIMEOUT = 2.0
ANNOUNCE_TIMEOUT = 2.0  # a job whose `[1] PID` line never comes (a bug) still shows its output


class BackgroundOutput:
    """The line pumps of one background job; `close()` (when its last process ends) flushes and joins them."""

    def __init__(self, session: Session, job: Job, io: IO, tag: Callable[[], str] | None) -> None:
        self.announced = threading.Event()
        self._done: list[threading.Event] = []  # one per pump, set when it has written its last line
        self._pipes: list[Pipe] = []
        self._closed = False
        self._lock = threading.Lock()
        self.io = io.copy()
        made: dict[int, Pipe] = {}  # id(original) → its line pipe (2>&1 shares one)
        for fd in (1, 2):
            dst = io.fds.get(fd)
            if dst is None:
                continue
            if id(dst) in made:
                self.io.fds[fd] = made[id(dst)]
                continue
            if dst is session.stdout:
                target = session.bg_stdout
            elif dst is session.stderr:
                target = session.bg_stderr
            else:
                target = dst
            pipe = Pipe(f"job.{fd}")
            made[id(dst)] = pipe
            self.io.fds[fd] = pipe
            self._pipes.append(pipe)
            self._done.append(self._pump(pipe, target, tag))

    def _pump(self, src: Pipe, dst: Pipe, tag: Callable[[], str] | None) -> threading.Event:
        def emit(text: str) -> bool:
            if tag is not None:
                prefix = tag()
                text = "".join(prefix + line for line in text.splitlines(keepends=True))
            return plumbing.safe_write(dst, text)

        def run() -> None:
            held = ""
            gone = False
            while True:
                chunk = reader.read(src, plumbing.POLL)
                if chunk == "":
                    break
                if not chunk or gone:
                    continue
                held += chunk
                cut = held.rfind("\n") + 1
                if not cut:
                    continue
                self.announced.wait(ANNOUNCE_TIMEOUT)
                text, held = held[:cut], held[cut:]
                if not emit(text):
                    gone = True
                    src.close_reader()
            if held and not gone:
                self.announced.wait(ANNOUNCE_TIMEOUT)
                emit(held + "\n")  # a last line without its newline still ends one: the next text starts anew

        done = threading.Event()

        def pump() -> None:
            try:
                run()
            finally:
                done.set()

        # A bare thread: threading.Thread.start() waits until the new thread has run, a hand-over of the interpreter
        # lock that takes up to 5 ms while other jobs' threads hold it, twice per job (its stdout and stderr pumps).
        # With it, `{ sleep 0.01; …; } &` three times in a loop started the jobs up to tens of ms apart on a busy
        # machine, and jobs that bash finishes in order finished out of order.
        _thread.start_new_thread(pump, ())
        return done

    def close(self) -> None:
        """Flush what is held and wait for it to be written (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for p in self._pipes:
            p.close()
        for done in self._done:
            done.wait(JOIN_TIMEOUT)

    def close_after(self, job: Job) -> None:
        """Close once every process of the job has ended (before the job counts as done, so its output is out
        by the time `wait` returns or the Done notice is printed)."""
        procs = list(job.procs)
        left = [len(procs)]
        lock = threading.Lock()

        def one_done() -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                self.close()

        if not procs:
            self.close()
        for p in procs:
            p.add_cleanup(one_done)
