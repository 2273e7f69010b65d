"""The scheduler panel: the policy and its parameters, the queues as the scheduler sees them, the step rate."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from aiosh.monitor.collector import Queue, SchedulerView

QUEUE_STYLE = {
    "decode": "bold green", "prefill": "green", "ready": "cyan", "swapped": "yellow", "stopped": "bold yellow",
    "zombie": "red",
}


def pid_list(pids: tuple[int, ...], width: int) -> str:
    """'3 5 7 …+4' fitted into width characters; '–' when empty."""
    if not pids:
        return "–"
    out = ""
    for i, pid in enumerate(pids):
        piece = (" " if out else "") + str(pid)
        rest = len(pids) - i
        if len(out) + len(piece) > width - (len(f" +{rest}") if rest > 1 else 0):
            return out + f" +{rest}"
        out += piece
    return out


def render_scheduler(v: SchedulerView, width: int = 60) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append("policy ", style="dim")
    t.append(v.policy, style="bold")
    t.append(" (preemptive)" if v.preemptive else " (runs to completion)", style="dim")
    if v.params:
        t.append("  " + " ".join(f"{k}={_num(val)}" for k, val in v.params), style="")
    t.append("\n")
    desc = v.description or ""
    if len(desc) > width:
        desc = desc[: width - 1] + "…"
    t.append(desc, style="dim italic")
    t.append("\nbatch ", style="dim")
    t.append(f"{v.batch}", style="bold")
    t.append(" · slots ", style="dim")
    t.append(f"{v.slots_busy}/{v.slots}")
    t.append(" · ", style="dim")
    t.append(f"{v.steps_per_s:.1f}")
    t.append(" steps/s", style="dim")
    t.append("\ncontext switches ", style="dim")
    t.append(f"{v.switches_per_s:.1f}/s", style="bold yellow" if v.switches_per_s > 0 else "")
    t.append(f" · preempted {v.preemptions}", style="dim")
    t.append(f"\nswapped out {v.swaps_out} · in {v.swaps_in} · recomputed {v.recomputes}", style="dim")
    half = (len(v.queues) + 1) // 2
    left, right = v.queues[:half], v.queues[half:]
    lw = max((len(q.label) for q in v.queues), default=0) + 1
    col_w = max(10, (width - 3) // 2)
    for i in range(half):
        t.append("\n")
        _queue_cell(t, left[i], lw, col_w)
        if i < len(right):
            t.append(" │ ", style="grey30")
            _queue_cell(t, right[i], lw, col_w)
    return t


def _queue_cell(t: Text, q: Queue, label_w: int, width: int) -> None:
    """One queue in `width` cells: label, length, pids."""
    t.append(f"{q.label:<{label_w}}", style="dim" if not q.pids else "")
    t.append(f"{len(q.pids):>2} ", style="dim" if not q.pids else "bold")
    pids = pid_list(q.pids, max(1, width - label_w - 3))
    t.append(f"{pids:<{max(0, width - label_w - 3)}}", style=QUEUE_STYLE.get(q.key, "") if q.pids else "dim")


def _num(x: object) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


class SchedulerPanel(Widget):
    """Renders a SchedulerView; nothing else (a fixed-size widget: a refresh never needs a new layout)."""

    DEFAULT_CSS = """
    SchedulerPanel {
        border: round $secondary 60%;
        border-title-color: $text;
        border-title-style: bold;
        padding: 0 1;
        height: 100%;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.border_title = "Scheduler"
        self.view: SchedulerView | None = None
        self._last = Text("collecting…", style="dim")

    def show(self, view: SchedulerView) -> None:
        self.view = view
        self._redraw()

    def _redraw(self) -> None:
        text = self._text()
        if text != self._last:  # an unchanged panel is not drawn again
            self._last = text
            self.refresh()

    def _text(self) -> Text:
        if self.view is None:
            return Text("collecting…", style="dim")
        return render_scheduler(self.view, max(20, self.content_region.width or 60))

    def on_resize(self) -> None:
        self._last = self._text()

    def render(self) -> Text:
        return self._last
