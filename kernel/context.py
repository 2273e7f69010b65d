"""The context manager: before each chat call, fit the conversation into the agent's window; record each turn.

Window: the engine's `model.n_ctx`, or less for one agent (its `max_kv` limit, or the `context_window` option of
its llm calls), minus room for the reply (`max_tokens`, at most half the window). When the rendered conversation is
over that budget it is compacted down to a low-water mark (70% of the budget) by `memory.context_policy`, or the
`context_policy` option of the call:

  truncate   drop the oldest turns; the system prompt and the newest turn always stay;
  summarize  the model condenses the older turns (and the previous summary) into a short note, placed after the
             system prompt: a scheduled LLM call made on the agent's behalf (syscall "context", its tokens are the
             agent's).

A compaction is remembered per conversation, and applied again to the next call whose messages start the same way,
so an agent that keeps sending its whole history gets the same compacted prefix each turn: the engine then reuses
the KV of everything but the new turn, and only a new compaction invalidates KV — from the first message it changes;
the system prompt before it stays cached. Every compaction is a row of the transcript (role "compaction": the
summary, or what was dropped), from which `resume` rebuilds a conversation in a later run.

Turns are recorded here too: at the end of each llm call the messages the agent had not sent before and the reply
go to the `messages` table as one record (never per token). Conversation keys: `session=NAME` is global (any agent,
any run: `chat --session`, `chat --continue`); `conversation=NAME` is private to the process; no key = the
process's own transcript.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from .conversations import HeldTokens
from .llmcall import LLMCall
from .model_info import RenderedChat
from .proc import Process, SyscallRecord
from .requests import EngineError, GenRequest, GenResult, SamplingParams
from .services import LLMError, Syscalls

__all__ = ["ContextManager", "ConvState", "POLICIES", "SUMMARY_PREFIX", "Turn"]

POLICIES = ("truncate", "summarize")
LOW_WATER = 0.7  # compact down to this fraction of the budget, so the next turns fit without compacting again
MAX_SESSIONS = 64  # sessions remembered in RAM (and kept in the engine); older ones are rebuilt from storage
OFF_LOOP_CHARS = 4000  # a chat with more new text than this is rendered and tokenised in a worker thread
SAFETY_TOKENS = 8  # re-rendered text may tokenise a little differently from the tokens the engine holds
FALLBACK_OVERHEAD = 8  # tokens a message adds around its content when the template cannot be rendered to measure it
SUMMARY_PREFIX = "Summary of the earlier conversation: "
SUMMARIZE_ASK = ("Write a short summary of the conversation below: keep names, facts, numbers, decisions and "
                 "open questions. Reply with the summary only.")

Message = dict[str, str]


@dataclass
class ConvState:
    """What the kernel remembers of one conversation between its turns."""

    key: str  # the storage key (messages.conversation)
    engine_key: str | None  # the engine's conversation key (KV kept between turns); None = no conversation
    session: bool
    agent: str
    pids: set[int] = field(default_factory=set)
    sys: list[Message] = field(default_factory=list)  # the system prompt(s) kept at the head
    fold_n: int = 0  # the first fold_n messages the agent sends …
    fold_prefix: list[Message] | None = None  # … (exactly these) are replaced by sys + the summary
    summary: str | None = None
    summary_role: str = "system"
    stored: list[Message] = field(default_factory=list)  # agent-view messages already in storage
    last: list[Message] = field(default_factory=list)  # what the engine holds: last effective messages + reply
    # … as tokens (the prompt as sent, then the reply as generated: the KV the engine keeps for the next turn),
    # and as the template's text; empty when the next turn must be tokenised afresh.
    held: HeldTokens = field(default_factory=HeldTokens)
    compactions: int = 0
    used: float = 0.0  # time of its last turn

    def head(self) -> list[Message]:
        return [*self.sys, *([_summary_msg(self.summary, self.summary_role)] if self.summary else [])]


@dataclass
class Turn:
    state: ConvState
    messages: list[Message]  # as the agent sent them
    effective: list[Message] | None  # as sent to the engine (None for raw prompts)
    new: list[Message]  # to store when the turn ends
    raw: bool = False
    tokens: list[int] | None = None  # the prompt as sent to the engine (None: the engine renders it)
    text: str = ""  # the prompt as the template rendered it


def _held_key(held: HeldTokens | None) -> object:
    """What a rendering remembered with `held` depends on (the object, and what it holds now)."""
    return None if held is None else (id(held), len(held.tokens), len(held.text))


def _summary_msg(text: str, role: str) -> Message:
    return {"role": role, "content": SUMMARY_PREFIX + text}


def _leading_system(msgs: list[Message]) -> int:
    n = 0
    while n < len(msgs) - 1 and msgs[n].get("role") == "system":
        n += 1
    return n


class ContextManager:
    """Per-conversation state, window fitting and turn recording for all agents (used on the kernel loop)."""

    def __init__(self, model: Any, storage: Any, config: Any, backends: Any, pool: Executor,
                 track_call: Callable[[Process, SyscallRecord, Any], None]) -> None:
        """`model`: the kernel's tokeniser (model.Model); `backends`: routing.Backends (window sizes, submit,
        the local engine's conversations); `track_call`: Kernel.track_call, for the summaries' LLM calls."""
        self.model = model
        self.storage = storage
        self.config = config
        self.backends = backends
        self.pool = pool
        self._track_call = track_call
        self._states: dict[str, ConvState] = {}
        self._overhead: int | None = None
        # The last chat rendered (messages, the held tokens it continued, rendering, tokens): fitting counts the
        # conversation and the request sends the same rendering, so a turn that needs no compaction goes through
        # the template once, and a continued conversation has only its new part tokenised.
        self._memo: tuple[list[Message], object, RenderedChat, list[int]] | None = None
        self.compactions = 0

    # --- keys and state ---------------------------------------------------------------------------------------
    def _state_for(self, sc: Syscalls, opts: dict) -> ConvState:
        pid, run = sc.pid, self.storage.run
        session, conv = opts.get("session"), opts.get("conversation")
        if session:
            key, ekey, is_session = str(session), f"session:{session}", True
        elif conv:
            key, ekey, is_session = f"#{run}.{pid}.{conv}", f"{pid}:{conv}", False
        else:
            key, ekey, is_session = f"#{run}.{pid}", None, False
        st = self._states.get(key)
        if st is None:
            st = self._new_state(ConvState(key=key, engine_key=ekey, session=is_session, agent=sc.agent))
        st.pids.add(pid)
        st.used = time.time()
        return st

    def _new_state(self, st: ConvState) -> ConvState:
        st.used = time.time()
        self._states[st.key] = st
        sessions = [s for s in self._states.values() if s.session]
        if len(sessions) > MAX_SESSIONS:  # forget the least recently used session (storage still has it all)
            old = min(sessions, key=lambda s: s.used)
            del self._states[old.key]
            if old.engine_key:
                self.backends.local.forget_conversation(old.engine_key)
        return st

    def conversations_of(self, pid: int) -> list[str]:
        return [s.key for s in list(self._states.values()) if pid in s.pids]

    def release(self, pid: int) -> None:
        """The process exited: forget its private conversations (engine tokens included); sessions stay."""
        for key, st in list(self._states.items()):
            if not st.session and pid in st.pids:
                del self._states[key]
                if st.engine_key:
                    self.backends.local.forget_conversation(st.engine_key)

    # --- counting ---------------------------------------------------------------------------------------------
    def count(self, messages: list[Message], held: HeldTokens | None = None) -> int:
        """Prompt tokens of these messages as the engine will render them (template, generation prompt, BOS);
        `held`: the tokens of the conversation's last turn, which a continuing turn starts with."""
        counted = self._rendered(messages, held)
        if counted is None:  # the engine reports template errors; here an estimate will do
            return sum(self.cost(m) for m in messages) + 8
        return counted

    def _rendered(self, messages: list[Message], held: HeldTokens | None = None) -> int | None:
        """Tokens of the messages through the template (contents as plain text), None if it cannot render."""
        got = self._render(messages, held)
        return None if got is None else len(got[1])

    def _render(self, messages: list[Message], held: HeldTokens | None = None
                ) -> tuple[RenderedChat, list[int]] | None:
        """The chat rendered and tokenised (the last one remembered), None if the template cannot render it.
        With `held`, the tokens start with the held ones when the rendering continues their text. Any thread."""
        key = _held_key(held)
        memo = self._memo
        if memo is not None and memo[0] == messages and (key is None or memo[1] == key):
            return memo[2], memo[3]
        try:
            rendered = self.model.render_chat(messages)
            tokens = held.prompt(self.model, rendered) if held is not None else self.model.tokens_of(rendered)
        except Exception:  # noqa: BLE001 - raise_exception(), a syntax it cannot run, an unsupported order
            return None
        self._memo = ([dict(m) for m in messages], key, rendered, tokens)
        return rendered, tokens

    async def _render_off_loop(self, messages: list[Message], held: HeldTokens | None) -> None:
        """Render and tokenise a long chat in a worker thread (remembered for `count` and the request): thousands
        of tokens take tens of ms, far more on a loaded machine, which the kernel loop must not spend."""
        memo = self._memo
        if memo is not None and memo[0] == messages and memo[1] == _held_key(held):
            return
        new_chars = sum(len(m.get("content", "")) for m in messages) - (len(held.text) if held is not None else 0)
        if new_chars < OFF_LOOP_CHARS:
            return  # a short one costs less than the trip to a thread
        await asyncio.get_running_loop().run_in_executor(None, self._render, messages, held)

    def cost(self, m: Message) -> int:
        """Estimated tokens one message adds to a rendered conversation."""
        if self._overhead is None:
            # Never through count(): a template that always raises would send count and cost round forever.
            a = [{"role": "system", "content": "x"}]
            b = [*a, {"role": "user", "content": "y"}]
            na, nb = self._rendered(a), self._rendered(b)
            if na is None or nb is None:
                self._overhead = FALLBACK_OVERHEAD
            else:
                self._overhead = max(1, nb - na - len(self.model.tokenize("y", special=False)))
        return len(self.model.tokenize(m.get("content", ""), special=False)) + self._overhead

    def window(self, sc: Syscalls, opts: dict) -> int:
        w = self.backends.resolve(sc.backend).n_ctx or self.backends.local.n_ctx
        if sc.limits.max_kv:
            w = min(w, sc.limits.max_kv)
        if opts.get("context_window"):
            w = min(w, int(opts["context_window"]))
        return w

    # --- a turn -----------------------------------------------------------------------------------------------
    async def prepare(self, sc: Syscalls, req: GenRequest, opts: dict) -> Turn:
        """Before the call: resolve the conversation key, fit the messages into the window (maybe compacting)."""
        st = self._state_for(sc, opts)
        if req.messages is None:  # a raw completion: recorded, not fitted (the engine refuses an oversize prompt)
            msg = {"role": "user", "content": req.prompt or ""}
            return Turn(st, [msg], None, [msg], raw=True)
        msgs = list(req.messages)
        policy = str(opts.get("context_policy") or self.config.memory.context_policy)
        if policy not in POLICIES:
            raise LLMError(f"context_policy: must be one of {', '.join(POLICIES)}, got {policy!r}")
        window = self.window(sc, opts)
        reserve = min(req.max_tokens, window // 2)
        budget = max(8, window - reserve - SAFETY_TOKENS)
        n_stored = len(st.stored) if msgs[: len(st.stored)] == st.stored else 0
        # A new turn of a conversation the engine keeps appends tokens: the earlier ones (the model's own replies
        # included) stay as they were generated, so their KV is reused and they are not tokenised again.
        held = st.held if st.engine_key and st.held.tokens else None
        effective = await self._fit(sc, st, msgs, budget, policy, n_stored, window, held)
        req.messages = effective
        req.conversation = st.engine_key
        turn = Turn(st, msgs, effective, msgs[n_stored:])
        got = self._render(effective, held)  # rendered while fitting: not again
        if got is not None:
            rendered, tokens = got
            req.tokens, turn.tokens, turn.text = tokens, tokens, rendered.text
        return turn

    def finish(self, sc: Syscalls, turn: Turn, text: str, result: GenResult | None, outcome: str) -> None:
        """After the call (also when it was cancelled): the new messages and the reply, as one record."""
        st = turn.state
        rows: list[tuple[str, str, int, dict | None]] = [
            (m.get("role", "user"), m.get("content", ""), self._tokens(m.get("content", "")), None) for m in turn.new
        ]
        if text or result is not None:
            meta: dict[str, Any] = {"outcome": outcome}
            if result is not None:
                meta.update(prompt_tokens=result.prompt_tokens, cached_tokens=result.cached_tokens,
                            finish=result.finish_reason)
            tokens = result.completion_tokens if result is not None else self._tokens(text)
            rows.append(("assistant", text, tokens, meta))
        self.storage.save_messages(st.key, session=st.session, agent=sc.agent, pid=sc.pid, messages=rows)
        reply = {"role": "assistant", "content": text}
        st.used = time.time()
        if turn.raw:
            st.stored = []
            return
        st.held.clear()
        if result is not None and outcome == "ok" and result.finish_reason in ("eos", "length", "stop"):
            st.stored = [*turn.messages, reply]
            st.last = [*(turn.effective or []), reply]
            if turn.tokens is not None:
                st.held.hold(turn.tokens, turn.text, result.tokens, text, result.finish_reason)
        else:
            st.stored = list(turn.messages)
            st.last = []

    def _tokens(self, text: str) -> int:
        return len(self.model.tokenize(text, special=False)) if text else 0

    # --- fitting ----------------------------------------------------------------------------------------------
    async def _fit(self, sc: Syscalls, st: ConvState, msgs: list[Message], budget: int, policy: str,
                   n_stored: int, window: int, held: HeldTokens | None) -> list[Message]:
        fold = st.fold_prefix
        if fold is not None and len(msgs) > st.fold_n and msgs[: st.fold_n] == fold:
            n = st.fold_n
        else:
            n = _leading_system(msgs)
            st.sys, st.fold_prefix, st.fold_n, st.summary = list(msgs[:n]), None, 0, None
        head = st.head()
        tail = msgs[n:]
        effective = [*head, *tail]
        await self._render_off_loop(effective, held)
        before = self.count(effective, held)
        if before <= budget:
            return effective
        # Compact: fold the oldest k messages of the tail (never the newest one) down to the low-water mark.
        target = int(budget * LOW_WATER)
        summarize = policy == "summarize"
        summary_max = max(16, min(96, budget // 5)) if summarize else 0
        room = target - self.count(st.sys) - (summary_max + 16 if summarize or st.summary else 0)
        costs = [self.cost(m) for m in tail]
        k, rest = 0, sum(costs)
        while k < len(tail) - 1 and rest > room:
            rest -= costs[k]
            k += 1
        while k < len(tail) - 1 and tail[k].get("role") == "assistant":
            k += 1  # the kept part starts with a user turn
        folded = tail[:k]
        summary, summary_role, note = st.summary, st.summary_role, ""
        if summarize and folded:
            got = await self._summarize(sc, st.sys, st.summary, folded, summary_max, window)
            if got is None:
                note = "summarize failed: dropped instead"
            else:
                summary = got
            summary_role = "system" if st.sys else "user"
        kept = tail[k:]
        trimmed = False
        while True:
            head = [*st.sys, *([_summary_msg(summary, summary_role)] if summary else [])]
            effective = [*head, *kept]
            after = self.count(effective)
            if after <= budget:
                break
            if len(kept) > 1:  # estimates were short: drop one more of the oldest kept
                kept = kept[1:]
                k += 1
                continue
            if summary:  # the summary itself is what does not fit
                summary = None
                continue
            effective = self._trim_newest(st.sys, kept[-1], budget)
            after, trimmed = self.count(effective), True
            break
        if not trimmed:
            st.fold_n = n + k
            st.fold_prefix = list(msgs[: st.fold_n])
            st.summary, st.summary_role = summary, summary_role
        st.compactions += 1
        self.compactions += 1
        kept_stored = max(0, min(len(kept), n_stored - (n + k)))
        used = "summarize" if summarize and summary and not note else "truncate"
        content = summary if used == "summarize" else \
            f"dropped {len(folded)} message(s) ({before} tokens before, {after} after)"
        meta = {"policy": used, "folded": len(folded), "kept": kept_stored, "tokens_before": before,
                "tokens_after": after, "summary": bool(summary), "summary_role": summary_role, "window": window,
                "trimmed": trimmed, "note": note}
        self.storage.save_messages(st.key, session=st.session, agent=sc.agent, pid=sc.pid,
                                   messages=[("compaction", content or "", after, meta)], turn=False)
        return effective

    def _trim_newest(self, sys: list[Message], newest: Message, budget: int) -> list[Message]:
        """Even the newest message alone does not fit: keep its end (and drop the system prompt if need be)."""
        for head in (sys, []):
            empty = self.count([*head, {**newest, "content": ""}])
            room = budget - empty
            if room > 0:
                toks = self.model.tokenize(newest.get("content", ""), special=False)
                text = self.model.detokenize(toks[-room:]) if len(toks) > room else newest.get("content", "")
                msgs = [*head, {**newest, "content": text}]
                while self.count(msgs) > budget and msgs[-1]["content"]:
                    msgs[-1] = {**msgs[-1], "content": msgs[-1]["content"][len(msgs[-1]["content"]) // 8 + 1:]}
                return msgs
        return [{**newest, "content": ""}]

    async def _summarize(self, sc: Syscalls, sys: list[Message], previous: str | None, folded: list[Message],
                         max_tokens: int, window: int) -> str | None:
        """One LLM call on the agent's behalf (its scheduling identity, its token account); None if it failed."""
        left = sc.tokens_left()
        if left is not None:
            max_tokens = min(max_tokens, left)
            if max_tokens <= 0:
                return None
        lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in folded]
        intro = f"Earlier summary: {previous}\n\n" if previous else ""

        def build(body: list[str]) -> list[Message]:
            # The conversation's own system prompt first: the request then shares that prefix (and its KV) with
            # the conversation, and leaves it in place for the compacted conversation's next turn.
            return [*sys, {"role": "user", "content": f"{SUMMARIZE_ASK}\n\n{intro}Conversation:\n" + "\n".join(body)}]

        limit = window - max_tokens - SAFETY_TOKENS
        messages = build(lines)
        while self.count(messages) > limit and len(lines) > 1:
            lines = lines[1:]  # keep the newest part of what is folded
            messages = build(lines)
        if self.count(messages) > limit:
            return None
        req = GenRequest(messages=messages, max_tokens=max_tokens, sched=sc.proc.sched,
                         sampling=SamplingParams(temperature=0.0, repeat_penalty=1.1))
        async with sc.call("context", f"summarize {len(folded)} messages", started=False, cancellable=True) as call:
            try:
                result = await LLMCall(self.backends, self._track_call, sc, req, sc.backend, call.rec).run()
            except EngineError as exc:
                call.outcome = f"error: {exc}"
                return None
            text = " ".join(result.text.split())
            if result.error or not text:
                call.outcome = f"error: {result.error or 'empty summary'}"
                return None
        return text

    # --- resuming a conversation ------------------------------------------------------------------------------
    async def last_session(self, agent: str) -> str | None:
        """The most recently used session of an agent type: from storage (any run), else this run's."""
        if self.storage.enabled:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.pool, self.storage.last_session, agent)
        mine = [s for s in self._states.values() if s.session and s.agent == agent and s.used]
        return max(mine, key=lambda s: s.used).key if mine else None

    async def history(self, sc: Syscalls, session: str) -> list[Message]:
        """The messages to continue session `session` with: what the engine holds for it when it is still
        resident in this run (so its KV is reused), else rebuilt from storage (after its last compaction)."""
        st = self._states.get(session)
        if st is not None and st.last:
            msgs = list(st.last)
            n_head = len(st.head())
            summary, role, sys = st.summary, st.summary_role, list(st.sys)
        else:
            loop = asyncio.get_running_loop()
            rows = await loop.run_in_executor(self.pool, self.storage.conversation_rows, session)
            msgs, sys, summary, role = rebuild(rows)
            n_head = len(sys) + (1 if summary else 0)
            if st is None:
                st = self._new_state(ConvState(key=session, engine_key=f"session:{session}", session=True,
                                               agent=sc.agent))
        st.pids.add(sc.pid)
        st.sys, st.summary, st.summary_role = sys, summary, role
        if summary:
            st.fold_n, st.fold_prefix = n_head, list(msgs[:n_head])
        else:
            st.fold_n, st.fold_prefix = 0, None
        st.stored = list(msgs)
        return msgs


def rebuild(rows: list[dict[str, Any]]) -> tuple[list[Message], list[Message], str | None, str]:
    """A stored transcript → (messages to continue with, system prompt, summary, summary role).

    After the last compaction row: the leading system messages, the summary (if it was one), the `kept` messages
    stored before the compaction, and every message stored after it."""
    msgs = list(rows)
    last = max((i for i, r in enumerate(msgs) if r["role"] == "compaction"), default=None)
    plain = [r for r in msgs if r["role"] != "compaction"]
    n_sys = 0
    while n_sys < len(plain) and plain[n_sys]["role"] == "system":
        n_sys += 1
    sys = [{"role": r["role"], "content": r["content"]} for r in plain[:n_sys]]
    if last is None:
        return [{"role": r["role"], "content": r["content"]} for r in plain], sys, None, "system"
    meta = json.loads(msgs[last]["meta"] or "{}")
    before = [r for r in msgs[:last] if r["role"] != "compaction"][n_sys:]
    kept_n = int(meta.get("kept", 0))
    kept = before[len(before) - kept_n:] if kept_n else []
    after = [r for r in msgs[last + 1:] if r["role"] != "compaction"]
    summary = msgs[last]["content"] if meta.get("summary") and meta.get("policy") == "summarize" else None
    if summary is None and meta.get("summary"):
        # a truncation that kept an earlier summary: find the summary it kept
        for r in reversed(msgs[:last]):
            if r["role"] == "compaction" and json.loads(r["meta"] or "{}").get("policy") == "summarize":
                summary = r["content"]
                break
    role = str(meta.get("summary_role") or "system")
    body = [{"role": r["role"], "content": r["content"]} for r in (*kept, *after)]
    head = [*sys, *([_summary_msg(summary, role)] if summary else [])]
    return [*head, *body], sys, summary, role
