"""The engine: the one thread that owns the llama context and serves every agent by continuous batching.

Each step (after llama.cpp's examples/batched and its server's update_slots):
  1. commands from other threads are applied (submit, cancel, calls that must run here);
  2. the scheduler plans the step: who is preempted (KV saved to RAM or dropped), who gets a slot, who runs;
  3. one batch is built: one token for every decoding sequence, then prompt chunks of prefilling ones within
     the token budget (chunked prefill); a request submitted during a step joins at the next one;
  4. one `llama_decode`; then each sequence samples at its own batch index with its own sampler chain;
  5. new text is handed to each consumer once per step, and a step record is kept.

Prefix reuse: every slot remembers the tokens whose KV it holds, also after its request ended. A new request
takes the idle slot with the longest common prefix, or copies a longer prefix from any slot
(`llama_memory_seq_cp`, which in a unified KV cache shares cells rather than copying them). Idle caches are
evicted least recently used when cells or slots are needed. All of that — slots, cells, slot choice, prefix reuse,
swap and recompute — is the KV cache manager's (kvcache.py); callers that send a conversation as messages rather
than tokens are served by the conversation cache (conversations.py). What stays here: the command thread, request
preparation, the batch and sampling, the requests' lives and the statistics.
"""

from __future__ import annotations

import ctypes
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .conversations import ConversationCache
from .engine_types import EngineSettings, EngineStats, SeqStats, StepRecord
from .grammar_check import check_grammar_text
from .kvcache import MIN_SHARED_PREFIX, KVCache, Slot, common_prefix
from .llama_bindings import ll
from .llama_context import LlamaContext, create_context
from .model import Model
from .requests import REQUEST_IDS, EngineError, GenRequest, GenResult, RequestHandle
from .sampling import Sampler, check_grammar
from .scheduler import Policy, Scheduler, SeqState
from .textstream import TextStream


@dataclass(eq=False, kw_only=True)
class _Sequence(SeqState):
    """One request in the engine: the scheduler's view of it (the SeqState fields) and the engine's own state,
    one object, so that no fact of a request (its id, its prompt length, its slot) is kept twice and copied."""

    handle: RequestHandle
    req: GenRequest
    prompt: list[int]  # tokens that must be in KV before the first sample
    result: GenResult  # built up as the request goes (times, cached and evaluated tokens); handed over at the end
    sampler: Sampler | None = None
    stream: TextStream | None = None
    slot: Slot | None = None
    generated: list[int] = field(default_factory=list)
    pending_token: int | None = None  # sampled, not yet decoded
    batch_index: int = -1
    out: list[str] = field(default_factory=list)  # text released during this step
    swapped: ctypes.Array | None = None  # saved KV while swapped out
    swapped_tokens: list[int] = field(default_factory=list)


class Engine:
    """Continuous-batching generation over one llama context; `submit` from any thread."""

    # the engine process hands out handles that forward to the kernel
    handle_factory: Callable[[int, GenRequest, Callable[[int], None]], RequestHandle] = RequestHandle

    def __init__(self, model: Model, settings: EngineSettings, policy: Policy | None = None,
                 context: LlamaContext | None = None) -> None:
        """`context`: one already made for `model` and `settings` (the engine process makes it while it imports
        this module); by default the engine makes its own. Either way the engine frees it."""
        self.model = model
        self.settings = settings
        self.scheduler = Scheduler(
            policy or Policy(), settings.n_slots, settings.effective_max_batch, settings.batch_tokens
        )
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._actives: dict[int, _Sequence] = {}
        self.conversations = ConversationCache(model)  # for callers that send messages
        self._steps: deque[StepRecord] = deque(maxlen=settings.step_history)
        self._step_listeners: list[Callable[[StepRecord], None]] = []
        self.stats = EngineStats()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._totals = dict.fromkeys(
            ("steps", "prompt", "generated", "cached", "preemptions", "swaps_out", "swaps_in", "recomputes"), 0
        )
        self.error: BaseException | None = None
        # Per-token facts of the vocabulary, filled as tokens are first sampled (saves two ctypes calls and a
        # buffer per token on the hot path).
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._init_context(context or create_context(model, settings))

    # --- set-up -----------------------------------------------------------------------------------------------
    def _init_context(self, context: LlamaContext) -> None:
        s = self.settings
        self.context = context
        self.ctx = ctx = context.ctx
        self.n_threads = context.n_threads
        self.kv = KVCache(ctx, s.n_slots)  # slots, cells, prefix reuse, swap/recompute
        self.slots, self.mem, self.n_cells = self.kv.slots, self.kv.mem, self.kv.n_cells  # (the same objects)
        self.batch_cap = context.n_batch
        self.batch = ll.llama_batch_init(self.batch_cap, 0, 1)
        self._publish_stats()  # slots and KV capacity are known before the first step

    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="aiosh-engine", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread, fail what is still queued, free llama.cpp objects."""
        if self._thread is not None:
            self._stopping = True
            self._commands.put(("stop", None))
            self._thread.join(timeout=30)
            self._thread = None
        for act in list(self._actives.values()):
            self._finish(act, "cancelled", "engine shut down")
        self._fail_queued("engine shut down")
        if getattr(self, "batch", None) is not None:
            ll.llama_batch_free(self.batch)
            self.batch = None
        if getattr(self, "context", None) is not None:
            self.context.free()
            self.ctx = None

    # --- public API (any thread) ------------------------------------------------------------------------------
    def submit(self, req: GenRequest, rid: int | None = None) -> RequestHandle:
        """Queue a request; it joins the running batch at the next step. Bad requests fail their own handle.

        `rid`: the id the kernel already gave it (the engine process serves the kernel's handles)."""
        if self.error is not None or self._stopping:
            raise EngineError(f"engine is not running ({self.error or 'shut down'})")
        rid = next(REQUEST_IDS) if rid is None else rid
        handle = self.handle_factory(rid, req, self.cancel)
        now = time.monotonic()
        result = GenResult(t_submit=now)
        try:
            self._validate(req)
            prompt = self._prompt_tokens(req)  # (a conversation's turn is taken only when this succeeds)
            if len(prompt) >= self.settings.n_ctx:
                if req.conversation and req.tokens is None:
                    self.conversations.release(req.conversation)
                raise EngineError(
                    f"prompt is {len(prompt)} tokens; the context window (model.n_ctx) is {self.settings.n_ctx}"
                )
        except EngineError as exc:
            result.finish_reason, result.error, result.t_end = "error", str(exc), time.monotonic()
            handle._finish(result)
            return handle
        handle.n_prompt = len(prompt)
        act = _Sequence(rid=rid, sched=req.sched, arrival=now, prompt_len=len(prompt), waiting_since=now,
                        handle=handle, req=req, prompt=prompt, result=result)
        result.prompt_tokens = len(prompt)
        self._commands.put(("submit", act))
        return handle

    def cancel(self, rid: int) -> None:
        self._commands.put(("cancel", rid))

    def call(self, fn: Callable[[], object], timeout: float | None = 30) -> object:
        """Run fn on the engine thread between steps (for things that touch the context) and return its value."""
        if self._thread is None or self._stopping or self.error is not None:
            raise EngineError(f"engine is not running ({self.error or 'shut down'})")
        done = threading.Event()
        box: dict[str, object] = {}

        def job() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                box["error"] = exc
            done.set()

        self._commands.put(("call", job))
        if not done.wait(timeout):
            raise TimeoutError("engine call timed out")
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box.get("value")

    def steps(self, last: int | None = None) -> list[StepRecord]:
        recs = list(self._steps)
        return recs[-last:] if last else recs

    def add_step_listener(self, fn: Callable[[StepRecord], None]) -> None:
        self._step_listeners.append(fn)

    def set_policy(self, policy: Policy) -> None:
        self._commands.put(("policy", policy))

    def forget_conversation(self, key: str) -> None:
        self.conversations.forget(key)

    # --- request preparation (caller's thread) ----------------------------------------------------------------
    def _validate(self, req: GenRequest) -> None:
        if (req.messages is None) == (req.prompt is None):
            raise EngineError("give exactly one of messages or prompt")
        if req.max_tokens <= 0:
            raise EngineError(f"max_tokens must be positive, got {req.max_tokens}")
        sp = req.sampling
        if sp.temperature < 0 or not (0 < sp.top_p <= 1) or sp.top_k < 0 or not (0 <= sp.min_p <= 1):
            raise EngineError("bad sampling parameters")
        if req.grammar is not None:
            check_grammar_text(req.grammar)  # parses in llama.cpp, then aborts the process when sampled
            check_grammar(self.model.vocab, req.grammar)
        if req.messages is not None:
            for m in req.messages:
                if not isinstance(m, dict) or "role" not in m or not isinstance(m.get("content"), str):
                    raise EngineError("each message needs a role and a string content")

    def _prompt_tokens(self, req: GenRequest) -> list[int]:
        m = self.model
        if req.prompt is not None:
            if req.conversation:
                raise EngineError("a conversation needs messages, not a raw prompt")
            toks = m.tokenize(req.prompt, add_bos=True)
            if not toks:
                raise EngineError("empty prompt")
            return toks
        if req.tokens is not None:  # rendered by the caller (the kernel, once per turn): decoded as they are
            n_vocab = m.n_vocab
            if not req.tokens or any(not 0 <= t < n_vocab for t in req.tokens):
                raise EngineError("prompt tokens: empty, or an id outside the vocabulary")
            return list(req.tokens)
        messages = list(req.messages or [])
        if not messages:
            raise EngineError("no messages")
        if req.conversation:
            return self.conversations.prompt(req, messages)
        try:
            return m.chat_tokens(messages)
        except Exception as exc:  # a template may raise on message orders it does not support
            raise EngineError(f"chat template: {' '.join(str(exc).split())}") from None

    # --- the engine thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping:
                busy = any(a.runnable for a in self._actives.values())
                if not self._drain_commands(block=not busy):
                    break
                if any(a.runnable for a in self._actives.values()):
                    self._step()
        except BaseException as exc:  # noqa: BLE001 - the engine must report, not vanish
            self.error = exc
            traceback.print_exc()
            for act in list(self._actives.values()):
                self._finish(act, "error", f"engine failure: {exc}")
            self._fail_queued(f"engine failure: {exc}")

    def _fail_queued(self, why: str) -> None:
        """After the thread ended, nothing may wait forever on a request still in the queue."""
        while True:
            try:
                cmd, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            if cmd == "submit":
                self._actives[arg.rid] = arg
                self._finish(arg, "error", why)
            elif cmd == "call":
                arg()

    def _drain_commands(self, block: bool) -> bool:
        while True:
            try:
                cmd, arg = self._commands.get(timeout=0.5) if block else self._commands.get_nowait()
            except queue.Empty:
                if block:
                    self._publish_stats()
                    if any(a.runnable for a in self._actives.values()):
                        return True
                    continue
                return True
            block = False
            if cmd == "stop":
                return False
            if cmd == "submit":
                self._actives[arg.rid] = arg
                self.scheduler.policy.on_wake(arg, list(self._actives.values()))
            elif cmd == "cancel":
                act = self._actives.get(arg)
                if act is not None:
                    self._finish(act, "cancelled", None)
                    self._publish_stats()
            elif cmd == "call":
                arg()
            elif cmd == "policy":
                self.scheduler.set_policy(arg)
                for a in self._actives.values():
                    arg.on_wake(a, list(self._actives.values()))

    def wake(self) -> None:
        """Nudge the engine after a change it cannot see (e.g. a SchedInfo was un-stopped)."""
        self._commands.put(("call", lambda: None))

    def _step(self) -> None:
        t0 = time.monotonic()
        seqs: list[SeqState] = list(self._actives.values())
        plan = self.scheduler.plan(seqs, t0)
        for victim in plan.preempt:
            self._preempt(self._actives[victim.rid])
        for s in plan.admit:
            act = self._actives[s.rid]
            if self._prefix_in_flight(act):
                continue  # its prefix is being computed in another slot right now: share it in a step or two
            if not self._admit(act):
                break
        # (an admission can fail its request, e.g. on a bad grammar: such a request is gone from _actives)
        # Build the batch: decode tokens first (one each), then prompt chunks in the plan's order.
        n = 0
        budget = plan.token_budget or self.scheduler.token_budget
        decoded: list[tuple[int, int]] = []
        prefilled: list[tuple[int, int, int]] = []
        members: list[_Sequence] = []
        running = [a for s in plan.run if (a := self._actives.get(s.rid)) is not None and a.slot is not None]
        for act in running:
            assert act.slot is not None  # (running holds those with a slot)
            if act.pending_token is not None and n < self.batch_cap:
                self._batch_add(n, act.pending_token, len(act.slot.tokens), act.slot.seq, True)
                act.batch_index = n
                act.slot.tokens.append(act.pending_token)
                n += 1
                budget -= 1
                decoded.append((act.req.sched.owner, act.rid))
                members.append(act)
        for act in running:
            if act.pending_token is None and act.slot is not None:
                remaining = act.prompt[len(act.slot.tokens) :]
                take = min(len(remaining), max(0, budget), self.batch_cap - n)
                if take <= 0:
                    continue
                base = len(act.slot.tokens)
                last = take == len(remaining)
                for j in range(take):
                    self._batch_add(n, remaining[j], base + j, act.slot.seq, last and j == take - 1)
                    n += 1
                act.slot.tokens.extend(remaining[:take])
                act.batch_index = n - 1 if last else -1
                budget -= take
                act.result.evaluated_tokens += take
                prefilled.append((act.req.sched.owner, act.rid, take))
                members.append(act)
        if n == 0:
            self._publish_stats()
            time.sleep(0.001)
            return
        self.batch.n_tokens = n
        self.kv.ensure_cells(n)
        rc = ll.llama_decode(self.ctx, self.batch)
        if rc != 0:
            self._recover_failed_decode(rc, members)
            return
        for act in members:  # the cells just written
            assert act.slot is not None  # (members hold a slot)
            self.kv.written(act.slot)
        t_dec = time.monotonic()
        n_prefill = sum(p[2] for p in prefilled)
        if n_prefill and not decoded:
            est = (t_dec - t0) / n_prefill
            self.kv.learn_prefill(est)
        # Sample: a generated token is counted when it is sampled (the last one is never decoded), so that the
        # step records add up to each result's completion_tokens.
        sampled: list[tuple[int, int]] = []
        for act in members:
            n_before = len(act.generated)
            try:
                self._after_decode(act, t_dec)
            except EngineError as exc:  # this request cannot go on (its grammar admits no token): only it ends
                act.batch_index = -1
                self._finish(act, "error", str(exc))
            if len(act.generated) > n_before:
                sampled.append((act.req.sched.owner, act.rid))
        now = time.monotonic()
        pre_by_rid = {p[1]: p[2] for p in prefilled}
        decoded_rids = {d[1] for d in decoded}
        self.scheduler.end_step([(a, pre_by_rid.get(a.rid, 0), int(a.rid in decoded_rids)) for a in members],
                                list(self._actives.values()), now)
        if decoded and not prefilled:
            self.scheduler.observe_step(len(decoded), now - t0)
        # Account the step first (listeners: the kernel's per-process counters), so that a request's last tokens
        # are counted before its handle finishes and its agent can exit and be collected.
        self._totals["steps"] += 1
        self._totals["prompt"] += n_prefill
        self._totals["generated"] += len(sampled)
        rec = StepRecord(self._totals["steps"], now, now - t0, tuple(decoded), tuple(prefilled), n, tuple(sampled))
        self._steps.append(rec)
        for fn in self._step_listeners:
            try:
                fn(rec)
            except Exception:  # noqa: BLE001 - a listener must not stop the engine
                pass
        # Deliver text once per step.
        for act in list(members):
            if act.out:
                act.handle.pipe.write("".join(act.out))
                act.out.clear()
            act.handle.n_generated = len(act.generated)
        for act in list(members):
            if act.state == "finished":
                self._finish(act, act.result.finish_reason, None)
        self._publish_stats(last_batch=n)

    def _batch_add(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        b = self.batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = 1 if logits else 0

    def _after_decode(self, act: _Sequence, now: float) -> None:
        if act.batch_index < 0:
            return  # mid-prefill: no logits for this sequence yet
        if act.sampler is None:
            return
        token = act.sampler.sample(self.ctx, act.batch_index)
        act.batch_index = -1
        act.generated.append(token)
        if not act.result.t_first:
            act.result.t_first = now
        if act.state != "decode":
            act.state = "decode"
        assert act.stream is not None and act.slot is not None  # (set at admission, with the sampler)
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = self.model.is_eog(token)
        if eog and not act.req.ignore_eos:
            act.out.append(act.stream.finish())
            self._mark_done(act, "eos")
            return
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self.model.piece(token)
        act.out.append(act.stream.feed(piece))
        if act.stream.stopped:
            self._mark_done(act, "stop")
            return
        if len(act.generated) >= act.req.max_tokens:
            act.out.append(act.stream.finish())
            self._mark_done(act, "length")
            return
        kv_after = len(act.slot.tokens) + 1
        if kv_after >= self.settings.n_ctx or (act.req.max_kv and kv_after > act.req.max_kv):
            act.out.append(act.stream.finish())
            self._mark_done(act, "length" if kv_after >= self.settings.n_ctx else "kv_limit")
            return
        act.pending_token = token

    def _mark_done(self, act: _Sequence, reason: str) -> None:
        act.pending_token = None
        act.state = "finished"
        act.result.finish_reason = reason

    # --- admission, prefix reuse, KV cells --------------------------------------------------------------------
    def _admit(self, act: _Sequence) -> bool:
        slot = self.kv.choose(act.prompt, act.req.conversation, act.swapped is not None)
        if slot is None:
            return False
        if slot.active is not None:
            raise AssertionError("slot already busy")
        if act.swapped is not None:
            self._swap_in(act, slot)
        else:
            self._reuse_prefix(act, slot)
            if act.sampler is None:
                try:
                    act.sampler = Sampler(self.model.vocab, self.model.n_vocab, act.req.sampling, act.req.grammar)
                except EngineError as exc:
                    slot.active = None
                    self._finish(act, "error", str(exc))
                    return True
                act.stream = TextStream(act.req.stop)
        self._attach(act, slot)
        act.admitted(act.pending_token is not None)
        if not act.result.t_admit:
            act.result.t_admit = time.monotonic()
        return True

    def _attach(self, act: _Sequence, slot: Slot) -> None:
        """A request gets a slot: the slot's holder, the request's slot and the scheduler's `has_slot` are one
        fact, set here and in `_detach` only."""
        slot.active = act
        slot.conversation = act.req.conversation
        act.slot = slot
        act.has_slot = True

    def _detach(self, act: _Sequence) -> None:
        """The request leaves its slot (preempted or ended); the slot's KV stays as the KV cache manager left it."""
        if act.slot is not None and act.slot.active is act:
            act.slot.active = None
        act.slot = None
        act.has_slot = False

    def _prefix_in_flight(self, act: _Sequence) -> bool:
        """Is a longer prefix of this prompt still being prefilled by another request than is resident anywhere?

        Requests that arrive together with the same system prompt would otherwise each evaluate it: the newcomer
        waits until the first one's prefill has passed the shared part, then copies it (`seq_cp`).
        """
        if act.swapped is not None or act.n_prefilled:
            return False
        resident = self.kv.resident_prefix(act.prompt)
        for s in self.slots:
            other = s.active
            if other is None or other.pending_token is not None:
                continue
            shared = common_prefix(other.prompt, act.prompt)
            if shared > resident + MIN_SHARED_PREFIX and len(s.tokens) < min(shared, len(act.prompt) - 1):
                return True
        return False

    def _reuse_prefix(self, act: _Sequence, slot: Slot) -> None:
        keep = self.kv.reuse_prefix(slot, act.prompt)
        act.n_prefilled = keep
        if not act.result.t_admit:  # a re-admission after a recompute is not a cache hit of the request
            act.result.cached_tokens = keep
            self._totals["cached"] += keep

    def _recover_failed_decode(self, rc: int, members: list[_Sequence]) -> None:
        """llama_decode refused the batch: undo the tokens we appended, then shrink the load and retry next step."""
        for act in members:
            assert act.slot is not None  # (members hold a slot)
            extra = self.kv.unwritten(act.slot)
            if extra and act.pending_token is None:  # a prompt chunk that was not evaluated after all
                act.result.evaluated_tokens -= extra
            act.batch_index = -1
        if rc == 1:  # no KV space: the scheduler names a victim (stopped agents first) to swap out
            victim = self.scheduler.kv_victim(list(self._actives.values()))
            if victim is not None:
                self._preempt(self._actives[victim.rid])
                return
            holders = [a for a in self._actives.values() if a.slot is not None]
            if holders:
                self._finish(holders[0], "error", "KV cache full: kernel.kv_cells is too small for this request")
            return
        for act in members:
            self._finish(act, "error", f"llama_decode failed ({rc})")

    # --- preemption: the context switch -----------------------------------------------------------------------
    def _preempt(self, act: _Sequence) -> None:
        """Take the slot away: its KV saved to RAM or dropped for recompute, whichever the KV cache manager
        estimates cheaper."""
        slot = act.slot
        if slot is None:
            return
        self._totals["preemptions"] += 1
        kv_tokens = list(slot.tokens)
        saved = self.kv.swap_out(slot)
        if saved is not None:
            act.swapped, act.swapped_tokens = saved
            self._totals["swaps_out"] += 1
        else:
            # Recompute later: everything the sequence had becomes prompt again.
            self._totals["recomputes"] += 1
            _requeue_for_recompute(act, kv_tokens)
        self._detach(act)
        act.preempted(act.swapped is not None)

    def _swap_in(self, act: _Sequence, slot: Slot) -> None:
        buf, tokens = act.swapped, act.swapped_tokens
        act.swapped, act.swapped_tokens = None, []
        if buf is None or not self.kv.swap_in(slot, buf, tokens):  # no room: fall back to recompute
            self._totals["recomputes"] += 1
            _requeue_for_recompute(act, tokens)
            return
        self._totals["swaps_in"] += 1
        act.n_prefilled = act.prompt_len

    # --- ending requests --------------------------------------------------------------------------------------
    def _finish(self, act: _Sequence, reason: str, error: str | None) -> None:
        """End a request: result to the caller, slot back to the pool (its KV kept as an idle cache)."""
        if act.rid not in self._actives:
            return
        del self._actives[act.rid]
        res = act.result
        res.finish_reason = reason
        res.error = error
        res.completion_tokens = len(act.generated)
        res.tokens = list(act.generated)
        res.preemptions = act.switches
        if act.stream is not None:
            tail = act.stream.finish() if reason in ("cancelled", "error") else ""
            res.text = act.stream.text
            if tail:
                act.handle.pipe.write(tail)
        res.t_end = time.monotonic()
        act.state = "finished"
        slot = act.slot
        self._detach(act)
        if slot is not None:
            slot.last_used = res.t_end
            if reason in ("cancelled", "error"):
                self.kv.forget(slot)  # cancelling frees the slot and its KV at once
        act.swapped = None
        if act.sampler is not None:
            act.sampler.free()
            act.sampler = None
        if act.req.conversation:
            # (act.prompt grew by the generated tokens if the request was recomputed after a preemption)
            self.conversations.close(act.req.conversation, act.result.text, act.prompt[: act.result.prompt_tokens],
                                     act.generated, reason)
        act.handle.n_generated = len(act.generated)
        act.handle._finish(res)

    # --- statistics -------------------------------------------------------------------------------------------
    def _publish_stats(self, last_batch: int = 0) -> None:
        per_tok = self.model.info.kv_bytes_per_token
        seqs = []
        swapped_total = 0
        for a in self._actives.values():
            kv = len(a.slot.tokens) if a.slot is not None else 0
            sw = len(a.swapped) if a.swapped is not None else 0
            swapped_total += sw
            seqs.append(
                SeqStats(
                    rid=a.rid, owner=a.req.sched.owner, state=a.state,
                    slot=a.slot.seq if a.slot is not None else None, kv_tokens=kv, kv_bytes=kv * per_tok,
                    swapped_bytes=sw, prompt_tokens=a.prompt_len, generated=len(a.generated),
                    switches=a.switches, boosted=a.boosted, service=a.service,
                )
            )
        used, cached_idle = self.kv.used, self.kv.cached_idle()
        t = self._totals
        self.stats = EngineStats(
            kv_capacity=self.n_cells, kv_used=used, kv_cached_idle=cached_idle,
            kv_bytes_per_token=per_tok, swapped_bytes=swapped_total, steps=t["steps"], prompt_tokens=t["prompt"],
            generated_tokens=t["generated"], cached_tokens=t["cached"], preemptions=t["preemptions"],
            swaps_out=t["swaps_out"], swaps_in=t["swaps_in"], recomputes=t["recomputes"],
            last_batch=last_batch, slots=len(self.slots),
            slots_busy=sum(1 for s in self.slots if s.active is not None),
            policy=self.scheduler.policy.name, seqs=tuple(seqs), t=time.monotonic(),
        )

    # --- direct KV operations for benchmarks and tests (engine thread only, via `call`) ------------------------
    def clear_idle_caches(self) -> None:
        for s in self.slots:
            if s.active is None:
                self.kv.forget(s)


def _requeue_for_recompute(act: _Sequence, kv_tokens: list[int]) -> None:
    """The sequence lost its KV (kv_tokens): make it all prompt again, to be prefilled when it gets a slot.

    Mid-prefill, the original prompt still covers everything. While decoding, the KV held the prompt and all
    generated tokens but the last, sampled and not yet decoded: that one ends the new prompt, so the prefill
    that restores the context also yields the logits for the next sample.
    """
    if act.pending_token is not None:
        act.prompt = [*kv_tokens, act.pending_token]
        act.pending_token = None
    act.prompt_len = len(act.prompt)
    act.n_prefilled = 0
