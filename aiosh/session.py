"""Run aiosh over its kernel handle: the interactive shell on a terminal, or a script / -c / standard input.

The interactive shell and the monitor start the kernel at once; a script or `-c` starts it at the first command
that needs it (`boot.KernelHandle`), so one that needs none ends without it.

The shell writes to Pipes; pumps copy them to the real stdout/stderr. SIGTERM or SIGHUP to aiosh itself sends
HUP to its jobs, lets the kernel flush, and exits 128+n.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiosh import commands
from aiosh.boot import KernelHandle
from aiosh.kernel.config import Config
from aiosh.kernel.streams import Pipe
from aiosh.kernel_bridge import KernelAgentHost
from aiosh.shell import Shell
from aiosh.shell.plumbing import CallbackPipe
from aiosh.shell.standalone import fd_writer, stdin_pipe
from aiosh.terminal import Pump, Screen

if TYPE_CHECKING:
    from aiosh.kernel import Kernel


class _Terminated(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def make_shell(kernel: KernelHandle | Kernel, config: Config, *, stdout: Pipe, stderr: Pipe, stdin: Pipe | None,
               interactive: bool, argv0: str = "aiosh", args: list[str] | None = None) -> Shell:
    """A shell over a kernel handle (the kernel starts at the first command that needs it) or a running kernel."""
    if not isinstance(kernel, KernelHandle):
        kernel = KernelHandle.running(kernel)
    shell = Shell(
        agents=KernelAgentHost(kernel.get), stdout=stdout, stderr=stderr, stdin=stdin, interactive=interactive,
        host_programs=config.shell.host_programs, argv0=argv0, args=args or [],
    )
    commands.register(shell.builtins, kernel.get)
    shell.timing = lambda: _kernel_timing(kernel)
    return shell


def _kernel_timing(kernel: KernelHandle) -> Callable[[], str]:
    from aiosh.commands.observe import kernel_timing  # (loaded by the first `time`)

    return kernel_timing(kernel)


def apply_startup_options(shell: Shell, ns: argparse.Namespace) -> None:
    """`aiosh -e -u -x -f -o NAME`: the same as `set` at the top of the script."""
    for name in ("errexit", "nounset", "xtrace", "noglob"):
        if getattr(ns, name, False):
            setattr(shell.state, name, True)
    for name in getattr(ns, "set_o", []) or []:
        if name in ("errexit", "nounset", "xtrace", "noglob", "pipefail", "allexport"):
            setattr(shell.state, name, True)


def run_monitored(kernel: KernelHandle, config: Config, ns: argparse.Namespace, source: str | None) -> int:
    """`aiosh --monitor SCRIPT | -c COMMANDS`: the script runs on a thread, its output in the monitor's log panel."""
    from aiosh.monitor import run_monitor

    log = Pipe("monitor log")
    text = ns.command if ns.command is not None else source
    filename = "-c" if ns.command is not None else ns.script
    shell = make_shell(kernel, config, stdout=log, stderr=log, stdin=None, interactive=False,
                       argv0=ns.script or "aiosh", args=list(ns.args))
    result: dict[str, int] = {}

    def run() -> None:
        try:
            result["status"] = shell.run_source(text or "", filename=filename)
        finally:
            log.write(f"\n[script ended: status {result.get('status', 1)}; press q to leave]\n")

    worker = threading.Thread(target=run, name="aiosh-script", daemon=True)
    try:
        k = kernel.get()
        worker.start()
        run_monitor(k, log_source=log)
        if worker.is_alive():
            shell.hangup()
            worker.join(10)
        return result.get("status", 129)
    finally:
        kernel.shutdown()


def run_session(kernel: KernelHandle, config: Config, ns: argparse.Namespace, source: str | None) -> int:
    interactive = ns.command is None and source is None and sys.stdin.isatty() and sys.stdout.isatty()
    bg_out = bg_err = None
    if interactive:
        out, err = Pipe("stdout"), Pipe("stderr")
        bg_out, bg_err = Pipe("background stdout"), Pipe("background stderr")  # whole lines from background jobs
        screen = Screen()
        pumps = [Pump(out, "stdout", side=bg_out, screen=screen).start(),
                 Pump(err, "stderr", side=bg_err, screen=screen).start()]
    else:  # straight to the descriptors in the order written, so `> log 2>&1` interleaves as in bash
        out, err = CallbackPipe(fd_writer(1), "stdout"), CallbackPipe(fd_writer(2), "stderr")
        pumps = []
    reads_commands_from_stdin = ns.command is None and source is None and not interactive
    stdin = None if (interactive or reads_commands_from_stdin or sys.stdin.isatty()) else stdin_pipe("aiosh stdin")
    if ns.command is not None:
        argv0, args = (ns.script or "aiosh"), list(ns.args)
    elif source is not None:
        argv0, args = ns.script, list(ns.args)
    else:
        argv0, args = "aiosh", []
    shell = make_shell(kernel, config, stdout=out, stderr=err, stdin=stdin, interactive=interactive,
                       argv0=argv0, args=args)
    if bg_out is not None and bg_err is not None:
        shell.bg_stdout, shell.bg_stderr = bg_out, bg_err
    def flush_output() -> None:
        for p in pumps:
            p.drain(0.5)

    shell.flush_output = flush_output
    apply_startup_options(shell, ns)

    def on_term(signum: int, _frame: object) -> None:
        raise _Terminated(signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    for s in old:
        signal.signal(s, on_term)
    status = 0
    try:
        if interactive:
            from aiosh.commands.top import register_top
            from aiosh.repl import Repl

            k = kernel.get()
            register_top(shell, k, pumps)
            k.engine_start()  # in the background: the prompt comes at once, the first chat finds it loaded
            status = Repl(shell, k, pumps).run()
            shell.hangup()
        elif ns.command is not None:  # (the engine was started already if the commands name a model agent)
            status = shell.run_source(ns.command, filename="-c")
        elif source is not None:
            status = shell.run_source(source, filename=ns.script)
        else:
            text = sys.stdin.read()
            kernel.script = text  # (an engine starts with the kernel if the commands name a model agent)
            status = shell.run_source(text, filename=None)
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
        for pipe in (out, err, bg_out, bg_err):
            if pipe is not None:
                pipe.close()
        for p in pumps:
            p.join(5)
    return status
