"""Find, check and load the GGUF model; tokenise, detokenise and render chats with the model's own template.

The model (weights + vocabulary) is read-only after loading and may be used from any thread for tokenising;
the llama *context* is not, and lives only on the engine thread (see engine.py).
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

from .cpu import decide_extra_buffers
from .llama_bindings import ll
from .model_info import (  # noqa: F401 - re-exported: the names callers know
    EMBEDDED_FILE,
    EMBEDDED_PACKAGE,
    ModelError,
    ModelInfo,
    RenderedChat,
    check_gguf,
    find_embedded_model,
)

# ChatML, used when a GGUF carries no template of its own.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# --- llama.cpp logging ------------------------------------------------------------------------------------------
_log_lock = threading.Lock()
_log_callback = None  # kept referenced for the life of the process: a collected callback crashes llama.cpp
_log_verbose = False


_log_mirror: int | None = None
_log_native = False  # llama.cpp logs to fd 2 by itself (see set_llama_logging)


def set_llama_logging(verbose: bool, mirror_fd: int | None = None, *, native: bool = False) -> None:
    """Silence llama.cpp's own log lines (they go to the C-level stderr, under both UIs) unless verbose.

    The engine process logs to its fd 2 (a log file) and, with --verbose, to `mirror_fd` (the terminal) too.
    `native` (verbose, no mirror): llama.cpp writes to fd 2 itself, through no Python callback, so a thread that
    loads the model does not wait for the interpreter lock at every log line while another thread imports."""
    global _log_callback, _log_verbose, _log_mirror, _log_native
    with _log_lock:
        if native and verbose and mirror_fd is None and _log_callback is None:
            _log_native = True
            ll.llama_log_set(ll.llama_log_callback(), ctypes.c_void_p(0))  # (NULL: llama.cpp's own, to stderr)
            return
        if _log_native and verbose and mirror_fd is None:
            return
        _log_verbose = verbose
        _log_mirror = mirror_fd
        if _log_callback is None:

            @ll.llama_log_callback
            def _cb(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
                if _log_verbose and text:
                    os.write(2, text)
                    if _log_mirror is not None:
                        try:
                            os.write(_log_mirror, text)
                        except OSError:
                            pass

            _log_callback = _cb
            ll.llama_log_set(_log_callback, ctypes.c_void_p(0))


_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        ll.llama_backend_init()
        _backend_ready = True


class Model:
    """A loaded GGUF: weights, vocabulary, chat template. Thread-safe for tokenising."""

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        n_gpu_layers: int = 0,
        verbose: bool = False,
        progress: Callable[[float], None] | None = None,
        chat_template: str = "",
        extra_buffers: str | bool = "auto",
        vocab_only: bool = False,
        defer_template: bool = False,
    ) -> None:
        """`vocab_only`: the vocabulary and template without the weights (the kernel's tokeniser: cheap, and no
        native compute in the kernel's process)."""
        self.path = Path(path).expanduser() if path else find_embedded_model()
        self.vocab_only = vocab_only
        check_gguf(self.path)
        set_llama_logging(verbose, _log_mirror)
        _init_backend()
        params = ll.llama_model_default_params()
        params.vocab_only = vocab_only
        params.n_gpu_layers = n_gpu_layers if n_gpu_layers >= 0 else 0x7FFFFFFF
        self.extra_buffers = decide_extra_buffers(extra_buffers)
        params.use_extra_bufts = self.extra_buffers.enabled
        if verbose and not vocab_only:
            os.write(2, f"aiosh: llama.cpp extra buffer types {self.extra_buffers.describe()}\n".encode())
        if progress is not None:

            @ll.llama_progress_callback
            def _progress(value: float, _user: ctypes.c_void_p) -> bool:
                progress(float(value))
                return True

            self._progress_cb = _progress  # referenced while llama.cpp may call it
            params.progress_callback = _progress
        ptr = ll.llama_model_load_from_file(str(self.path).encode(), params)
        if not ptr:
            raise ModelError(f"{self.path}: llama.cpp could not load this model (corrupt or unsupported GGUF)")
        self.ptr = ptr
        self.vocab = ll.llama_model_get_vocab(ptr)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self.bos = ll.llama_vocab_bos(self.vocab)
        self.eos = ll.llama_vocab_eos(self.vocab)
        self.add_bos = bool(ll.llama_vocab_get_add_bos(self.vocab))
        if vocab_only:  # no hyperparameters were loaded (llama.cpp aborts if asked for them): the header has them
            self.info = ModelInfo(path=str(self.path), description="", n_ctx_train=0, n_vocab=self.n_vocab,
                                  n_layer=0, n_params=0, size_bytes=0, kv_bytes_per_token=0)
        else:
            self.info = self._read_info(ptr)
        self._template_source = chat_template or (ll.llama_model_chat_template(ptr, None) or b"").decode(
            "utf-8", "replace")
        if not defer_template:
            self.template  # noqa: B018 - (compiled now: a template jinja2 refuses is an error of the load)

    @functools.cached_property
    def template(self) -> ChatTemplate:
        """The chat template, compiled at first use when the load deferred it (`defer_template`: the engine
        process makes its llama context first, while jinja2 would hold the interpreter lock)."""
        return ChatTemplate(self._template_source or FALLBACK_TEMPLATE, self.token_text(self.bos),
                            self.token_text(self.eos))

    def _read_info(self, ptr) -> ModelInfo:
        n_layer = ll.llama_model_n_layer(ptr)
        n_head = max(1, ll.llama_model_n_head(ptr))
        n_embd = ll.llama_model_n_embd(ptr)
        n_head_kv = ll.llama_model_n_head_kv(ptr)
        kv_per_token = 2 * n_layer * n_head_kv * (n_embd // n_head) * 2
        desc = ctypes.create_string_buffer(256)
        ll.llama_model_desc(ptr, desc, 256)
        return ModelInfo(
            path=str(self.path),
            description=desc.value.decode("utf-8", "replace"),
            n_ctx_train=ll.llama_model_n_ctx_train(ptr),
            n_vocab=self.n_vocab,
            n_layer=n_layer,
            n_params=ll.llama_model_n_params(ptr),
            size_bytes=ll.llama_model_size(ptr),
            kv_bytes_per_token=kv_per_token,
        )

    # --- text <-> tokens --------------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        """Tokens of text; `special` parses markers such as <|im_start|> as the single tokens they are."""
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (ll.llama_token * cap)()
        n = ll.llama_tokenize(self.vocab, data, len(data), buf, cap, add_bos and self.add_bos, special)
        if n < 0:
            cap = -n
            buf = (ll.llama_token * cap)()
            n = ll.llama_tokenize(self.vocab, data, len(data), buf, cap, add_bos and self.add_bos, special)
        return list(buf[:n])

    # --- chats -> tokens: only the template's own markers are special ---------------------------------------
    def chat_tokens(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True,
                    skip_chars: int = 0, add_bos: bool | None = None) -> list[int]:
        """The tokens of a chat as the template renders it, with message contents tokenised as plain text.

        A message that contains `<|im_end|>\\n<|im_start|>system` must not become real role markers (that
        turns any text an agent reads into a prompt injection): the template's literal text is tokenised with
        special-token parsing, every message's content without it. `skip_chars` drops that many characters of
        the rendered text first (a new turn appended to tokens already held). `add_bos` None = when the
        rendered text does not begin with the BOS text itself. ValueError when the template's output cannot be
        split into its own text and the contents (then nothing is tokenised that could inject)."""
        return self.tokens_of(self.render_chat(messages, add_generation_prompt=add_generation_prompt),
                              skip_chars=skip_chars, add_bos=add_bos)

    def render_chat(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> RenderedChat:
        """The chat through the template, once: its text, cut into the template's own text and the contents
        (`tokens_of` turns it into tokens). ValueError as `chat_tokens`."""
        spans, text = self.template.spans(messages, add_generation_prompt)
        return RenderedChat(spans, text)

    def tokens_of(self, rendered: RenderedChat, *, skip_chars: int = 0, add_bos: bool | None = None) -> list[int]:
        """The tokens of a rendered chat (see `chat_tokens`), from `skip_chars` on."""
        spans, text = rendered.spans, rendered.text
        if add_bos is None:
            add_bos = skip_chars == 0 and not text.startswith(self.template.bos_token or "\0")
        out: list[int] = []
        pos = 0
        first = True
        for piece, special in spans:
            end = pos + len(piece)
            if end > skip_chars:
                part = piece[max(0, skip_chars - pos):]
                out += self.tokenize(part, add_bos=add_bos and first, special=special)
                first = False
            pos = end
        if first and add_bos:
            out = self.tokenize("", add_bos=True)
        return out

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token; may end inside a UTF-8 character (see textstream.py)."""
        buf = ctypes.create_string_buffer(64)
        n = ll.llama_token_to_piece(self.vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = ll.llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.piece(token, special=True).decode("utf-8", "replace")

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(ll.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        if self.ptr:
            ll.llama_model_free(self.ptr)
            self.ptr = None


_MARK = re.compile("\ue000([0-9]+)\ue001")


class ChatTemplate:
    """The model's Jinja chat template, rendered in a sandbox as llama.cpp's server and llama-cpp-python do."""

    def __init__(self, source: str, bos_token: str, eos_token: str) -> None:
        from jinja2 import TemplateSyntaxError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        env.globals["raise_exception"] = raise_exception
        self.source = source
        try:
            self._tpl = env.from_string(source)
        except TemplateSyntaxError as exc:
            raise ModelError(f"chat template: invalid Jinja template: {' '.join(str(exc.message).split())} "
                             f"(line {exc.lineno})") from None
        self.bos_token = bos_token
        self.eos_token = eos_token

    def spans(self, messages: list[dict[str, str]], add_generation_prompt: bool = True
              ) -> tuple[list[tuple[str, bool]], str]:
        """The rendered chat cut into (text, is_template_text) pieces, and the rendered text.

        The template is rendered once with a placeholder in place of each message's content, which shows where
        its own text ends and a content begins; the real rendering must then be exactly those pieces with the
        contents put back (as they are, or trimmed, as templates that `| trim` do). ValueError when it is not
        (a template that rewrites contents): then no split could be trusted."""
        text = self.render(messages, add_generation_prompt)
        marks = [f"\ue000{i}\ue001" for i in range(len(messages))]
        probe = [{**m, "content": marks[i]} if isinstance(m.get("content"), str) else dict(m)
                 for i, m in enumerate(messages)]
        try:
            shaped = self.render(probe, add_generation_prompt)
        except Exception:  # noqa: BLE001 - a template that branches on contents: no trusted split
            shaped = None
        if shaped is not None:
            for trim in (False, True):
                pieces: list[tuple[str, bool]] = []
                for k, part in enumerate(_MARK.split(shaped)):
                    if k % 2 == 0:
                        if part:
                            pieces.append((part, True))
                    else:
                        content = messages[int(part)].get("content", "")
                        content = content.strip() if trim else content
                        if content:
                            pieces.append((content, False))
                if "".join(p for p, _ in pieces) == text:
                    return pieces, text
        raise ValueError("chat template: cannot tell the message contents from the template's own text")

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self._tpl.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
