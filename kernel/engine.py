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
evicted least recently used when cells or slots are needed.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import llama_cpp as ll

from .engine_types import EngineSettings, EngineStats, SeqStats, StepRecord
from .grammar_check import check_grammar_text
from .model import Model
from .requests import REQUEST_IDS, EngineError, GenRequest, GenResult, RequestHandle
from .sampling import Sampler, check_grammar
from .scheduler import Policy, Scheduler, SeqState
from .textstream import TextStream

MIN_SHARED_PREFIX = 8  # below this, copying a prefix between slots is not worth evicting anything


@dataclass
class _Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # tokens whose KV this sequence holds, positions 0..n-1
    cells: list[int] = field(default_factory=list)  # our model of the KV cells behind those tokens
    active: _Active | None = None
    conversation: str | None = None
    last_used: float = 0.0


@dataclass
class _Active:
    handle: RequestHandle
    req: GenRequest
    seq: SeqState
    prompt: list[int]  # tokens that must be in KV before the first sample
    sampler: Sampler | None = None
    stream: TextStream | None = None
    slot: _Slot | None = None
    generated: list[int] = field(default_factory=list)
    pending_token: int | None = None  # sampled, not yet decoded
    batch_index: int = -1
    out: list[str] = field(default_factory=list)  # text released during this step
    result: GenResult = field(default_factory=GenResult)
    swapped: ctypes.Array | None = None  # saved KV while swapped out
    swapped_tokens: list[int] = field(default_factory=list)
    conv_base: list[dict[str, str]] | None = None  # messages this turn was rendered from (conversations)


@dataclass
class _Conversation:
    messages: list[dict[str, str]] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # exactly the tokens of `messages` rendered, without gen prompt
    busy: bool = False


class Engine:
    """Continuous-batching generation over one llama context; `submit` from any thread."""

    # the engine process hands out handles that forward to the kernel
    handle_factory: Callable[[int, GenRequest, Callable[[int], None]], RequestHandle] = RequestHandle

    def __init__(self, model: Model, settings: EngineSettings, policy: Policy | None = None) -> None:
        self.model = model
        self.settings = settings
        if settings.n_ctx > model.info.n_ctx_train:
            raise EngineError(
                f"{model.path}: model.n_ctx {settings.n_ctx} is larger than the model's trained context "
                f"{model.info.n_ctx_train}"
            )
        self.scheduler = Scheduler(
            policy or Policy(), settings.n_slots, settings.effective_max_batch, settings.batch_tokens
        )
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._actives: dict[int, _Active] = {}
        self._conversations: dict[str, _Conversation] = {}
        self._conv_lock = threading.Lock()
        self._steps: deque[StepRecord] = deque(maxlen=settings.step_history)
        self._step_listeners: list[Callable[[StepRecord], None]] = []
        self.stats = EngineStats()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._cell_ids = itertools.count()
        self._cell_refs: dict[int, int] = {}
        self._totals = dict.fromkeys(
            ("steps", "prompt", "generated", "cached", "preemptions", "swaps_out", "swaps_in", "recomputes"), 0
        )
        self._swap_cost_per_byte = 1e-9  # seconds, refined by measurement
        self._prefill_cost_per_token = 1e-3  # seconds, refined by measurement
        self.error: BaseException | None = None
        # Per-token facts of the vocabulary, filled as tokens are first sampled (saves two ctypes calls and a
        # buffer per token on the hot path).
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._init_context()

    # --- set-up -----------------------------------------------------------------------------------------------
    def _init_context(self) -> None:
        s = self.settings
        cp = ll.llama_context_default_params()
        cp.n_ctx = s.effective_kv_cells if s.unified_kv else s.n_ctx * s.n_slots
        cp.n_batch = max(s.batch_tokens + s.n_slots, 64)
        cp.n_ubatch = cp.n_batch
        cp.n_seq_max = s.n_slots
        threads = s.n_threads or os.cpu_count() or 1
        self.n_threads = threads  # in force (settings say 0 for "all cores")
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.kv_unified = s.unified_kv
        cp.no_perf = True
        ctx = ll.llama_init_from_model(self.model.ptr, cp)
        if not ctx:
            raise EngineError(
                f"{self.model.path}: llama.cpp could not create a context of {cp.n_ctx} KV cells "
                f"(kernel.kv_cells / kernel.slots too large for this machine?)"
            )
        self.ctx = ctx
        self.mem = ll.llama_get_memory(ctx)
        self.n_cells = ll.llama_n_ctx(ctx)
        self.batch_cap = cp.n_batch
        self.batch = ll.llama_batch_init(self.batch_cap, 0, 1)
        self.slots = [_Slot(seq=i) for i in range(s.n_slots)]
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
        if getattr(self, "ctx", None):
            ll.llama_free(self.ctx)
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
            prompt, conv_base = self._prompt_tokens(req)
            if len(prompt) >= self.settings.n_ctx:
                raise EngineError(
                    f"prompt is {len(prompt)} tokens; the context window (model.n_ctx) is {self.settings.n_ctx}"
                )
        except EngineError as exc:
            if req.conversation:
                self._release_conversation(req.conversation)
            result.finish_reason, result.error, result.t_end = "error", str(exc), time.monotonic()
            handle._finish(result)
            return handle
        handle.n_prompt = len(prompt)
        seq = SeqState(rid=rid, sched=req.sched, arrival=now, prompt_len=len(prompt), waiting_since=now)
        act = _Active(handle=handle, req=req, seq=seq, prompt=prompt, result=result, conv_base=conv_base)
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

    def kv_of(self, owner: int) -> tuple[int, int]:
        """KV tokens and bytes now held for one owner (pid), from the last stats snapshot."""
        tokens = sum(s.kv_tokens for s in self.stats.seqs if s.owner == owner)
        return tokens, tokens * self.model.info.kv_bytes_per_token

    def forget_conversation(self, key: str) -> None:
        with self._conv_lock:
            self._conversations.pop(key, None)

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

    def _prompt_tokens(self, req: GenRequest) -> tuple[list[int], list[dict[str, str]] | None]:
        m = self.model
        if req.prompt is not None:
            if req.conversation:
                raise EngineError("a conversation needs messages, not a raw prompt")
            toks = m.tokenize(req.prompt, add_bos=True)
            if not toks:
                raise EngineError("empty prompt")
            return toks, None
        messages = list(req.messages or [])
        if not messages:
            raise EngineError("no messages")
        if not req.conversation:
            return self._render(messages), None
        with self._conv_lock:
            conv = self._conversations.setdefault(req.conversation, _Conversation())
            if conv.busy:
                raise EngineError(f"conversation {req.conversation!r} already has a request in flight")
            conv.busy = True
            base = conv.messages
        try:
            if base and conv.tokens and messages[: len(base)] == base:
                before = m.template.render(base, add_generation_prompt=False)
                full = m.template.render(messages, add_generation_prompt=True)
                if full.startswith(before):
                    # A new turn appends tokens; the earlier ones (the model's own replies included) are kept as
                    # they were generated, so their KV stays valid and nothing is re-tokenised.
                    return conv.tokens + self._chat_tokens(messages, skip_chars=len(before)), messages
            return self._render(messages), messages
        except Exception:
            self._release_conversation(req.conversation)
            raise

    def _render(self, messages: list[dict[str, str]]) -> list[int]:
        return self._chat_tokens(messages)

    def _chat_tokens(self, messages: list[dict[str, str]], **kw: object) -> list[int]:
        """The template rendered and tokenised, message contents as plain text (model.chat_tokens)."""
        try:
            return self.model.chat_tokens(messages, **kw)  # type: ignore[arg-type]
        except Exception as exc:  # a template may raise on message orders it does not support
            raise EngineError(f"chat template: {' '.join(str(exc).split())}") from None

    def _release_conversation(self, key: str) -> None:
        with self._conv_lock:
            conv = self._conversations.get(key)
            if conv:
                conv.busy = False

    # --- the engine thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping:
                busy = any(a.seq.runnable for a in self._actives.values())
                if not self._drain_commands(block=not busy):
                    break
                if any(a.seq.runnable for a in self._actives.values()):
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
                self._actives[arg.seq.rid] = arg
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
                    if any(a.seq.runnable for a in self._actives.values()):
                        return True
                    continue
                return True
            block = False
            if cmd == "stop":
                return False
            if cmd == "submit":
                self._actives[arg.seq.rid] = arg
                self.scheduler.policy.on_wake(arg.seq, [a.seq for a in self._actives.values()])
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
                    arg.on_wake(a.seq, [x.seq for x in self._actives.values()])

    def wake(self) -> None:
        """Nudge the engine after a change it cannot see (e.g. a SchedInfo was un-stopped)."""
        self._commands.put(("call", lambda: None))

    def _step(self) -> None:
        t0 = time.monotonic()
        seqs = [a.seq for a in self._actives.values()]
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
        members: list[_Active] = []
        running = [a for s in plan.run if (a := self._actives.get(s.rid)) is not None and a.slot is not None]
        for act in running:
            assert act.slot is not None  # (running holds those with a slot)
            if act.pending_token is not None and n < self.batch_cap:
                self._batch_add(n, act.pending_token, len(act.slot.tokens), act.slot.seq, True)
                act.batch_index = n
                act.slot.tokens.append(act.pending_token)
                n += 1
                budget -= 1
                decoded.append((act.req.sched.owner, act.seq.rid))
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
                prefilled.append((act.req.sched.owner, act.seq.rid, take))
                members.append(act)
        if n == 0:
            self._publish_stats()
            time.sleep(0.001)
            return
        self.batch.n_tokens = n
        self._ensure_cells(n, members)
        rc = ll.llama_decode(self.ctx, self.batch)
        if rc != 0:
            self._recover_failed_decode(rc, members)
            return
        for act in members:  # the cells just written
            assert act.slot is not None  # (members hold a slot)
            new = len(act.slot.tokens) - len(act.slot.cells)
            for _ in range(new):
                cid = next(self._cell_ids)
                self._cell_refs[cid] = 1
                act.slot.cells.append(cid)
        t_dec = time.monotonic()
        n_prefill = sum(p[2] for p in prefilled)
        if n_prefill and not decoded:
            est = (t_dec - t0) / n_prefill
            self._prefill_cost_per_token = 0.8 * self._prefill_cost_per_token + 0.2 * est
        # Sample: a generated token is counted when it is sampled (the last one is never decoded).
        sampled = [(a.req.sched.owner, a.seq.rid) for a in members if a.batch_index >= 0 and a.sampler is not None]
        for act in members:
            try:
                self._after_decode(act, t_dec)
            except EngineError as exc:  # this request cannot go on (its grammar admits no token): only it ends
                act.batch_index = -1
                self._finish(act, "error", str(exc))
        now = time.monotonic()
        pre_by_rid = {p[1]: p[2] for p in prefilled}
        decoded_rids = {d[1] for d in decoded}
        self.scheduler.end_step([(a.seq, pre_by_rid.get(a.seq.rid, 0), int(a.seq.rid in decoded_rids)) for a in members],
                                [a.seq for a in self._actives.values()], now)
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
            if act.seq.state == "finished":
                self._finish(act, act.result.finish_reason, None)
        self._publish_stats(last_batch=n)

    def _batch_add(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        b = self.batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = 1 if logits else 0

    def _after_decode(self, act: _Active, now: float) -> None:
        if act.batch_index < 0:
            return  # mid-prefill: no logits for this sequence yet
        if act.sampler is None:
            return
        token = act.sampler.sample(self.ctx, act.batch_index)
        act.batch_index = -1
        act.generated.append(token)
        act.seq.generated += 1
        if not act.result.t_first:
            act.result.t_first = now
        if act.seq.state != "decode":
            act.seq.state = "decode"
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

    def _mark_done(self, act: _Active, reason: str) -> None:
        act.pending_token = None
        act.seq.state = "finished"
        act.result.finish_reason = reason

    # --- admission, prefix reuse, KV cells --------------------------------------------------------------------
    def _admit(self, act: _Active) -> bool:
        slot = self._choose_slot(act)
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
        slot.active = act
        slot.conversation = act.req.conversation
        act.slot = slot
        act.seq.admitted(act.pending_token is not None)
        if not act.result.t_admit:
            act.result.t_admit = time.monotonic()
        return True

    def _prefix_in_flight(self, act: _Active) -> bool:
        """Is a longer prefix of this prompt still being prefilled by another request than is resident anywhere?

        Requests that arrive together with the same system prompt would otherwise each evaluate it: the newcomer
        waits until the first one's prefill has passed the shared part, then copies it (`seq_cp`).
        """
        if act.swapped is not None or act.seq.n_prefilled:
            return False
        resident = max((_common_prefix(s.tokens, act.prompt) for s in self.slots), default=0)
        for s in self.slots:
            other = s.active
            if other is None or other.pending_token is not None:
                continue
            shared = _common_prefix(other.prompt, act.prompt)
            if shared > resident + MIN_SHARED_PREFIX and len(s.tokens) < min(shared, len(act.prompt) - 1):
                return True
        return False

    def _choose_slot(self, act: _Active) -> _Slot | None:
        idle = [s for s in self.slots if s.active is None]
        if not idle:
            return None
        if act.swapped is not None:
            return min(idle, key=lambda s: (len(s.tokens), s.last_used))
        conv = act.req.conversation
        if conv:
            for s in idle:
                if s.conversation == conv:
                    return s

        def score(s: _Slot) -> tuple:
            return (_common_prefix(s.tokens, act.prompt), -len(s.tokens) if not s.tokens else 0, -s.last_used)

        best = max(idle, key=score)
        if _common_prefix(best.tokens, act.prompt) < MIN_SHARED_PREFIX:
            # Nothing worth reusing here: take an empty slot, else the least recently used cache, so that an idle
            # conversation's KV survives for its next turn.
            best = min(idle, key=lambda s: (len(s.tokens) > 0, s.conversation is not None, s.last_used))
        return best

    def _reuse_prefix(self, act: _Active, slot: _Slot) -> None:
        prompt = act.prompt
        keep = _common_prefix(slot.tokens, prompt)
        # A longer prefix may be resident in another slot (a shared system prompt): share its cells.
        donor, donor_len = None, keep
        for other in self.slots:
            if other is slot:
                continue
            n = _common_prefix(other.tokens, prompt)
            if n > donor_len + MIN_SHARED_PREFIX:
                donor, donor_len = other, n
        limit = len(prompt) - 1  # the last prompt token is always evaluated: its logits start generation
        if donor is not None:
            donor_len = min(donor_len, limit)
            self._truncate(slot, 0)
            ll.llama_memory_seq_cp(self.mem, donor.seq, slot.seq, 0, donor_len)
            slot.tokens = list(prompt[:donor_len])
            slot.cells = list(donor.cells[:donor_len])
            for cid in slot.cells:
                self._cell_refs[cid] += 1
            keep = donor_len
        else:
            keep = min(keep, limit)
            self._truncate(slot, keep)
        act.seq.n_prefilled = keep
        if not act.result.t_admit:  # a re-admission after a recompute is not a cache hit of the request
            act.result.cached_tokens = keep
            self._totals["cached"] += keep

    def _truncate(self, slot: _Slot, keep: int) -> None:
        """Drop this sequence's KV from position keep on (the cells stay while another sequence shares them)."""
        if keep >= len(slot.tokens):
            return
        if not ll.llama_memory_seq_rm(self.mem, slot.seq, keep, -1):
            ll.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
            keep = 0
        for cid in slot.cells[keep:]:
            self._cell_refs[cid] -= 1
            if self._cell_refs[cid] == 0:
                del self._cell_refs[cid]
        del slot.tokens[keep:]
        del slot.cells[keep:]

    def _ensure_cells(self, needed: int, members: list[_Active]) -> None:
        """Free idle caches, least recently used first, until the step's new tokens fit in the KV pool."""
        free = self.n_cells - len(self._cell_refs)
        if free >= needed:
            return
        for slot in sorted((s for s in self.slots if s.active is None and s.tokens), key=lambda s: s.last_used):
            self._truncate(slot, 0)
            slot.conversation = None
            if self.n_cells - len(self._cell_refs) >= needed:
                return

    def _recover_failed_decode(self, rc: int, members: list[_Active]) -> None:
        """llama_decode refused the batch: undo the tokens we appended, then shrink the load and retry next step."""
        for act in members:
            assert act.slot is not None  # (members hold a slot)
            extra = len(act.slot.tokens) - len(act.slot.cells)
            if extra > 0:
                ll.llama_memory_seq_rm(self.mem, act.slot.seq, len(act.slot.cells), -1)
                del act.slot.tokens[len(act.slot.cells) :]
                if act.pending_token is None:  # a prompt chunk that was not evaluated after all
                    act.result.evaluated_tokens -= extra
            act.batch_index = -1
        if rc == 1:  # no KV space: the scheduler names a victim (stopped agents first) to swap out
            victim = self.scheduler.kv_victim([a.seq for a in self._actives.values()])
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
    def _preempt(self, act: _Active) -> None:
        """Take the slot away: save the KV to RAM or drop it for recompute, whichever is estimated cheaper."""
        slot = act.slot
        if slot is None:
            return
        n = len(slot.tokens)
        size = ll.llama_state_seq_get_size(self.ctx, slot.seq) if n else 0
        swap_cost = 2 * size * self._swap_cost_per_byte
        recompute_cost = n * self._prefill_cost_per_token
        self._totals["preemptions"] += 1
        act.result.preemptions += 1
        if n and swap_cost <= recompute_cost:
            t0 = time.perf_counter()
            buf = (ctypes.c_uint8 * size)()
            got = ll.llama_state_seq_get_data(self.ctx, buf, size, slot.seq)
            dt = time.perf_counter() - t0
            if got:
                self._swap_cost_per_byte = 0.8 * self._swap_cost_per_byte + 0.2 * (dt / max(1, got))
                act.swapped = buf
                act.swapped_tokens = list(slot.tokens)
                self._totals["swaps_out"] += 1
        if act.swapped is None:
            # Recompute later: everything the sequence had becomes prompt again.
            self._totals["recomputes"] += 1
            _requeue_for_recompute(act, slot.tokens)
        self._truncate(slot, 0)
        slot.active = None
        slot.conversation = None
        slot.last_used = time.monotonic()
        act.slot = None
        act.seq.preempted(act.swapped is not None)

    def _swap_in(self, act: _Active, slot: _Slot) -> None:
        self._truncate(slot, 0)
        buf = act.swapped
        assert buf is not None  # (only a swapped-out request is swapped in)
        t0 = time.perf_counter()
        ok = ll.llama_state_seq_set_data(self.ctx, buf, len(buf), slot.seq)
        dt = time.perf_counter() - t0
        act.swapped = None
        if not ok:  # could not restore (e.g. no room): fall back to recompute
            self._totals["recomputes"] += 1
            _requeue_for_recompute(act, act.swapped_tokens)
            act.swapped_tokens = []
            return
        self._swap_cost_per_byte = 0.8 * self._swap_cost_per_byte + 0.2 * (dt / max(1, len(buf)))
        self._totals["swaps_in"] += 1
        slot.tokens = act.swapped_tokens
        act.swapped_tokens = []
        slot.cells = []
        for _ in slot.tokens:  # a restored sequence owns fresh cells (it no longer shares any)
            cid = next(self._cell_ids)
            self._cell_refs[cid] = 1
            slot.cells.append(cid)
        act.seq.n_prefilled = act.seq.prompt_len

    # --- ending requests --------------------------------------------------------------------------------------
    def _finish(self, act: _Active, reason: str, error: str | None) -> None:
        """End a request: result to the caller, slot back to the pool (its KV kept as an idle cache)."""
        if act.seq.rid not in self._actives:
            return
        del self._actives[act.seq.rid]
        res = act.result
        res.finish_reason = reason
        res.error = error
        res.completion_tokens = len(act.generated)
        if act.stream is not None:
            tail = act.stream.finish() if reason in ("cancelled", "error") else ""
            res.text = act.stream.text
            if tail:
                act.handle.pipe.write(tail)
        res.t_end = time.monotonic()
        act.seq.state = "finished"
        slot = act.slot
        if slot is not None:
            slot.active = None
            slot.last_used = res.t_end
            if reason in ("cancelled", "error"):
                self._truncate(slot, 0)  # cancelling frees the slot and its KV at once
                slot.conversation = None
        act.slot = None
        act.seq.has_slot = False
        act.swapped = None
        if act.sampler is not None:
            act.sampler.free()
            act.sampler = None
        self._close_conversation(act, reason)
        act.handle.n_generated = len(act.generated)
        act.handle._finish(res)

    def _close_conversation(self, act: _Active, reason: str) -> None:
        key = act.req.conversation
        if not key:
            return
        with self._conv_lock:
            conv = self._conversations.get(key)
            if conv is None:
                return
            conv.busy = False
            if reason not in ("eos", "length", "stop") or act.conv_base is None:
                return
            reply = act.result.text
            msgs = [*act.conv_base, {"role": "assistant", "content": reply}]
            tpl = self.model.template
            with_prompt = tpl.render(act.conv_base, add_generation_prompt=True)
            closed = tpl.render(msgs, add_generation_prompt=False)
            # The end-of-generation token that ended the turn was sampled, never decoded; any others (ignore_eos)
            # are in the KV and must stay in the tokens, or the next turn diverges from the KV there.
            gen = act.generated[:-1] if reason == "eos" else list(act.generated)
            if reason != "stop" and closed.startswith(with_prompt + reply):
                # Keep the tokens as generated and close the turn with the template's own suffix.
                # (act.prompt grew by the generated tokens if the request was recomputed after a preemption)
                prompt = act.prompt[: act.result.prompt_tokens]
                tokens = prompt + gen + self.model.tokenize(closed[len(with_prompt) + len(reply) :])
            else:
                tokens = self._render_closed(msgs)
            conv.messages = msgs
            conv.tokens = tokens

    def _render_closed(self, msgs: list[dict[str, str]]) -> list[int]:
        return self.model.chat_tokens(msgs, add_generation_prompt=False)

    # --- statistics -------------------------------------------------------------------------------------------
    def _publish_stats(self, last_batch: int = 0) -> None:
        per_tok = self.model.info.kv_bytes_per_token
        seqs = []
        swapped_total = 0
        for a in self._actives.values():
            kv = len(a.slot.tokens) if a.slot is not None else 0
            a.seq.kv_tokens = kv
            sw = len(a.swapped) if a.swapped is not None else 0
            swapped_total += sw
            seqs.append(
                SeqStats(
                    rid=a.seq.rid, owner=a.req.sched.owner, state=a.seq.state,
                    slot=a.slot.seq if a.slot is not None else None, kv_tokens=kv, kv_bytes=kv * per_tok,
                    swapped_bytes=sw, prompt_tokens=a.seq.prompt_len, generated=len(a.generated),
                    switches=a.seq.switches, boosted=a.seq.boosted, service=a.seq.service,
                )
            )
        used = len(self._cell_refs)
        cached_idle = 0
        if any(s.active is None and s.cells for s in self.slots):  # else every cell in use is an active one's
            active_cells: set[int] = set()
            for s in self.slots:
                if s.active is not None:
                    active_cells.update(s.cells)
            cached_idle = used - len(active_cells)
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
                self._truncate(s, 0)
                s.conversation = None


def _requeue_for_recompute(act: _Active, kv_tokens: list[int]) -> None:
    """The sequence lost its KV (kv_tokens): make it all prompt again, to be prefilled when it gets a slot.

    Mid-prefill, the original prompt still covers everything. While decoding, the KV held the prompt and all
    generated tokens but the last, sampled and not yet decoded: that one ends the new prompt, so the prefill
    that restores the context also yields the logits for the next sample.
    """
    if act.pending_token is not None:
        act.prompt = [*kv_tokens, act.pending_token]
        act.pending_token = None
    act.seq.prompt_len = len(act.prompt)
    act.seq.n_prefilled = 0


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
