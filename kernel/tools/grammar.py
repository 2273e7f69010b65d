"""Tool calls by the model: a grammar over the allowed tools' schemas (`ctx.llm.call_tool`), the system text
that lists them, and the parsing of the model's reply."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ToolError
from .spec import ToolSpec
from .validate import _short, describe_signature

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
