"""What the kernel checks before it starts, read from the configuration and the GGUF header alone (milliseconds,
no llama.cpp): a missing or foreign model file, a window larger than the model's trained context, or a KV pool or
step budget beyond what the window, the slots and the machine's memory allow, is one line at start-up, before
anything is loaded. A light module: the front end runs these checks even for a script that never starts the kernel.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ConfigError
from .engine_settings import EngineSettings
from .errors import EngineError
from .model_info import GGUFFacts, check_gguf, find_embedded_model, read_gguf_facts

if TYPE_CHECKING:
    from .config import Config

LOGITS_BYTES = 4  # one float per vocabulary entry for every token whose logits llama.cpp keeps


def check_model(c: Config) -> tuple[Path, GGUFFacts]:
    """The configured model's path and header facts, once the file and the limits it sets have been checked."""
    path = model_path(c)
    check_gguf(path)
    facts = read_gguf_facts(path)
    check_limits(c, facts, path)
    return path, facts


def engine_settings(c: Config) -> EngineSettings:
    k = c.kernel
    return EngineSettings(n_ctx=c.model.n_ctx, n_slots=k.slots, kv_cells=k.kv_cells, max_batch=k.max_batch,
                          batch_tokens=k.batch_tokens, n_threads=c.model.n_threads, unified_kv=k.unified_kv)


def engine_load_args(c: Config) -> dict[str, Any]:
    """What the engine process loads the model and makes its context with. The kernel's spec carries the same
    values (`local_engine`), and a front end that starts the engine's process early sends them ahead so that it
    can start loading (`engine_spawn.prestart`)."""
    from .cpu import decide_extra_buffers

    return {"model_path": str(model_path(c)), "n_gpu_layers": c.model.n_gpu_layers,
            "chat_template": c.model.chat_template,
            "extra_buffers": decide_extra_buffers(c.model.extra_buffers).enabled, "settings": engine_settings(c)}


def _mem_available() -> int:
    """MemAvailable (bytes) from /proc/meminfo; 0 where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def check_limits(c: Config, facts: GGUFFacts, path: Path, mem_available: int | None = None) -> None:
    """Refuse settings that would abort llama.cpp or exhaust memory, naming the key and the limit."""
    origin = c.source[-1] if getattr(c, "source", None) else "<config>"
    if facts.n_ctx_train and c.model.n_ctx > facts.n_ctx_train:
        raise EngineError(f"{path}: model.n_ctx {c.model.n_ctx} is larger than the model's trained context "
                          f"{facts.n_ctx_train}")
    s = engine_settings(c)
    window = max(s.n_ctx, facts.n_ctx_train)
    most_cells = s.n_slots * window  # no sequence can hold more than the model's trained context
    if c.kernel.kv_cells > most_cells:
        raise ConfigError(origin, f"{c.kernel.kv_cells} is more than kernel.slots × the model's trained context "
                          f"= {s.n_slots} × {window} = {most_cells}", "kernel", "kv_cells")
    cells = s.effective_kv_cells
    if s.batch_tokens > cells:
        raise ConfigError(origin, f"{s.batch_tokens} is more than the KV pool holds ({cells} cells: "
                          "kernel.kv_cells, or kernel.slots × 2048)", "kernel", "batch_tokens")
    avail = _mem_available() if mem_available is None else mem_available
    if avail:
        kv = cells * facts.kv_bytes_per_token
        if kv > avail:
            raise ConfigError(origin, f"{cells} cells need {kv / 2**20:.0f} MiB of KV cache; this machine has "
                              f"{avail / 2**20:.0f} MiB available (at most {avail // max(1, facts.kv_bytes_per_token)}"
                              " cells)", "kernel", "kv_cells" if c.kernel.kv_cells else "slots")
        step = (s.batch_tokens + s.n_slots) * max(1, facts.n_vocab) * LOGITS_BYTES
        if step > avail:
            raise ConfigError(origin, f"{s.batch_tokens} tokens a step need {step / 2**20:.0f} MiB of logits; "
                              f"this machine has {avail / 2**20:.0f} MiB available", "kernel", "batch_tokens")


def model_path(c: Config) -> Path:
    return Path(c.model.path).expanduser() if c.model.path else find_embedded_model()
