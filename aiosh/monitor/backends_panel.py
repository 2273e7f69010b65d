"""The backends panel: one line per server that runs LLM calls — the local engine and each remote replica.

Health (ok in green, DOWN in red with the server's last error), the pool's queue, requests in flight against
the server's limit, mean time to first token, tokens/s, and the request, error and retry counts. The panel is
always there (the local engine is a backend too) and as tall as its rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget

from aiosh.monitor.collector import BackendRow
from aiosh.monitor.format import fmt_count, fmt_rate

MAX_ROWS = 6  # more servers than this: the rest are summed up on one line
# (label, width, alignment) of the fixed columns; what they leave goes to the last error (or the URL)
COLUMNS: tuple[tuple[str, int, str], ...] = (
    ("NAME", 12, "<"), ("POOL/MODEL", 24, "<"), ("HEALTH", 6, "<"), ("QUEUE", 5, ">"), ("RUN", 7, ">"),
    ("TTFT", 7, ">"), ("TOK/S", 7, ">"), ("REQS", 6, ">"), ("ERRS", 5, ">"), ("RETRY", 5, ">"),
)


def fmt_ttft(seconds: float | None) -> str:
    """Time to first token: '-' before any request, '85ms', '1.25s' past a second."""
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def pool_model(b: BackendRow) -> str:
    """The model, prefixed by its pool where that says more than the server's own name or the model."""
    if not b.pool or b.pool in (b.model, b.name):
        return b.model or b.pool
    return f"{b.pool}/{b.model}"


def _cell(t: Text, value: str, width: int, align: str, style: str = "") -> None:
    if len(value) > width:
        value = value[: max(0, width - 1)] + "…"
    t.append(f"{value:{align}{width}}", style=style)
    t.append(" ")


def render_backends(rows: Sequence[BackendRow] | None, width: int = 120) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    if rows is None:
        t.append("collecting…", style="dim")
        return t
    if not rows:
        t.append("no backends reported", style="dim")
        return t
    rest = max(10, width - sum(w + 1 for _, w, _ in COLUMNS))
    for label, w, align in COLUMNS:
        _cell(t, label, w, align, "bold")
    t.append("LAST ERROR / URL", style="bold")
    for b in rows[:MAX_ROWS]:
        t.append("\n")
        _cell(t, b.name, 12, "<", "bold")
        _cell(t, pool_model(b), 24, "<")
        _cell(t, "ok" if b.healthy else "DOWN", 6, "<", "green" if b.healthy else "bold red")
        _cell(t, str(b.queued), 5, ">", "bold yellow" if b.queued else "dim")
        _cell(t, f"{b.in_flight}/{b.max_concurrent}", 7, ">", "bold" if b.in_flight else "dim")
        _cell(t, fmt_ttft(b.ttft_s), 7, ">", "" if b.ttft_s is not None else "dim")
        _cell(t, fmt_rate(b.tokens_per_s), 7, ">", "" if b.tokens_per_s > 0 else "dim")
        _cell(t, fmt_count(b.requests), 6, ">", "" if b.requests else "dim")
        _cell(t, fmt_count(b.errors), 5, ">", "red" if b.errors else "dim")
        _cell(t, fmt_count(b.retries), 5, ">", "yellow" if b.retries else "dim")
        if not b.healthy:
            tail, style = b.last_error or "down", "red"
        elif b.last_error:
            tail, style = f"last: {b.last_error}", "yellow"
        else:
            tail, style = b.url, "dim"
        tail = " ".join(tail.split())
        t.append(tail if len(tail) <= rest else tail[: rest - 1] + "…", style=style)
    if len(rows) > MAX_ROWS:
        more = rows[MAX_ROWS:]
        down = sum(1 for b in more if not b.healthy)
        t.append(f"\n+{len(more)} more" + (f" ({down} down)" if down else ""), style="red" if down else "dim")
    return t


def title(rows: Sequence[BackendRow] | None) -> str:
    if not rows:
        return "Backends"
    down = sum(1 for b in rows if not b.healthy)
    remote = sum(1 for b in rows if b.remote)
    parts = [f"Backends {len(rows)}"]
    if remote:
        parts.append(f"{remote} remote")
    if down:
        parts.append(f"{down} down")
    return " · ".join(parts)


class BackendsPanel(Widget):
    """Renders the backend rows; one line each (its height follows the number of servers)."""

    DEFAULT_CSS = """
    BackendsPanel {
        border: round $secondary 60%;
        border-title-color: $text;
        border-title-style: bold;
        padding: 0 1;
        height: auto;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.border_title = "Backends"
        self.rows: tuple[BackendRow, ...] | None = None
        self._last = render_backends(None)

    def show(self, rows: Sequence[BackendRow]) -> None:
        self.rows = tuple(rows)
        self.border_title = title(self.rows)
        text = self._text()
        if text != self._last:  # an unchanged panel is not drawn again
            taller = text.plain.count("\n") != self._last.plain.count("\n")  # rows came or went: a new layout
            self._last = text
            self.refresh(layout=taller)

    def _text(self) -> Text:
        return render_backends(self.rows, self.content_region.width or 120)

    def on_resize(self) -> None:
        self._last = self._text()

    def render(self) -> Text:
        return self._last
