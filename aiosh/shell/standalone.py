"""Run the shell on this process's own descriptors, without a kernel: what `python -m aiosh.shell` does.

Output goes straight to fds 1 and 2 with one lock, in the order the shell wrote it, so `> log 2>&1` keeps
bash's interleaving of stdout and stderr.
"""

from __future__ import annotations

import os
import sys
import threading

from aiosh.kernel.streams import Pipe

from .cli_flags import Flags
from .filepipe import FilePipe
from .shell import Shell

_write_lock = threading.Lock()


def fd_writer(fd: int):  # noqa: ANN201 - a str -> None callable
    """A writer for the shell's stdout or stderr that goes to the descriptor at once, in call order."""

    def write(text: str) -> None:
        data = text.encode("utf-8", "surrogateescape")
        with _write_lock:
            try:
                while data:
                    n = os.write(fd, data)
                    data = data[n:]
            except OSError:
                pass

    return write


def stdin_pipe(name: str = "stdin") -> Pipe:
    """fd 0 as a Pipe read on demand, so programs the script starts inherit the descriptor and find there what
    the shell's readers left (see FilePipe)."""
    return FilePipe(0, name, owned=False)


def read_script(path: str) -> str:
    """A script's text; bytes that are not UTF-8 pass through (bash runs Latin-1 files too)."""
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8", "surrogateescape")


def apply_options(shell: Shell, flags: Flags) -> None:
    for name, on in flags.options.items():
        if hasattr(shell.state, name) and isinstance(getattr(shell.state, name), bool):
            setattr(shell.state, name, on)


def run(flags: Flags) -> int:
    if flags.command is not None:
        argv0 = flags.args[0] if flags.args else "aiosh"
        args, text, filename = flags.args[1:], flags.command, "-c"
    elif flags.script is not None:
        try:
            text = read_script(flags.script)
        except OSError as exc:
            print(f"aiosh: {flags.script}: {exc.strerror or exc}", file=sys.stderr)
            return 127 if isinstance(exc, FileNotFoundError) else 126
        argv0, args, filename = flags.script, flags.args, flags.script
    else:
        argv0, args, filename = "aiosh", flags.args, None
        text = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    stdin = stdin_pipe() if filename is not None else None
    shell = Shell(stdout=fd_writer(1), stderr=fd_writer(2), stdin=stdin, argv0=argv0, args=args)
    shell.abort_lines = flags.interactive
    apply_options(shell, flags)
    return shell.run_source(text, filename=filename)
