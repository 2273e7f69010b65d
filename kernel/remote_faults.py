"""What went wrong with a remote server, in one line, and what to do about it.

Every failure of a request to an OpenAI-compatible server is one of a few kinds, and each kind decides two things:
may the request be tried again (only while the agent has seen none of its tokens, or it would read them twice),
and is the server at fault (then it is skipped until a health check passes). The HTTP client's exceptions are
recognised by their class names (`ConnectError`, `ReadTimeout`, …), which httpx and its forks share, so this
module does not depend on which transport the `openai` package was built with.
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from typing import Any


class StreamTruncated(Exception):
    """The event stream ended (cleanly or not) before any choice carried a finish reason."""


@dataclass(frozen=True)
class Fault:
    message: str  # one line, without the server's name
    retryable: bool  # worth another attempt (on this server or another) if no token was delivered yet
    server_fault: bool  # the server is unwell: skip it until a health check passes


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in out:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out


def _names(exc: BaseException) -> set[str]:
    """Class names of the exception and of everything in its chain (the client wraps transport errors)."""
    return {c.__name__ for e in _chain(exc) for c in type(e).__mro__}


def _cause_text(exc: BaseException) -> str:
    """The most specific message in the exception's chain ("[Errno 111] Connection refused")."""
    seen = _chain(exc)[-1]
    text = str(seen) or type(seen).__name__
    return " ".join(text.split())[:200]


def _refused(exc: BaseException) -> bool:
    return any(isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED
               or "connection refused" in str(e).lower() for e in _chain(exc))


def _server_message(exc: Any) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") or err.get("detail") if isinstance(err, dict) else err
        if msg:
            return " ".join(str(msg).split())[:200]
    return " ".join(str(exc.message).split())[:200]


def classify(exc: BaseException, timeout_s: float = 0.0) -> Fault:
    """The fault behind an exception raised while connecting to, or reading from, a server."""
    import openai  # loaded already by any remote pool; not at the top, to keep it off every start-up

    names = _names(exc)
    if isinstance(exc, StreamTruncated):
        return Fault("stream ended without a finish reason", True, True)
    if isinstance(exc, openai.APITimeoutError) or "TimeoutException" in names:
        after = f" after {timeout_s:g}s" if timeout_s else ""
        return Fault(f"timed out{after}", True, True)
    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        text = f"HTTP {code}: {_server_message(exc)}"
        if code >= 500:
            return Fault(text, True, True)
        if code in (408, 409, 429):
            return Fault(text, True, False)  # busy or rate limited: try again later, the server is fine
        return Fault(text, False, False)  # the request itself is wrong (bad key, unknown model, too long)
    if _refused(exc):
        return Fault("connection refused", True, True)
    if names & {"RemoteProtocolError", "ReadError", "WriteError", "ProtocolError", "IncompleteRead"}:
        return Fault(f"connection lost: {_cause_text(exc)}", True, True)
    if isinstance(exc, openai.APIConnectionError) or names & {"ConnectError", "NetworkError", "TransportError"}:
        return Fault(f"cannot connect: {_cause_text(exc)}", True, True)
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return Fault(f"malformed stream: {' '.join(str(exc).split())[:120]}", True, True)
    if isinstance(exc, openai.APIError):
        return Fault(f"server error in stream: {' '.join(str(exc.message).split())[:200]}", True, True)
    if isinstance(exc, KeyError | IndexError | TypeError | AttributeError | ValueError):
        return Fault(f"malformed stream: unexpected event ({type(exc).__name__}: {exc})", True, True)
    return Fault(f"{type(exc).__name__}: {_cause_text(exc)}", True, True)
