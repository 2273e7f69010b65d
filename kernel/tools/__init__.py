"""The tool manager: tools are plugins (typed Python functions) that agents call through the kernel.

A tool is a function with type hints and a docstring, registered with `@tool(...)`:

    from aiosh.api import ToolContext, tool

    @tool(name="read_file", timeout=5, paths={"path": "read"})
    def read_file(ctx: ToolContext, path: str, max_chars: int = 20000) -> str:
        '''Read a text file in the working folder.

        Args:
            path: the file, relative to the working folder
            max_chars: return at most this many characters
        '''
        with open(ctx.open(path, "read"), encoding="utf-8", errors="replace") as f:  # a checked descriptor
            return f.read(max_chars)

Its JSON schema comes from the signature (str, int, float, bool, list[X], dict, Literal[...], Optional[X];
a parameter with a default is not required) and the docstring (the first paragraph describes the tool, an
`Args:` section its parameters). A first parameter annotated `ToolContext` (or named `ctx`) receives the call's
context: the calling agent's pid and working folder, `ctx.open(p, mode)` (a descriptor of a regular file inside
the folder, walked without following links out and access-checked; `ctx.resolve` for the folder and name,
`ctx.path` for the name only — never do I/O on a path string, it can be raced),
`ctx.search_memory(...)`, and `ctx.cancelled` (set when the call timed out).

An agent calls `await ctx.tool(name, **args)`. The kernel checks the `tool:NAME` capability, validates the
arguments against the schema (a wrong type, a missing or an unknown argument is a `ToolError` with one line),
pre-checks the path arguments the tool declares (`paths=`), asks the user to confirm an irreversible tool, then
runs it on a thread of its own under its timeout and per-tool concurrency limit, and records the call as a
syscall of kind "tool". A tool that raises ends the call with `ToolError`; one that hangs times out and its
thread is abandoned (it keeps its concurrency slot until it really ends, so a tool that always hangs can only
ever hold `concurrency` threads): neither stalls the kernel or other agents. A `PermissionError` (a denied
capability, a path outside the working folder) reaches the agent as `PermissionError`.

The parts: spec.py (the decorator and the schema), validate.py (arguments against it), grammar.py (the model's
choice of a call), context.py (what a running tool knows), manager.py (lookup, checks, the run).
"""

from .context import ToolContext
from .errors import ToolError
from .grammar import (
           MAX_ANSWER,
           MAX_ARG_STRING,
           ToolChoice,
           choice_grammar,
           choice_schema,
           parse_choice,
           tools_prompt,
)
from .manager import ToolManager, ToolProvider
from .spec import MAX_STRING, ToolSpec, tool
from .validate import describe_signature, type_name, validate_args

__all__ = ["MAX_ANSWER", "MAX_ARG_STRING", "MAX_STRING", "ToolChoice", "ToolContext", "ToolError", "ToolManager",
           "ToolProvider", "ToolSpec", "choice_grammar", "choice_schema", "describe_signature", "parse_choice", "tool",
           "tools_prompt", "type_name", "validate_args"]
