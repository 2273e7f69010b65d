"""The one path of an LLM call: the request built once from a process's options, submitted to its backend,
streamed while honouring STOP; its tokens are charged to the process and its syscall record step by step, and the
rest of its result folded into them once, when it ends (`Kernel.track_call`, `proc.fold_result`).

Every LLM call goes this way: an agent's `ctx.llm` (and through it the OpenAI door) and the context manager's
summaries made on an agent's behalf.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from .grammar_check import grammar_problems
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

    def __aiter__(self) -> AsyncIterator[str]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[str]:
        sc, proc = self._sc, self._sc.proc
        if self.req.grammar is not None:
            # Read once per grammar text, off the loop: a tool-choice grammar is tens of KB and its first check
            # takes tens of ms (far more on a loaded machine), which the backend's own check would spend on the
            # kernel loop; from the cache its check is free. (Problems are reported by the backend, as before.)
            await asyncio.get_running_loop().run_in_executor(None, grammar_problems, self.req.grammar)
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
        # (its tokens were charged to the process and the record step by step, the rest of the result folded in
        # by track_call when it ended: nothing to copy here)
        self.result = result

    @property
    def t_end(self) -> float:
        """When the call ended (wall clock), for its record."""
        if self.result is None:
            return 0.0
        return self.result.t_end + time.time() - time.monotonic()

    async def run(self) -> GenResult:
        """The whole call, its text in `result.text`."""
        async for _ in self:
            pass
        assert self.result is not None
        return self.result
