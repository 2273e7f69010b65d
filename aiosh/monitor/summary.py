"""The panels collapsed to one line each, for terminals too small for them (htop's rule: the process list first).

On a short terminal the scheduler, memory, throughput and backends panels (and, shorter still, the timeline)
give their room to the agents table and are summed up here, one line each, from the same views.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from aiosh.monitor.collector import MonitorData
from aiosh.monitor.format import fmt_bytes, fmt_rate
from aiosh.monitor.memory_panel import bar
from aiosh.monitor.scheduler_panel import QUEUE_STYLE

SPARKS = "▁▂▃▄▅▆▇█"
SHORT = {"decode": "dec", "prefill": "pre", "work": "work", "ready": "ready", "swapped": "swap",
         "stopped": "stop", "child": "child", "tool": "tool", "user": "user", "timer": "sleep", "zombie": "Z"}


def _label(t: Text, name: str) -> None:
    t.append(f"{name:<6}", style="bold")


def scheduler_line(d: MonitorData) -> Text:
    v = d.scheduler
    t = Text(no_wrap=True, overflow="ellipsis")
    _label(t, "Sched")
    t.append(v.policy, style="bold")
    t.append(f" · batch {v.batch} · slots {v.slots_busy}/{v.slots} · {v.steps_per_s:.1f} steps/s · ", style="dim")
    first = True
    for q in v.queues:
        if not q.pids:
            continue
        t.append("" if first else " ")
        first = False
        t.append(f"{SHORT.get(q.key, q.key)} ", style="dim")
        t.append(" ".join(str(p) for p in q.pids[:6]) + (f" +{len(q.pids) - 6}" if len(q.pids) > 6 else ""),
                 style=QUEUE_STYLE.get(q.key, "bold"))
    if first:
        t.append("all queues empty", style="dim")
    return t


def memory_line(d: MonitorData, width: int) -> Text:
    v = d.memory
    cap = max(1, v.kv_capacity)
    pct = 100.0 * v.kv_used / cap
    t = Text(no_wrap=True, overflow="ellipsis")
    _label(t, "Mem")
    t.append("KV ", style="dim")
    t.append_text(bar(max(6, min(20, width // 6)), [
        (max(0, v.kv_used - v.kv_cached_idle) / cap, "█", "red" if pct > 90 else ("yellow" if pct > 70 else "green")),
        (v.kv_cached_idle / cap, "▒", "blue"),
    ]))
    t.append(f" {v.kv_used}/{v.kv_capacity} {pct:.0f}%")
    t.append(f" · idle {v.kv_cached_idle} · swapped ", style="dim")
    t.append(fmt_bytes(v.swapped_bytes), style="yellow" if v.swapped_bytes else "")
    t.append(" · RSS ", style="dim")
    t.append(fmt_bytes(v.rss_bytes))
    return t


def spark(values: tuple[float, ...], n: int) -> str:
    vals = list(values[-n:])
    top = max(vals, default=0.0)
    if top <= 0:
        return SPARKS[0] * len(vals)
    return "".join(SPARKS[min(len(SPARKS) - 1, int(x / top * (len(SPARKS) - 1) + 0.5))] for x in vals)


def throughput_line(d: MonitorData, width: int) -> Text:
    v = d.throughput
    t = Text(no_wrap=True, overflow="ellipsis")
    _label(t, "Tput")
    t.append(f"gen {fmt_rate(v.gen_tok_s)} tok/s", style="bold green")
    t.append(" ")
    t.append(spark(v.gen_history, max(8, min(30, width // 4))), style="green")
    t.append(f" avg {fmt_rate(v.gen_avg)} peak {fmt_rate(v.gen_peak)} · ", style="dim")
    t.append(f"prompt {fmt_rate(v.prompt_tok_s)} tok/s", style="bold cyan")
    return t


def backends_line(d: MonitorData) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    _label(t, "Back")
    if not d.backends:
        t.append("none reported", style="dim")
    for i, b in enumerate(d.backends):
        if i:
            t.append(" · ", style="dim")
        t.append(b.name, style="bold")
        t.append(" ok" if b.healthy else " DOWN", style="green" if b.healthy else "bold red")
        t.append(f" {b.in_flight}/{b.max_concurrent}", style="")
        if b.queued:
            t.append(f" q{b.queued}", style="yellow")
        if b.errors:
            t.append(f" err {b.errors}", style="red")
    return t


def timeline_line(d: MonitorData) -> Text:
    v = d.timeline
    t = Text(no_wrap=True, overflow="ellipsis")
    _label(t, "Steps")
    if not v.steps:
        t.append("none yet", style="dim")
        return t
    last = v.steps[-1]
    t.append(f"#{last.step} ", style="bold")
    t.append("decoded ", style="dim")
    t.append(" ".join(str(p) for p in sorted(last.decoded)) or "–", style="green")
    t.append(" · prefilled ", style="dim")
    t.append(" ".join(str(p) for p in sorted(last.prefilled)) or "–", style="cyan")
    return t


def render_summary(d: MonitorData | None, width: int, with_timeline: bool) -> Text:
    if d is None:
        return Text("collecting…", style="dim")
    lines = [scheduler_line(d), memory_line(d, width), throughput_line(d, width), backends_line(d)]
    if with_timeline:
        lines.append(timeline_line(d))
    return Text("\n", no_wrap=True).join(lines)


class Summary(Widget):
    """The collapsed panels: one line each (shown instead of them on a short terminal)."""

    DEFAULT_CSS = """
    Summary {
        height: auto;
        padding: 0 1;
        background: $panel;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.data: MonitorData | None = None
        self.with_timeline = False
        self._last = render_summary(None, 80, False)

    def show(self, data: MonitorData | None) -> None:
        self.data = data
        if not self.display:  # the full panels are on screen: nothing to draw here (the app calls again)
            return
        text = render_summary(self.data, self.content_region.width or 80, self.with_timeline)
        if text != self._last:
            layout = text.plain.count("\n") != self._last.plain.count("\n")
            self._last = text
            self.refresh(layout=layout)

    def render(self) -> Text:
        return self._last

    def get_content_height(self, container, viewport, width: int) -> int:  # noqa: ANN001 - Textual's signature
        return self._last.plain.count("\n") + 1
