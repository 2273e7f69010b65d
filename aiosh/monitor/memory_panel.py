"""The memory panel: the KV cache against its capacity, each agent's share, swap, the process's RSS, the model.

Agents on a remote backend are listed after those holding local KV, with "?": their KV is the server's.

Per-agent short-term memory has a row reserved: it is filled by `Collector.memory_hook` once the kernel's
memory manager exists (a later issue).
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from aiosh.monitor.collector import MemoryView
from aiosh.monitor.format import fmt_bytes

MAX_AGENTS = 4


def bar(width: int, parts: list[tuple[float, str, str]], empty: str = "░", empty_style: str = "grey30") -> Text:
    """A horizontal bar of `width` cells; parts are (fraction, character, style), drawn left to right."""
    t = Text()
    used = 0
    for frac, ch, style in parts:
        n = max(0, min(width - used, round(frac * width)))
        if frac > 0 and n == 0 and used < width:
            n = 1  # something there is never drawn as nothing
        t.append(ch * n, style=style)
        used += n
    t.append(empty * (width - used), style=empty_style)
    return t


def render_memory(v: MemoryView | None, width: int) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    if v is None:
        t.append("collecting…", style="dim")
        return t
    cap = max(1, v.kv_capacity)
    active = max(0, v.kv_used - v.kv_cached_idle)
    pct = 100.0 * v.kv_used / cap
    t.append("KV ", style="bold")
    t.append_text(bar(max(10, width - 3), [
        (active / cap, "█", "red" if pct > 90 else ("yellow" if pct > 70 else "green")),
        (v.kv_cached_idle / cap, "▒", "blue"),
    ]))
    bpt = v.kv_bytes_per_token
    t.append(f"\n{v.kv_used}/{v.kv_capacity} cells {pct:.0f}%", style="")
    t.append(f"  {fmt_bytes(v.kv_used * bpt)} of {fmt_bytes(v.kv_capacity * bpt)}", style="dim")
    t.append("\n▒ idle cache ", style="blue")
    t.append(f"{v.kv_cached_idle}", style="")
    t.append(f"  {fmt_bytes(bpt)}/token", style="dim")
    t.append("\nswapped ", style="dim")
    t.append(fmt_bytes(v.swapped_bytes), style="yellow" if v.swapped_bytes else "")
    t.append(" · RSS ", style="dim")
    t.append(fmt_bytes(v.rss_bytes))
    t.append(" · model ", style="dim")
    t.append(fmt_bytes(v.model_bytes))
    t.append("\nKV by agent", style="bold")
    if not v.agents:
        t.append("  none held", style="dim")
    bar_w = max(4, width - 30)
    for a in v.agents[:MAX_AGENTS]:
        if a.kv_tokens is None:  # on a remote backend: the server holds its KV; unknown, never 0
            t.append(f"\n{a.pid:>5} {a.label[:8]:<8} ")
            t.append(f"{'?':>6} held by {a.backend}", style="dim")
            continue
        share = a.kv_tokens / cap
        t.append(f"\n{a.pid:>5} {a.label[:8]:<8} {a.kv_tokens:>6} {100 * share:>3.0f}% ")
        t.append_text(bar(bar_w, [(share, "█", "green")], empty=" ", empty_style=""))
        if a.swapped_bytes:
            t.append(f" sw {fmt_bytes(a.swapped_bytes)}", style="yellow")
    if len(v.agents) > MAX_AGENTS:
        t.append(f"\n      +{len(v.agents) - MAX_AGENTS} more", style="dim")
    t.append("\nshort-term memory ", style="dim")
    if v.short_term is None:
        t.append("— (not in the kernel yet)", style="dim italic")
    else:
        total = sum(n for _, n in v.short_term)
        holders = sum(1 for _, n in v.short_term if n)
        t.append(f"{total} tokens in {holders} agents")
    return t


class MemoryPanel(Widget):
    """Renders a MemoryView at the widget's width."""

    DEFAULT_CSS = """
    MemoryPanel {
        border: round $secondary 60%;
        border-title-color: $text;
        border-title-style: bold;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        height: 100%;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.border_title = "Memory"
        self.view: MemoryView | None = None
        self._last = render_memory(None, 40)

    def show(self, view: MemoryView) -> None:
        self.view = view
        text = self._text()
        if text != self._last:  # an unchanged panel is not drawn again
            self._last = text
            self.refresh()

    def _text(self) -> Text:
        return render_memory(self.view, self.content_region.width or 40)

    def on_resize(self) -> None:
        self._last = self._text()

    def render(self) -> Text:
        return self._last
