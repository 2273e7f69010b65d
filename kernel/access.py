"""The access manager (a placeholder for the access-control issue): the one check point every privileged
syscall passes, default deny, each decision written to the audit table.

Today it knows grants only: `grant(pid, "memory.read_other")` lets that agent read other agents' memory.
Confirmations, capability declarations (`AgentSpec.needs`) and policies come with the access-control issue; they
belong in `check`, so callers do not change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["AccessManager", "AuditSink", "CAPABILITIES"]

AuditSink = Callable[[int, str, str, str], None]  # (pid, capability, decision, detail)

CAPABILITIES = {
    "memory.read_other": "read another agent's memory entries",
}


class AccessManager:
    """`check(pid, capability, detail) -> bool`: allowed only if granted; every answer is audited."""

    def __init__(self, audit: AuditSink | None = None) -> None:
        self._audit = audit
        self._grants: dict[int, set[str]] = {}
        self._lock = threading.Lock()

    def grant(self, pid: int, capability: str) -> None:
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
        """The process exited: its grants end with it (pids are never reused within a run anyway)."""
        with self._lock:
            self._grants.pop(pid, None)

    def check(self, pid: int, capability: str, detail: str = "") -> bool:
        with self._lock:
            allowed = capability in self._grants.get(pid, ()) or capability.startswith(self.default_allow)
        self._record(pid, capability, "allow" if allowed else "deny", detail)
        return allowed

    default_allow: tuple[str, ...] = ("tool:", "read:", "write:")  # until capabilities and policies come

    def record(self, pid: int, capability: str, decision: str, detail: str = "") -> None:
        """Audit a decision taken elsewhere (a path refused before any capability applies)."""
        self._record(pid, capability, decision, detail)

    async def confirm(self, pid: int, agent: str, capability: str, text: str) -> bool:
        """Ask before an irreversible action (until confirmations come: refused, as in batch mode)."""
        self._record(pid, capability, "deny", "no one to ask: " + text)
        return False

    def _record(self, pid: int, capability: str, decision: str, detail: str) -> None:
        if self._audit is not None:
            try:
                self._audit(pid, capability, decision, detail)
            except Exception:  # noqa: BLE001 - auditing must never break the check itself
                pass
