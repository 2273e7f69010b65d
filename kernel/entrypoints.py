"""The `aiosh.plugins` entry-point group: aiosh's own agents, tools and policies, then third parties'.

aiosh registers its built-in plugins through the same group as anyone else (pyproject.toml), so the kernel names
no plugin module. Built-ins are told apart by the distribution that declares them: they win over a user's plugin
folders, which win over third-party entry points.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from importlib.metadata import EntryPoint
from typing import Any

ENTRY_POINT_GROUP = "aiosh.plugins"
DISTRIBUTION = "aiosh"


# One scan of the installed distributions per process: a scan costs ~30 ms and reading each entry point's
# distribution metadata (the email parser) ~5 ms more, which made `aiosh -c 'echo hi'` spend 0.9 s here. The cache
# is keyed by the scanning function, so a test that swaps `importlib.metadata.entry_points` gets a fresh scan.
_scanned: dict[Callable[..., Any], list[EntryPoint]] = {}
_builtin_ids: set[tuple[str, str]] | None = None


def _entry_points() -> list[EntryPoint]:
    scan = importlib.metadata.entry_points
    if scan not in _scanned:
        try:
            _scanned.clear()
            _scanned[scan] = sorted(scan(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
        except Exception:  # noqa: BLE001 - broken metadata elsewhere must not stop the kernel
            return []
    return list(_scanned[scan])


def _own_entry_points() -> set[tuple[str, str]]:
    """(name, value) of the entry points aiosh's own distribution declares (its entry_points.txt, no metadata)."""
    global _builtin_ids
    if _builtin_ids is None:
        try:
            eps = importlib.metadata.distribution(DISTRIBUTION).entry_points
            _builtin_ids = {(ep.name, ep.value) for ep in eps if ep.group == ENTRY_POINT_GROUP}
        except Exception:  # noqa: BLE001 - not installed (a bare checkout): nothing is built in by entry point
            _builtin_ids = set()
    return _builtin_ids


def _is_builtin(ep: EntryPoint) -> bool:
    if getattr(ep, "dist", None) is None:
        return False
    return (ep.name, getattr(ep, "value", "")) in _own_entry_points()


def builtin_entry_points() -> list[EntryPoint]:
    """aiosh's own plugins (declared in its pyproject.toml)."""
    return [ep for ep in _entry_points() if _is_builtin(ep)]


def third_party_entry_points() -> list[EntryPoint]:
    """Plugins other installed distributions declare."""
    return [ep for ep in _entry_points() if not _is_builtin(ep)]
