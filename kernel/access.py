"""The access manager: capabilities, grants, confirmations of irreversible actions, and the audit log.

Capabilities (strings):

| capability | lets an agent |
|---|---|
| `tool:NAME` (`tool:*` = every tool, `tool:SERVER.*` = an MCP server's tools) | call that tool |
| `read:PATH/` | read files under PATH (relative to its working folder; `read:./` = the whole folder) |
| `write:PATH/` | create, change or delete files under PATH |
| `spawn` | start child agents |
| `memory.read_other` | read other agents' memory entries |
| `nice.lower` | start a child at a lower nice (a higher priority) than its own |
| `*` | everything (as a declared need: "whatever the policy and the run allow") |

An agent's capabilities are fixed when it starts (`admit`): its type's declared needs (`AgentSpec.needs`; an
agent that declares none gets what the policy allows) ∩ the policy (`[access] allow` in aiosh.toml) ∩ its run's
`--allow` (when given) ∩ its parent's capabilities (a child never gets more than its parent). The policy's and the
run's `deny` lists (and the parent's) are subtracted at every check. Path capabilities are resolved against the
agent's working folder when it starts. `grant`/`revoke` add or remove a capability of one live process by hand.

Irreversible actions (write_file, delete_file) also need a confirmation (`confirm`): with `[access]
confirm_irreversible = false` or the run's `--yes` they go ahead; otherwise a front end that can ask the user
(`interactive = True`, set through `Kernel.interactive_confirmations`) gets a `Question` in the queue and answers
it with `answer(id, yes)`, while the agent waits (wchan "user"); without one (batch mode) they are refused.

Every decision goes to the audit table (allow, deny, ask, yes, no, grant, revoke) and to a bounded list in RAM
(`recent`), which the `audit` shell command shows.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["AccessManager", "AuditSink", "CAPABILITIES", "Cap", "Question", "parse_capability",
           "parse_capabilities"]

AuditSink = Callable[[int, str, str, str], None]  # (pid, capability, decision, detail)

CAPABILITIES = {
    "tool:NAME": "call the tool NAME (tool:* = every tool)",
    "read:PATH/": "read files under PATH (relative to the working folder; read:./ = all of it)",
    "write:PATH/": "create, change or delete files under PATH",
    "spawn": "start child agents",
    "memory.read_other": "read another agent's memory entries",
    "nice.lower": "start a child at a lower nice (higher priority) than its own",
    "*": "everything",
}
_PLAIN = ("spawn", "memory.read_other", "nice.lower", "*")
_HINT = "tool:NAME, read:PATH/, write:PATH/, spawn, memory.read_other, nice.lower"
RECENT = 2000  # audit rows kept in RAM


@dataclass(frozen=True)
class Cap:
    """One parsed capability: kind (tool | read | write | spawn | memory.read_other | nice.lower | *) and its
    argument (a tool name or "*", a path: relative as written, absolute once resolved)."""

    kind: str
    arg: str = ""

    def __str__(self) -> str:
        if self.kind in ("read", "write"):
            return f"{self.kind}:{self.arg if self.arg.endswith('/') else self.arg + '/'}"
        return f"{self.kind}:{self.arg}" if self.kind == "tool" else self.kind


def parse_capability(text: str) -> Cap:
    """`tool:calculator` → Cap("tool", "calculator"); ValueError (one line) for anything else."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r}: a capability is a string ({_HINT})")
    t = text.strip()
    if t in _PLAIN:
        return Cap(t)
    kind, sep, arg = t.partition(":")
    if sep and kind == "tool":
        if arg == "*" or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*(\.\*)?", arg):
            return Cap("tool", arg)
        raise ValueError(f"'{text}': invalid tool name (tool:NAME, tool:SERVER.* or tool:*)")
    if sep and kind in ("read", "write"):
        if "\0" in arg:
            raise ValueError(f"'{text}': invalid path")
        return Cap(kind, arg or ".")
    raise ValueError(f"'{text}': unknown capability (one of {_HINT})")


def parse_capabilities(items: Iterable[str] | str) -> list[Cap]:
    """A list of capabilities, or one string of them separated by commas (as `--allow a,b` gives them)."""
    if isinstance(items, str):
        items = [items]
    out: list[Cap] = []
    for item in items:
        for part in str(item).split(","):
            if part.strip():
                out.append(parse_capability(part))
    return out


def _resolve(cap: Cap, cwd: str, follow: bool = True) -> Cap:
    """Path capabilities made absolute against the agent's working folder (symlinks resolved, unless `follow` is
    False: a path a tool asks about was already walked by the tool, and its last component may be a symbolic
    link that is itself the object, as for delete_file)."""
    if cap.kind not in ("read", "write"):
        return cap
    path = os.path.join(cwd, os.path.expanduser(cap.arg))
    return Cap(cap.kind, os.path.realpath(path) if follow else os.path.normpath(path))


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _tool_under(name: str, family: str) -> bool:
    """`tool:fs.*` covers fs.read and fs.x.y (an MCP server's tools), and a narrower family such as fs.x.*."""
    return family.endswith(".*") and name != family and name.startswith(family[:-1])


def meet(a: Cap, b: Cap) -> Cap | None:
    """What both allow (the narrower of the two), or None when they allow nothing in common."""
    if a.kind == "*":
        return b
    if b.kind == "*":
        return a
    if a.kind != b.kind:
        return None
    if a.kind == "tool":
        if a.arg == "*" or _tool_under(b.arg, a.arg):
            return b
        if b.arg == "*" or a.arg == b.arg or _tool_under(a.arg, b.arg):
            return a
        return None
    if a.kind in ("read", "write"):
        if _under(a.arg, b.arg):
            return a
        if _under(b.arg, a.arg):
            return b
        return None
    return a


def covers(have: Iterable[Cap], want: Cap) -> bool:
    return any(meet(h, want) == want for h in have)


def intersect(a: Iterable[Cap], b: Iterable[Cap]) -> frozenset[Cap]:
    got = {m for x in a for y in b if (m := meet(x, y)) is not None}
    # drop what another member already covers (read:/w/docs under read:/w)
    return frozenset(c for c in got if not any(o != c and meet(o, c) == c for o in got))


EVERYTHING = frozenset({Cap("*")})


@dataclass
class ProcAccess:
    """What one process may do, fixed at its start."""

    allowed: frozenset[Cap]
    denied: frozenset[Cap]
    yes: bool  # irreversible actions go ahead without asking (--yes)
    cwd: str
    agent: str = ""


@dataclass(frozen=True)
class Question:
    """A y/N question to the user about an irreversible action; answer it with `Kernel.answer(id, yes)`."""

    id: int
    pid: int
    agent: str
    text: str
    capability: str = ""
    t: float = 0.0


class AccessManager:
    """`check(pid, capability, detail) -> bool`: allowed only if the process's capabilities (or a grant) cover it
    and no deny does; every answer is audited. Thread-safe; `confirm` runs on the kernel loop."""

    def __init__(self, audit: AuditSink | None = None, *, allow: Iterable[str] = (), deny: Iterable[str] = (),
                 confirm_irreversible: bool = True) -> None:
        self._audit = audit
        self._grants: dict[int, set[str]] = {}
        self._procs: dict[int, ProcAccess] = {}
        self._lock = threading.Lock()
        self.policy_allow = tuple(parse_capabilities(list(allow)))
        self.policy_deny = tuple(parse_capabilities(list(deny)))
        self.confirm_irreversible = confirm_irreversible
        self.interactive = False  # a front end answers questions (else irreversible actions are refused)
        self._qids = itertools.count(1)
        self._questions: dict[int, tuple[Question, asyncio.Future]] = {}
        self._question_listeners: list[Callable[[Question], None]] = []
        self._recent: deque[dict] = deque(maxlen=RECENT)

    # --- admission ----------------------------------------------------------------------------------------------
    def admit(self, pid: int, *, agent: str = "", cwd: str = ".", needs: Iterable[str] | None = None,
              allow: Iterable[str] | str | None = None, deny: Iterable[str] | str | None = None,
              yes: bool = False, parent: int = 0) -> ProcAccess:
        """Fix a new process's capabilities: needs ∩ policy ∩ run's allow ∩ parent's; denies add up.

        ValueError (one line) for a capability that does not parse."""
        base = os.path.realpath(cwd)
        need_caps = EVERYTHING if needs is None else frozenset(parse_capabilities(list(needs)))
        run_caps = EVERYTHING if allow is None else frozenset(parse_capabilities(allow))
        run_deny = frozenset() if deny is None else frozenset(parse_capabilities(deny))
        caps = intersect({_resolve(c, base) for c in need_caps}, {_resolve(c, base) for c in self.policy_allow})
        caps = intersect(caps, {_resolve(c, base) for c in run_caps})
        denied = {_resolve(c, base) for c in (*self.policy_deny, *run_deny)}
        auto_yes = bool(yes)
        lost: list[str] = []
        with self._lock:
            pa = self._procs.get(parent) if parent else None
        if parent:
            if pa is None:  # a parent the access manager never admitted (cannot happen through Kernel.spawn)
                caps, auto_yes = frozenset(), False
            else:
                asked = caps
                caps = intersect(caps, pa.allowed)
                denied |= pa.denied
                auto_yes = pa.yes  # the user's --yes covers the whole family, and a child cannot add it
                if needs is not None or allow is not None:  # it asked for something: say what it did not get
                    lost = sorted(str(c) for c in asked if not covers(caps, c))
        entry = ProcAccess(allowed=caps, denied=frozenset(denied), yes=auto_yes, cwd=base, agent=agent)
        with self._lock:
            self._procs[pid] = entry
        for cap in lost:
            self._record(pid, cap, "narrow", f"{agent}[{pid}] asked for {cap}; its parent [{parent}] does not "
                         "have it")
        return entry

    def capabilities(self, pid: int) -> list[str]:
        """A process's capabilities as strings (its grants included), sorted."""
        with self._lock:
            pa = self._procs.get(pid)
            grants = set(self._grants.get(pid, ()))
        caps = {str(c) for c in pa.allowed} if pa else set()
        return sorted(caps | grants)

    def denied(self, pid: int) -> list[str]:
        with self._lock:
            pa = self._procs.get(pid)
        return sorted(str(c) for c in pa.denied) if pa else []

    # --- grants ---------------------------------------------------------------------------------------------
    def grant(self, pid: int, capability: str) -> None:
        parse_capability(capability)
        with self._lock:
            self._grants.setdefault(pid, set()).add(capability)
        self._record(pid, capability, "grant", "")

    def revoke(self, pid: int, capability: str) -> None:
        with self._lock:
            self._grants.get(pid, set()).discard(capability)
        self._record(pid, capability, "revoke", "")

    def grants(self, pid: int) -> frozenset[str]:
        with self._lock:
            return frozenset(self._grants.get(pid, ()))

    def forget(self, pid: int) -> None:
        """The process exited: its capabilities and grants end with it (pids are never reused in a run)."""
        with self._lock:
            self._grants.pop(pid, None)
            self._procs.pop(pid, None)

    # --- checks -------------------------------------------------------------------------------------------------
    def permits(self, pid: int, capability: str) -> bool:
        """The answer `check` would give, without auditing it (to list what an agent may use)."""
        try:
            want = parse_capability(capability)
        except ValueError:
            return False
        with self._lock:
            pa = self._procs.get(pid)
            grants = list(self._grants.get(pid, ()))
        if pa is not None:
            want = _resolve(want, pa.cwd, follow=not os.path.isabs(want.arg))
            if covers(pa.denied, want):
                return False
        granted = []
        for g in grants:
            try:
                granted.append(_resolve(parse_capability(g), pa.cwd if pa else "/"))
            except ValueError:
                continue
        if covers(granted, want):
            return True
        return pa is not None and covers(pa.allowed, want)

    def check(self, pid: int, capability: str, detail: str = "") -> bool:
        allowed = self.permits(pid, capability)
        self._record(pid, capability, "allow" if allowed else "deny", detail)
        return allowed

    def record(self, pid: int, capability: str, decision: str, detail: str = "") -> None:
        """Audit a decision taken elsewhere (a path refused before any capability applies)."""
        self._record(pid, capability, decision, detail)

    # --- confirmations --------------------------------------------------------------------------------------
    async def confirm(self, pid: int, agent: str, capability: str, text: str) -> bool:
        """Ask the user about an irreversible action (on the kernel loop); True = go ahead. Audited."""
        with self._lock:
            pa = self._procs.get(pid)
        if not self.confirm_irreversible:
            self._record(pid, capability, "yes", "access.confirm_irreversible = false: " + text)
            return True
        if pa is not None and pa.yes:
            self._record(pid, capability, "yes", "--yes: " + text)
            return True
        if not self.interactive:
            self._record(pid, capability, "deny", "batch mode, no one to ask (use --yes): " + text)
            return False
        q = Question(id=next(self._qids), pid=pid, agent=agent, text=text, capability=capability, t=time.time())
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        with self._lock:
            self._questions[q.id] = (q, fut)
        self._record(pid, capability, "ask", text)
        for fn in list(self._question_listeners):
            try:
                fn(q)
            except Exception:  # noqa: BLE001 - a listener's bug must not break the agent
                pass
        answer: bool | None = None
        try:
            answer = bool(await fut)
        finally:
            with self._lock:
                self._questions.pop(q.id, None)
            if answer is None:
                self._record(pid, capability, "cancel", "not answered, the agent ended first: " + text)
            else:
                self._record(pid, capability, "yes" if answer else "no", text)
        return answer

    def questions(self) -> list[Question]:
        """The questions waiting for an answer, oldest first."""
        with self._lock:
            return [q for q, _ in sorted(self._questions.values(), key=lambda x: x[0].id)]

    def answer(self, qid: int, yes: bool) -> bool:
        """Answer a question (from any thread); False when there is no such question (answered, or gone)."""
        with self._lock:
            item = self._questions.get(qid)
        if item is None:
            return False
        fut = item[1]

        def settle() -> None:
            if not fut.done():
                fut.set_result(bool(yes))

        try:
            fut.get_loop().call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def add_question_listener(self, fn: Callable[[Question], None]) -> None:
        """fn(question) is called on the kernel loop when a question is asked (keep it short: post to a UI)."""
        self._question_listeners.append(fn)

    # --- audit ----------------------------------------------------------------------------------------------
    def recent(self, n: int = 20, pid: int | None = None) -> list[dict]:
        """The last n decisions of this run (kept in RAM), oldest first: t, pid, agent, capability, decision,
        detail."""
        with self._lock:
            rows = [r for r in self._recent if pid is None or r["pid"] == pid]
        return rows[-n:] if n else rows

    def _record(self, pid: int, capability: str, decision: str, detail: str) -> None:
        with self._lock:
            pa = self._procs.get(pid)
            self._recent.append({"t": time.time(), "pid": pid, "agent": pa.agent if pa else "",
                                 "capability": capability, "decision": decision, "detail": detail})
        if self._audit is not None:
            try:
                self._audit(pid, capability, decision, detail)
            except Exception:  # noqa: BLE001 - auditing must never break the check itself
                pass
