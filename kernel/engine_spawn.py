"""Starting the engine's process, for the engine client and for a front end that wants it early.

The child (`python -m aiosh.kernel.engine_process`) imports llama.cpp first and then waits for its spec on the
socket, so it can be started before the kernel knows what to send it. A fresh `aiosh -c 'chat …'` uses that: the
front end starts the child before it has even imported the kernel (`prestart`), the child imports while aiosh sets
itself up, and the kernel's engine client takes it at its first start (`take_prestarted`) instead of starting
another; when the kernel finds that no agent the script names calls the model, it ends the child
(`dismiss_prestarted`) before it has loaded anything. A light module: it imports no other part of the kernel.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path


def default_log_path() -> Path:
    """Where the engine process of this aiosh writes llama.cpp's log (one file per aiosh process)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "aiosh" / f"engine-{os.getpid()}.log"


def spawn(log_path: Path, verbose: bool) -> tuple[subprocess.Popen, socket.socket]:
    """Start an engine process (its own session: a Ctrl-C at the terminal does not reach it; no terminal; its
    output into `log_path`, and to our stderr as well with `verbose`); our end of its socket."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ours, theirs = socket.socketpair()
    fds = [theirs.fileno()]
    argv = [sys.executable, "-m", "aiosh.kernel.engine_process", str(theirs.fileno()), str(os.getpid())]
    mirror = None
    try:
        if verbose:
            mirror = os.dup(2)
            fds.append(mirror)
            argv.append(str(mirror))
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=fds,
                                    start_new_session=True, close_fds=True)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
        if mirror is not None:
            os.close(mirror)
    return proc, ours


_lock = threading.Lock()
_prestarted: tuple[subprocess.Popen, socket.socket, Path, bool] | None = None


def prestart(log_path: Path | None = None, verbose: bool = False) -> int | None:
    """Start an engine process now, for the kernel's engine client to take later: its pid, or None when it
    cannot start (the client will try again itself, and report why). The calling thread must outlive it (the
    child dies with the thread that started it, PR_SET_PDEATHSIG): the main thread."""
    global _prestarted
    path = log_path or default_log_path()
    with _lock:
        if _prestarted is not None:
            return _prestarted[0].pid
        try:
            proc, sock = spawn(path, verbose)
        except OSError:
            return None
        _prestarted = (proc, sock, path, verbose)
        return proc.pid


def take_prestarted(log_path: Path, verbose: bool) -> tuple[subprocess.Popen, socket.socket] | None:
    """The process `prestart` started, if it is still waiting for its spec and was started the same way."""
    global _prestarted
    with _lock:
        got, _prestarted = _prestarted, None
    if got is None:
        return None
    proc, sock, path, was_verbose = got
    if proc.poll() is None and path == log_path and was_verbose == verbose:
        return proc, sock
    _end(proc, sock)
    return None


def dismiss_prestarted() -> None:
    """End a prestarted process nobody took (it has loaded no model: it is still importing or waiting)."""
    global _prestarted
    with _lock:
        got, _prestarted = _prestarted, None
    if got is not None:
        proc, sock, path, _verbose = got
        _end(proc, sock)
        try:
            if path.stat().st_size == 0:
                path.unlink()
        except OSError:
            pass


def _end(proc: subprocess.Popen, sock: socket.socket) -> None:
    sock.close()
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
