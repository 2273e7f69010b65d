"""The tool manager: looks tools up (plugins, providers such as MCP servers), checks, confirms and runs calls."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..toolworker import STARTUP_S, WorkerCrashed, WorkerPool, WorkerTimeout
from .context import ToolContext
from .errors import ToolError
from .spec import ToolSpec
from .validate import _short, validate_args

if TYPE_CHECKING:
    from ..services import Syscalls

class ToolProvider(Protocol):
    """A source of tools besides plugins (kernel.mcp.McpManager)."""

    def owns(self, name: str) -> bool: ...

    def tools(self, *, start: bool = True) -> dict[str, ToolSpec]: ...

    async def atools(self) -> dict[str, ToolSpec]: ...



class ToolManager:
    """Looks tools up (through the plugin registry), checks and runs calls. `call` runs on the kernel loop."""

    def __init__(self, registry: Any, access: Any, memory: Any, conversations_of: Callable[[int], list[str]],
                 loop_thread: Callable[[], threading.Thread | None]) -> None:
        """`registry`: the plugin registry (plugins.AgentRegistry: `tool(name)`, `tools()`); `access`, `memory`:
        the access and memory managers; `conversations_of(pid)`: the conversations a process takes part in (for
        memory search); `loop_thread()`: the kernel loop's thread (where nothing may block)."""
        self.registry = registry
        self.access = access
        self.memory = memory
        self._conversations_of = conversations_of
        self._loop_thread = loop_thread
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
        return threading.current_thread() is not self._loop_thread()

    async def refresh(self, names: list[str] | None = None) -> None:
        """Make providers' tools known (starting their servers) without blocking the loop; `names`: only the
        providers that own one of them."""
        for p in self._providers:
            if names is None or any(p.owns(n) for n in names):
                await p.atools()

    def get(self, name: str) -> ToolSpec | None:
        spec = self.registry.tool(name)
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
        out = self.registry.tools()
        for p in self._providers:
            for name, spec in p.tools(start=self._may_block()).items():
                out.setdefault(name, spec)
        return out

    def running(self, name: str) -> int:
        with self._lock:
            return self._running.get(name, 0)

    async def call(self, sc: Syscalls, name: str, args: dict[str, Any]) -> Any:
        """Check, confirm and run one call on behalf of `sc`'s process; the result, or ToolError/PermissionError."""
        if isinstance(name, str) and self.registry.tool(name) is None:
            await self.refresh([name])  # an MCP server starts at its first use
        spec = self.get(name) if isinstance(name, str) else None
        if spec is None:
            raise ToolError(f"{name}: no such tool")
        access = self.access
        pid, agent = sc.pid, sc.agent
        if not access.check(pid, f"tool:{name}", _short_args(args)):
            raise PermissionError(f"tool:{name}: {agent}[{pid}] may not call {name}")
        clean = validate_args(spec, args)
        tctx = ToolContext(self, spec, pid, agent, sc.cwd, self._conversations_of(pid))
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
            async with sc.wchan("user"):
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
