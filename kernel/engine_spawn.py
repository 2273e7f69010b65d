"""Starting the engine's process, for the engine client and for a front end that wants it early.

The child (`python -m aiosh.kernel.engine_process`) starts loading on the first message it reads: the model's load
arguments, which a front end knows from the configuration alone, or the kernel's whole spec. So it can be started,
and load the model, before the kernel exists. A fresh `aiosh -c 'chat …'` uses that: the front end starts the
child before it has even imported the kernel (`prestart`), the child loads the model while aiosh sets itself up,
and the kernel's engine client takes it at its first start (`take_prestarted`) instead of starting
another; when the kernel finds that no agent the script names calls the model, it ends the child
(`dismiss_prestarted`) before it has decoded anything. A light module: it imports no other part of the kernel.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any


def default_log_path() -> Path:
    """Where the engine process of this aiosh writes llama.cpp's log (one file per aiosh process)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "aiosh" / f"engine-{os.getpid()}.log"


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def child_env() -> dict[str, str]:
    """Our environment, with glibc asked to back large allocations with transparent huge pages (`madvise`).

    llama.cpp allocates the KV pool in one piece and clears it at once: with 4 KiB pages that is ~190,000 page
    faults for 16 × 2048 cells (0.53 s of the engine's start here), with 2 MiB pages ~400 (0.21 s). A user's own
    `glibc.malloc.hugetlb` setting wins; where glibc is older than 2.35, not the C library, or THP is off, this
    does nothing. (The tunable is read when a program starts, so only a child can be given it.)"""
    env = dict(os.environ)
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" not in tunables:
        env["GLIBC_TUNABLES"] = f"{tunables}:{HUGE_PAGES_TUNABLE}" if tunables else HUGE_PAGES_TUNABLE
    return env


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
                                    start_new_session=True, close_fds=True, env=child_env())
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
        if mirror is not None:
            os.close(mirror)
    return proc, ours


_lock = threading.Lock()
_prestarted: tuple[subprocess.Popen, socket.socket, Path, bool, bool] | None = None


def prestart(load_args: dict[str, Any], log_path: Path | None = None, verbose: bool = False) -> int | None:
    """Start an engine process now, for the kernel's engine client to take later, and send it `load_args`
    (`startup_checks.engine_load_args`) so that it starts loading the model at once: its pid, or None when it
    cannot start (the client will try again itself, and report why). The calling thread must outlive it (the
    child dies with the thread that started it, PR_SET_PDEATHSIG): the main thread."""
    from multiprocessing.connection import Connection

    global _prestarted
    path = log_path or default_log_path()
    with _lock:
        if _prestarted is not None:
            return _prestarted[0].pid
        had_log = path.exists()
        try:
            proc, sock = spawn(path, verbose)
        except OSError:
            return None
        conn = Connection(os.dup(sock.fileno()))
        try:
            conn.send(("load", load_args))
        except OSError:
            _end(proc, sock)
            return None
        finally:
            conn.close()
        _prestarted = (proc, sock, path, verbose, had_log)
        return proc.pid


def take_prestarted(log_path: Path, verbose: bool) -> tuple[subprocess.Popen, socket.socket] | None:
    """The process `prestart` started, if it is still waiting for its spec and was started the same way."""
    global _prestarted
    with _lock:
        got, _prestarted = _prestarted, None
    if got is None:
        return None
    proc, sock, path, was_verbose, _had_log = got
    if proc.poll() is None and path == log_path and was_verbose == verbose:
        return proc, sock
    _end(proc, sock)
    return None


def dismiss_prestarted() -> None:
    """End a prestarted process nobody took (it may be loading the model: it has decoded nothing), and remove
    the log file it started, if it did."""
    global _prestarted
    with _lock:
        got, _prestarted = _prestarted, None
    if got is not None:
        proc, sock, path, _verbose, had_log = got
        _end(proc, sock)
        if not had_log:
            try:
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
