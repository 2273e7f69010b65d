"""A fake AgentHost for the shell's tests (no model, no kernel), and tests that it behaves like the kernel's.

Agents are threads: `sleep SECONDS`, `say WORDS…` (prints them), `upper` (stdin upper-cased), `fail N` (exits N
with a message on stderr), `chat …` (prints its argv and options), `getenv NAME` (prints a variable). Signals follow
the kernel: STOP/TSTP stop (listener 'stopped', 128+sig), CONT continues, anything else ends the agent with
128+sig; like the kernel, an agent's stdout and stderr are closed when it exits.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import pytest
from aiosh.kernel.streams import Pipe

STOPPING = {signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}


class FakeProc:
    def __init__(self, pid: int, pgid: int, name: str, argv: list[str], **kw: object) -> None:
        self.pid = pid
        self.pgid = pgid
        self.name = name
        self.argv = argv
        self.stdin: Pipe | None = kw["stdin"]  # type: ignore[assignment]
        self.stdout: Pipe = kw["stdout"]  # type: ignore[assignment]
        self.stderr: Pipe = kw["stderr"]  # type: ignore[assignment]
        self.options: dict = kw["options"]  # type: ignore[assignment]
        self.env: dict = kw["env"]  # type: ignore[assignment]
        self.cwd: str = kw["cwd"]  # type: ignore[assignment]
        self.status: int | None = None
        self.stopped = False
        self.pending: int | None = None
        self.nice = self.options.get("nice", 0)


class FakeAgentHost:
    NAMES = ["chat", "fail", "getenv", "say", "sleep", "upper"]

    def __init__(self) -> None:
        self.procs: dict[int, FakeProc] = {}
        self.cond = threading.Condition()
        self.listeners: list[Callable[[int, str, int | None], None]] = []
        self.next_pid = 100
        self.started: list[FakeProc] = []

    # -- protocol --------------------------------------------------------------------------------------------
    def agent_names(self) -> list[str]:
        return list(self.NAMES)

    def start(self, name: str, argv: list[str], *, stdin: Pipe | None, stdout: Pipe, stderr: Pipe,
              pgid: int | None, cwd: str, env: dict[str, str], options: dict) -> int:  # fmt: skip
        if name not in self.NAMES:
            raise LookupError(f"{name}: no such agent")
        with self.cond:
            pid = self.next_pid
            self.next_pid += 1
            proc = FakeProc(pid, pgid or pid, name, list(argv), stdin=stdin, stdout=stdout, stderr=stderr,
                            options=dict(options), env=dict(env), cwd=cwd)  # fmt: skip
            self.procs[pid] = proc
            self.started.append(proc)
        threading.Thread(target=self._run, args=(proc,), daemon=True).start()
        return pid

    def wait(self, pid: int, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while True:
                proc = self.procs.get(pid)
                if proc is None:
                    raise LookupError(f"pid {pid} is not a child of this shell")
                if proc.status is not None:
                    del self.procs[pid]
                    return proc.status
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self.cond.wait(left if left is not None else 0.5)

    def signal(self, target: int, sig: int) -> None:
        with self.cond:
            if target > 0:
                procs = [self.procs[target]] if target in self.procs else []
            else:
                procs = [p for p in self.procs.values() if p.pgid == -target]
            if not procs:
                raise LookupError("no such process")
            events = []
            for p in procs:
                if p.status is not None or sig == 0:
                    continue
                if sig in STOPPING:
                    if not p.stopped:
                        p.stopped = True
                        events.append((p.pid, "stopped", 128 + sig))
                elif sig == signal.SIGCONT:
                    if p.stopped:
                        p.stopped = False
                        events.append((p.pid, "continued", None))
                else:
                    p.pending = sig
                    if p.stopped:
                        p.stopped = False
            self.cond.notify_all()
        for ev in events:
            self._notify(*ev)

    def state(self, pid: int) -> str | None:
        with self.cond:
            p = self.procs.get(pid)
            if p is None:
                return None
            if p.status is not None:
                return "Z"
            return "T" if p.stopped else "S"

    def add_listener(self, fn: Callable[[int, str, int | None], None]) -> None:
        self.listeners.append(fn)

    def renice(self, pid: int, nice: int) -> int:
        with self.cond:
            p = self.procs.get(pid)
            if p is None or p.status is not None:
                raise LookupError("no such process")
            p.nice = nice
            return nice

    # -- behaviour -------------------------------------------------------------------------------------------
    def _notify(self, pid: int, event: str, status: int | None) -> None:
        for fn in list(self.listeners):
            fn(pid, event, status)

    def _sleep(self, proc: FakeProc, seconds: float) -> int | None:
        """Sleep while honouring signals; a status when a signal ended it."""
        left = seconds
        with self.cond:
            while True:
                if proc.pending is not None:
                    return 128 + proc.pending
                if left <= 0:
                    return None
                t0 = time.monotonic()
                self.cond.wait(min(left, 0.02))
                if not proc.stopped:
                    left -= time.monotonic() - t0

    def _run(self, proc: FakeProc) -> None:
        status = 0
        try:
            status = self._behave(proc)
        except Exception as exc:  # noqa: BLE001
            proc.stderr.write(f"{proc.name}: {exc}\n")
            status = 1
        finally:
            with self.cond:
                proc.status = status
                self.cond.notify_all()
            proc.stdout.close()
            proc.stderr.close()
            self._notify(proc.pid, "exited", status)

    def _behave(self, proc: FakeProc) -> int:
        name, argv = proc.name, proc.argv
        if name == "sleep":
            if not argv:
                proc.stderr.write("sleep: missing operand\n")
                return 1
            got = self._sleep(proc, sum(float(a) for a in argv))
            return 0 if got is None else got
        if name == "say":
            proc.stdout.write(" ".join(argv) + "\n")
            return 0
        if name == "fail":
            proc.stderr.write("fail: failing\n")
            return int(argv[0]) if argv else 1
        if name == "getenv":
            proc.stdout.write(proc.env.get(argv[0], "") + "\n")
            return 0
        if name == "chat":
            opts = " ".join(f"{k}={v}" for k, v in sorted(proc.options.items()))
            proc.stdout.write(f"chat argv={argv} options=[{opts}]\n")
            return 0
        if name == "upper":
            if proc.stdin is None:
                return 0
            while True:
                if proc.pending is not None:
                    return 128 + proc.pending
                chunk = proc.stdin.read(0.02)
                if chunk == "":
                    return 0
                if chunk:
                    proc.stdout.write(chunk.upper())
        return 127


# -- the fake's own tests ----------------------------------------------------------------------------------------


def test_fake_implements_the_protocol() -> None:
    from aiosh.shell import AgentHost

    assert isinstance(FakeAgentHost(), AgentHost)


@pytest.mark.timeout(10)
def test_fake_sleep_is_killed_with_128_plus_signal() -> None:
    host = FakeAgentHost()
    out, err = Pipe(), Pipe()
    pid = host.start("sleep", ["5"], stdin=None, stdout=out, stderr=err, pgid=None, cwd="/", env={}, options={})
    assert host.wait(pid, 0.05) is None
    host.signal(-pid, signal.SIGTERM)
    assert host.wait(pid, 5) == 143
    assert out.closed and err.closed
    with pytest.raises(LookupError):
        host.wait(pid, 0)


@pytest.mark.timeout(10)
def test_fake_stop_and_continue_send_events() -> None:
    host = FakeAgentHost()
    events: list[tuple[int, str, int | None]] = []
    host.add_listener(lambda *ev: events.append(ev))
    pid = host.start("sleep", ["0.2"], stdin=None, stdout=Pipe(), stderr=Pipe(), pgid=None, cwd="/", env={},
                     options={})  # fmt: skip
    host.signal(pid, signal.SIGTSTP)
    assert host.state(pid) == "T"
    host.signal(pid, signal.SIGCONT)
    assert host.wait(pid, 5) == 0
    assert [e[1] for e in events] == ["stopped", "continued", "exited"]
    assert events[0][2] == 128 + signal.SIGTSTP
