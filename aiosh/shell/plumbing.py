"""Pump threads between `Pipe`s, files and OS file descriptors.

Every command reads and writes `kernel.streams.Pipe`s; files and host processes are attached through small
daemon threads. A thread that copies into a Pipe whose reader went away stops and tells its own source, the way
SIGPIPE travels back up a pipeline.
"""

from __future__ import annotations

import codecs
import threading
import weakref
from collections.abc import Callable
from typing import IO

from aiosh.kernel.streams import Pipe

from . import reader

CHUNK = 65536
POLL = 0.05


class CallbackPipe(Pipe):
    """A Pipe whose writes go straight to a callable (the caller's terminal writer); nobody reads it."""

    def __init__(self, fn: Callable[[str], object], name: str = "") -> None:
        super().__init__(name)
        self._fn = fn
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        if text:
            with self._lock:
                self._fn(text)
                self.bytes_written += len(text)


def as_pipe(target: Pipe | Callable[[str], object] | None, name: str) -> Pipe:
    if target is None:
        return CallbackPipe(lambda _t: None, name)
    if isinstance(target, Pipe):
        return target
    return CallbackPipe(target, name)


def closed_pipe(text: str = "", name: str = "") -> Pipe:
    """A Pipe holding `text` then end of file: here-documents, and stdin for commands that have none."""
    p = Pipe(name)
    p.write(text)
    p.close()
    return p


def null_pipe(name: str = "null") -> Pipe:
    """A sink that discards everything (`>&-`, `/dev/null`-like)."""
    p = Pipe(name)
    p.close_reader()
    return p


def _thread(target: Callable[[], None], name: str) -> threading.Thread:
    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t


def safe_write(dst: Pipe, text: str) -> bool:
    """Write unless the reader left or the pipe is closed; False then (the SIGPIPE case)."""
    if dst.reader_gone:
        return False
    try:
        dst.write(text)
    except ValueError:
        return False
    return not dst.reader_gone


def pump_pipe(
    src: Pipe, dst: Pipe, *, close_dst: bool, stop: threading.Event | None = None, whole_lines: bool = False
) -> threading.Thread:
    """Copy src to dst until src ends (or `stop` is set and src is drained).

    whole_lines: pass text on a line at a time (the rest at the end), so that several background agents writing
    to one terminal never interleave in the middle of a line."""

    def run() -> None:
        held = ""
        try:
            while True:
                chunk = reader.read(src, POLL)
                if chunk == "":
                    break
                if chunk is None:
                    if stop is not None and stop.is_set():
                        break
                    continue
                if whole_lines:
                    held += chunk
                    cut = held.rfind("\n") + 1
                    chunk, held = held[:cut], held[cut:]
                    if not chunk:
                        continue
                if not safe_write(dst, chunk):
                    src.close_reader()
                    break
        finally:
            if held:
                safe_write(dst, held)
            if close_dst:
                dst.close()

    return _thread(run, f"pump:{src.name}->{dst.name}")


def file_writer(f: IO[bytes], name: str) -> tuple[Pipe, threading.Thread]:
    """A Pipe drained into an open binary file, which is closed at end of file: `> FILE`, `>> FILE`."""
    pipe = Pipe(name)

    def run() -> None:
        try:
            while True:
                chunk = pipe.read()
                if chunk == "":
                    break
                if chunk:
                    f.write(chunk.encode("utf-8", "surrogateescape"))
                    f.flush()
        except OSError:
            pipe.close_reader()
        finally:
            _close_quietly(f)

    thread = _thread(run, f"write:{name}")
    _writers[pipe] = thread
    return pipe, thread


_writers: weakref.WeakKeyDictionary[Pipe, threading.Thread] = weakref.WeakKeyDictionary()


def finish_writer(pipe: Pipe, timeout: float = 5.0) -> None:
    """Close a `> FILE` pipe and wait until its thread wrote everything (a no-op for other pipes)."""
    if isinstance(pipe, FileSink):
        pipe.close()
        return
    thread = _writers.get(pipe)
    if thread is None:
        return
    pipe.close()
    thread.join(timeout)


class FileSink(Pipe):
    """`> FILE`: each write goes to the file at once, in the writer's thread, so the file holds everything
    written so far (the next command, or `cat` of an `exec 3>file`, sees it) and order is kept."""

    def __init__(self, f: IO[bytes], name: str = "") -> None:
        super().__init__(name)
        self._f = f
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            if self.closed:
                raise ValueError(f"write to closed pipe {self.name!r}")
            if self.reader_gone:
                return
            try:
                self._f.write(text.encode("utf-8", "surrogateescape"))
                self._f.flush()
            except OSError:
                super().close_reader()
            self.bytes_written += len(text)

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                super().close()
                _close_quietly(self._f)

    def fileno(self) -> int:
        return self._f.fileno()


def stream_to_pipe(f: IO[bytes], dst: Pipe) -> threading.Thread:
    """Copy a host process's unbuffered output into a Pipe; when the reader leaves, closing our end makes
    the program get SIGPIPE, as in a real pipeline."""

    def run() -> None:
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while True:
                data = f.read(CHUNK)
                if not data:
                    break
                if not safe_write(dst, dec.decode(data)):
                    break
            safe_write(dst, dec.decode(b"", final=True))
        except (OSError, ValueError):
            pass
        finally:
            _close_quietly(f)

    return _thread(run, f"proc->{dst.name}")


def pipe_to_stream(src: Pipe, f: IO[bytes], stop: threading.Event) -> threading.Thread:
    """Feed a host process's stdin from a Pipe; ends at end of file, a broken pipe, or `stop`."""

    def run() -> None:
        try:
            while True:
                chunk = reader.read(src, POLL)
                if chunk == "":
                    break
                if chunk is None:
                    if stop.is_set():
                        break
                    continue
                view = memoryview(chunk.encode("utf-8", "surrogateescape"))
                while view:
                    n = f.write(view)
                    view = view[n or 0 :]
        except (OSError, ValueError):
            pass
        finally:
            _close_quietly(f)

    return _thread(run, f"{src.name}->proc")


def _close_quietly(f: IO[bytes]) -> None:
    """Close a host process's pipe end; one the process already closed is not an error here."""
    try:
        f.close()
    except OSError:
        pass
