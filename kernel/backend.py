"""The one interface every backend offers the kernel, and the figures each reports.

A backend turns `GenRequest`s into streamed `RequestHandle`s: the in-process llama.cpp engine ("local") or a pool
of OpenAI-compatible servers that serve one model (`kernel.remote.RemotePool`). The kernel, the shell and the
monitor see only this interface, so an agent's LLM call reads the same wherever it runs: the same policies order
the queue, the same signals stop and kill it, the same counts and timings are recorded.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .engine_types import EngineInfo, EngineStats, SeqStats, StepRecord
from .requests import GenRequest, GenResult, RequestHandle
from .scheduler import Policy

if TYPE_CHECKING:
    from .engine import Engine
    from .model_info import ModelInfo

LOCAL = "local"


@dataclass(frozen=True)
class BackendStats:
    """One server as the monitor shows it. `pool` is the name agents route by (a remote model's replicas share
    one pool and one queue); `queued` is that pool's queue, so replicas of one model show the same number."""

    name: str  # "local", or the [backends.NAME] entry
    kind: str  # local | openai
    pool: str
    model: str
    url: str  # base_url, or the GGUF path of the local model
    healthy: bool
    queued: int
    in_flight: int
    max_concurrent: int
    requests: int  # finished requests (any outcome)
    errors: int  # requests that ended in an error here, and failed attempts that were retried
    retries: int
    ttft_s: float | None  # mean time to first token over recent requests (None: none yet)
    tokens_per_s: float  # tokens generated over the last few seconds
    last_error: str = ""
    checked: float = 0.0  # monotonic time of the last health check (0 = never needed one)


@runtime_checkable
class Backend(Protocol):
    """What the kernel needs of a backend. All methods are thread-safe."""

    name: str  # the pool name agents route by
    kind: str

    def submit(self, req: GenRequest) -> RequestHandle: ...

    def wake(self) -> None:
        """Something changed outside (an agent continued after a stop): look at the queue again."""

    def set_policy(self, policy: Policy) -> None: ...

    def add_step_listener(self, fn: Callable[[StepRecord], None]) -> None:
        """fn(record) for the tokens each request got, the kernel's per-agent accounting."""

    def seqs(self) -> tuple[SeqStats, ...]:
        """Live requests (waiting and running); kv fields are 0 where a backend cannot know them."""

    @property
    def n_ctx(self) -> int:
        """One conversation's window in tokens, for fitting long ones; 0 = not known (use the local model's)."""

    def backend_stats(self) -> list[BackendStats]:
        """One row per server."""

    def close(self) -> None: ...


class RequestTracker:
    """Recent finished requests and generated tokens of one server: time to first token and tokens/s."""

    def __init__(self, keep: int = 32, window_s: float = 5.0) -> None:
        self._ttft: deque[float] = deque(maxlen=keep)
        self._tokens: deque[tuple[float, int]] = deque()
        self._window = window_s
        self._lock = threading.Lock()
        self.requests = 0
        self.errors = 0

    def finished(self, result: GenResult) -> None:
        with self._lock:
            self.requests += 1
            if result.error:
                self.errors += 1
            if result.t_first:
                self._ttft.append(result.t_first - result.t_submit)

    def tokens(self, n: int, now: float | None = None) -> None:
        with self._lock:
            self._tokens.append((time.monotonic() if now is None else now, n))

    def ttft(self) -> float | None:
        with self._lock:
            return sum(self._ttft) / len(self._ttft) if self._ttft else None

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._tokens and self._tokens[0][0] < now - self._window:
                self._tokens.popleft()
            return sum(n for _, n in self._tokens) / self._window


class LocalBackend:
    """The engine in a thread of this process as a backend (`kernel.engine_process = false`, fast tests; the
    shipped configuration runs it in its own process: `kernel.engine_client.EngineProcess`)."""

    kind = LOCAL

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = LOCAL
        self.tracker = RequestTracker()
        engine.add_step_listener(self._on_step)

    def _on_step(self, rec: StepRecord) -> None:
        if rec.sampled:
            self.tracker.tokens(len(rec.sampled), rec.t)

    def submit(self, req: GenRequest) -> RequestHandle:
        handle = self.engine.submit(req)
        handle.add_done_callback(self._finished)
        return handle

    def _finished(self, result: GenResult) -> None:
        result.backend = LOCAL
        self.tracker.finished(result)

    def wake(self) -> None:
        self.engine.wake()

    def set_policy(self, policy: Policy) -> None:
        self.engine.set_policy(policy)

    def add_step_listener(self, fn: Callable[[StepRecord], None]) -> None:
        self.engine.add_step_listener(fn)

    def seqs(self) -> tuple[SeqStats, ...]:
        return self.engine.stats.seqs

    @property
    def n_ctx(self) -> int:
        return self.engine.settings.n_ctx

    def backend_stats(self) -> list[BackendStats]:
        st = self.engine.stats
        waiting = sum(1 for s in st.seqs if s.slot is None)
        return [BackendStats(
            name=LOCAL, kind=LOCAL, pool=LOCAL, model=self.engine.model.info.description,
            url=self.engine.model.info.path, healthy=self.engine.error is None, queued=waiting,
            in_flight=len(st.seqs) - waiting, max_concurrent=st.slots, requests=self.tracker.requests, errors=self.tracker.errors, retries=0,
            ttft_s=self.tracker.ttft(), tokens_per_s=self.tracker.rate(), last_error=str(self.engine.error or ""),
        )]

    # --- what the kernel asks of its local engine (the same on EngineProcess) ----------------------------------
    @property
    def stats(self) -> EngineStats:
        return self.engine.stats

    @property
    def settings(self):
        return self.engine.settings

    @property
    def model_info(self) -> ModelInfo:
        return self.engine.model.info

    @property
    def n_threads(self) -> int:
        return self.engine.n_threads

    def steps(self, last: int | None = None) -> list[StepRecord]:
        return self.engine.steps(last)

    def forget_conversation(self, key: str) -> None:
        self.engine.forget_conversation(key)

    def clear_idle_caches(self, timeout: float = 10.0) -> None:
        def clear() -> None:
            self.engine.clear_idle_caches()
            self.engine._publish_stats()

        self.engine.call(clear, timeout)

    def engine_info(self):
        return EngineInfo(pid=None, state="ready" if self.engine.error is None else "failed", restarts=0,
                          rss_bytes=None, extra_buffers=self.engine.model.extra_buffers.describe(),
                          log_path="", last_error=str(self.engine.error or ""))

    def start(self, wait: float | None = None) -> bool:
        self.engine.start()
        return self.engine.error is None

    def restart(self) -> None:
        """A thread cannot be restarted: its crash took the process with it."""

    def log_tail(self, n: int = 5) -> list[str]:
        return []

    def close(self) -> None:
        self.engine.close()
