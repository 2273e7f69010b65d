"""Run aiosh with a started kernel: interactively on a terminal, or a script / -c / standard input.

(Interim front end of the foundation issue: each line goes to the `chat` agent and the answer streams back.
The shell issue replaces this with the full language.)
"""

from __future__ import annotations

import argparse
import sys

from kernel.config import Config
from kernel.streams import Pipe


def _ask(kernel, line: str) -> int:
    out, err = Pipe("stdout"), Pipe("stderr")
    pid = kernel.spawn("chat", [line], stdout=out, stderr=err)
    while chunk := out.read():
        sys.stdout.write(chunk)
        sys.stdout.flush()
    sys.stderr.write(err.read_all())
    return kernel.wait(pid)[1]


def run_session(kernel, config: Config, ns: argparse.Namespace, source: str | None) -> int:
    status = 0
    try:
        if ns.command is not None:
            lines = ns.command.splitlines()
        elif source is not None:
            lines = source.splitlines()
        elif sys.stdin.isatty():
            from prompt_toolkit import PromptSession

            session = PromptSession()
            while True:
                try:
                    line = session.prompt("aiosh$ ")
                except EOFError:
                    break
                except KeyboardInterrupt:
                    continue
                if line.strip() in ("exit", "quit"):
                    break
                if line.strip():
                    status = _ask(kernel, line)
            return status
        else:
            lines = sys.stdin.read().splitlines()
        for line in lines:
            if line.strip():
                status = _ask(kernel, line)
        return status
    finally:
        kernel.shutdown()
