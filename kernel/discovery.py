"""Plugin discovery, written once: where plugins come from and in which order, for every kind of plugin.

Three sources, first found of a name wins: aiosh's own `aiosh.plugins` entry points, then the .py files of the
user's plugin folders (`plugins.paths`: each folder, the subfolders the caller names, or a single .py file), then
other distributions' entry points. `scan` hands each loaded module or object to the caller's collector, which
picks what it knows: agents and tools (plugins.py), scheduling policies (scheduler.py). A plugin that fails to
import is skipped with a one-line reason; it never takes the kernel down.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

from .entrypoints import builtin_entry_points, third_party_entry_points

__all__ = ["import_file", "scan", "user_files"]

Collector = Callable[[object, str], None]  # (a module or an object, where it came from)

_file_cache: dict[Path, tuple[float, ModuleType]] = {}


def user_files(paths: Iterable[str], subfolders: tuple[str, ...]) -> list[Path]:
    """The plugin files of the user's folders: each folder's .py files and its `subfolders`' (names starting with
    `_` left out); a path that is a .py file is taken as it is."""
    files: list[Path] = []
    for p in paths:
        folder = Path(p).expanduser()
        if folder.is_file() and folder.suffix == ".py":
            files.append(folder)
            continue
        for sub in (folder, *(folder / name for name in subfolders)):
            if sub.is_dir():
                files.extend(sorted(f for f in sub.glob("*.py") if not f.name.startswith("_")))
    return files


def import_file(path: Path) -> ModuleType:
    """A plugin file as a module (imported again only when the file changed: one module per file version, shared
    by every kind of discovery)."""
    mtime = path.stat().st_mtime
    cached = _file_cache.get(path)
    if cached and cached[0] == mtime:
        return cached[1]
    stem = "_".join(path.with_suffix("").parts[-3:])
    name = "aiosh_user_plugin_" + "".join(ch if ch.isalnum() else "_" for ch in stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    _file_cache[path] = (mtime, module)
    return module


def scan(extra_paths: Iterable[str], subfolders: tuple[str, ...], collect: Collector, errors: list[str]) -> None:
    """Every plugin findable now, in order of precedence, each loaded module or object to `collect(obj, origin)`
    (origin: the module's name, the file, or "entry point NAME"); failures appended to `errors`, one line each."""

    def entry_points(eps: Iterable) -> None:
        for ep in eps:
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the kernel down
                errors.append(f"entry point {ep.name}: {type(exc).__name__}: {exc}")
                continue
            collect(obj, obj.__name__ if isinstance(obj, ModuleType) else f"entry point {ep.name}")

    entry_points(builtin_entry_points())
    for path in user_files(extra_paths, subfolders):
        try:
            module = import_file(path)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        collect(module, str(path))
    entry_points(third_party_entry_points())
