"""Worker processes for tools that can burn CPU or memory (`@tool(isolated=True)`: calculator, sql_query).

A thread cannot stop CPU-bound Python: `round(7, -10**7)` in a tool thread holds the GIL for seconds and the
whole kernel (every agent, the shell, the monitor) stands still while the thread timeout waits. So such a tool
runs in a process of its own, under resource limits — `RLIMIT_CPU` (the CPU seconds of the call, counted from
what the worker has used so far) and `RLIMIT_AS` (address space beyond what the worker holds when the call
starts) — and is killed when its timeout passes. Workers are started once and reused (a call costs a round trip
on a socket, not a process start); one killed on a timeout or a limit is replaced.

The request names the tool by its module and name; path arguments the tool declares (`paths=`) are resolved and
opened by the kernel, and their descriptors cross the socket (`SCM_RIGHTS`): in the worker `ctx.open(path)` hands
back the descriptor the kernel checked, never the path again.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import pickle
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
from typing import Any

__all__ = ["WorkerCrashed", "WorkerPool", "WorkerTimeout"]

_HEADER = struct.Struct("!I")
MAX_MESSAGE = 64 * 1024 * 1024  # a result larger than this is refused
STARTUP_S = 60.0  # a new worker's imports (on a busy 2-core machine they can take seconds)


class WorkerTimeout(Exception):
    """The call ran past its timeout; the worker was killed."""


class WorkerCrashed(Exception):
    """The worker died during the call (a resource limit, a crash); the message says how."""


def _send(sock: socket.socket, obj: Any, fds: list[int] = ()) -> None:  # type: ignore[assignment]
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    msg = _HEADER.pack(len(data)) + data
    if fds:
        socket.send_fds(sock, [msg[:_HEADER.size]], list(fds))
        sock.sendall(msg[_HEADER.size:])
    else:
        sock.sendall(msg)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("worker closed its socket")
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket, with_fds: bool = False) -> tuple[Any, list[int]]:
    fds: list[int] = []
    if with_fds:
        head, fds, _flags, _addr = socket.recv_fds(sock, _HEADER.size, 16)
        if not head:
            raise EOFError("socket closed")
        if len(head) < _HEADER.size:
            head += _recv_exact(sock, _HEADER.size - len(head))
    else:
        head = _recv_exact(sock, _HEADER.size)
    (n,) = _HEADER.unpack(head)
    if n > MAX_MESSAGE:
        raise ValueError(f"message of {n} bytes")
    return pickle.loads(_recv_exact(sock, n)), fds


# ── the parent side ──────────────────────────────────────────────────────────────────────────────────────────

class _Worker:
    def __init__(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock = parent
        env = dict(os.environ)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(child.fileno())], pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
        child.close()
        self.calls = 0
        self.ready = False

    def wait_ready(self, timeout: float = STARTUP_S) -> None:
        """The worker says hello once its imports are done; its start-up does not count against a call."""
        if self.ready:
            return
        self.sock.settimeout(timeout)
        try:
            hello, _ = _recv(self.sock)
        except (OSError, EOFError, ValueError, pickle.UnpicklingError):
            why = self.why_dead()
            self.kill()
            raise WorkerCrashed(f"the tool process did not start: {why}") from None
        if hello != "ready":
            self.kill()
            raise WorkerCrashed("the tool process did not start")
        self.ready = True

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        self.sock.close()

    def why_dead(self) -> str:
        try:
            code = self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return "the worker stopped answering"
        if code < 0:
            names: dict[int, str] = {signal.SIGXCPU: "CPU time limit", signal.SIGKILL: "killed",
                                     signal.SIGSEGV: "crashed", signal.SIGABRT: "aborted"}
            name = names.get(-code, signal.Signals(-code).name)
            return f"tool process ended: {name}"
        return f"tool process exited with status {code}"


class WorkerPool:
    """Worker processes shared by all isolated tools; `call` blocks its (tool) thread, never the kernel loop."""

    def __init__(self, max_idle: int = 4) -> None:
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self.max_idle = max_idle
        self.started = 0  # workers started (for tests and figures)

    def _take(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise WorkerCrashed("the kernel is shutting down")
            if self._idle:
                return self._idle.pop()
        self.started += 1
        return _Worker()

    def _give(self, w: _Worker) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(w)
                return
        w.kill()

    def call(self, module: str, name: str, kwargs: dict[str, Any], *, timeout: float, cpu_s: float,
             memory_mb: int, fds: dict[str, int] | None = None, origin: str = "") -> Any:
        """Run the tool `name` of `module` with kwargs in a worker; its value, or the exception it raised
        (re-raised here), WorkerTimeout after `timeout` seconds, WorkerCrashed when a limit ended it."""
        w = self._take()
        w.wait_ready()
        names = list((fds or {}).keys())
        req = {"module": module, "origin": origin, "name": name, "kwargs": kwargs, "fds": names,
               "cpu_s": cpu_s, "memory_mb": memory_mb}
        try:
            w.sock.settimeout(timeout)
            _send(w.sock, req, [fds[n] for n in names] if fds else [])
            reply, _ = _recv(w.sock)
        except TimeoutError:
            w.kill()
            raise WorkerTimeout(f"timed out after {timeout:g} s") from None
        except (EOFError, OSError, pickle.UnpicklingError, ValueError):
            why = w.why_dead()
            w.kill()
            raise WorkerCrashed(why) from None
        w.calls += 1
        self._give(w)
        ok, value = reply
        if ok:
            return value
        raise value

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill()


# ── the worker side ─────────────────────────────────────────────────────────────────────────────────────────

class WorkerToolContext:
    """What an isolated tool's `ctx` is inside the worker: the descriptors the kernel opened for its paths."""

    def __init__(self, fds: dict[str, int]) -> None:
        self._fds = fds
        self.cancelled = threading.Event()

    def open(self, path: str, mode: str = "read", **_kw: Any) -> int:
        """A new descriptor of the file the kernel opened and checked for `path`."""
        fd = self._fds.get(path)
        if fd is None:
            raise PermissionError(f"{path}: not a path argument of this tool")
        return os.dup(fd)


def _find(module: str, origin: str, name: str) -> Any:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        if not origin:
            raise
        spec = importlib.util.spec_from_file_location(module, origin)
        if spec is None or spec.loader is None:
            raise
        mod = importlib.util.module_from_spec(spec)
        sys.modules[module] = mod
        spec.loader.exec_module(mod)
    for value in vars(mod).values():
        if getattr(value, "name", None) == name and hasattr(value, "fn") and hasattr(value, "ctx_param"):
            return value
    raise LookupError(f"tool {name} not found in {module}")


def _limit(cpu_s: float, memory_mb: int) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = used.ru_utime + used.ru_stime
    soft = int(spent + max(1.0, cpu_s)) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    if memory_mb > 0:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[0])
        have = pages * os.sysconf("SC_PAGE_SIZE")
        _, hard_as = resource.getrlimit(resource.RLIMIT_AS)
        want = have + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (want if hard_as == resource.RLIM_INFINITY else
                                                min(want, hard_as), hard_as))


def _unlimit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def serve(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C at the terminal is the shell's to handle
    with contextlib.suppress(ImportError):
        importlib.import_module("aiosh.api")  # what every tool module imports: loaded before the first call
    _send(sock, "ready")
    while True:
        try:
            req, fds = _recv(sock, with_fds=True)
        except EOFError:
            return
        try:
            spec = _find(req["module"], req["origin"], req["name"])
            kwargs = dict(req["kwargs"])
            if spec.ctx_param:
                kwargs[spec.ctx_param] = WorkerToolContext(dict(zip(req["fds"], fds)))
            _limit(req["cpu_s"], req["memory_mb"])
            try:
                reply: tuple[bool, Any] = (True, spec.fn(**kwargs))
            finally:
                _unlimit()
        except MemoryError:
            reply = (False, MemoryError("out of memory (the tool's memory limit)"))
        except BaseException as exc:  # noqa: BLE001 - handed back to the kernel
            reply = (False, exc)
        finally:
            for f in fds:
                with contextlib.suppress(OSError):
                    os.close(f)
        try:
            _send(sock, reply)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            _send(sock, (False, RuntimeError(f"result cannot be sent back: {exc}")))


if __name__ == "__main__":
    serve(int(sys.argv[1]))
