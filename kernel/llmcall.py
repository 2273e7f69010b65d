"""The one path of an LLM call: the request built once from a process's options, submitted to its backend,
streamed while honouring STOP, and its result folded into the process and its syscall record when it ends.

Every LLM call goes this way: an agent's `ctx.llm` (and through it the OpenAI door) and the context manager's
summaries made on an agent's behalf.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from .proc import Process, SyscallRecord
from .requests import GenRequest, GenResult, SamplingParams
from .services import Services, Syscalls

__all__ = ["LLMCall", "build_request"]


def build_request(services: Services, sc: Syscalls, run_options: dict, opts: dict, *,
                  messages: list[dict[str, str]] | None = None, prompt: str | None = None) -> GenRequest:
    """A request from the call's options over the run's (`run_options`: the run's `--max-tokens` caps every call,
    whatever the call asks), within the process's token limit, with its scheduling identity and KV limit."""
    o = {**run_options, **opts}
    cfg = services.config.sampling
    max_tokens = int(o.get("max_tokens") or cfg.max_tokens)
    if run_options.get("max_tokens"):
        max_tokens = min(max_tokens, int(run_options["max_tokens"]))
    remaining = sc.tokens_left()
    if remaining is not None:
        max_tokens = max(1, min(max_tokens, remaining))
    sampling = SamplingParams(
        temperature=float(o["temperature"]) if o.get("temperature") is not None else cfg.temperature,
        top_k=int(o.get("top_k", cfg.top_k)), top_p=float(o.get("top_p", cfg.top_p)),
        min_p=float(o.get("min_p", cfg.min_p)), repeat_penalty=float(o.get("repeat_penalty", cfg.repeat_penalty)),
        seed=int(o["seed"]) if o.get("seed") is not None else None,
    )
    return GenRequest(messages=None if messages is None else list(messages), prompt=prompt, max_tokens=max_tokens,
                      stop=list(o.get("stop") or []), sampling=sampling, ignore_eos=bool(o.get("ignore_eos", False)),
                      grammar=o.get("grammar"), sched=sc.proc.sched, max_kv=sc.limits.max_kv)


class LLMCall:
    """One LLM request of a process from submit to result. Iterate it for the text; `result` is set at the end.

    Submitting raises what the backend raises (EngineError, ValueError for an unknown backend); the caller's
    record is its own to finish. A cancelled or abandoned stream cancels the request (its slot and KV are freed
    at once)."""

    def __init__(self, backends: Any, track_call: Callable[[Process, SyscallRecord, Any], None], sc: Syscalls,
                 req: GenRequest, backend: str, rec: SyscallRecord) -> None:
        """`backends`: routing.Backends (`submit`); `track_call`: Kernel.track_call (steps charged to `rec`)."""
        self._backends, self._track = backends, track_call
        self._sc, self.req, self.backend, self.rec = sc, req, backend, rec
        self.result: GenResult | None = None
        self.t_end = 0.0

    def __aiter__(self) -> AsyncIterator[str]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[str]:
        sc, proc = self._sc, self._sc.proc
        handle = self._backends.submit(self.req, self.backend)
        self._track(proc, self.rec, handle)  # tokens and start time charged to rec step by step
        proc.current_llm = handle
        try:
            async with sc.wchan("llm"):
                async for chunk in handle.astream():
                    await sc.while_stopped()  # a token sampled before a STOP waits for CONT: none escapes
                    yield chunk
                result = await handle.await_result()
        except (asyncio.CancelledError, GeneratorExit):
            handle.cancel()
            raise
        finally:
            proc.current_llm = None
        # The result folded into the process and the record: tokens towards the limit, the engine's timings.
        proc.llm_tokens += result.completion_tokens
        wall = time.time() - time.monotonic()
        rec = self.rec
        rec.t_queued = result.t_submit + wall
        rec.t_started = (result.t_admit or result.t_end) + wall
        rec.t_first = (result.t_first + wall) if result.t_first else 0.0
        self.t_end = result.t_end + wall
        self.result = result

    async def run(self) -> GenResult:
        """The whole call, its text in `result.text`."""
        async for _ in self:
            pass
        assert self.result is not None
        return self.result
