"""The tool manager: tools are plugins (typed Python functions) that agents call through the kernel.

A tool is a function with type hints and a docstring, registered with `@tool(...)`:

    from .tools import ToolContext, tool

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
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import json
import os
import re
import stat
import sys
import threading
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from . import safepath
from .safepath import Resolved
from .toolworker import STARTUP_S, WorkerCrashed, WorkerPool, WorkerTimeout

if TYPE_CHECKING:
    from .agent import AgentContext
    from .kernel import Kernel

__all__ = ["ToolChoice", "ToolContext", "ToolError", "ToolManager", "ToolSpec", "choice_grammar", "choice_schema",
           "describe_signature", "parse_choice", "tool", "tools_prompt", "type_name", "validate_args"]

MAX_STRING = 4000  # maxLength of a string argument in the grammar the model samples with (see call_tool)


class ToolError(Exception):
    """A tool call that could not be made or failed; the message is one line that names the tool."""


# ── declaring a tool ────────────────────────────────────────────────────────────────────────────────────────

@dataclass
class ToolSpec:
    """What the kernel knows about a tool before calling it."""

    name: str
    fn: Callable[..., Any]
    description: str = ""
    parameters: dict = field(default_factory=dict)  # JSON schema of the arguments (an object)
    irreversible: bool = False  # asks the user (y/N) before each call
    timeout: float = 10.0
    concurrency: int = 4  # calls of this tool running at once (over all agents)
    paths: dict[str, str] = field(default_factory=dict)  # argument -> "read" | "write" | "delete": checked first
    example: dict[str, Any] | None = None  # arguments of a typical call, shown to the model
    ctx_param: str | None = None  # the parameter that receives the ToolContext
    module: str = ""
    # Runs in a worker process under CPU and memory limits, killed on timeout (tools that can burn CPU or memory)
    isolated: bool = False
    cpu_s: float = 5.0  # CPU seconds of one isolated call
    memory_mb: int = 512  # address space an isolated call may add
    confirm: Callable[[Any, dict], str] | None = None  # (ctx, args) -> what the y/N question should say it does

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly (for tests and for reuse in other tools)."""
        return self.fn(*args, **kwargs)


def tool(
    name: str | Callable[..., Any] | None = None, *, description: str = "", irreversible: bool = False,
    timeout: float = 10.0, concurrency: int = 4, paths: dict[str, str] | None = None,
    example: dict[str, Any] | None = None, isolated: bool = False, cpu_s: float | None = None,
    memory_mb: int | None = None, confirm: Callable[[Any, dict], str] | None = None,
) -> Any:
    """Decorator: turn a typed function into a ToolSpec that plugin discovery finds.

    `@tool` alone names the tool after the function; `@tool(name="x", irreversible=True, timeout=5,
    concurrency=1, paths={"path": "write"}, example={"path": "notes.txt"})` sets the rest. `isolated=True` runs
    it in a worker process under `cpu_s` CPU seconds and `memory_mb` more address space, killed on timeout (for
    tools that can burn CPU or memory; their `paths` must be "read": the kernel opens them and hands the worker
    the descriptors). `confirm(ctx, args)` says in the y/N question of an irreversible tool what it will do. A parameter annotated
    `Annotated[str, {"pattern": "^[0-9+*/ ()-]+$"}]` adds JSON-schema constraints (pattern, minLength, maxLength,
    minimum, maximum): checked on every call, and the grammar the model samples with follows them.
    """
    if callable(name):
        return tool()(name)
    if timeout <= 0:
        raise ValueError("tool timeout must be > 0")
    if concurrency < 1:
        raise ValueError("tool concurrency must be ≥ 1")

    def wrap(fn: Callable[..., Any]) -> ToolSpec:
        tool_name = name or fn.__name__
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", tool_name):
            raise ValueError(f"tool name {tool_name!r}: letters, digits, _ . - only")
        summary, arg_docs = _parse_docstring(fn.__doc__ or "")
        params, ctx_param = _schema_of(fn, tool_name, arg_docs)
        for arg, mode in (paths or {}).items():
            if arg not in params["properties"] or mode not in ("read", "write", "delete"):
                raise ValueError(f"tool {tool_name}: paths: {arg!r} must be a parameter, mode 'read', 'write' "
                                 "or 'delete'")
            if isolated and mode != "read":
                raise ValueError(f"tool {tool_name}: an isolated tool may only read its paths")
        spec = ToolSpec(
            name=tool_name, fn=fn, description=description or summary, parameters=params,
            irreversible=irreversible, timeout=float(timeout), concurrency=int(concurrency),
            paths=dict(paths or {}), ctx_param=ctx_param, module=fn.__module__, isolated=bool(isolated),
            cpu_s=float(cpu_s if cpu_s is not None else min(float(timeout), 5.0)),
            memory_mb=int(memory_mb if memory_mb is not None else 512), confirm=confirm,
        )
        if spec.is_async and isolated:
            raise ValueError(f"tool {tool_name}: an isolated tool must be a plain (not async) function")
        if example is not None:
            try:
                spec.example = validate_args(spec, dict(example))
            except ToolError as exc:
                raise ValueError(f"tool {tool_name}: example: {exc}") from None
        return spec

    return wrap


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(the first paragraph, {arg: description}) from a Google-style docstring."""
    text = inspect.cleandoc(doc)
    paras = re.split(r"\n\s*\n", text, maxsplit=1)
    summary = " ".join(paras[0].split()) if paras and paras[0] else ""
    if re.match(r"(Args|Arguments|Parameters):", summary):
        summary = ""
    args: dict[str, str] = {}
    in_args = False
    current: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if re.fullmatch(r"(Args|Arguments|Parameters):", stripped):
            in_args, current = True, None
            continue
        if not in_args:
            continue
        if not stripped:
            current = None
            continue
        if not line.startswith((" ", "\t")) and stripped.endswith(":"):
            in_args = False  # the next section (Returns:, Raises: …)
            continue
        m = re.match(r"(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)", stripped)
        if m and (current is None or len(line) - len(line.lstrip()) <= _indent_of_args(text)):
            current = m.group(1).lstrip("*")
            args[current] = m.group(3).strip()
        elif current is not None:
            args[current] = (args[current] + " " + stripped).strip()
    return summary, args


def _indent_of_args(text: str) -> int:
    """The indentation of the first entry under `Args:` (continuation lines are indented deeper)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.fullmatch(r"\s*(Args|Arguments|Parameters):\s*", line):
            for nxt in lines[i + 1:]:
                if nxt.strip():
                    return len(nxt) - len(nxt.lstrip())
    return 0


def _type_schema(tp: Any, where: str) -> dict:
    """JSON schema of one Python type annotation (the subset a model can fill in)."""
    origin = typing.get_origin(tp)
    targs = typing.get_args(tp)
    if origin is typing.Annotated:
        schema = _type_schema(targs[0], where)
        for extra in targs[1:]:
            if isinstance(extra, dict):
                schema.update(extra)
        pattern = schema.get("pattern")
        if pattern is not None:
            if not (isinstance(pattern, str) and pattern.startswith("^") and pattern.endswith("$")):
                raise TypeError(f"{where}: a pattern must be a string anchored with ^ and $")
            re.compile(pattern)
        return schema
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is dict or origin is dict:
        return {"type": "object"}
    if tp is list or origin in (list, tuple) and (origin is list or (len(targs) == 2 and targs[1] is Ellipsis)):
        item = targs[0] if targs else str
        return {"type": "array", "items": _type_schema(item, where)}
    if origin is Literal:
        values = list(targs)
        kinds = {type(v) for v in values}
        if kinds <= {str}:
            return {"type": "string", "enum": values}
        if kinds <= {int}:
            return {"type": "integer", "enum": values}
        raise TypeError(f"{where}: Literal values must be all strings or all integers")
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in targs if a is not type(None)]
        if len(rest) == 1 and len(targs) == 2:
            return {"anyOf": [_type_schema(rest[0], where), {"type": "null"}]}
        return {"anyOf": [_type_schema(a, where) if a is not type(None) else {"type": "null"} for a in targs]}
    raise TypeError(f"{where}: unsupported type {tp!r} (str, int, float, bool, list[...], dict, Literal, Optional)")


def _schema_of(fn: Callable[..., Any], tool_name: str, arg_docs: dict[str, str]) -> tuple[dict, str | None]:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # noqa: BLE001
        raise TypeError(f"tool {tool_name}: cannot read its type hints: {exc}") from None
    props: dict[str, dict] = {}
    required: list[str] = []
    ctx_param: str | None = None
    for i, (pname, p) in enumerate(inspect.signature(fn).parameters.items()):
        hint = hints.get(pname, inspect.Parameter.empty)
        if i == 0 and (hint is ToolContext or pname == "ctx" or typing.get_origin(hint) is typing.Annotated
                       and typing.get_args(hint)[0] is ToolContext):
            ctx_param = pname
            continue
        where = f"tool {tool_name}: parameter {pname}"
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise TypeError(f"{where}: *args, **kwargs and positional-only parameters are not supported")
        if hint is inspect.Parameter.empty:
            raise TypeError(f"{where}: needs a type hint")
        schema = _type_schema(hint, where)
        if arg_docs.get(pname):
            schema["description"] = arg_docs[pname]
        if p.default is p.empty:
            required.append(pname)
        else:
            try:
                json.dumps(p.default)
                schema["default"] = p.default
            except (TypeError, ValueError):
                pass
        props[pname] = schema
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}, ctx_param


# ── validation ──────────────────────────────────────────────────────────────────────────────────────────────

_JSON_TYPE = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
              "array": "a list", "object": "an object", "null": "null"}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _want(schema: dict) -> str:
    if "anyOf" in schema:
        return " or ".join(_want(s) for s in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    t = schema.get("type", "")
    if t == "array":
        return f"a list of {_want(schema.get('items', {})).removeprefix('a ').removeprefix('an ')}s"
    return _JSON_TYPE.get(t, t)


def _check(value: Any, schema: dict, where: str) -> Any:
    """The value if it matches the schema (ints widened to float for numbers), else ValueError(one line)."""
    if "anyOf" in schema:
        for alt in schema["anyOf"]:
            try:
                return _check(value, alt, where)
            except ValueError:
                continue
        raise ValueError(f"{where}: expected {_want(schema)}, got {_type_name(value)}")
    t = schema.get("type")
    ok = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list | tuple),
        "object": lambda v: isinstance(v, dict),
        "null": lambda v: v is None,
    }.get(t or "", lambda v: True)
    if not ok(value):
        raise ValueError(f"{where}: expected {_want(schema)}, got {_type_name(value)} {_short(value)}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{where}: expected {_want(schema)}, got {_short(value)}")
    if t == "string":
        if len(value) < schema.get("minLength", 0):
            raise ValueError(f"{where}: at least {schema['minLength']} characters, got {len(value)}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise ValueError(f"{where}: at most {schema['maxLength']} characters, got {len(value)}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise ValueError(f"{where}: {_short(value)} does not match {schema['pattern']}")
    if t in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            raise ValueError(f"{where}: at least {schema['minimum']}, got {value}")
        if "maximum" in schema and value > schema["maximum"]:
            raise ValueError(f"{where}: at most {schema['maximum']}, got {value}")
    if t == "number":
        return float(value)
    if t == "array":
        items = schema.get("items", {})
        return [_check(v, items, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate_args(spec: ToolSpec, args: dict[str, Any]) -> dict[str, Any]:
    """Arguments checked against the tool's schema; ToolError (one line naming the tool) when they do not fit."""
    props = spec.parameters.get("properties", {})
    unknown = [k for k in args if k not in props]
    if unknown:
        takes = ", ".join(props) or "no arguments"
        raise ToolError(f"{spec.name}: unknown argument {unknown[0]!r} (takes: {takes})")
    missing = [k for k in spec.parameters.get("required", []) if k not in args]
    if missing:
        raise ToolError(f"{spec.name}: missing argument {missing[0]!r} ({describe_signature(spec)})")
    out: dict[str, Any] = {}
    for k, v in args.items():
        try:
            out[k] = _check(v, props[k], k)
        except ValueError as exc:
            raise ToolError(f"{spec.name}: {exc}") from None
    return out


def type_name(schema: dict) -> str:
    """A schema's type in a word or two: string, integer, number, boolean, list[string], object, "a"|"b", X|null."""
    if "anyOf" in schema:
        return "|".join(type_name(s) for s in schema["anyOf"])
    if "enum" in schema:
        return "|".join(json.dumps(v) for v in schema["enum"])
    t = schema.get("type", "any")
    if t == "array":
        return f"list[{type_name(schema.get('items', {}))}]"
    return str(t)


def describe_signature(spec: ToolSpec) -> str:
    """`name(a: string, b?: integer = 3)`: the schema in one line (for `tools` and error messages)."""
    props = spec.parameters.get("properties", {})
    req = set(spec.parameters.get("required", []))
    parts = []
    for k, s in props.items():
        want = type_name(s)
        text = f"{k}: {want}" if k in req else f"{k}?: {want}"
        if "default" in s:
            text += f" = {json.dumps(s['default'])}"
        parts.append(text)
    return f"{spec.name}({', '.join(parts)})"


# ── tool calls by the model: a grammar over the allowed tools' schemas ────────────────────────────────────

MAX_ARG_STRING = 200  # maxLength of a string argument the model may write (keeps replies short and bounded)
MAX_ANSWER = 300  # maxLength of a final answer


@dataclass
class ToolChoice:
    """What the model chose (from `ctx.llm.call_tool`): a tool call (`tool`, `args`) or an `answer`."""

    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None
    raw: str = ""  # the model's JSON as it wrote it (to append as its turn)

    @property
    def is_answer(self) -> bool:
        return self.tool is None


def _capped(schema: dict, max_string: int, required: bool = False) -> dict:
    """A schema for the grammar: descriptions and defaults dropped, every free string given a maxLength (and a
    minLength of 1 when it is a required argument: a small model otherwise closes the quotes at once)."""
    out: dict = {}
    for k, v in schema.items():
        if k in ("description", "default", "title"):
            continue
        if k in ("properties",):
            need = set(schema.get("required", ()))
            out[k] = {name: _capped(sub, max_string, name in need) for name, sub in v.items()}
        elif k in ("items",):
            out[k] = _capped(v, max_string)
        elif k in ("anyOf", "oneOf"):
            out[k] = [_capped(sub, max_string) for sub in v]
        else:
            out[k] = v
    if out.get("type") == "string" and "enum" not in out and "pattern" not in out:
        out["maxLength"] = min(int(out.get("maxLength", max_string)), max_string)
        if required:
            out.setdefault("minLength", 1)
    if out.get("type") == "array":
        out.setdefault("maxItems", 16)
    return out


def choice_schema(specs: list[ToolSpec], *, max_string: int = MAX_ARG_STRING, max_answer: int = MAX_ANSWER,
                  answer: bool = True) -> dict:
    """The JSON schema of one reply: `{"tool": NAME, "args": {...}}` for one of `specs`, or `{"answer": "..."}`."""
    alts = [{"type": "object", "properties": {"tool": {"const": s.name},
                                              "args": _capped(s.parameters, max_string)},
             "required": ["tool", "args"], "additionalProperties": False} for s in specs]
    if answer or not alts:
        alts.append({"type": "object", "properties": {"answer": {"type": "string", "minLength": 1,
                                                                 "maxLength": max_answer}},
                     "required": ["answer"], "additionalProperties": False})
    return alts[0] if len(alts) == 1 else {"oneOf": alts}


def choice_grammar(specs: list[ToolSpec], **kw: Any) -> str:
    """GBNF for `choice_schema` (through llama.cpp's own JSON-schema converter)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(choice_schema(specs, **kw)), prop_order=["tool", "args", "answer"])
    # JSON strings hold no raw control characters (llama.cpp's C++ converter says so too; this Python port lets
    # them through, and a small model then fills a string with newlines and chatter).
    return gbnf.replace(r'char ::= [^"\\]', r'char ::= [^"\\\x7F\x00-\x1F]', 1)


def tools_prompt(specs: list[ToolSpec], answer: bool = True) -> str:
    """The system text that tells the model which tools it has and how to call them."""
    lines = ["You can use tools. Reply with one JSON object and nothing else."]
    if specs:
        lines.append('To call a tool: {"tool": "NAME", "args": {...}}')
    if answer:
        lines.append('When you know the answer: {"answer": "..."}')
    if specs:
        lines.append("Tools:")
        for s in specs:
            lines.append(f"- {describe_signature(s)}: {s.description}")
            if s.example is not None:
                lines.append("  Example: " + json.dumps({"tool": s.name, "args": s.example}, ensure_ascii=False))
    return "\n".join(lines)


def parse_choice(text: str, offered: list[str]) -> ToolChoice:
    """The model's reply as a ToolChoice; ToolError when it is not one (cut off by max_tokens, say)."""
    try:
        data = json.loads(text, strict=False)
    except ValueError:
        raise ToolError(f"call_tool: the model's reply is not complete JSON ({len(text)} characters): "
                        f"{_short(text)}") from None
    if isinstance(data, dict) and isinstance(data.get("answer"), str) and "tool" not in data:
        return ToolChoice(answer=data["answer"], raw=text.strip())
    if isinstance(data, dict) and data.get("tool") in offered and isinstance(data.get("args", {}), dict):
        return ToolChoice(tool=data["tool"], args=dict(data.get("args") or {}), raw=text.strip())
    raise ToolError(f"call_tool: the model's reply is neither a tool call nor an answer: {_short(text)}")


# ── the context a tool runs with ────────────────────────────────────────────────────────────────────────────

class ToolContext:
    """What a running tool knows of its caller; methods are safe to call from the tool's thread."""

    def __init__(self, manager: ToolManager, spec: ToolSpec, pid: int, agent: str, cwd: str,
                 conversations: list[str]) -> None:
        self._manager = manager
        self.tool = spec.name
        self.pid = pid
        self.agent = agent
        self.cwd = os.path.realpath(cwd)
        self.cancelled = threading.Event()  # set when the call timed out: a long tool may stop early
        self._conversations = conversations
        self._checked: set[tuple[str, str]] = set()

    def resolve(self, path: str, mode: Literal["read", "write"] = "read", *, follow: bool = True,
                create_dirs: bool = False) -> Resolved:
        """Where `path` leads inside the working folder, as an open folder and a name in it (see safepath.py),
        if this agent may `mode` it; else PermissionError. Close the result (it is a context manager).

        The path is walked from a descriptor of the working folder, one component at a time, never through a
        symbolic link that leads out; `follow=False` keeps a symbolic link as the last component (to delete the
        link itself). `create_dirs` creates missing folders on the way, after the capability check. Refused:
        absolute paths, `..` above the folder, links out of it, and paths the agent's `read:`/`write:`
        capabilities do not cover. Every answer is audited, naming where the path really leads."""
        if mode not in ("read", "write"):
            raise ValueError(f"mode must be 'read' or 'write', not {mode!r}")
        if not isinstance(path, str) or not path or "\0" in path:
            raise ToolError(f"{self.tool}: invalid path {path!r}")
        access = self._manager.kernel.access
        if os.path.isabs(path) or path.startswith("~"):
            access.record(self.pid, f"{mode}:{path}", "deny", f"{self.tool}: absolute path")
            raise PermissionError(f"{self.tool}: {path}: absolute paths are refused (use a path relative to the "
                                  "working folder)")
        res = self._walk(path, mode, follow, False)
        try:
            self._check(res.real, mode, path)
            if create_dirs and len(res.missing) > 1:
                res.close()
                res = self._walk(path, mode, follow, True)
                self._check(res.real, mode, path)
        except BaseException:
            res.close()
            raise
        return res

    def _walk(self, path: str, mode: str, follow: bool, create: bool) -> Resolved:
        try:
            root = safepath.open_root(self.cwd)
        except OSError as exc:
            raise ToolError(f"{self.tool}: working folder {self.cwd}: {exc.strerror or exc}") from None
        try:
            return safepath.resolve(root, self.cwd, path, follow_last=follow, create_dirs=create)
        except safepath.Outside:
            self._manager.kernel.access.record(self.pid, f"{mode}:{path}", "deny",
                                               f"{self.tool}: outside the working folder")
            raise PermissionError(f"{self.tool}: {path}: outside the working folder") from None
        except OSError as exc:
            raise ToolError(f"{self.tool}: {path}: {_walk_error(exc)}") from None
        finally:
            os.close(root)

    def _check(self, real: str, mode: str, path: str) -> None:
        if (real, mode) in self._checked:
            return
        if not self._manager.kernel.access.check(self.pid, f"{mode}:{real}", f"{self.tool} {path}"):
            raise PermissionError(f"{mode}:{path}: {self.agent}[{self.pid}] may not {mode} {path}")
        self._checked.add((real, mode))

    def path(self, path: str, mode: Literal["read", "write"] = "read", *, follow: bool = True) -> str:
        """The real path `path` leads to inside the working folder, if this agent may `mode` it; else
        PermissionError. For naming and checking only: a path string can be raced (a folder on it swapped for a
        symbolic link), so do the I/O on what `open` or `resolve` returns, never on this string."""
        with self.resolve(path, mode, follow=follow) as res:
            return res.real

    def open(self, path: str, mode: Literal["read", "write"] = "read", *, append: bool = False,
             folder: bool = False) -> int:
        """A descriptor of the regular file (or, with `folder`, the folder) `path` names inside the working
        folder, checked as `resolve` does; the caller closes it. "write" creates the file (and its folders) and
        empties it unless `append`. Refused with one line: FIFOs, devices and sockets (opened with O_NONBLOCK, so
        a FIFO never hangs the call, and checked with fstat), and regular files with more than one hard link (a
        hard link to a file outside the folder is that file)."""
        with self.resolve(path, mode, create_dirs=(mode == "write")) as res:
            if res.missing and (mode == "read" or len(res.missing) > 1):
                raise ToolError(f"{self.tool}: {path}: no such {'folder' if folder else 'file'}")
            if not res.missing:
                self._vet(res.lstat(), path, folder, mode)
            if folder:
                flags = os.O_RDONLY | os.O_DIRECTORY
            elif mode == "read":
                flags = os.O_RDONLY | os.O_NONBLOCK
            else:
                flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | (os.O_APPEND if append else 0)
            try:
                fd = res.open(flags)
            except OSError as exc:
                raise ToolError(f"{self.tool}: {path}: {_open_error(exc, folder)}") from None
        try:
            self._vet(os.fstat(fd), path, folder, mode)  # what was opened, whatever happened since the walk
            if mode == "write" and not append:
                os.ftruncate(fd, 0)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _vet(self, st: os.stat_result, path: str, folder: bool, how: str) -> None:
        mode = st.st_mode
        if folder:
            if not stat.S_ISDIR(mode):
                raise ToolError(f"{self.tool}: {path}: not a folder")
            return
        if stat.S_ISDIR(mode):
            raise ToolError(f"{self.tool}: {path}: is a directory" + (" (use list_dir)" if self.tool == "read_file"
                                                                       else ""))
        if stat.S_ISLNK(mode):
            raise PermissionError(f"{self.tool}: {path}: replaced by a symbolic link while in use")
        if not stat.S_ISREG(mode):
            raise ToolError(f"{self.tool}: {path}: not a regular file ({_kind(mode)}): refused")
        if st.st_nlink > 1:
            self._manager.kernel.access.record(self.pid, f"{how}:{path}", "deny",
                                               f"{self.tool}: {st.st_nlink} hard links")
            raise PermissionError(f"{self.tool}: {path}: has {st.st_nlink} hard links (another name may be "
                                  "outside the working folder): refused")

    def search_memory(self, query: str, limit: int = 5) -> list:
        """Full-text search over the calling agent's own memory and messages (SearchHit rows, best first)."""
        mm = self._manager.kernel.memory
        if mm.storage.enabled:
            return mm.storage.search(query, pid=self.pid, conversations=self._conversations, limit=limit)
        return mm.local_search(self.pid, query, limit)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def _walk_error(exc: OSError) -> str:
    if exc.errno == errno.ENOTDIR:
        return "a component of the path is not a folder"
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    if exc.errno == errno.ENOENT:
        return "no such folder"
    return exc.strerror or str(exc)


def _open_error(exc: OSError, folder: bool) -> str:
    if exc.errno == errno.ENOENT:
        return f"no such {'folder' if folder else 'file'}"
    if exc.errno == errno.ELOOP:
        return "replaced by a symbolic link while in use: refused"
    if exc.errno == errno.ENOTDIR:
        return "not a folder"
    if exc.errno == errno.ENXIO:
        return "not a regular file (a FIFO with no reader): refused"
    return exc.strerror or str(exc)


class ToolProvider(Protocol):
    """A source of tools besides plugins (kernel.mcp.McpManager)."""

    def owns(self, name: str) -> bool: ...

    def tools(self, *, start: bool = True) -> dict[str, ToolSpec]: ...

    async def atools(self) -> dict[str, ToolSpec]: ...


# ── the manager ─────────────────────────────────────────────────────────────────────────────────────────────

class ToolManager:
    """Looks tools up (through the plugin registry), checks and runs calls. `call` runs on the kernel loop."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._sems: dict[str, asyncio.Semaphore] = {}
        self._running: dict[str, int] = {}  # threads of each tool that have not ended (timed-out ones included)
        self._lock = threading.Lock()
        # Processes for isolated tools (calculator, sql_query …), started at the first such call: a worker's
        # start-up (its imports) does not count against the call's timeout.
        self.workers = WorkerPool()
        self._providers: list[ToolProvider] = []

    # Tools from elsewhere than plugins (MCP servers) come from providers. Listing may have to start a server:
    # on the kernel loop the sync lookups use only what is known, and async callers `refresh` first.
    def add_provider(self, provider: ToolProvider) -> None:
        self._providers.append(provider)

    def _may_block(self) -> bool:
        return threading.current_thread() is not getattr(self.kernel, "_loop_thread", None)

    async def refresh(self, names: list[str] | None = None) -> None:
        """Make providers' tools known (starting their servers) without blocking the loop; `names`: only the
        providers that own one of them."""
        for p in self._providers:
            if names is None or any(p.owns(n) for n in names):
                await p.atools()

    def get(self, name: str) -> ToolSpec | None:
        spec = self.kernel.agents.tool(name)
        if spec is None:
            for p in self._providers:
                if p.owns(name):
                    return p.tools(start=self._may_block()).get(name)
        return spec

    def close(self) -> None:
        """Stop the worker processes of isolated tools."""
        self.workers.close()

    def _isolated(self, spec: ToolSpec, tctx: ToolContext, args: dict[str, Any]) -> Any:
        """One call of an isolated tool (on its thread): its paths opened and checked here, the call in a worker
        process under CPU and memory limits, killed when the timeout passes."""
        fds: dict[str, int] = {}
        try:
            for arg in spec.paths:
                p = args.get(arg)
                if isinstance(p, str) and p not in fds:
                    fds[p] = tctx.open(p, "read")
            module = sys.modules.get(spec.module)
            try:
                return self.workers.call(
                    spec.module, spec.name, args, timeout=spec.timeout,
                    cpu_s=spec.cpu_s, memory_mb=spec.memory_mb, fds=fds,
                    origin=str(getattr(module, "__file__", "") or ""))
            except WorkerTimeout:
                raise ToolError(f"{spec.name}: timed out after {spec.timeout:g} s (its process was killed)") from None
            except WorkerCrashed as exc:
                raise ToolError(f"{spec.name}: {exc}") from None
        finally:
            for fd in fds.values():
                os.close(fd)

    def all(self) -> dict[str, ToolSpec]:
        out = self.kernel.agents.tools()
        for p in self._providers:
            for name, spec in p.tools(start=self._may_block()).items():
                out.setdefault(name, spec)
        return out

    def running(self, name: str) -> int:
        with self._lock:
            return self._running.get(name, 0)

    async def call(self, ctx: AgentContext, name: str, args: dict[str, Any]) -> Any:
        """Check, confirm and run one call on behalf of `ctx`'s agent; the result, or ToolError/PermissionError."""
        if isinstance(name, str) and self.kernel.agents.tool(name) is None:
            await self.refresh([name])  # an MCP server starts at its first use
        spec = self.get(name) if isinstance(name, str) else None
        if spec is None:
            raise ToolError(f"{name}: no such tool")
        access = self.kernel.access
        pid, agent = ctx.pid, ctx._proc.agent
        if not access.check(pid, f"tool:{name}", _short_args(args)):
            raise PermissionError(f"tool:{name}: {agent}[{pid}] may not call {name}")
        clean = validate_args(spec, args)
        tctx = ToolContext(self, spec, pid, agent, ctx.cwd, self.kernel.context.conversations_of(pid))
        for arg, mode in spec.paths.items():
            if clean.get(arg) is not None:  # PermissionError before anyone is asked or anything runs
                tctx.path(clean[arg], "read" if mode == "read" else "write", follow=mode != "delete")
        if spec.irreversible:
            what = ""
            if spec.confirm is not None:
                try:
                    what = " " + " ".join(str(spec.confirm(tctx, clean)).split()).rstrip(".") + "."
                except Exception:  # noqa: BLE001 - the question is asked anyway, without the detail
                    what = ""
            text = f"{agent}[{pid}] wants to run {name}({_short_args(clean, 120)}).{what} Allow?"
            async with ctx._blocking("user"):
                yes = await access.confirm(pid, agent, f"tool:{name}", text)
            if not yes:
                raise PermissionError(f"tool:{name}: not confirmed ({name} is irreversible)")
        return await self._run(spec, tctx, clean)

    async def _run(self, spec: ToolSpec, tctx: ToolContext, args: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        sem = self._sems.get(spec.name)
        if sem is None:
            sem = self._sems[spec.name] = asyncio.Semaphore(spec.concurrency)
        deadline = time.monotonic() + spec.timeout
        kwargs = dict(args)
        if spec.ctx_param:
            kwargs[spec.ctx_param] = tctx
        try:
            await asyncio.wait_for(sem.acquire(), spec.timeout)
        except TimeoutError:
            raise ToolError(f"{spec.name}: timed out after {spec.timeout:g} s waiting for a free slot "
                            f"({self.running(spec.name)} calls still running)") from None
        if spec.is_async:
            try:
                return await asyncio.wait_for(spec.fn(**kwargs), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                tctx.cancelled.set()
                raise ToolError(f"{spec.name}: timed out after {spec.timeout:g} s") from None
            except PermissionError:
                raise
            except Exception as exc:  # noqa: BLE001 - a tool's bug is the call's error
                raise _as_tool_error(spec.name, exc) from None
            finally:
                sem.release()
        fut: asyncio.Future = loop.create_future()
        with self._lock:
            self._running[spec.name] = self._running.get(spec.name, 0) + 1

        def done(outcome: tuple[bool, Any]) -> None:  # on the loop
            sem.release()
            if not fut.done():
                fut.set_result(outcome)

        def work() -> None:
            try:
                value = self._isolated(spec, tctx, args) if spec.isolated else spec.fn(**kwargs)
                outcome: tuple[bool, Any] = (True, value)
            except BaseException as exc:  # noqa: BLE001 - reported to the caller
                outcome = (False, exc)
            with self._lock:
                self._running[spec.name] -= 1
            try:
                loop.call_soon_threadsafe(done, outcome)
            except RuntimeError:  # the kernel loop is gone (shutdown)
                pass

        try:
            threading.Thread(target=work, name=f"aiosh-tool-{spec.name}", daemon=True).start()
        except BaseException:
            sem.release()
            with self._lock:
                self._running[spec.name] -= 1
            raise
        try:
            # an isolated call is bounded by its worker's own timeout (which kills the process): a moment's grace
            grace = STARTUP_S + 1.0 if spec.isolated else 0.0
            ok, value = await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline + grace - time.monotonic()))
        except TimeoutError:
            tctx.cancelled.set()  # the thread is abandoned; it keeps its slot until it really ends
            raise ToolError(f"{spec.name}: timed out after {spec.timeout:g} s") from None
        if ok:
            return value
        if isinstance(value, PermissionError):
            raise value
        raise _as_tool_error(spec.name, value)


def _as_tool_error(name: str, exc: BaseException) -> ToolError:
    """One line naming the tool: a ToolError's own message, or the exception's type and message."""
    msg = " ".join(str(exc).split())
    if isinstance(exc, ToolError):
        return ToolError(msg if msg.startswith(f"{name}:") else f"{name}: {msg}")
    return ToolError(f"{name}: {type(exc).__name__}: {msg}" if msg else f"{name}: {type(exc).__name__}")


def _short_args(args: dict[str, Any], limit: int = 160) -> str:
    parts = [f"{k}={_short(v)}" for k, v in args.items()]
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 3] + "..."
