"""What callers hand the engine and what they get back: requests, handles, results.

A handle is the caller's side of one generation: it streams text (a `Pipe`, filled once per engine step),
can be cancelled from any thread, and ends with a `GenResult` carrying counts and the timings from which
waiting time and turnaround (the AIOS paper's metrics) are computed.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import EngineError as EngineError  # (defined in a leaf module, for front ends: see errors.py)
from .streams import Pipe

if TYPE_CHECKING:
    import asyncio  # (imported where a loop awaits: the engine's process has none)

REQUEST_IDS = itertools.count(1)  # request ids, unique across every backend of the process


@dataclass
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    seed: int | None = None


SCHED_CLASSES = ("interactive", "normal", "batch", "idle")  # scheduling classes, most favoured first


@dataclass
class SchedInfo:
    """Scheduling facts of the requesting agent, read by the policy each step (mutable: renice applies live)."""

    owner: int = 0  # pid; 0 = the shell or a bare engine user
    group: int = 0  # process group (a job)
    nice: int = 0
    sched_class: str = "normal"  # interactive | normal | batch | idle
    stopped: bool = False  # a stopped (T) agent gets no tokens and is the first to be swapped out


@dataclass
class GenRequest:
    """One LLM call. Give `messages` (rendered with the model's chat template) or a raw `prompt`."""

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    ignore_eos: bool = False
    grammar: str | None = None
    conversation: str | None = None  # key: later turns append to this conversation's tokens and KV
    # The prompt as token ids, when the caller rendered it already (the kernel does, once per turn): the local
    # engine decodes these as they are and renders nothing; `messages` still say what was asked (remote servers
    # and the transcript use them).
    tokens: list[int] | None = None
    sched: SchedInfo = field(default_factory=SchedInfo)
    max_kv: int = 0  # a KV limit in tokens for this sequence (0 = the window only)


@dataclass
class GenResult:
    text: str = ""
    finish_reason: str = ""  # stop | eos | length | cancelled | error
    error: str | None = None
    prompt_tokens: int = 0  # tokens of the prompt as a whole
    cached_tokens: int = 0  # of those, taken from KV already resident (prefix reuse)
    evaluated_tokens: int = 0  # prompt tokens actually decoded for this request
    completion_tokens: int = 0
    t_submit: float = 0.0
    t_admit: float = 0.0  # got a slot
    t_first: float = 0.0  # first generated token
    t_end: float = 0.0
    preemptions: int = 0
    backend: str = ""  # the server that answered ("local", or a [backends.NAME] entry)
    tokens: list[int] = field(default_factory=list)  # the generated token ids (the local engine's; remote: none)
    usage_estimated: bool = False  # a remote server reported no usage: prompt tokens counted by the local tokenizer

    @property
    def ttft(self) -> float:
        return (self.t_first or self.t_end) - self.t_submit

    @property
    def waiting_time(self) -> float:
        return (self.t_admit or self.t_end) - self.t_submit

    @property
    def turnaround(self) -> float:
        return self.t_end - self.t_submit


class RequestHandle:
    """The caller's end of a request. One consumer streams it; anyone may cancel or wait for the result."""

    def __init__(self, rid: int, request: GenRequest, canceller: Callable[[int], None]) -> None:
        self.id = rid
        self.request = request
        self.pipe = Pipe(f"request {rid}")
        self.result: GenResult | None = None
        self.n_generated = 0  # live, updated by the engine each step
        self.n_prompt = 0
        self._done = threading.Event()
        self._cancel = canceller
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._callbacks: list[Callable[[GenResult], None]] = []
        self._ending = False  # the result is set and the callbacks are taken: later ones run at once
        self._lock = threading.Lock()

    # engine side
    def _finish(self, result: GenResult) -> None:
        """The request ended: done callbacks first (the kernel folds the result into its process there), then the
        end is visible to the caller (its stream closes, `wait` returns), so nobody reads a half-folded result."""
        with self._lock:
            self.result = result
            self._ending = True
            callbacks, self._callbacks = self._callbacks, []
        try:
            for fn in callbacks:
                fn(result)
        finally:
            with self._lock:
                self._done.set()
                waiters, self._async_waiters = self._async_waiters, []
            self.pipe.close()
            for loop, fut in waiters:
                loop.call_soon_threadsafe(_resolve, fut)

    def add_done_callback(self, fn: Callable[[GenResult], None]) -> None:
        """fn(result) once the request ends, on the thread that ends it (at once if it already has)."""
        with self._lock:
            if not self._ending:
                self._callbacks.append(fn)
                return
        assert self.result is not None
        fn(self.result)

    # caller side
    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        if not self.done:
            self._cancel(self.id)

    def __iter__(self) -> Iterator[str]:
        while chunk := self.pipe.read():
            yield chunk

    async def astream(self):
        while chunk := await self.pipe.aread():
            yield chunk

    def wait(self, timeout: float | None = None) -> GenResult:
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} not finished after {timeout}s")
        assert self.result is not None
        return self.result

    async def await_result(self) -> GenResult:
        import asyncio

        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] | None = None
        with self._lock:
            if not self._done.is_set():
                fut = loop.create_future()
                self._async_waiters.append((loop, fut))
        if fut is not None:
            await fut
        assert self.result is not None
        return self.result


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
