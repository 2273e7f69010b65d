"""The shell's view of the kernel: the `AgentHost` the interpreter starts, waits for and signals agents through.

The shell library knows nothing of the kernel; this adapter maps its calls and options onto `Kernel`'s API and
turns kernel errors into the LookupError/ValueError the shell reports in bash's words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiosh.kernel.errors import NoSuchProcess, UnknownAgent
from aiosh.kernel.streams import Pipe

if TYPE_CHECKING:
    from aiosh.kernel import Kernel


class KernelAgentHost:
    """Implements the shell's AgentHost protocol on a Kernel, or on a function that returns the kernel and starts
    it at its first call (`boot.KernelHandle.get`): the shell asks only when a command needs an agent."""

    def __init__(self, kernel: Kernel | Callable[[], Kernel]) -> None:
        self._get: Callable[[], Kernel] = kernel if callable(kernel) else (lambda: kernel)
        self._kernel: Kernel | None = None
        self._listeners: list[Callable[[int, str, int | None], None]] = []

    @property
    def kernel(self) -> Kernel:
        if self._kernel is None:
            kernel = self._get()
            for fn in self._listeners:  # (no agent of this shell can have run before the kernel started)
                kernel.add_listener(fn)
            self._kernel = kernel
        return self._kernel

    def agent_names(self) -> list[str]:
        return sorted(self.kernel.agent_types())

    def agent_flags(self, name: str) -> tuple[dict[str, bool], bool] | None:
        spec = self.kernel.agent_types().get(name)
        if spec is None or spec.options is None:
            return None
        return spec.flags(), spec.intermixed

    def agent_help(self, name: str) -> str | None:
        spec = self.kernel.agent_types().get(name)
        return None if spec is None else spec.help()

    def agent_description(self, name: str) -> str:
        spec = self.kernel.agent_types().get(name)
        return "" if spec is None else spec.description

    def start(
        self, name: str, argv: list[str], *, stdin: Pipe | None, stdout: Pipe, stderr: Pipe, pgid: int | None,
        cwd: str, env: dict[str, str], options: dict,
    ) -> int:
        from aiosh.kernel.proc import Limits  # (the kernel is running: its modules are loaded)

        opts = dict(options)
        nice = int(opts.pop("nice", 0) or 0)
        sched_class = opts.pop("sched_class", None)
        lim = self.kernel.config.limits
        # --max-tokens caps each LLM call (it stays in the options the agent sees); the agent's lifetime token
        # limit is limits.max_tokens from aiosh.toml.
        limits = Limits(
            max_tokens=lim.max_tokens,
            max_time=float(opts.pop("max_time", 0) or lim.max_time),
            max_kv=int(opts.pop("max_kv", 0) or lim.max_kv),
        )
        try:
            return self.kernel.spawn(
                name, list(argv), stdin=stdin, stdout=stdout, stderr=stderr, nice=nice, sched_class=sched_class,
                pgid=pgid, limits=limits, options=opts, cwd=cwd, env=env,
            )
        except UnknownAgent as exc:
            raise LookupError(str(exc)) from None
        except NoSuchProcess as exc:
            raise LookupError(str(exc)) from None

    def wait(self, pid: int, timeout: float | None = None) -> int | None:
        try:
            got = self.kernel.wait(pid, timeout)
        except NoSuchProcess as exc:
            raise LookupError(str(exc)) from None
        return None if got is None else got[1]

    def signal(self, target: int, sig: int) -> None:
        try:
            self.kernel.signal(target, sig)
        except NoSuchProcess as exc:
            raise LookupError(str(exc)) from None

    def state(self, pid: int) -> str | None:
        return self.kernel.state(pid)

    def renice(self, pid: int, nice: int) -> int:
        try:
            return self.kernel.renice(pid, nice)
        except NoSuchProcess as exc:
            raise LookupError(str(exc)) from None

    def add_listener(self, fn: Callable[[int, str, int | None], None]) -> None:
        if self._kernel is None:
            self._listeners.append(fn)  # added when the kernel starts
        else:
            self._kernel.add_listener(fn)

    # --- host programs through the OpenAI-compatible door (aiosh/shell/hostdoor.py) ------------------------------
    def attach_host(self, argv: list[str], *, nice: int = 0, cwd: str = ".",
                    backend: str | None = None) -> tuple[int, dict[str, str]]:
        """A kernel process for a host program about to start, and the variables that lead it to the door.
        LookupError when the door is off ([door] enabled = false)."""
        if not self.kernel.config.door.enabled:
            raise LookupError("the door is off")
        att = self.kernel.door.attach(argv, nice=nice, cwd=cwd, backend=backend)
        return att.pid, att.env

    def host_event(self, pid: int, event: str, status: int | None = None) -> None:
        """The program stopped, continued or exited: its kernel process follows."""
        if event == "exited":
            self.kernel.door.detach(pid, 1 if status is None else status)
        else:
            self.kernel.door.mirror(pid, event)
