"""The HTTP side of the door: starlette routes for /v1/chat/completions, /v1/completions and /v1/models.

Each request runs on the kernel loop. Its token names a host process; its LLM call goes through that process's
`AgentContext` (`ctx.llm.stream_chat` / `ctx.llm.stream`), the path agents use, so it is scheduled by the
process's policy, class and nice, counted in `ps`, recorded as an `llm` syscall, held while the process is stopped
and cancelled when it ends. The call itself runs as a task the door tracks: a client that goes away, or a process
that is killed, cancels it, and the cancelled call frees its slot.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..agent import AgentContext, LimitExceeded, LLMError, ProcessKilled
from ..requests import GenResult
from . import translate as tr
from .translate import Call, ChatCall, DoorError


class Door(Protocol):
    """What the app uses of its door (service.Door): the app is built by the door, so it names no class of it."""

    kernel: Any

    def process(self, token: str | None) -> tuple[Any, AgentContext] | None: ...

    def model_names(self) -> list[str]: ...

    def track(self, pid: int, task: asyncio.Task) -> None: ...

_END = object()


async def _off_loop(fn: Callable[[Any], Any], body: Any) -> Any:
    """A request body translated in a worker thread: a tool or JSON-schema grammar is converted by llama.cpp's
    converter (tens of KB; its first use imports llama_cpp, over a second), which the kernel loop must not wait on."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, body)


def build_app(door: Door) -> Starlette:
    """The ASGI app of one door."""

    def authorize(request: Request, what: str) -> tuple[int, AgentContext]:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        found = door.process(token.strip() if scheme.lower() == "bearer" else None)
        if found is None:
            door.kernel.access.record(0, "door", "deny", f"{what}: {'unknown' if auth else 'no'} API key")
            raise DoorError(401, "invalid or missing API key: the door answers programs started by aiosh, with "
                            "the OPENAI_API_KEY it gave them", code="invalid_api_key")
        proc, ctx = found
        return proc.pid, ctx

    def backend_for(model: str) -> str:
        names = door.model_names()
        if model == "default":
            return door.kernel.backends.default
        if model not in names:
            raise DoorError(404, f"model '{model}' does not exist (known: {', '.join(names)})", param="model",
                            code="model_not_found")
        return model

    async def body_of(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except ValueError:
            raise DoorError(400, "the request body is not valid JSON") from None

    async def models(request: Request) -> Response:
        authorize(request, "GET /v1/models")
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "aiosh"} for n in door.model_names()]
        return JSONResponse({"object": "list", "data": data})

    async def chat(request: Request) -> Response:
        pid, ctx = authorize(request, "POST /v1/chat/completions")
        call = await _off_loop(tr.chat_call, await body_of(request))
        backend = backend_for(call.model)
        door.kernel.access.record(pid, "door", "allow", f"chat.completions model={call.model}")

        def gen(sink: Callable[[str], None]) -> Callable[[], Any]:
            async def run() -> GenResult | None:
                async for chunk in ctx.llm.stream_chat(call.messages, backend=backend, **call.opts):
                    sink(chunk)
                return ctx.llm.last  # set by the call before its stream ended; no other task ran since

            return run

        rid = tr.new_id("chatcmpl")
        if call.stream:
            return _sse(_chat_events(door, pid, call, rid, gen))
        text: list[str] = []
        result = await _run(door, pid, gen(text.append))
        content = "".join(text)
        if call.tools is not None:
            message, reason = tr.tool_reply(call, content, result.finish_reason)
        else:
            message, reason = {"role": "assistant", "content": content}, tr.finish_reason(result.finish_reason)
        use = tr.usage(result.prompt_tokens, result.completion_tokens)
        return JSONResponse(tr.chat_body(rid, call.model, message, reason, use))

    async def completions(request: Request) -> Response:
        pid, ctx = authorize(request, "POST /v1/completions")
        call = await _off_loop(tr.completion_call, await body_of(request))
        backend = backend_for(call.model)
        door.kernel.access.record(pid, "door", "allow", f"completions model={call.model}")

        def gen(sink: Callable[[str], None]) -> Callable[[], Any]:
            async def run() -> GenResult | None:
                async for chunk in ctx.llm.stream(call.prompt, backend=backend, **call.opts):
                    sink(chunk)
                return ctx.llm.last

            return run

        rid = tr.new_id("cmpl")
        if call.stream:
            return _sse(_completion_events(door, pid, call, rid, gen))
        text: list[str] = []
        result = await _run(door, pid, gen(text.append))
        use = tr.usage(result.prompt_tokens, result.completion_tokens)
        return JSONResponse(tr.completion_body(rid, call.model, "".join(text), tr.finish_reason(result.finish_reason),
                                               use))

    async def door_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DoorError)
        return JSONResponse(exc.body(), status_code=exc.status)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse(tr.error_body(f"{request.method} {request.url.path}: {exc.detail}"),
                            status_code=exc.status_code)

    routes = [
        Route("/v1/chat/completions", _guarded(chat), methods=["POST"]),
        Route("/v1/completions", _guarded(completions), methods=["POST"]),
        Route("/v1/models", _guarded(models), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={DoorError: door_error, HTTPException: http_error})


def _guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """A bug in a handler is a 500 with one line for the program, never a traceback on the user's terminal."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except (DoorError, HTTPException, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001
            door_exc = DoorError(500, f"{type(exc).__name__}: {exc}", kind="server_error")
            return JSONResponse(door_exc.body(), status_code=500)

    return run


# ── running a call ──────────────────────────────────────────────────────────────────────────────────────────

def _failure(exc: BaseException) -> DoorError:
    """What a failed call tells the program (one line, an OpenAI error body)."""
    if isinstance(exc, asyncio.CancelledError | ProcessKilled):
        return DoorError(410, "the calling process ended (killed, or its program exited)", kind="process_ended",
                         code="process_ended")
    if isinstance(exc, LimitExceeded):
        return DoorError(400, f"the calling process crossed its {exc}", code="limit_exceeded")
    if isinstance(exc, LLMError):
        return DoorError(500, f"llm: {exc}", kind="server_error")
    return DoorError(500, f"{type(exc).__name__}: {exc}", kind="server_error")


async def _run(door: Door, pid: int, run: Callable[[], Any]) -> GenResult:
    """Run one call as a task the door can cancel; the handler awaits it (a cancelled handler cancels it)."""
    task = asyncio.get_running_loop().create_task(run(), name=f"door:{pid}")
    door.track(pid, task)
    try:
        result = await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():  # the handler itself was cancelled (the client went away)
            task.cancel()
            raise
        raise _failure(asyncio.CancelledError()) from None
    except Exception as exc:  # noqa: BLE001 - every failure becomes an error body
        raise _failure(exc) from None
    if result is None:
        raise DoorError(500, "the call ended without a result", kind="server_error")
    return result


async def _stream(door: Door, pid: int, gen: Callable[[Callable[[str], None]], Callable[[], Any]]
                  ) -> AsyncIterator[str | tuple[str, Any]]:
    """The call's text chunks as they come, then ("end", GenResult) or ("error", DoorError)."""
    queue: asyncio.Queue = asyncio.Queue()
    task = asyncio.get_running_loop().create_task(gen(queue.put_nowait)(), name=f"door:{pid}")
    door.track(pid, task)
    task.add_done_callback(lambda _t: queue.put_nowait(_END))
    try:
        while (item := await queue.get()) is not _END:
            yield item
        if task.cancelled():
            yield ("error", _failure(asyncio.CancelledError()))
        elif task.exception() is not None:
            yield ("error", _failure(task.exception()))  # type: ignore[arg-type]
        else:
            yield ("end", task.result())
    finally:
        if not task.done():  # the client went away: the call is cancelled and frees its slot
            task.cancel()


def _event(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _sse(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _chat_events(door: Door, pid: int, call: ChatCall, rid: str, gen: Any) -> AsyncIterator[str]:
    yield _event(tr.chat_chunk(rid, call.model, {"role": "assistant", "content": ""}))
    held: list[str] = []  # under the tool grammar the reply is parsed whole before it is sent
    async for item in _stream(door, pid, gen):
        if isinstance(item, str):
            if call.tools is not None:
                held.append(item)
            else:
                yield _event(tr.chat_chunk(rid, call.model, {"content": item}))
            continue
        kind, value = item
        if kind == "error":
            yield _event(value.body())
            return
        result: GenResult = value
        if call.tools is not None:
            message, reason = tr.tool_reply(call, "".join(held), result.finish_reason)
            if message.get("tool_calls"):
                delta = {"tool_calls": [{"index": 0, **tc} for tc in message["tool_calls"]]}
            else:
                delta = {"content": message["content"]}
            yield _event(tr.chat_chunk(rid, call.model, delta))
        else:
            reason = tr.finish_reason(result.finish_reason)
        yield _event(tr.chat_chunk(rid, call.model, {}, reason))
        if call.include_usage:
            yield _event(tr.usage_chunk(rid, call.model, "chat.completion.chunk",
                                        tr.usage(result.prompt_tokens, result.completion_tokens)))
    yield "data: [DONE]\n\n"


async def _completion_events(door: Door, pid: int, call: Call, rid: str, gen: Any) -> AsyncIterator[str]:
    async for item in _stream(door, pid, gen):
        if isinstance(item, str):
            yield _event(tr.completion_body(rid, call.model, item, None, None))  # type: ignore[arg-type]
            continue
        kind, value = item
        if kind == "error":
            yield _event(value.body())
            return
        result: GenResult = value
        yield _event(tr.completion_body(rid, call.model, "", tr.finish_reason(result.finish_reason), None))
        if call.include_usage:
            yield _event(tr.usage_chunk(rid, call.model, "text_completion",
                                        tr.usage(result.prompt_tokens, result.completion_tokens)))
    yield "data: [DONE]\n\n"
