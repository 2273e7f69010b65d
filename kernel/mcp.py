"""MCP servers as tools: each `[mcp.NAME]` server's tools are kernel tools named `NAME.TOOL`.

Through the official `mcp` SDK (stdio for `command = [...]`, streamable HTTP for `url = "http://…"`). A server
starts at its first use (listing its tools counts), on a thread and event loop of its own, so a slow or wedged
server never stalls the kernel loop; it is supervised: a server that exits or breaks its connection is one line
(`ToolError`) for the call in flight and is started again at the next call. Its tools are `ToolSpec`s whose
function forwards the call, so the tool manager applies what it applies to every tool: the `tool:NAME.TOOL` (or
`tool:NAME.*`) capability, argument validation against the server's JSON schema, the timeout (`timeout_s`), the
concurrency limit, y/N for tools the server marks destructive (or for all, with `confirm = "all"`), and the audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import McpSettings
from .tools import ToolError, ToolSpec

__all__ = ["McpManager", "McpServerState"]

LIST_TIMEOUT_S = 60.0  # at most this long for a server to start and list its tools (a cold Python server on a
# busy machine takes seconds to import its SDK; `timeout_s` bounds the calls)


@dataclass(frozen=True)
class McpServerState:
    """One server as `tools` and the monitor show it."""

    name: str
    transport: str  # stdio | http
    target: str  # the command line or the URL
    state: str  # stopped | starting | running | failed | crashed
    tools: int
    calls: int
    errors: int
    restarts: int
    last_error: str = ""


def _field(obj: Any, snake: str, camel: str) -> Any:
    """A field of an SDK model: mcp 2 names them in snake_case, mcp 1 in the protocol's camelCase."""
    value = getattr(obj, snake, None)
    return getattr(obj, camel, None) if value is None else value


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _innermost(exc: BaseException) -> BaseException:
    """The first real exception inside anyio's task-group ExceptionGroups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    """An exception (maybe an ExceptionGroup from anyio's task groups) as one line."""
    exc = _innermost(exc)
    msg = _one_line(str(exc))
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


@dataclass
class _Server:
    name: str
    settings: McpSettings
    state: str = "stopped"
    specs: dict[str, ToolSpec] = field(default_factory=dict)
    session: Any = None
    task: asyncio.Task | None = None
    ready: asyncio.Event | None = None
    stop: asyncio.Event | None = None
    calls: int = 0
    errors: int = 0
    restarts: int = 0
    started_once: bool = False
    last_error: str = ""
    errlog: str = ""  # the server's stderr (stdio), for the one line that says why it failed


class McpManager:
    """The MCP servers of one kernel: their tools as ToolSpecs, their lifecycle on the `aiosh-mcp` thread."""

    def __init__(self, servers: Mapping[str, McpSettings], *, log_dir: str | None = None) -> None:
        self._servers = {name: _Server(name, s) for name, s in servers.items()}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._log_dir = log_dir
        self._closed = False

    @property
    def names(self) -> list[str]:
        return list(self._servers)

    # --- the thread ---------------------------------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise ToolError("mcp: aiosh is shutting down")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="aiosh-mcp", daemon=True)
                self._thread.start()
                started.wait(5)
                self._loop = loop
            return self._loop

    def _submit(self, coro: Any) -> Any:
        """Run a coroutine on the MCP loop; returns its concurrent future."""
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())

    # --- tools --------------------------------------------------------------------------------------------------
    def tools(self, *, start: bool = True, timeout: float = LIST_TIMEOUT_S) -> dict[str, ToolSpec]:
        """Every server's tools (blocking: starts servers not started yet). A server that cannot start lists none
        (its state says why). With start=False, only what is known already."""
        if start and self._servers:
            pending = [self._submit(self._ensure(s)) for s in self._servers.values() if s.state != "running"]
            deadline = time.monotonic() + timeout
            for fut in pending:
                with contextlib.suppress(Exception):
                    fut.result(max(0.0, deadline - time.monotonic()))
        return {k: v for s in self._servers.values() for k, v in s.specs.items()}

    async def atools(self) -> dict[str, ToolSpec]:
        """`tools()` for a caller on another event loop (the kernel's): waits without blocking that loop."""
        if any(s.state != "running" for s in self._servers.values()):
            futs = [asyncio.wrap_future(self._submit(self._ensure(s))) for s in self._servers.values()
                    if s.state != "running"]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), LIST_TIMEOUT_S)
        return {k: v for s in self._servers.values() for k, v in s.specs.items()}

    def owns(self, tool: str) -> bool:
        """True when a tool name is NAME.TOOL of a configured server (listed yet or not)."""
        return tool.partition(".")[0] in self._servers and "." in tool

    def states(self) -> list[McpServerState]:
        out = []
        for s in self._servers.values():
            cfg = s.settings
            target = " ".join(cfg.command) if cfg.command else cfg.url
            out.append(McpServerState(s.name, "stdio" if cfg.command else "http", target, s.state, len(s.specs),
                                      s.calls, s.errors, s.restarts, s.last_error))
        return out

    # --- lifecycle (on the MCP loop) ----------------------------------------------------------------------------
    async def _ensure(self, s: _Server) -> None:
        """Start the server if it is not running and wait until it has listed its tools (or failed)."""
        if s.state == "running" and s.session is not None:
            return
        if s.task is not None and not s.task.done() and s.state != "starting":
            if s.stop is not None:  # a broken connection still winding down: let it end first
                s.stop.set()
            await asyncio.wait({s.task}, timeout=10)
        if s.task is None or s.task.done():
            if s.started_once:
                s.restarts += 1
            s.started_once = True
            s.state = "starting"
            s.ready, s.stop = asyncio.Event(), asyncio.Event()
            s.task = asyncio.get_running_loop().create_task(self._serve(s), name=f"mcp:{s.name}")
        assert s.ready is not None
        await s.ready.wait()
        if s.state != "running":
            raise ToolError(f"mcp server {s.name}: {s.last_error or 'not running'}")

    async def _serve(self, s: _Server) -> None:
        """Own the connection for its whole life (anyio contexts must be entered and left in one task)."""
        from mcp import ClientSession

        cfg = s.settings
        try:
            async with contextlib.AsyncExitStack() as stack:
                if cfg.command:
                    from mcp.client.stdio import StdioServerParameters, stdio_client

                    errlog = stack.enter_context(self._errlog(s))
                    params = StdioServerParameters(command=cfg.command[0], args=list(cfg.command[1:]),
                                                   env=dict(cfg.env) or None, cwd=cfg.cwd or None)
                    streams = await stack.enter_async_context(stdio_client(params, errlog=errlog))
                else:
                    from mcp.client.streamable_http import streamable_http_client

                    streams = await stack.enter_async_context(streamable_http_client(cfg.url))
                session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
                await asyncio.wait_for(session.initialize(), max(cfg.timeout_s, LIST_TIMEOUT_S))
                listed = await asyncio.wait_for(session.list_tools(), max(cfg.timeout_s, LIST_TIMEOUT_S))
                s.specs = {spec.name: spec for spec in (self._spec(s, t) for t in listed.tools) if spec is not None}
                s.session, s.state, s.last_error = session, "running", ""
                assert s.ready is not None and s.stop is not None
                s.ready.set()
                await s.stop.wait()
                s.state = "stopped" if self._closed else s.state
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - every failure is one line
            if s.state == "starting":
                s.state = "failed"
                s.last_error = self._why(s, exc, "cannot start")
            elif not self._closed and s.state == "running":
                s.state = "crashed"
                s.last_error = self._why(s, exc, "connection lost")
        finally:
            s.session = None
            if s.state == "running":
                s.state = "crashed"
            if s.ready is not None:
                s.ready.set()

    @contextlib.contextmanager
    def _errlog(self, s: _Server):  # noqa: ANN202 - a context manager of a file
        """The server's stderr goes to a file (never to the terminal), whose last line explains a failure."""
        fd, path = tempfile.mkstemp(prefix=f"aiosh-mcp-{s.name}-", suffix=".log", dir=self._log_dir)
        s.errlog = path
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f

    def _why(self, s: _Server, exc: BaseException, what: str) -> str:
        tail = ""
        if s.errlog:
            with contextlib.suppress(OSError), open(s.errlog, encoding="utf-8", errors="replace") as f:
                lines = [ln.strip() for ln in f.read()[-4000:].splitlines() if ln.strip()]
                tail = lines[-1] if lines else ""
        base = _describe(exc)
        if isinstance(_innermost(exc), TimeoutError):
            base = "no answer in time"
        return _one_line(f"{what}: {base}" + (f" (stderr: {tail})" if tail else ""))

    def _spec(self, s: _Server, t: Any) -> ToolSpec | None:
        """A ToolSpec for one listed MCP tool; its function forwards the call to the server."""
        name = f"{s.name}.{t.name}"
        schema = dict(_field(t, "input_schema", "inputSchema") or {"type": "object", "properties": {}})
        schema.setdefault("properties", {})
        schema.setdefault("required", [])
        annotations = getattr(t, "annotations", None)
        destructive = bool(_field(annotations, "destructive_hint", "destructiveHint"))
        if _field(annotations, "read_only_hint", "readOnlyHint"):
            destructive = False
        confirm = s.settings.confirm
        irreversible = confirm == "all" or (confirm == "destructive" and destructive)
        tool_name = t.name

        async def call(**args: Any) -> Any:
            return await self.call(s.name, tool_name, args)

        call.__name__ = name
        return ToolSpec(name=name, fn=call, description=_one_line(t.description or "", 500), parameters=schema,
                        irreversible=irreversible, timeout=s.settings.timeout_s,
                        concurrency=s.settings.concurrency, module=f"mcp server {s.name}")

    # --- calls --------------------------------------------------------------------------------------------------
    async def call(self, server: str, tool: str, args: dict[str, Any]) -> Any:
        """Call a tool (from any event loop). ToolError for a server that fails, crashes or reports an error;
        the caller's timeout (the tool manager's) cancels the call on the server's side too."""
        s = self._servers[server]
        fut = asyncio.wrap_future(self._submit(self._call(s, tool, args)))
        return await fut

    async def _call(self, s: _Server, tool: str, args: dict[str, Any]) -> Any:
        name = f"{s.name}.{tool}"
        await self._ensure(s)
        s.calls += 1
        session = s.session
        try:
            result = await session.call_tool(tool, args)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - transport, protocol or validation failures
            s.errors += 1
            alive = s.task is not None and not s.task.done() and s.session is session
            if not alive or _is_transport(exc):
                s.state = "crashed"
                s.last_error = self._why(s, exc, "connection lost")
                if s.stop is not None:
                    s.stop.set()
                raise ToolError(f"{name}: mcp server {s.name} {s.last_error}; it restarts at the next call") from None
            raise ToolError(f"{name}: {_describe(exc)}") from None
        return self._value(name, result, s)

    def _value(self, name: str, result: Any, s: _Server) -> Any:
        """A CallToolResult as a tool result: its structured content, else its text; isError → ToolError."""
        content = getattr(result, "content", None)
        if not isinstance(content, list):
            s.errors += 1
            raise ToolError(f"{name}: malformed result from mcp server {s.name}")
        texts = [getattr(c, "text", None) for c in content]
        text = "\n".join(t for t in texts if isinstance(t, str))
        if _field(result, "is_error", "isError"):
            s.errors += 1
            raise ToolError(f"{name}: {_one_line(text) or 'the server reported an error'}")
        structured = _field(result, "structured_content", "structuredContent")
        if structured is not None:
            if isinstance(structured, dict) and set(structured) == {"result"}:
                return structured["result"]  # a bare value the SDK wrapped
            return structured
        if any(t is None for t in texts):
            kinds = sorted({getattr(c, "type", "?") for c in content if getattr(c, "text", None) is None})
            text += ("\n" if text else "") + f"[{', '.join(kinds)} content not shown]"
        return text

    # --- shutdown -----------------------------------------------------------------------------------------------
    def close(self, timeout: float = 5.0) -> None:
        """Stop every server (stdio servers are terminated by the SDK) and the thread."""
        with self._lock:
            self._closed = True
            loop = self._loop
        if loop is None:
            return

        async def stop_all() -> None:
            tasks = []
            for s in self._servers.values():
                if s.stop is not None:
                    s.stop.set()
                if s.task is not None and not s.task.done():
                    tasks.append(s.task)
            if tasks:
                _done, pending = await asyncio.wait(tasks, timeout=timeout - 0.5)
                for t in pending:
                    t.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop_all(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(2.0)
        for s in self._servers.values():
            if s.errlog:
                with contextlib.suppress(OSError):
                    os.unlink(s.errlog)


def _is_transport(exc: BaseException) -> bool:
    """A broken connection (the server died) rather than an error about this one call."""
    import anyio

    text = str(exc).lower()
    return isinstance(exc, anyio.ClosedResourceError | anyio.BrokenResourceError | ConnectionError | EOFError) \
        or "connection closed" in text or "closed" in text and "connection" in text
