"""The timeline: which agents got tokens in each of the last engine steps, one strip per agent.

One column is one engine step (newest on the right): █ decoded a token, ▒ prefilled prompt tokens, · nothing.
Round robin shows as a rotating pattern, priorities as denser strips, a preemption or swap as a gap.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from aiosh.monitor.collector import TimelineView

PALETTE = ("green", "cyan", "magenta", "yellow", "blue", "bright_red", "bright_green", "bright_cyan",
           "bright_magenta", "bright_yellow", "bright_blue", "red")
MAX_STRIPS = 8
LABEL_W = 18  # '  pid name      S '


def render_timeline(v: TimelineView | None, width: int, max_strips: int = MAX_STRIPS) -> Text:
    t = Text(no_wrap=True, overflow="crop")
    if v is None:
        t.append("collecting…", style="dim")
        return t
    if not v.steps:
        t.append("no engine steps yet: nothing has asked the model for tokens", style="dim")
        return t
    strip_w = max(8, width - LABEL_W)
    steps = v.steps[-strip_w:]
    labels, states = dict(v.labels), dict(v.states)
    counts = {pid: sum((pid in s.decoded) + (pid in s.prefilled) for s in steps) for pid in v.pids}
    shown_pids = [pid for pid in v.pids if counts[pid]]  # v.pids: live agents first
    exited = {pid for pid, st in states.items() if st in ("Z", "-")}
    hidden = hidden_live = 0
    if len(shown_pids) > max_strips:
        # Live agents first, the busiest of them, then those that have exited.
        keep = set(sorted(shown_pids, key=lambda p: (p in exited, -counts[p], p))[:max_strips])
        hidden = len(shown_pids) - max_strips
        hidden_live = sum(1 for p in shown_pids if p not in keep and p not in exited)
        shown_pids = [p for p in shown_pids if p in keep]
    span = steps[-1].t - steps[0].t + steps[0].duration
    t.append(f"steps {steps[0].step}–{steps[-1].step}", style="bold")
    t.append(f" · {span:.1f} s · {len(steps)} steps, newest right · ", style="dim")
    t.append("█", style="green")
    t.append(" decode ", style="dim")
    t.append("▒", style="green")
    t.append(" prefill", style="dim")
    if hidden:
        what = f"{hidden_live} live, {hidden - hidden_live} exited" if hidden_live else "exited"
        t.append(f" · +{hidden} more ({what})", style="dim")
    pad = strip_w - len(steps)
    for pid in shown_pids:
        color = PALETTE[pid % len(PALETTE)]
        t.append("\n")
        name = labels.get(pid, f"pid {pid}")[:9]
        st = states.get(pid, "-")
        t.append(f"{pid:>5} {name:<9} ", style="dim" if pid in exited else "")
        # An exited agent: Z until collected, then x (gone); both keep their name.
        t.append(f"{'x' if st == '-' else st} ", style={"R": "bold green", "T": "bold yellow", "Z": "red"}.get(st, "dim"))
        if pad > 0:
            t.append(" " * pad)
        run: list[tuple[str, str]] = []
        for s in steps:
            if pid in s.decoded:
                run.append(("█", color))
            elif pid in s.prefilled:
                run.append(("▒", color))
            else:
                run.append(("·", "grey30"))
        _append_runs(t, run)
    return t


def _append_runs(t: Text, cells: list[tuple[str, str]]) -> None:
    """Append characters grouping equal styles (fewer spans, a smaller SVG)."""
    if not cells:
        return
    buf, style = cells[0][0], cells[0][1]
    for ch, st in cells[1:]:
        if st == style:
            buf += ch
        else:
            t.append(buf, style=style)
            buf, style = ch, st
    t.append(buf, style=style)


class Timeline(Widget):
    """Renders a TimelineView at the widget's width."""

    DEFAULT_CSS = """
    Timeline {
        border: round $accent 60%;
        border-title-color: $text;
        border-title-style: bold;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        height: auto;
        min-height: 4;
        max-height: 11;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.border_title = "Timeline"
        self.view: TimelineView | None = None
        self.max_strips = MAX_STRIPS  # fewer on a shorter terminal (the app sets it)
        self._last = render_timeline(None, 80)

    def show(self, view: TimelineView) -> None:
        self.view = view
        text = self._text()
        if text != self._last:  # a new layout only when a strip comes or goes
            layout = text.plain.count("\n") != self._last.plain.count("\n")
            self._last = text
            self.refresh(layout=layout)

    def _text(self) -> Text:
        return render_timeline(self.view, self.content_region.width or 80, self.max_strips)

    def set_max_strips(self, n: int) -> None:
        if n != self.max_strips:
            self.max_strips = n
            self._last = self._text()
            self.refresh(layout=True)

    def on_resize(self) -> None:
        self._last = self._text()

    def render(self) -> Text:
        return self._last

    def get_content_height(self, container, viewport, width: int) -> int:  # noqa: ANN001 - Textual's signature
        return render_timeline(self.view, width, self.max_strips).plain.count("\n") + 1
