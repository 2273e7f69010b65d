"""Declaring a tool: `@tool` turns a typed function into a ToolSpec, its JSON schema from the signature and the
docstring."""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .context import ToolContext
from .errors import ToolError
from .validate import validate_args

MAX_STRING = 4000  # maxLength of a string argument in the grammar the model samples with (see call_tool)


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
