"""What this CPU can safely run: the decision on llama.cpp's extra buffer types.

llama.cpp repacks weights into "extra buffer types" (AMX, and the CPU repack layouts) when the CPU reports the
instructions for them. On CPUs with Intel AMX (Sapphire Rapids and later, common in cloud VMs) its AMX matrix
multiply segfaults in the first decode (llama.cpp's "segfault in ggml_backend_amx_mul_mat"; seen with
llama-cpp-python 0.3.36). `model.extra_buffers = "auto"` turns them off where `/proc/cpuinfo` reports `amx_int8`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo_text: str) -> set[str]:
    """The union of every processor's `flags` line in /proc/cpuinfo text (x86; ARM says `Features`)."""
    flags: set[str] = set()
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def read_cpuinfo() -> str:
    """/proc/cpuinfo, or "" where there is none (macOS, Windows): nothing known means nothing to avoid."""
    try:
        return CPUINFO.read_text(errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True)
class ExtraBuffers:
    """Whether llama.cpp may use its extra buffer types, and why (shown by `sched` and `--verbose`)."""

    enabled: bool
    reason: str

    def describe(self) -> str:
        return f"{'on' if self.enabled else 'off'} ({self.reason})"


def decide_extra_buffers(setting: str | bool, cpuinfo_text: str | None = None) -> ExtraBuffers:
    """`model.extra_buffers` → a decision: true/false as set, "auto" off on CPUs that report amx_int8."""
    if setting is True:
        return ExtraBuffers(True, "model.extra_buffers = true")
    if setting is False:
        return ExtraBuffers(False, "model.extra_buffers = false")
    text = read_cpuinfo() if cpuinfo_text is None else cpuinfo_text
    if "amx_int8" in cpu_flags(text):
        return ExtraBuffers(False, "auto: the CPU reports amx_int8, and llama.cpp's AMX path crashes")
    return ExtraBuffers(True, "auto: no AMX on this CPU")
