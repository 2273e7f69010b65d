"""Run aiosh with a started kernel: the interactive shell on a terminal, or a script / -c / standard input.

The shell writes to Pipes; pumps copy them to the real stdout/stderr. SIGTERM or SIGHUP to aiosh itself sends
HUP to its jobs, lets the kernel flush, and exits 128+n.
"""

from __future__ import annotations

import argparse
import codecs
import os
import signal
import sys
import threading

from aiosh import observe, storage_commands
from aiosh.kernel_bridge import KernelAgentHost
from aiosh.shell import Shell
from aiosh.terminal import Pump
from kernel.config import Config
from kernel.streams import Pipe


class _Terminated(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def _stdin_pipe() -> Pipe:
    """aiosh's own standard input as a Pipe (for `echo hi | aiosh -c 'cat'`), fed by a daemon thread."""
    pipe = Pipe("aiosh stdin")

    def feed() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while data := os.read(0, 65536):
                pipe.write(decoder.decode(data))
            pipe.write(decoder.decode(b"", final=True))
        except OSError:
            pass
        pipe.close()

    threading.Thread(target=feed, name="aiosh-stdin", daemon=True).start()
    return pipe


def make_shell(kernel, config: Config, *, stdout: Pipe, stderr: Pipe, stdin: Pipe | None, interactive: bool,
               argv0: str = "aiosh", args: list[str] | None = None) -> Shell:
    shell = Shell(
        agents=KernelAgentHost(kernel), stdout=stdout, stderr=stderr, stdin=stdin, interactive=interactive,
        host_programs=config.shell.host_programs, argv0=argv0, args=args or [],
    )
    observe.register(shell.builtins, lambda: kernel)
    storage_commands.register(shell.builtins, lambda: kernel)
    return shell


def run_session(kernel, config: Config, ns: argparse.Namespace, source: str | None) -> int:
    out, err = Pipe("stdout"), Pipe("stderr")
    pumps = [Pump(out, "stdout").start(), Pump(err, "stderr").start()]
    interactive = ns.command is None and source is None and sys.stdin.isatty() and sys.stdout.isatty()
    reads_commands_from_stdin = ns.command is None and source is None and not interactive
    stdin = None if (interactive or reads_commands_from_stdin or sys.stdin.isatty()) else _stdin_pipe()
    if ns.command is not None:
        argv0, args = (ns.script or "aiosh"), list(ns.args)
    elif source is not None:
        argv0, args = ns.script, list(ns.args)
    else:
        argv0, args = "aiosh", []
    shell = make_shell(kernel, config, stdout=out, stderr=err, stdin=stdin, interactive=interactive,
                       argv0=argv0, args=args)

    def on_term(signum: int, _frame: object) -> None:
        raise _Terminated(signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    for s in old:
        signal.signal(s, on_term)
    status = 0
    try:
        if interactive:
            from aiosh.repl import Repl

            status = Repl(shell, kernel, pumps).run()
            shell.hangup()
        elif ns.command is not None:
            status = shell.run_source(ns.command, filename="-c")
        elif source is not None:
            status = shell.run_source(source, filename=ns.script)
        else:
            status = shell.run_source(sys.stdin.read(), filename=None)
    except _Terminated as exc:
        shell.hangup()
        status = 128 + exc.signum
    except KeyboardInterrupt:
        shell.hangup()
        status = 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        kernel.shutdown()
        out.close()
        err.close()
        for p in pumps:
            p.join(5)
    return status
