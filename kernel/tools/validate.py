"""Validating a call's arguments against a tool's schema, and the schema in one line (for `tools` and errors)."""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from .errors import ToolError


class Schema(Protocol):
    """What validation needs of a tool (spec.ToolSpec): its name and the JSON schema of its arguments."""

    name: str
    parameters: dict


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


def validate_args(spec: Schema, args: dict[str, Any]) -> dict[str, Any]:
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


def describe_signature(spec: Schema) -> str:
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
