"""aiosh's kernel: one model, one llama context, many agent processes scheduled token by token.

The public API is `Kernel` (spawn, signal, wait, renice, ps, snapshot). Names are loaded lazily so that
importing a light module (kernel.config, kernel.streams) does not load llama.cpp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .kernel import Kernel, KernelError, KernelSnapshot, NoSuchProcess, UnknownAgent

__all__ = ["Kernel", "KernelError", "KernelSnapshot", "NoSuchProcess", "UnknownAgent"]


_ERRORS = {"KernelError", "NoSuchProcess", "UnknownAgent"}  # (a leaf module: catching one starts nothing)


def __getattr__(name: str) -> Any:
    if name in _ERRORS:
        from . import errors

        return getattr(errors, name)
    if name in __all__:
        from . import kernel as _k

        return getattr(_k, name)
    raise AttributeError(name)
