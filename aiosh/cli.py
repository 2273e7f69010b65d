"""`aiosh` on the command line: argv → interactive shell, script, `-c`, or commands on stdin; the exit status."""

from __future__ import annotations

import argparse
import os
import sys

from aiosh.boot import BootError, KernelHandle, preflight, read_config
from aiosh.kernel.engine_spawn import prestart
from aiosh.kernel.startup_checks import engine_load_args
from aiosh.prestart import engine_wanted


class _VersionAction(argparse.Action):
    """`--version`, reading the installed metadata only when asked (importlib.metadata costs start-up time)."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kw: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("aiosh")
        except PackageNotFoundError:
            v = "unknown"
        print(f"aiosh {v}")
        parser.exit()


def decode_script(data: bytes) -> str:
    """A script's text: UTF-8, with each byte that is not part of a UTF-8 character kept as itself (a
    surrogate escape), as bash runs such files byte by byte: a stray Latin-1 byte in a comment does not stop the
    script, and one in `echo` comes out as the same byte."""
    return data.decode("utf-8", "surrogateescape")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aiosh",
        description="A shell for LLM agents: run, watch and control agents the way bash runs processes.",
        epilog="With no SCRIPT and no -c, commands are read from the terminal (interactive) or from standard input.",
    )
    p.add_argument("-c", dest="command", metavar="COMMANDS", help="run COMMANDS and exit")
    p.add_argument("--config", metavar="PATH", help="read settings from PATH (over ./aiosh.toml and the user file)")
    p.add_argument("--verbose", action="store_true", help="show llama.cpp's own log lines")
    p.add_argument("--monitor", action="store_true",
                   help="run SCRIPT or -c COMMANDS with the live monitor open and their output in a log panel")
    p.add_argument("--version", action=_VersionAction, nargs=0, help="show the version and exit")
    # bash's start-up options, so scripts that run `$SH -e -c …` work
    p.add_argument("-e", dest="errexit", action="store_true", help="exit when a command fails (set -e)")
    p.add_argument("-u", dest="nounset", action="store_true", help="an unset variable is an error (set -u)")
    p.add_argument("-x", dest="xtrace", action="store_true", help="print commands as they run (set -x)")
    p.add_argument("-f", dest="noglob", action="store_true", help="no pathname expansion (set -f)")
    p.add_argument("-o", dest="set_o", action="append", default=[], metavar="OPTION", help="set -o OPTION")
    p.add_argument("-i", dest="force_interactive", action="store_true",
                   help="accepted for bash compatibility (interactive when on a terminal)")
    p.add_argument("--norc", "--noprofile", dest="norc", action="store_true",
                   help="accepted for bash compatibility (aiosh reads no rc file)")
    p.add_argument("--rcfile", "--init-file", dest="rcfile", metavar="FILE", help="accepted for bash compatibility")
    p.add_argument("script", nargs="?", metavar="SCRIPT", help="a file of aiosh commands")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="$1, $2 … for SCRIPT (or $0 … for -c)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:  # argparse prints its own one-line usage error
        return int(exc.code or 0)
    try:
        config = read_config(ns.config)
        source = None
        if ns.script is not None and ns.command is None:
            try:
                with open(ns.script, "rb") as fh:
                    source = decode_script(fh.read())
            except OSError as exc:
                print(f"aiosh: {ns.script}: {exc.strerror or exc}", file=sys.stderr)
                return 127 if isinstance(exc, FileNotFoundError) else 126
        if ns.monitor and (ns.command is None and ns.script is None):
            raise BootError("--monitor: give a SCRIPT or -c COMMANDS (in the shell, use top)", 2)
        if ns.monitor and not (sys.stdout.isatty() and sys.stdin.isatty()):
            raise BootError("--monitor: needs a terminal", 2)
        preflight(config)
        text = ns.command if ns.command is not None else source
        interactive = text is None and sys.stdin.isatty() and sys.stdout.isatty() and not ns.monitor
        if engine_wanted(config, text, interactive):
            prestart(engine_load_args(config), verbose=ns.verbose)  # it loads the model while aiosh sets itself up
        kernel = KernelHandle(config, verbose=ns.verbose, script=text, on_fail=_end_aiosh)
        if config.backends:  # remote servers are checked by starting them: at start-up, as one line
            kernel.get()
    except BootError as exc:
        print(f"aiosh: {exc}", file=sys.stderr)
        return exc.status
    from aiosh.session import run_monitored, run_session

    if ns.monitor:
        return run_monitored(kernel, config, ns, source)
    return run_session(kernel, config, ns, source)


def _end_aiosh(exc: BootError) -> None:
    """The kernel could not start at its first use, after start-up (the checks there leave little that can fail
    here): the one line, and aiosh ends with the status it would have had at start-up."""
    try:
        sys.stdout.flush()
    finally:
        os.write(2, f"aiosh: {exc}\n".encode())
        os._exit(exc.status)


if __name__ == "__main__":
    sys.exit(main())
