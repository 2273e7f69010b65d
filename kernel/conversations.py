"""The engine's conversation cache, for callers that send a conversation as messages (tests, benchmarks, a bare
engine): each conversation's messages and the tokens the engine holds for them (the prompt as sent, the reply as
generated, closed by the template's own suffix), so that a new turn appends tokens instead of re-tokenising and
the KV kept for the earlier ones stays valid.

The kernel keeps its conversations itself (kernel/context.py) and sends token ids (`GenRequest.tokens`): those
requests never come here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .requests import EngineError, GenRequest

Message = dict[str, str]


@dataclass
class _Conversation:
    messages: list[Message] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # exactly the tokens of `messages` rendered, without gen prompt
    busy: bool = False


class ConversationCache:
    """Conversations by key; any thread (a lock guards them). One request in flight per conversation."""

    def __init__(self, model: Any, chat_tokens: Callable[..., list[int]]) -> None:
        """`model`: the engine's model (template, tokenize); `chat_tokens(messages, **kw)`: its chat tokens, a
        template error raised as EngineError."""
        self.model = model
        self._chat_tokens = chat_tokens
        self._conversations: dict[str, _Conversation] = {}
        self._lock = threading.Lock()

    def prompt(self, req: GenRequest, messages: list[Message]) -> list[int]:
        """The prompt tokens of a turn of conversation `req.conversation` (marked busy until `close`/`release`)."""
        key = req.conversation or ""
        with self._lock:
            conv = self._conversations.setdefault(key, _Conversation())
            if conv.busy:
                raise EngineError(f"conversation {key!r} already has a request in flight")
            conv.busy = True
            base = conv.messages
        try:
            if base and conv.tokens and messages[: len(base)] == base:
                before = self.model.template.render(base, add_generation_prompt=False)
                full = self.model.template.render(messages, add_generation_prompt=True)
                if full.startswith(before):
                    # A new turn appends tokens; the earlier ones (the model's own replies included) are kept as
                    # they were generated, so their KV stays valid and nothing is re-tokenised.
                    return conv.tokens + self._chat_tokens(messages, skip_chars=len(before))
            return self._chat_tokens(messages)
        except Exception:
            self.release(key)
            raise

    def release(self, key: str) -> None:
        with self._lock:
            conv = self._conversations.get(key)
            if conv:
                conv.busy = False

    def forget(self, key: str) -> None:
        with self._lock:
            self._conversations.pop(key, None)

    def close(self, key: str, base: list[Message] | None, reply: str, prompt: list[int], generated: list[int],
              reason: str) -> None:
        """A turn ended: on a complete reply the conversation holds `base` + the reply, as the tokens decoded."""
        with self._lock:
            conv = self._conversations.get(key)
            if conv is None:
                return
            conv.busy = False
            if reason not in ("eos", "length", "stop") or base is None:
                return
            msgs = [*base, {"role": "assistant", "content": reply}]
            tpl = self.model.template
            with_prompt = tpl.render(base, add_generation_prompt=True)
            closed = tpl.render(msgs, add_generation_prompt=False)
            # The end-of-generation token that ended the turn was sampled, never decoded; any others (ignore_eos)
            # are in the KV and must stay in the tokens, or the next turn diverges from the KV there.
            gen = generated[:-1] if reason == "eos" else list(generated)
            if reason != "stop" and closed.startswith(with_prompt + reply):
                # Keep the tokens as generated and close the turn with the template's own suffix.
                tokens = prompt + gen + self.model.tokenize(closed[len(with_prompt) + len(reply):])
            else:
                tokens = self.model.chat_tokens(msgs, add_generation_prompt=False)
            conv.messages = msgs
            conv.tokens = tokens
