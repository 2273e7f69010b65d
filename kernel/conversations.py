"""A conversation's tokens between its turns, in one place: `HeldTokens` (the prompt as sent and the reply as
generated, which is exactly what the engine's KV holds), used by the kernel's context manager (kernel/context.py,
which renders each turn and sends token ids) and by the engine's conversation cache below, for callers that send a
conversation as messages (tests, benchmarks, a bare engine).

A new turn appends tokens: when the new rendering continues the text the held tokens stand for, only the rest is
tokenised, so the earlier tokens (the model's own replies included) stay as they were generated, the KV kept for
them stays valid, and a long conversation is not tokenised again each turn.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .model_info import RenderedChat
from .requests import EngineError, GenRequest

Message = dict[str, str]
COMPLETE = ("eos", "length")  # replies whose tokens are all in the KV (a stop string cuts the text short of them)


@dataclass
class HeldTokens:
    """The tokens of a conversation's last turn, prompt and reply, and the rendered text they stand for."""

    tokens: list[int] = field(default_factory=list)
    text: str = ""

    def prompt(self, model: Any, rendered: RenderedChat) -> list[int]:
        """The tokens of a new turn's rendering: these held ones and the rest tokenised when the rendering
        continues their text, else all of it tokenised afresh. `model`: model.Model (or the kernel's Vocabulary)."""
        if self.tokens and rendered.text.startswith(self.text):
            return self.tokens + model.tokens_of(rendered, skip_chars=len(self.text))
        return model.tokens_of(rendered)

    def hold(self, prompt: list[int], prompt_text: str, generated: list[int], reply: str, reason: str) -> None:
        """A turn ended: hold its prompt and reply when the reply is complete, else nothing (the next turn is
        tokenised afresh). The end-of-generation token that ended the turn was sampled, never decoded; any
        others (ignore_eos, a length cut) are in the KV and stay, or the next turn diverges from the KV there."""
        if reason in COMPLETE and generated:
            gen = generated[:-1] if reason == "eos" else generated
            self.tokens, self.text = [*prompt, *gen], prompt_text + reply
        else:
            self.clear()

    def clear(self) -> None:
        self.tokens, self.text = [], ""


@dataclass
class _Conversation:
    messages: list[Message] = field(default_factory=list)  # what `held` stands for: the last turn and its reply
    held: HeldTokens = field(default_factory=HeldTokens)
    turn: list[Message] | None = None  # the turn in flight (one at a time) …
    turn_text: str = ""  # … as rendered


class ConversationCache:
    """The engine's conversations by key, for callers that send messages; any thread (a lock guards them). One
    request in flight per conversation."""

    def __init__(self, model: Any) -> None:
        """`model`: the engine's model.Model (render_chat, tokens_of)."""
        self.model = model
        self._conversations: dict[str, _Conversation] = {}
        self._lock = threading.Lock()

    def prompt(self, req: GenRequest, messages: list[Message]) -> list[int]:
        """The prompt tokens of a turn of conversation `req.conversation` (in flight until `close`/`release`)."""
        key = req.conversation or ""
        with self._lock:
            conv = self._conversations.setdefault(key, _Conversation())
            if conv.turn is not None:
                raise EngineError(f"conversation {key!r} already has a request in flight")
            conv.turn = list(messages)
            base, held = conv.messages, conv.held
        try:
            try:
                rendered = self.model.render_chat(messages)
            except Exception as exc:  # a template may raise on message orders it does not support
                raise EngineError(f"chat template: {' '.join(str(exc).split())}") from None
            if base and messages[: len(base)] == base:
                tokens = held.prompt(self.model, rendered)
            else:
                tokens = self.model.tokens_of(rendered)
            conv.turn_text = rendered.text
            return tokens
        except Exception:
            self.release(key)
            raise

    def release(self, key: str) -> None:
        with self._lock:
            conv = self._conversations.get(key)
            if conv:
                conv.turn = None

    def forget(self, key: str) -> None:
        with self._lock:
            self._conversations.pop(key, None)

    def close(self, key: str, reply: str, prompt: list[int], generated: list[int], reason: str) -> None:
        """A turn ended: on a complete reply the conversation holds the turn and the reply, as the tokens decoded."""
        with self._lock:
            conv = self._conversations.get(key)
            if conv is None or conv.turn is None:
                return
            turn, conv.turn = conv.turn, None
            if reason not in (*COMPLETE, "stop"):
                return  # cancelled, failed: the conversation holds what it held before this turn
            conv.held.hold(prompt, conv.turn_text, generated, reply, reason)
            conv.messages = [*turn, {"role": "assistant", "content": reply}] if conv.held.tokens else []
