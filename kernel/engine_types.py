"""What the engine reports and is configured with: plain data, importable without llama.cpp.

The kernel process, the monitor and the remote pools use these; only the engine process loads llama.cpp.
"""

from __future__ import annotations

from dataclasses import dataclass

# EngineSettings lives in its own module (the start-up checks need only it); imported from here as before
from .engine_settings import EngineSettings as EngineSettings


@dataclass(frozen=True)
class StepRecord:
    """One engine step: who decoded (a token each) and who prefilled (how many prompt tokens)."""

    step: int
    t: float  # monotonic time at the end of the step
    duration: float
    decoded: tuple[tuple[int, int], ...]  # (owner pid, request id)
    prefilled: tuple[tuple[int, int, int], ...]  # (owner pid, request id, tokens)
    n_tokens: int
    sampled: tuple[tuple[int, int], ...] = ()  # (owner pid, request id) of each sequence that got a new token


@dataclass(frozen=True)
class SeqStats:
    rid: int
    owner: int
    state: str
    slot: int | None
    kv_tokens: int
    kv_bytes: int
    swapped_bytes: int
    prompt_tokens: int
    generated: int
    switches: int
    boosted: bool
    service: float
    backend: str = "local"  # the server running it ("local", a remote entry's name, or its pool while queued)


@dataclass(frozen=True)
class EngineStats:
    """A consistent picture of the engine, replaced as a whole after each step (read without locking)."""

    kv_capacity: int = 0
    kv_used: int = 0  # distinct cells in use (shared prefixes counted once)
    kv_cached_idle: int = 0  # cells held only by idle caches (reclaimable)
    kv_bytes_per_token: int = 0
    swapped_bytes: int = 0
    steps: int = 0
    prompt_tokens: int = 0  # evaluated in total
    generated_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens not evaluated thanks to prefix reuse
    preemptions: int = 0
    swaps_out: int = 0
    swaps_in: int = 0
    recomputes: int = 0
    last_batch: int = 0
    slots: int = 0
    slots_busy: int = 0
    policy: str = ""
    seqs: tuple[SeqStats, ...] = ()
    t: float = 0.0


__all__ = ["EngineSettings", "EngineStats", "SeqStats", "StepRecord"]


@dataclass(frozen=True)
class EngineInfo:
    """The engine process as `sched`, `free` and the monitor's header show it."""

    pid: int | None
    state: str  # stopped (not started yet) | starting | ready | restarting | crashed | failed
    restarts: int
    rss_bytes: int | None
    extra_buffers: str  # "on (why)" / "off (why)"
    log_path: str
    last_error: str = ""
