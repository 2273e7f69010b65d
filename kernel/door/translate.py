"""OpenAI request bodies → what an aiosh LLM call takes, and aiosh results → OpenAI response bodies.

Everything a host program may send is checked here, before any token is scheduled: a field aiosh does not honour
is a 400 that names it (silently ignoring `logit_bias` or `n = 3` would hand the program something it did not ask
for). Function calling and `response_format` become GBNF grammars through the same machinery as
`ctx.llm.call_tool`, so even the embedded 135M model returns well-formed calls and JSON.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..tools import ToolChoice, ToolError, ToolSpec, choice_grammar, parse_choice, tools_prompt

__all__ = ["ChatCall", "CompletionCall", "DoorError", "chat_call", "completion_call", "error_body"]

TOOL_MAX_TOKENS = 384  # as ctx.llm.call_tool: a call under the grammar needs room for its JSON
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")


class DoorError(Exception):
    """A request the door refuses: an HTTP status and one line, sent as an OpenAI error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return error_body(self.message, kind=self.kind, param=self.param, code=self.code)


def error_body(message: str, *, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# Fields every request may carry, and those that are accepted only at their default (anything else is a 400).
_COMMON = {"model", "stream", "stream_options", "max_tokens", "temperature", "top_p", "seed", "stop", "n", "user",
           "ignore_eos", "top_k", "min_p", "repeat_penalty"}
_CHAT = _COMMON | {"messages", "max_completion_tokens", "tools", "tool_choice", "response_format",
                   "parallel_tool_calls", "frequency_penalty", "presence_penalty", "logprobs"}
_COMPLETION = _COMMON | {"prompt", "echo", "frequency_penalty", "presence_penalty", "logprobs", "best_of"}
_ONLY_DEFAULT = {"n": 1, "frequency_penalty": 0, "presence_penalty": 0, "logprobs": False, "echo": False,
                 "best_of": 1}


@dataclass
class Call:
    """What both endpoints share: the backend, sampling options for `ctx.llm`, streaming."""

    model: str
    stream: bool = False
    include_usage: bool = False
    opts: dict[str, Any] = field(default_factory=dict)  # max_tokens, temperature, top_p, seed, stop, grammar …


@dataclass
class ChatCall(Call):
    messages: list[dict[str, str]] = field(default_factory=list)
    tools: list[ToolSpec] | None = None  # function calling under a grammar (None: plain chat)
    answer: bool = True  # the model may answer instead of calling a tool (tool_choice "auto")


@dataclass
class CompletionCall(Call):
    prompt: str = ""


# ── checks ──────────────────────────────────────────────────────────────────────────────────────────────────

def _fields(body: Any, allowed: set[str]) -> dict:
    if not isinstance(body, dict):
        raise DoorError(400, "the request body must be a JSON object")
    for key in body:
        if key not in allowed:
            raise DoorError(400, f"unsupported field '{key}' (aiosh's door does not honour it)", param=key,
                            code="unsupported_parameter")
    for key, default in _ONLY_DEFAULT.items():
        v = body.get(key)
        same = v is None or (v is default if isinstance(default, bool) else not isinstance(v, bool) and v == default)
        if not same:
            raise DoorError(400, f"'{key}': only {json.dumps(default)} is supported, got {json.dumps(v)}", param=key,
                            code="unsupported_value")
    return body


def _number(body: dict, key: str, lo: float, hi: float | None = None) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or v < lo or (hi is not None and v > hi):
        rng = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
        raise DoorError(400, f"'{key}' must be a number {rng}, got {json.dumps(v)}", param=key)
    return float(v)


def _integer(body: dict, key: str, lo: int) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise DoorError(400, f"'{key}' must be an integer ≥ {lo}, got {json.dumps(v)}", param=key)
    return v


def _common(body: dict, opts: dict[str, Any]) -> tuple[bool, bool]:
    """Sampling options into `opts`; returns (stream, include_usage)."""
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise DoorError(400, "'stream' must be true or false", param="stream")
    so = body.get("stream_options")
    include_usage = False
    if so is not None:
        if not stream:
            raise DoorError(400, "'stream_options' is only allowed with 'stream': true", param="stream_options")
        if not isinstance(so, dict) or set(so) - {"include_usage"}:
            raise DoorError(400, "'stream_options' supports only include_usage", param="stream_options")
        include_usage = bool(so.get("include_usage", False))
    for key, lo, hi in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0), ("min_p", 0.0, 1.0),
                        ("repeat_penalty", 0.0, None)):
        v = _number(body, key, lo, hi)
        if v is not None:
            opts[key] = v
    for key in ("top_k",):
        v = _integer(body, key, 0)
        if v is not None:
            opts[key] = v
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise DoorError(400, f"'seed' must be an integer, got {json.dumps(seed)}", param="seed")
        opts["seed"] = seed
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 16:
            raise DoorError(400, "'stop' must be a string or a list of up to 16 non-empty strings", param="stop")
        opts["stop"] = list(stops)
    ignore = body.get("ignore_eos")
    if ignore is not None:
        if not isinstance(ignore, bool):
            raise DoorError(400, "'ignore_eos' must be true or false", param="ignore_eos")
        opts["ignore_eos"] = ignore
    return bool(stream), include_usage


def _max_tokens(body: dict, opts: dict[str, Any], *keys: str) -> None:
    for key in keys:
        v = _integer(body, key, 1)
        if v is not None:
            opts["max_tokens"] = v


def _model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str):
        raise DoorError(400, "'model' is required: the default backend ('default'), 'local', or a backend or "
                        "pool name (GET /v1/models lists them)", param="model")
    return model


# ── chat ────────────────────────────────────────────────────────────────────────────────────────────────────

def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise DoorError(400, f"{where}: content part of type {kind!r} is not supported (text only)",
                                param="messages")
            parts.append(part["text"])
        return "".join(parts)
    raise DoorError(400, f"{where}: content must be a string or a list of text parts", param="messages")


def _messages(raw: Any) -> list[dict[str, str]]:
    """OpenAI messages → plain role/content turns the chat template renders. Tool calls and results are written
    the way `call_tool` and `react` show them to the model: the call as its JSON, the result as a user turn."""
    if not isinstance(raw, list) or not raw:
        raise DoorError(400, "'messages' must be a non-empty list", param="messages")
    out: list[dict[str, str]] = []
    calls: dict[str, str] = {}  # tool_call_id -> tool name
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise DoorError(400, f"{where}: a message is an object with a 'role'", param="messages")
        role = m["role"]
        if role in ("system", "developer"):
            out.append({"role": "system", "content": _text(m.get("content"), where)})
        elif role == "user":
            out.append({"role": "user", "content": _text(m.get("content"), where)})
        elif role == "assistant":
            text = _text(m.get("content"), where)
            for tc in m.get("tool_calls") or []:
                fn = tc.get("function") if isinstance(tc, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise DoorError(400, f"{where}: malformed tool_calls", param="messages")
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    raise DoorError(400, f"{where}: tool call arguments are not JSON", param="messages") from None
                calls[str(tc.get("id", ""))] = fn["name"]
                text += json.dumps({"tool": fn["name"], "args": args}, ensure_ascii=False)
            out.append({"role": "assistant", "content": text})
        elif role == "tool":
            name = calls.get(str(m.get("tool_call_id", "")), "the tool")
            out.append({"role": "user", "content": f"{name} returned: {_text(m.get('content'), where)}"})
        else:
            raise DoorError(400, f"{where}: role {role!r} is not supported (system, developer, user, assistant, "
                            "tool)", param="messages")
    return out


def _tool_specs(raw: Any) -> list[ToolSpec]:
    if not isinstance(raw, list) or not raw:
        raise DoorError(400, "'tools' must be a non-empty list", param="tools")
    specs: list[ToolSpec] = []
    for i, t in enumerate(raw):
        fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not _NAME.fullmatch(fn["name"]):
            raise DoorError(400, f"tools[{i}]: a tool is {{'type': 'function', 'function': {{'name': …}}}} with a "
                            "name of letters, digits, _ . - (at most 64)", param="tools")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise DoorError(400, f"tools[{i}]: 'parameters' must be a JSON schema object", param="tools")
        specs.append(ToolSpec(name=fn["name"], fn=_never_called, description=str(fn.get("description") or ""),
                              parameters=params, module="door"))
    if len({s.name for s in specs}) != len(specs):
        raise DoorError(400, "'tools': two tools have the same name", param="tools")
    return specs


def _never_called(**_: Any) -> None:
    """A host program's function is run by the host program, never by aiosh."""
    raise ToolError("a host program's function cannot be called from aiosh")


def _schema_grammar(schema: Any) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # noqa: BLE001 - the converter raises whatever it meets
        raise DoorError(400, f"'response_format': cannot turn the JSON schema into a grammar: {exc}",
                        param="response_format") from None
    return gbnf.replace(r'char ::= [^"\\]', r'char ::= [^"\\\x7F\x00-\x1F]', 1)


def _response_format(raw: Any) -> str | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        from llama_cpp.llama_grammar import JSON_GBNF

        return JSON_GBNF
    if kind == "json_schema":
        spec = raw.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise DoorError(400, "'response_format': json_schema needs {'name': …, 'schema': {…}}",
                            param="response_format")
        return _schema_grammar(schema)
    raise DoorError(400, "'response_format': type must be text, json_object or json_schema",
                    param="response_format")


def chat_call(body: Any) -> ChatCall:
    """A /v1/chat/completions body as a ChatCall; DoorError(400) for anything aiosh does not honour."""
    body = _fields(body, _CHAT)
    call = ChatCall(model=_model(body), messages=_messages(body.get("messages")))
    call.stream, call.include_usage = _common(body, call.opts)
    _max_tokens(body, call.opts, "max_tokens", "max_completion_tokens")
    grammar = _response_format(body.get("response_format"))
    choice = body.get("tool_choice")
    if body.get("tools") is not None and choice != "none":
        specs = _tool_specs(body["tools"])
        if choice in (None, "auto"):
            call.answer = True
        elif choice == "required":
            call.answer = False
        elif isinstance(choice, dict) and choice.get("type") == "function" \
                and isinstance(choice.get("function"), dict):
            want = choice["function"].get("name")
            specs = [s for s in specs if s.name == want]
            if not specs:
                raise DoorError(400, f"'tool_choice': no tool named {want!r} in 'tools'", param="tool_choice")
            call.answer = False
        else:
            raise DoorError(400, "'tool_choice' must be none, auto, required or {'type': 'function', "
                            "'function': {'name': …}}", param="tool_choice")
        if grammar is not None:
            raise DoorError(400, "'tools' and a JSON 'response_format' cannot be combined", param="response_format")
        call.tools = specs
        try:
            call.opts["grammar"] = choice_grammar(specs, answer=call.answer)
        except Exception as exc:  # noqa: BLE001 - a schema the converter cannot handle
            raise DoorError(400, f"'tools': cannot turn the parameters into a grammar: {exc}", param="tools") from None
        guide = tools_prompt(specs, answer=call.answer)
        msgs = call.messages
        if msgs and msgs[0]["role"] == "system":
            msgs[0] = {"role": "system", "content": f"{msgs[0]['content']}\n\n{guide}"}
        else:
            msgs.insert(0, {"role": "system", "content": guide})
        call.opts.setdefault("max_tokens", TOOL_MAX_TOKENS)
    elif choice not in (None, "none", "auto"):
        raise DoorError(400, "'tool_choice' needs 'tools'", param="tool_choice")
    if grammar is not None:
        call.opts["grammar"] = grammar
    return call


def completion_call(body: Any) -> CompletionCall:
    """A /v1/completions body as a CompletionCall."""
    body = _fields(body, _COMPLETION)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise DoorError(400, "'prompt' must be a string (one prompt per request)", param="prompt")
    call = CompletionCall(model=_model(body), prompt=prompt)
    call.stream, call.include_usage = _common(body, call.opts)
    _max_tokens(body, call.opts, "max_tokens")
    return call


# ── responses ───────────────────────────────────────────────────────────────────────────────────────────────

def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def finish_reason(reason: str) -> str:
    """The engine's reasons in OpenAI's words: stop | eos → stop, length → length."""
    return "length" if reason == "length" else "stop"


def tool_reply(call: ChatCall, text: str, reason: str) -> tuple[dict, str]:
    """(message, finish_reason) for a reply written under the tool grammar."""
    try:
        choice: ToolChoice = parse_choice(text, [s.name for s in call.tools or []])
    except ToolError:
        return {"role": "assistant", "content": text}, finish_reason(reason)
    if choice.is_answer:
        return {"role": "assistant", "content": choice.answer}, "stop"
    tc = {"id": new_id("call"), "type": "function",
          "function": {"name": choice.tool, "arguments": json.dumps(choice.args, ensure_ascii=False)}}
    return {"role": "assistant", "content": None, "tool_calls": [tc]}, "tool_calls"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_body(rid: str, model: str, message: dict, reason: str, use: dict) -> dict:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "finish_reason": reason, "logprobs": None}],
            "usage": use}


def chat_chunk(rid: str, model: str, delta: dict, reason: str | None = None) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]}


def completion_body(rid: str, model: str, text: str, reason: str, use: dict | None) -> dict:
    body = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}]}
    if use is not None:
        body["usage"] = use
    return body


def usage_chunk(rid: str, model: str, obj: str, use: dict) -> dict:
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": [], "usage": use}
