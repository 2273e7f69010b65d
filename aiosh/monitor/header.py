"""The header line: the model, threads and GPU layers, the policy, how many agents, uptime, the refresh."""

from __future__ import annotations

import os

from rich.text import Text
from textual.widgets import Static

from aiosh.monitor.collector import HeaderView
from aiosh.monitor.format import fmt_uptime


def render_header(v: HeaderView | None, interval: float, paused: bool) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(" aiosh monitor ", style="bold reverse")
    if v is None:
        t.append("  connecting to the kernel…", style="dim")
        return t
    t.append("  ")
    t.append(v.model or "model", style="bold")
    if v.model_path:
        t.append(f" ({os.path.basename(v.model_path)})", style="dim")
    t.append(f"  threads {v.n_threads} · GPU layers {v.n_gpu_layers}", style="")
    t.append("  policy ", style="dim")
    t.append(v.policy, style="bold")
    t.append(f"  agents {v.n_agents}, {v.n_running} running", style="")
    t.append("  up ", style="dim")
    t.append(fmt_uptime(v.uptime))
    t.append(f"  every {interval:g} s", style="dim")
    if paused:
        t.append("  PAUSED", style="bold reverse yellow")
    return t


class HeaderBar(Static):
    DEFAULT_CSS = """
    HeaderBar {
        height: 1;
        background: $panel;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(render_header(None, 0.5, False), id=id)
        self.view: HeaderView | None = None

    def show(self, view: HeaderView | None, interval: float, paused: bool) -> None:
        if view is not None:
            self.view = view
        self.update(render_header(self.view, interval, paused))
