"""llama.cpp's ctypes bindings, without paying for llama-cpp-python's high-level API until something asks for it.

`import llama_cpp` runs the package's `__init__`, which imports both the bindings (`llama_cpp.llama_cpp`, ~60 ms)
and the high-level `Llama` API (numpy, jinja2, its chat formats: another ~0.25 s). The kernel and the engine use
only the bindings, and the first chat of a fresh shell waits for both processes' imports. So `ll` is the package
module made by hand: the bindings' names at once, and the package's own `__init__` run in it on the first name
it lacks, so `from llama_cpp import Llama`, `llama_cpp.__version__` and `import llama_cpp.llama_grammar` still work
for anyone else in the process. Where `llama_cpp` was imported already, `ll` is simply that module.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any


class _LazyPackage(types.ModuleType):
    """`llama_cpp` holding the bindings; the rest of the package's `__init__` runs on the first missing name."""

    _completed = False

    def __getattr__(self, name: str) -> Any:
        if (name.startswith("__") and name != "__version__") or self._completed:
            raise AttributeError(name)
        self._completed = True
        init = self.__spec__.origin if self.__spec__ is not None else None
        if init:
            with open(init, encoding="utf-8") as fh:
                exec(compile(fh.read(), init, "exec"), self.__dict__)  # noqa: S102 - the package's own __init__
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'llama_cpp' has no attribute {name!r}") from None


def _import() -> types.ModuleType:
    if "llama_cpp" in sys.modules:
        return sys.modules["llama_cpp"]
    found = importlib.util.find_spec("llama_cpp")
    if found is None or not found.submodule_search_locations:
        import llama_cpp  # (not installed, or not a package: let the plain import say what is wrong)

        return llama_cpp
    package = _LazyPackage("llama_cpp")
    package.__path__ = list(found.submodule_search_locations)
    package.__spec__ = found
    package.__file__ = found.origin
    package.__package__ = "llama_cpp"
    sys.modules["llama_cpp"] = package
    try:
        import llama_cpp.llama_cpp as bindings
    except BaseException:
        del sys.modules["llama_cpp"]
        raise
    package.__dict__.update({k: v for k, v in vars(bindings).items() if not k.startswith("_")})
    return package


ll: Any = _import()
