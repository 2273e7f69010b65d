"""The door as a kernel service: the HTTP server on the kernel's loop, the per-job tokens, the host processes.

A host program the shell starts (`python agent.py`) gets a process in the kernel's table, a *host process*: its
name and arguments are the program's, its nice and class are the job's, and the token in its OPENAI_API_KEY makes
every call it sends through the door a syscall of that process (scheduled, counted, recorded, stopped and killed
like an agent's). The host process does nothing itself: it waits for the program to end and takes its status. The
shell mirrors the program's stops, continues and exit onto it (`mirror`, `detach`); a signal that ends the host
process (kill %1, SIGKILL) cancels its calls in flight, which closes their streams and frees their slots.

The server (uvicorn + starlette) runs as a task on the kernel's own loop, so a request is just another coroutine
beside the agents' and talks to the backends through the same `AgentContext` LLM path agents use. It binds to
127.0.0.1 only and starts at the first host program.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import signals as sig
from ..agent import AgentContext, AgentSpec
from .tokens import TokenTable

if TYPE_CHECKING:
    from ..proc import Process

START_TIMEOUT_S = 10.0
DETACH_WAIT_S = 2.0  # how long the shell waits for a program's kernel process to end after the program did


@dataclass(frozen=True)
class HostAttachment:
    """What the shell needs to start a host program: its kernel pid and the environment that leads to the door."""

    pid: int
    token: str
    env: dict[str, str]


async def _host_main(ctx: AgentContext) -> int:
    """A host program's process: waits (state S, wchan "host") until the program ends, then takes its status."""
    door: Door = ctx._services.door
    ended = door.ended_future(ctx.pid)
    async with ctx.syscalls.wchan("host"):
        return await ended


HOST_SPEC = AgentSpec(name="host", main=_host_main, description="a program started by the shell, calling the "
                      "model through the OpenAI-compatible door", needs=(), module=__name__)


class Door:
    """The OpenAI-compatible door of one kernel. Thread-safe; the server itself lives on the kernel loop."""

    def __init__(self, kernel: Any) -> None:
        """`kernel`: the Kernel's public side (spawn, signal, process, add_listener, loop, config, backends,
        access); typed loosely so that the door, a part of the kernel, does not import the class that owns it."""
        self.kernel = kernel
        self.tokens = TokenTable()
        self.url = ""  # http://127.0.0.1:PORT/v1 once started
        self._lock = threading.Lock()
        self._server: object | None = None
        self._task: asyncio.Task | None = None
        self._ended: dict[int, asyncio.Future] = {}  # pid -> its program's exit status (on the kernel loop)
        self._calls: dict[int, set[asyncio.Task]] = {}  # pid -> its calls in flight (on the kernel loop)
        self.requests = 0  # HTTP requests answered, for tests and the monitor
        kernel.add_listener(self._on_event)

    # --- the server ---------------------------------------------------------------------------------------------
    def start(self) -> str:
        """Start the server if it is not running; returns its base URL (…/v1). Call from any thread but the loop's."""
        with self._lock:
            if not self.url:
                fut = asyncio.run_coroutine_threadsafe(self._start(), self.kernel.loop)
                self.url = fut.result(START_TIMEOUT_S)
            return self.url

    async def _start(self) -> str:
        import uvicorn

        from .app import build_app

        port = self.kernel.config.door.port
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))  # loopback only: the door serves no one outside the machine
        except OSError as exc:
            sock.close()
            raise RuntimeError(f"door: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
        sock.listen(256)
        sock.setblocking(False)
        # log_config=None: uvicorn must not install its own handlers on the terminal aiosh owns.
        config = uvicorn.Config(build_app(self), log_config=None, log_level="critical", access_log=False,
                                lifespan="off",
                                timeout_graceful_shutdown=1, ws="none", server_header=False)
        server = uvicorn.Server(config)
        self._server = server
        self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name="aiosh-door")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if self._task.done():
                raise RuntimeError(f"door: the server did not start: {self._task.exception()}")
            if time.monotonic() > deadline:
                raise RuntimeError("door: the server did not start in time")
            await asyncio.sleep(0.005)
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"

    def close(self) -> None:
        """Stop the server (kernel shutdown); calls in flight were cancelled when their processes ended."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.should_exit = True  # type: ignore[attr-defined]

        async def wait() -> None:
            try:
                await asyncio.wait_for(asyncio.shield(task), 2.0)
            except (TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001
                task.cancel()

        try:
            asyncio.run_coroutine_threadsafe(wait(), self.kernel.loop).result(3.0)
        except Exception:  # noqa: BLE001 - shutting down: nothing to report to
            pass
        self._server = self._task = None

    def model_names(self) -> list[str]:
        """What a request's `model` may say: "default" (the kernel's default backend) and every backend name."""
        return ["default", *self.kernel.backends.names]

    # --- host processes -----------------------------------------------------------------------------------------
    def attach(self, argv: list[str], *, nice: int = 0, sched_class: str | None = None, cwd: str = ".",
               backend: str | None = None) -> HostAttachment:
        """A process for a host program about to start, and the environment it needs (OPENAI_BASE_URL,
        OPENAI_API_BASE, OPENAI_API_KEY). The program's own pid is the OS's; this is the kernel's."""
        url = self.start()
        name = os.path.basename(argv[0]) if argv else "host"
        options = {"backend": backend} if backend else {}
        pid = self.kernel.spawn(name, list(argv[1:]), nice=nice, sched_class=sched_class, cwd=cwd,
                                options=options, spec=HOST_SPEC)
        proc = self.kernel.process(pid)
        if proc is not None:
            proc.from_shell = False  # the shell waits for the program, not for this: collected at exit
        token = self.tokens.issue(pid)
        env = {"OPENAI_BASE_URL": url, "OPENAI_API_BASE": url, "OPENAI_API_KEY": token}
        return HostAttachment(pid=pid, token=token, env=env)

    def mirror(self, pid: int, event: str) -> None:
        """The program stopped or continued: so does its process (its calls get no tokens while stopped)."""
        num = {"stopped": sig.SIGSTOP, "continued": sig.SIGCONT}.get(event)
        if num is not None:
            try:
                self.kernel.signal(pid, num)
            except LookupError:
                pass

    def detach(self, pid: int, status: int) -> None:
        """The program ended with `status`: its process ends with the same status; its token stops working."""
        self.tokens.revoke(pid)

        def settle() -> None:
            proc = self.kernel.process(pid)
            if proc is None or proc.status is not None:
                return  # it ended first (killed): nothing to settle
            fut = self.ended_future(pid)
            if not fut.done():
                fut.set_result(status & 0xFF)
            self._cancel_calls(pid)

        try:
            self.kernel.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: the kernel is gone
            return
        if threading.current_thread() is not self.kernel.loop_thread():
            # as for a program in bash: once the shell has seen it end, `ps` no longer shows it
            self.kernel.procs.wait_ended(pid, DETACH_WAIT_S)

    def ended_future(self, pid: int) -> asyncio.Future:
        fut = self._ended.get(pid)
        if fut is None:
            fut = self._ended[pid] = self.kernel.loop.create_future()
        return fut

    def _on_event(self, pid: int, kind: str, status: int | None) -> None:
        if kind == "exited" and (pid in self._ended or pid in self._calls):
            self.tokens.revoke(pid)
            self._ended.pop(pid, None)
            self._cancel_calls(pid)

    # --- calls in flight (on the kernel loop) ---------------------------------------------------------------
    def process(self, token: str | None) -> tuple[Process, AgentContext] | None:
        """The live process a token belongs to, with its context; None for a missing or unknown token."""
        pid = self.tokens.pid(token)
        if pid is None:
            return None
        proc = self.kernel.process(pid)
        if proc is None or proc.status is not None or proc.killed or not isinstance(proc.ctx, AgentContext):
            return None
        return proc, proc.ctx

    def track(self, pid: int, task: asyncio.Task) -> None:
        """A call of `pid` in flight: cancelled if the process ends (killed, or the program exited)."""
        calls = self._calls.setdefault(pid, set())
        calls.add(task)

        def done(t: asyncio.Task) -> None:
            calls.discard(t)
            if not calls:
                self._calls.pop(pid, None)
                self._idle(pid)

        task.add_done_callback(done)

    def _idle(self, pid: int) -> None:
        """No call in flight: the host process waits for its program again (overlapping calls each saved and
        restored the wait channel; the last one to end must leave it at 'host')."""
        proc = self.kernel.process(pid)
        if proc is not None and proc.status is None:
            proc.activity = proc.wchan = "host"

    def _cancel_calls(self, pid: int) -> None:
        for task in list(self._calls.get(pid, ())):
            task.cancel()
