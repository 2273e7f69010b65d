"""Plugin discovery: agents and tools from `plugins/`, the user's plugin folders and entry points.

A user plugin folder (`plugins.paths`) is scanned with its `agents/` and `tools/` subfolders; any module may hold
agents (`@agent`) and tools (`@tool`). An entry point of the `aiosh.plugins` group may name a module, an AgentSpec
or a ToolSpec. Folders are scanned again when a file in them changed, so an agent or tool dropped into a plugin
folder works without reinstalling or restarting. A plugin that fails to import is reported in one line and skipped; it never
takes the kernel down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from .agent import AgentSpec
from .discovery import scan, user_files
from .tools import ToolSpec

USER_SUBFOLDERS = ("agents", "tools")


@dataclass
class PluginSet:
    agents: dict[str, AgentSpec] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # one line per plugin that failed to load
    origins: dict[str, str] = field(default_factory=dict)  # agent name -> where it came from
    tools: dict[str, ToolSpec] = field(default_factory=dict)
    tool_origins: dict[str, str] = field(default_factory=dict)  # tool name -> where it came from


def _add(value: object, found: PluginSet, origin: str) -> None:
    if isinstance(value, AgentSpec) and value.name not in found.agents:
        found.agents[value.name] = value
        found.origins[value.name] = origin
    elif isinstance(value, ToolSpec) and value.name not in found.tools:
        found.tools[value.name] = value
        found.tool_origins[value.name] = origin


def _collect_into(found: PluginSet) -> Callable[[object, str], None]:
    def collect(obj: object, origin: str) -> None:
        if isinstance(obj, ModuleType):
            for value in vars(obj).values():
                _add(value, found, origin)
        else:
            _add(obj, found, origin)

    return collect


def discover(extra_paths: Iterable[str] = ()) -> PluginSet:
    """Everything findable now. Built-ins win over user plugins of the same name, user over entry points."""
    found = PluginSet()
    scan(extra_paths, USER_SUBFOLDERS, _collect_into(found), found.errors)
    return found


class AgentRegistry:
    """The agent types the kernel can spawn and the tools agents can call; rescans when a plugin folder changed
    (a file added or edited).

    The shell asks for the agent names on every command it resolves, so the check must be cheap: it compares the
    modification times of the plugin folders and their files, and only then imports again.
    """

    def __init__(self, extra_paths: Iterable[str] = ()) -> None:
        self.extra_paths = list(extra_paths)
        self._lock = threading.Lock()
        self._stamp = self._signature()
        self._set = discover(self.extra_paths)

    def _signature(self) -> tuple:
        stamps = []
        for p in self.extra_paths:
            folder = Path(p).expanduser()
            for sub in (folder, *(folder / name for name in USER_SUBFOLDERS)):
                try:
                    stamps.append((str(sub), sub.stat().st_mtime_ns))
                except OSError:
                    stamps.append((str(sub), 0))
        stamps.extend((str(f), f.stat().st_mtime_ns) for f in user_files(self.extra_paths, USER_SUBFOLDERS) if f.exists())
        return tuple(stamps)

    def _fresh(self) -> PluginSet:
        stamp = self._signature()
        if stamp != self._stamp:
            with self._lock:
                self._stamp = stamp
                self._set = discover(self.extra_paths)
        return self._set

    def get(self, name: str) -> AgentSpec | None:
        return self._fresh().agents.get(name)

    def all(self) -> dict[str, AgentSpec]:
        return dict(self._fresh().agents)

    def tool(self, name: str) -> ToolSpec | None:
        return self._fresh().tools.get(name)

    def tools(self) -> dict[str, ToolSpec]:
        return dict(self._fresh().tools)

    def tool_origin(self, name: str) -> str:
        """Where a tool came from: its module, a plugin file, or an entry point."""
        return self._fresh().tool_origins.get(name, "")

    @property
    def errors(self) -> list[str]:
        return list(self._set.errors)
