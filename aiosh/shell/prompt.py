"""What the interactive prompt needs from the language: `PS1` escapes and `!!` / `!$` history expansion."""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .jobs import JobTable


class PromptSource(Protocol):
    """What the escapes read: a Shell, or an interpreter's PromptView (for `${x@P}`)."""

    @property
    def vars(self) -> Mapping[str, str]: ...
    @property
    def cwd(self) -> str: ...
    @property
    def jobs(self) -> JobTable: ...


class PromptView:
    """A PromptSource from parts (an interpreter has no Shell to hand over)."""

    def __init__(self, variables: Mapping[str, str], cwd: str, jobs: JobTable) -> None:
        self.vars = variables
        self.cwd = cwd
        self.jobs = jobs


def render_ps1(ps1: str, shell: PromptSource) -> str:
    """bash's prompt escapes: \\u \\h \\H \\w \\W \\$ \\j (jobs running) \\n \\t \\T \\d \\\\ \\[ \\] \\e \\a."""
    out: list[str] = []
    i = 0
    while i < len(ps1):
        c = ps1[i]
        if c != "\\" or i + 1 >= len(ps1):
            out.append(c)
            i += 1
            continue
        e = ps1[i + 1]
        i += 2
        out.append(_escape(e, shell))
    return "".join(out)


def _escape(e: str, shell: PromptSource) -> str:
    home = shell.vars.get("HOME", "")
    cwd = shell.cwd
    if e == "u":
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            return str(os.getuid())
    if e == "h":
        return socket.gethostname().split(".")[0]
    if e == "H":
        return socket.gethostname()
    if e == "w":
        if home and (cwd == home or cwd.startswith(home.rstrip("/") + "/")):
            return "~" + cwd[len(home.rstrip("/")) :]
        return cwd
    if e == "W":
        return "~" if home and cwd == home else (os.path.basename(cwd) or "/")
    if e == "$":
        return "#" if os.geteuid() == 0 else "$"
    if e == "j":
        return str(len(shell.jobs.running()))
    if e == "n":
        return "\n"
    if e == "t":
        return time.strftime("%H:%M:%S")
    if e == "T":
        return time.strftime("%I:%M:%S")
    if e == "d":
        return time.strftime("%a %b %d")
    if e == "e":
        return "\x1b"
    if e == "a":
        return "\a"
    if e in "[]":
        return ""
    if e == "\\":
        return "\\"
    return "\\" + e


class HistoryError(Exception):
    """`!!` with nothing before it: bash's `event not found`."""


def expand_history(line: str, previous: str | None) -> tuple[str, bool]:
    """`!!` → the previous command, `!$` → its last word, outside single quotes; (text, whether it changed)."""
    if "!" not in line:
        return line, False
    out: list[str] = []
    i = 0
    quote = ""
    changed = False
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            out.append(line[i : i + 2])
            i += 2
            continue
        if c == "'" and quote != '"':
            quote = "" if quote == "'" else "'"
        elif c == '"' and quote != "'":
            quote = "" if quote == '"' else '"'
        if c == "!" and quote != "'" and line[i + 1 : i + 2] in ("!", "$"):
            if previous is None:
                raise HistoryError(f"{line[i : i + 2]}: event not found")
            words = previous.split()
            out.append(previous if line[i + 1] == "!" else (words[-1] if words else ""))
            changed = True
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out), changed
