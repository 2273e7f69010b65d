"""Per-job API keys: the token a host program sends is the process its calls are syscalls of."""

from __future__ import annotations

import secrets
import threading


class TokenTable:
    """token → pid, thread-safe. A token dies with its process; tokens are random (32 bytes), never reused."""

    PREFIX = "aiosh-"

    def __init__(self) -> None:
        self._by_token: dict[str, int] = {}
        self._by_pid: dict[int, str] = {}
        self._lock = threading.Lock()

    def issue(self, pid: int) -> str:
        token = self.PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            self._by_token[token] = pid
            self._by_pid[pid] = token
        return token

    def pid(self, token: str | None) -> int | None:
        """The process a token belongs to, or None (no token, a revoked or a made-up one)."""
        if not token:
            return None
        with self._lock:
            return self._by_token.get(token)

    def revoke(self, pid: int) -> None:
        with self._lock:
            token = self._by_pid.pop(pid, None)
            if token is not None:
                self._by_token.pop(token, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_token)
