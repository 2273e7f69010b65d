"""The remote backend: one model served by OpenAI-compatible servers (replicas), scheduled like the local engine.

A `RemotePool` has one queue for its model. The kernel's policies order it with the same `Scheduler` the engine
uses (classes, boosts, nice, fair share), and a request is admitted when a healthy replica has a free slot
(`max_concurrent`), to the least loaded one. Tokens come back as server-sent events through the `openai`
package and go to the agent as they arrive; cancelling a request closes its stream, which is how such a server
learns to stop. Servers batch internally, so a remote request cannot be preempted or swapped: scheduling here
decides who goes next, not who yields. A stopped agent's request keeps streaming on the server, but its tokens
are held back until it continues.

Faults (see `kernel.remote_faults`): a request that fails before its first token is tried again after a backoff
that doubles, on a healthy replica, at most `retries` times; one that fails after tokens were delivered ends
with its error (a retry would repeat them). A server at fault is skipped until a health check (GET /models)
passes. Everything runs on one thread per pool with its own asyncio loop; other threads talk to it through
`call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .backend import BackendStats, RequestTracker
from .config import BackendSettings, ConfigError
from .engine_types import SeqStats, StepRecord
from .remote_faults import Fault, StreamTruncated, classify
from .requests import REQUEST_IDS, GenRequest, GenResult, RequestHandle
from .scheduler import Policy, Scheduler, SeqState

NO_KEY = "no-key"  # the openai client insists on a key; servers without auth ignore it
HEALTH_TICK_S = 0.1


class BackendError(Exception):
    """A remote backend cannot be used (at start-up: no replica answers); the message is one line."""


@dataclass
class _Replica:
    name: str
    settings: BackendSettings
    api_key: str
    client: Any = None  # openai.AsyncOpenAI, made on the pool's thread
    healthy: bool = True
    in_flight: int = 0
    last_error: str = ""
    checked: float = 0.0
    next_check: float = 0.0
    checking: bool = False
    retries: int = 0
    tracker: RequestTracker = field(default_factory=RequestTracker)

    @property
    def load(self) -> float:
        return self.in_flight / self.settings.max_concurrent


@dataclass
class _Call:
    handle: RequestHandle
    req: GenRequest
    seq: SeqState
    result: GenResult
    replica: _Replica | None = None
    task: asyncio.Task | None = None
    attempts: int = 0  # failed attempts so far
    retry_at: float = 0.0  # monotonic time before which it is not admitted again
    chunks: int = 0  # content chunks delivered (a token each, as the servers stream them)
    text: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # text received while the agent was stopped
    last_t: float = 0.0
    finish: str | None = None
    cancelled: bool = False


def api_key_for(name: str, settings: BackendSettings) -> str:
    """The key from the environment variable the entry names; a missing variable is a one-line ConfigError."""
    var = settings.api_key_env
    if not var:
        return NO_KEY
    value = os.environ.get(var)
    if not value:
        raise ConfigError(settings.origin or "<config>", f"environment variable {var} is not set",
                          f"backends.{name}", "api_key_env")
    return value


class RemotePool:
    """The replicas of one model, one queue, one scheduler; the backend named by the model (or any entry)."""

    kind = "openai"

    def __init__(
        self, model: str, entries: dict[str, BackendSettings], policy: Policy, *, boost_after_s: float = 5.0,
        count_prompt: Callable[[GenRequest], int] | None = None,
    ) -> None:
        self.name = model
        self.model = model
        self.replicas = [_Replica(n, s, api_key_for(n, s)) for n, s in entries.items()]
        self.retries = max(r.settings.retries for r in self.replicas)
        self.backoff_s = max(r.settings.backoff_s for r in self.replicas)
        cap = sum(r.settings.max_concurrent for r in self.replicas)
        self.scheduler = Scheduler(policy, n_slots=cap, max_batch=cap, token_budget=1 << 30,
                                   boost_after_s=boost_after_s)
        self.n_ctx = self.replicas[0].settings.n_ctx  # the window to fit conversations into (0 = the local model's)
        self._count_prompt = count_prompt
        self._pending: list[_Call] = []
        self._running: dict[int, _Call] = {}
        self._parked: list[tuple[_Call, str, str | None, int | None]] = []  # ended while their agent was stopped
        self._listeners: list[Callable[[StepRecord], None]] = []
        self._steps = itertools.count(1)
        self._seqs: tuple[SeqStats, ...] = ()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._main_task: asyncio.Task | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> RemotePool:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"aiosh-remote-{self.name}", daemon=True)
            self._thread.start()
            self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._main_task = self._loop.create_task(self._main())
        try:
            self._loop.run_until_complete(self._main_task)
        except asyncio.CancelledError:
            pass
        finally:
            left = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
            for t in left:
                t.cancel()
            if left:
                self._loop.run_until_complete(asyncio.wait(left, timeout=5))
            self._loop.run_until_complete(self._close_clients())
            self._loop.close()

    async def _main(self) -> None:
        import openai  # here, not at the top: it takes 0.4 s to import, and most sessions have no remote backend

        for r in self.replicas:
            s = r.settings
            r.client = openai.AsyncOpenAI(
                base_url=s.base_url, api_key=r.api_key, max_retries=0,
                timeout=openai.Timeout(s.timeout_s, connect=s.connect_timeout_s),
            )
        self._ready.set()
        while not self._closed:
            now = time.monotonic()
            for r in self.replicas:
                if not r.healthy and not r.checking and now >= r.next_check:
                    r.checking = True
                    self._loop.create_task(self._health_check(r))
            await asyncio.sleep(HEALTH_TICK_S)

    async def _close_clients(self) -> None:
        for r in self.replicas:
            if r.client is not None:
                try:
                    await r.client.close()
                except Exception:  # noqa: BLE001 - closing at shutdown: nothing left to tell anyone
                    pass

    def close(self) -> None:
        """Cancel every request (closing its stream), fail the queue, stop the thread."""
        if self._thread is None or self._closed:
            self._closed = True
            return
        done = threading.Event()

        def stop() -> None:
            self._closed = True
            for call in list(self._pending):
                self._pending.remove(call)
                self._end(call, "cancelled", "backend shut down")
            for call in list(self._running.values()):
                call.cancelled = True
                if call.task is not None:
                    call.task.cancel()
            for parked in self._parked:
                self._finish(*parked)
            self._parked.clear()
            done.set()

        self._loop.call_soon_threadsafe(stop)
        done.wait(5)
        self._thread.join(timeout=10)
        self._thread = None

    def probe(self) -> list[tuple[str, str | None, list[str]]]:
        """Check every replica now (GET /models): [(name, error or None, model ids it serves)]. A replica that
        fails is marked unhealthy (and checked again every health_interval_s)."""
        fut = asyncio.run_coroutine_threadsafe(self._probe_all(), self._loop)
        timeout = max(r.settings.connect_timeout_s for r in self.replicas) + 10
        return fut.result(timeout)

    async def _probe_all(self) -> list[tuple[str, str | None, list[str]]]:
        return list(await asyncio.gather(*(self._probe(r) for r in self.replicas)))

    async def _probe(self, r: _Replica) -> tuple[str, str | None, list[str]]:
        assert r.client is not None
        try:
            page = await r.client.models.list(timeout=r.settings.connect_timeout_s + 5)
            models = [m.id for m in page.data]
            error = None
        except Exception as exc:  # noqa: BLE001 - reported to the caller as one line
            models, error = [], classify(exc, r.settings.connect_timeout_s).message
        now = time.monotonic()
        r.checked = now
        if error is None:
            r.healthy = True
        else:
            self._mark_unhealthy(r, error, now)
        return r.name, error, models

    async def _health_check(self, r: _Replica) -> None:
        try:
            await self._probe(r)
        finally:
            r.checking = False
        if r.healthy:
            self._dispatch()

    # --- the Backend interface (any thread) ---------------------------------------------------------------------
    def submit(self, req: GenRequest) -> RequestHandle:
        rid = next(REQUEST_IDS)
        handle = RequestHandle(rid, req, self.cancel)
        now = time.monotonic()
        result = GenResult(t_submit=now, backend=self.name)
        if self._closed or self._thread is None:
            result.finish_reason, result.error, result.t_end = "error", f"backend {self.name} is shut down", now
            handle._finish(result)
            return handle
        prompt = 0
        if self._count_prompt is not None:
            try:
                prompt = self._count_prompt(req)
            except Exception:  # noqa: BLE001 - an estimate only; the server counts for itself
                prompt = 0
        handle.n_prompt = prompt
        seq = SeqState(rid=rid, sched=req.sched, arrival=now, prompt_len=prompt, waiting_since=now)
        call = _Call(handle=handle, req=req, seq=seq, result=result)
        self._loop.call_soon_threadsafe(self._enqueue, call)
        return handle

    def cancel(self, rid: int) -> None:
        if not self._closed:
            self._loop.call_soon_threadsafe(self._cancel, rid)

    def wake(self) -> None:
        if not self._closed:
            self._loop.call_soon_threadsafe(self._wake)

    def set_policy(self, policy: Policy) -> None:
        def switch() -> None:
            self.scheduler.set_policy(policy)
            self._dispatch()

        if not self._closed:
            self._loop.call_soon_threadsafe(switch)

    def add_step_listener(self, fn: Callable[[StepRecord], None]) -> None:
        self._listeners.append(fn)

    def seqs(self) -> tuple[SeqStats, ...]:
        return self._seqs

    def backend_stats(self) -> list[BackendStats]:
        queued = sum(1 for s in self._seqs if s.slot is None)
        return [BackendStats(
            name=r.name, kind=self.kind, pool=self.name, model=self.model, url=r.settings.base_url,
            healthy=r.healthy, queued=queued, in_flight=r.in_flight, max_concurrent=r.settings.max_concurrent,
            requests=r.tracker.requests, errors=r.tracker.errors, retries=r.retries, ttft_s=r.tracker.ttft(),
            tokens_per_s=r.tracker.rate(), last_error=r.last_error, checked=r.checked,
        ) for r in self.replicas]

    # --- the queue (pool thread) --------------------------------------------------------------------------------
    def _enqueue(self, call: _Call) -> None:
        if self._closed:
            self._end(call, "cancelled", "backend shut down")
            return
        self._pending.append(call)
        live = [c.seq for c in (*self._pending, *self._running.values())]
        self.scheduler.policy.on_wake(call.seq, live)
        self._dispatch()

    def _cancel(self, rid: int) -> None:
        for call in self._pending:
            if call.seq.rid == rid:
                self._pending.remove(call)
                self._end(call, "cancelled", None)
                self._publish()
                return
        for parked in self._parked:
            if parked[0].seq.rid == rid:
                self._parked.remove(parked)
                self._finish(parked[0], "cancelled", None, None)
                return
        running = self._running.get(rid)
        if running is not None and running.task is not None:
            running.cancelled = True
            running.task.cancel()  # the stream is closed in _stream's finally

    def _wake(self) -> None:
        for call in self._running.values():
            if call.held and not call.req.sched.stopped:
                call.handle.pipe.write("".join(call.held))
                call.held.clear()
        for parked in [p for p in self._parked if not p[0].req.sched.stopped or self._closed]:
            self._parked.remove(parked)
            self._finish(*parked)
        self._dispatch()

    def _dispatch(self) -> None:
        """Admit queued requests into free replica slots, in the scheduler's order. Unhealthy replicas are
        skipped while a healthy one exists; when none is, requests still make their (bounded) attempts on them."""
        if self._closed:
            return
        now = time.monotonic()
        ready = [c for c in self._pending if c.retry_at <= now]
        usable = [r for r in self.replicas if r.healthy] or list(self.replicas)
        cap = sum(r.settings.max_concurrent for r in usable)
        self.scheduler.n_slots = self.scheduler.max_batch = cap
        by_rid = {c.seq.rid: c for c in ready}
        plan = self.scheduler.plan([c.seq for c in (*self._running.values(), *ready)], now)
        for seq in plan.admit:  # a plan's preemptions are not followed: a server cannot give a slot back
            call = by_rid.get(seq.rid)
            if call is None:
                continue
            free = [r for r in usable if r.in_flight < r.settings.max_concurrent]
            if not free:
                break
            self._start(call, min(free, key=lambda r: (r.load, r.in_flight, -r.settings.max_concurrent)), now)
        self._publish()

    def _retry_later(self, call: _Call, now: float) -> None:
        delay = self.backoff_s * 2 ** (call.attempts - 1)
        call.retry_at = now + delay
        self._loop.call_later(delay + 0.001, self._dispatch)

    def _start(self, call: _Call, replica: _Replica, now: float) -> None:
        self._pending.remove(call)
        self._running[call.seq.rid] = call
        replica.in_flight += 1
        call.replica = replica
        call.result.backend = replica.name
        seq = call.seq
        seq.has_slot, seq.state, seq.waiting_since = True, "prefill", 0.0
        if not call.result.t_admit:
            call.result.t_admit = now
            self.scheduler.account(seq, seq.prompt_len, 0)
        call.last_t = now
        call.task = self._loop.create_task(self._stream(call, replica))

    # --- one request on one server ------------------------------------------------------------------------------
    async def _stream(self, call: _Call, replica: _Replica) -> None:
        assert replica.client is not None
        usage = None
        try:
            stream = await self._open(call, replica)
            try:
                async for chunk in stream:
                    usage = getattr(chunk, "usage", None) or usage
                    for choice in chunk.choices or ():
                        text = choice.delta.content if hasattr(choice, "delta") else choice.text
                        if text:
                            self._deliver(call, replica, text)
                        if choice.finish_reason:
                            call.finish = choice.finish_reason
            finally:
                await stream.close()  # closing the stream is what tells the server to stop
            if call.finish is None:
                raise StreamTruncated()
            self._complete(call, replica, usage)
        except asyncio.CancelledError:
            self._end(call, "cancelled", None)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the request's error or a retry
            if call.finish is not None and not call.cancelled:
                self._complete(call, replica, usage)  # finished, then the connection dropped: still a success
            else:
                self._failed(call, replica, classify(exc, replica.settings.timeout_s))
        finally:
            replica.in_flight -= 1
            self._running.pop(call.seq.rid, None)
            if not self._closed:
                self._loop.call_soon(self._dispatch)

    async def _open(self, call: _Call, replica: _Replica):
        req, sp = call.req, call.req.sampling
        extra: dict[str, object] = {"top_k": sp.top_k, "min_p": sp.min_p, "repeat_penalty": sp.repeat_penalty}
        if req.grammar:
            extra["grammar"] = req.grammar  # llama.cpp servers; others ignore it
        if req.ignore_eos:
            extra["ignore_eos"] = True  # vLLM, SGLang
            extra["min_tokens"] = req.max_tokens  # llama-cpp-python's server and vLLM: no end before max_tokens
        kwargs: dict[str, object] = dict(
            model=self.model, max_tokens=req.max_tokens, temperature=sp.temperature, top_p=sp.top_p, stream=True,
            stream_options={"include_usage": True}, extra_body=extra,
        )
        if sp.seed is not None:
            kwargs["seed"] = sp.seed
        if req.stop:
            kwargs["stop"] = list(req.stop)[:4]
        assert replica.client is not None
        if req.messages is not None:
            return await replica.client.chat.completions.create(messages=req.messages, **kwargs)
        return await replica.client.completions.create(prompt=req.prompt or "", **kwargs)

    def _deliver(self, call: _Call, replica: _Replica, text: str) -> None:
        now = time.monotonic()
        res, seq = call.result, call.seq
        if not res.t_first:
            res.t_first = now
        call.chunks += 1
        call.text.append(text)
        replica.healthy = True  # it streams: whatever failed before, it answers now
        seq.state = "decode"
        seq.last_ran = now
        self.scheduler.account(seq, 0, 1)
        call.handle.n_generated = call.chunks
        replica.tracker.tokens(1, now)
        owner = (call.req.sched.owner, seq.rid)
        self._emit(StepRecord(step=next(self._steps), t=now, duration=now - call.last_t, decoded=(owner,),
                              prefilled=(), n_tokens=1, sampled=(owner,)))
        call.last_t = now
        if call.req.sched.stopped:
            call.held.append(text)
            return
        if call.held:
            text = "".join(call.held) + text
            call.held.clear()
        call.handle.pipe.write(text)
        if call.chunks % 8 == 1:
            self._publish()

    def _complete(self, call: _Call, replica: _Replica, usage: object) -> None:
        replica.healthy = True
        res, owner = call.result, (call.req.sched.owner, call.seq.rid)
        now = time.monotonic()
        prompt = getattr(usage, "prompt_tokens", None)
        completion = getattr(usage, "completion_tokens", None)
        res.usage_estimated = prompt is None
        res.prompt_tokens = int(prompt) if prompt is not None else call.seq.prompt_len
        res.evaluated_tokens = res.prompt_tokens
        extra = max(0, int(completion) - call.chunks) if completion is not None else 0
        self._emit(StepRecord(step=next(self._steps), t=now, duration=0.0, decoded=(),
                              prefilled=((owner[0], owner[1], res.prompt_tokens),), n_tokens=res.prompt_tokens,
                              sampled=(owner,) * extra))
        finish = call.finish or "stop"
        reason = {"length": "length"}.get(finish, "stop" if finish == "stop" and call.req.stop else
                                          "eos" if finish == "stop" else finish)
        self._end(call, reason, None, completion=call.chunks + extra)

    def _failed(self, call: _Call, replica: _Replica, fault: Fault) -> None:
        now = time.monotonic()
        replica.last_error = fault.message
        if fault.server_fault:
            self._mark_unhealthy(replica, fault.message, now)
        if call.chunks == 0 and fault.retryable and call.attempts < self.retries and not self._closed:
            call.attempts += 1
            replica.retries += 1
            replica.tracker.errors += 1  # a failed attempt, retried
            call.replica = None
            call.seq.has_slot, call.seq.state, call.seq.waiting_since = False, "waiting", now
            self._pending.append(call)
            self._retry_later(call, now)
            return
        where = f" after {call.chunks} tokens" if call.chunks else ""
        tries = f" ({call.attempts + 1} attempts)" if call.attempts else ""
        self._end(call, "error", f"backend {replica.name}: {fault.message}{where}{tries}")

    def _mark_unhealthy(self, r: _Replica, error: str, now: float) -> None:
        r.healthy = False
        r.last_error = error
        r.next_check = now + r.settings.health_interval_s

    def _end(self, call: _Call, reason: str, error: str | None, completion: int | None = None) -> None:
        """The request is over. An agent stopped now gets neither its held text nor the end until it continues
        (it would act on them while stopped); a cancelled request ends at once."""
        call.seq.state, call.seq.has_slot = "finished", False
        if reason != "cancelled" and call.req.sched.stopped and not self._closed:
            self._parked.append((call, reason, error, completion))
            return
        self._finish(call, reason, error, completion)

    def _finish(self, call: _Call, reason: str, error: str | None, completion: int | None) -> None:
        res = call.result
        res.finish_reason, res.error = reason, error
        res.text = "".join(call.text)
        res.completion_tokens = call.chunks if completion is None else completion
        res.t_end = time.monotonic()
        if call.held and reason != "cancelled":
            call.handle.pipe.write("".join(call.held))
        call.held.clear()
        if call.replica is not None:
            call.replica.tracker.finished(res)
        call.handle._finish(res)
        self._publish()

    # --- figures ------------------------------------------------------------------------------------------------
    def _emit(self, rec: StepRecord) -> None:
        for fn in list(self._listeners):
            try:
                fn(rec)
            except Exception:  # noqa: BLE001 - a listener's bug must not break the stream
                traceback.print_exc()

    def _publish(self) -> None:
        index = {r.name: i for i, r in enumerate(self.replicas)}
        out = []
        for call in (*self._running.values(), *self._pending):
            s = call.seq
            running = call.replica is not None and s.has_slot
            out.append(SeqStats(
                rid=s.rid, owner=call.req.sched.owner, state=s.state if running else "waiting",
                slot=index[call.replica.name] if running and call.replica else None, kv_tokens=0, kv_bytes=0,
                swapped_bytes=0, prompt_tokens=s.prompt_len, generated=call.chunks, switches=0, boosted=s.boosted,
                service=s.service, backend=call.replica.name if running and call.replica else self.name,
            ))
        self._seqs = tuple(out)
