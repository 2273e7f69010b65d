"""Start the engine's process before the kernel, when a fresh aiosh will most likely need it.

The engine process takes ~0.6 s to be ready (a Python start, llama.cpp's import, the model load) and the kernel
~0.2 s to import and start; started one after the other, a fresh `aiosh -c 'chat …'` answered later than when the
engine ran inside aiosh. So the front end starts the engine's process first, on a guess made without the kernel:
an interactive shell (it starts the engine anyway), or a script that names a command that is neither a builtin,
a keyword, a function it defines, nor a program on PATH (an agent, most likely). The kernel, once started, knows
whether an agent the script names calls the model: it gives the process its spec, or ends it before it has
loaded anything (`kernel.engine_spawn`). `aiosh -c 'echo hi'` or `ls | wc -l` start nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from typing import Any

from aiosh.kernel.config import Config


def engine_wanted(config: Config, script: str | None, interactive: bool) -> bool:
    """Whether to start the engine's process now (see the module's text)."""
    if not config.kernel.engine_process or config.kernel.backend != "local" or config.backends:
        return False  # (in a thread it loads with the kernel; with remote servers the kernel starts at once)
    if interactive:
        return True
    return script is not None and bool(unknown_commands(script))


def unknown_commands(script: str) -> set[str]:
    """The command names of `script` that no builtin, keyword, function of the script or program on PATH
    answers to; empty when the script does not parse (the kernel then decides alone)."""
    from aiosh.shell.builtins import registry
    from aiosh.shell.builtins.lang import KEYWORDS
    from aiosh.shell.errors import ShellSyntaxError
    from aiosh.shell.nodes import FunctionDef, SimpleCommand
    from aiosh.shell.parser import parse

    try:
        tree = parse(script)
    except (ShellSyntaxError, RecursionError, ValueError):
        return set()
    names: set[str] = set()
    defined: set[str] = set()
    for node in _nodes(tree):
        if isinstance(node, FunctionDef):
            defined.add(node.name)
        elif isinstance(node, SimpleCommand) and node.words:
            name = node.words[0].literal()
            if name:
                names.add(name)
    from aiosh.commands.catalog import FAMILIES

    builtins = set(registry.names()).union(*FAMILIES.values(), {"top"})
    return {n for n in names - defined - builtins - KEYWORDS if "/" not in n and "=" not in n and not shutil.which(n)}


def _nodes(node: Any, depth: int = 0) -> Iterator[Any]:
    """Every node of a parsed script, command substitutions and function bodies included."""
    if depth > 200:
        return
    if isinstance(node, (list, tuple)):
        for item in node:
            yield from _nodes(item, depth + 1)
    elif is_dataclass(node):
        yield node
        for f in fields(node):
            yield from _nodes(getattr(node, f.name), depth + 1)
