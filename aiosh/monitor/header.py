"""The header line: the model, threads and GPU layers, the engine process, how many agents, uptime, the refresh
interval."""

from __future__ import annotations

import os

from rich.text import Text
from textual.widget import Widget

from aiosh.monitor.collector import HeaderView
from aiosh.monitor.format import fmt_uptime


def render_header(v: HeaderView | None, interval: float, paused: bool, width: int = 200) -> Text:
    """The line; the model file's name is left out when the line would not fit in `width`."""
    full = _header(v, interval, paused, with_path=True)
    return full if full.cell_len <= width else _header(v, interval, paused, with_path=False)


def _header(v: HeaderView | None, interval: float, paused: bool, with_path: bool) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(" aiosh monitor ", style="bold reverse")
    if v is None:
        t.append("  connecting to the kernel…", style="dim")
        return t
    t.append(" ")
    # The agent counts first: on a narrow terminal the line is cut from the right.
    t.append(f"{v.n_agents} agents, {v.n_running} running", style="bold")
    if v.n_stopped:
        t.append(f", {v.n_stopped} stopped", style="bold yellow")
    t.append(" · ", style="dim")
    t.append(v.model or "model", style="bold")
    if v.model_path and with_path:
        t.append(f" {_model_file(v.model_path)}", style="dim")
    t.append(f" · threads {v.n_threads} · GPU layers {v.n_gpu_layers}", style="")
    if v.engine:
        t.append(" · ")
        t.append(v.engine, style="bold red" if "crashed" in v.engine or "failed" in v.engine else "")
    t.append(" · up ", style="dim")
    t.append(fmt_uptime(v.uptime))
    t.append(f" · every {interval:g} s", style="dim")
    if paused:
        t.append("  PAUSED", style="bold reverse yellow")
    return t


def _model_file(path: str) -> str:
    """The model's file name without '.gguf' (the full path is in ModelInfo and `aiosh.toml`)."""
    name = os.path.basename(path)
    return name[:-5] if name.lower().endswith(".gguf") else name


class HeaderBar(Widget):
    DEFAULT_CSS = """
    HeaderBar {
        height: 1;
        background: $panel;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.view: HeaderView | None = None
        self.interval = 0.5
        self.paused = False
        self._last = render_header(None, self.interval, self.paused)

    def show(self, view: HeaderView | None, interval: float, paused: bool) -> None:
        if view is not None:
            self.view = view
        self.interval, self.paused = interval, paused
        text = render_header(self.view, self.interval, self.paused, self.size.width or 200)
        if text != self._last:
            self._last = text
            self.refresh()

    def on_resize(self) -> None:
        self._last = render_header(self.view, self.interval, self.paused, self.size.width or 200)

    def render(self) -> Text:
        return self._last
