"""Host programs as aiosh processes: the door's variables in their environment, their stops and exit mirrored.

When the shell's agent host offers a door (`attach_host`, the kernel bridge does), every program the shell starts
gets OPENAI_BASE_URL, OPENAI_API_BASE and its own OPENAI_API_KEY, and a process in the kernel's table whose LLM
calls are the program's. The program's stops, continues and exit, as `waitpid` reports them, are passed on to that
process (`host_event`), so `kill -STOP %1` pauses its streams and its end ends the process with its status.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .procs import Proc


@runtime_checkable
class HostDoor(Protocol):
    """Optional extra of an AgentHost."""

    def attach_host(self, argv: list[str], *, nice: int = 0, cwd: str = ".",
                    backend: str | None = None) -> tuple[int, dict[str, str]]: ...

    def host_event(self, pid: int, event: str, status: int | None = None) -> None: ...


def open_door(agents: object, argv: list[str], options: dict, cwd: str
              ) -> tuple[dict[str, str], Callable[[Proc | None], None]]:
    """(variables to add to the program's environment, bind): call bind(proc) once the program runs, or
    bind(None) if it could not start. Without a door: ({}, a no-op)."""
    if not isinstance(agents, HostDoor):
        return {}, lambda _proc: None
    try:
        pid, env = agents.attach_host(list(argv), nice=int(options.get("nice", 0) or 0), cwd=cwd,
                                      backend=options.get("backend"))
    except (LookupError, RuntimeError, OSError, ValueError):
        return {}, lambda _proc: None  # no door (off, or it cannot listen): the program runs without it

    def bind(proc: Proc | None) -> None:
        if proc is None:
            agents.host_event(pid, "exited", 127)
            return
        seen = ["running"]

        def watch(p: Proc) -> None:
            if p.finished:
                return  # (told by the exit hook)
            now = "stopped" if p.stopped else "continued"
            if now != seen[0]:
                seen[0] = now
                agents.host_event(pid, now, None)

        proc.add_watcher(watch)
        if not proc.add_exit_hook(lambda status: agents.host_event(pid, "exited", status)):
            agents.host_event(pid, "exited", proc.status)  # it ended before it was bound

    return env, bind
