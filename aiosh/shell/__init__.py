"""aiosh's shell language as a library: parse, expand and run bash-compatible command lines over agents.

    from aiosh.shell import Shell
    sh = Shell(agents=host, stdout=print_fn, stderr=print_fn, interactive=True)
    status = sh.run_line("sleep 5 & jobs")

See `Shell` for the entry points, `AgentHost` for what the kernel side implements, and
`aiosh.shell.builtins.registry` for adding commands.
"""

from __future__ import annotations

from .agents import AgentHost
from .builtins import BuiltinContext, BuiltinRegistry, registry
from .errors import ShellError, ShellSyntaxError
from .jobs import Job, JobTable
from .parser import Parser, parse
from .shell import Shell

__all__ = [
    "AgentHost",
    "BuiltinContext",
    "BuiltinRegistry",
    "Job",
    "JobTable",
    "Parser",
    "Shell",
    "ShellError",
    "ShellSyntaxError",
    "parse",
    "registry",
]
