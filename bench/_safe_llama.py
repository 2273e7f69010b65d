"""`llama_cpp.Llama` and `python -m llama_cpp.server` with aiosh's extra-buffer decision.

Plain `llama_cpp.Llama` has no switch for llama.cpp's extra buffer types, and on CPUs with Intel AMX they crash
the first decode (kernel/cpu.py). Baselines and test servers must load the model as the kernel does, so this
patches the default model parameters that `Llama` starts from. Run as a script, it is `llama_cpp.server` so
patched: `python bench/_safe_llama.py --model … --port …`.
"""

from __future__ import annotations

import runpy
import sys

import llama_cpp.llama_cpp as _lc
from aiosh.kernel.cpu import decide_extra_buffers

_patched = False


def apply(setting: str | bool = "auto") -> None:
    """Make every `Llama` built after this call load with aiosh's extra-buffer decision."""
    global _patched
    if _patched:
        return
    original = _lc.llama_model_default_params
    enabled = decide_extra_buffers(setting).enabled

    def default_params():
        params = original()
        params.use_extra_bufts = enabled
        return params

    _lc.llama_model_default_params = default_params
    _patched = True


if __name__ == "__main__":
    apply()
    sys.argv[0] = "llama_cpp.server"
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
