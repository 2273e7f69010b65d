"""The `aiosh.plugins` entry-point group: aiosh's own agents, tools and policies, then third parties'.

aiosh registers its built-in plugins through the same group as anyone else (pyproject.toml), so the kernel names
no plugin module. Built-ins are told apart by the distribution that declares them: they win over a user's plugin
folders, which win over third-party entry points.
"""

from __future__ import annotations

import importlib.metadata
from importlib.metadata import EntryPoint

ENTRY_POINT_GROUP = "aiosh.plugins"
DISTRIBUTION = "aiosh"


def _entry_points() -> list[EntryPoint]:
    try:
        return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    except Exception:  # noqa: BLE001 - broken metadata elsewhere must not stop the kernel
        return []


def _is_builtin(ep: EntryPoint) -> bool:
    dist = getattr(ep, "dist", None)
    return dist is not None and (dist.metadata["Name"] or "").lower() == DISTRIBUTION


def builtin_entry_points() -> list[EntryPoint]:
    """aiosh's own plugins (declared in its pyproject.toml)."""
    return [ep for ep in _entry_points() if _is_builtin(ep)]


def third_party_entry_points() -> list[EntryPoint]:
    """Plugins other installed distributions declare."""
    return [ep for ep in _entry_points() if not _is_builtin(ep)]
