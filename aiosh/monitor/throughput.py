"""Throughput: generated and prompt tokens per second over the last minute, as two sparklines."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.widget import Widget
from textual.widgets import Sparkline

from aiosh.monitor.collector import HISTORY_S, ThroughputView
from aiosh.monitor.format import fmt_count, fmt_rate


def gen_label(v: ThroughputView) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append("gen ", style="dim")
    t.append(f"{fmt_rate(v.gen_tok_s)} tok/s", style="bold green")
    t.append(f"  avg {fmt_rate(v.gen_avg)}  peak {fmt_rate(v.gen_peak)}", style="dim")
    return t


def prompt_label(v: ThroughputView) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append("prompt ", style="dim")
    t.append(f"{fmt_rate(v.prompt_tok_s)} tok/s", style="bold cyan")
    return t


def totals_label(v: ThroughputView) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"Σ {fmt_count(v.generated_tokens)} gen · {fmt_count(v.prompt_tokens)} prompt · "
             f"{fmt_count(v.cached_tokens)} reused", style="dim")
    return t


class Line(Widget):
    """One line of text that changes often: a refresh redraws it without a new layout (unlike Static)."""

    DEFAULT_CSS = "Line { height: 1; text-wrap: nowrap; text-overflow: ellipsis; }"

    def __init__(self, text: str = "", *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.text: Text = Text(text, style="dim")

    def set(self, text: Text) -> None:
        if text != self.text:
            self.text = text
            self.refresh()

    def render(self) -> Text:
        return self.text


class ThroughputPanel(Vertical):
    """Renders a ThroughputView: labels and two sparklines (oldest left, now right)."""

    DEFAULT_CSS = """
    ThroughputPanel {
        border: round $secondary 60%;
        border-title-color: $text;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
        padding: 0 1;
        height: 100%;
    }
    ThroughputPanel #gen-spark { height: 4; }
    ThroughputPanel #gen-spark > .sparkline--max-color { color: $success; }
    ThroughputPanel #gen-spark > .sparkline--min-color { color: $success 25%; }
    ThroughputPanel #prompt-spark { height: 2; }
    ThroughputPanel #prompt-spark > .sparkline--max-color { color: $accent; }
    ThroughputPanel #prompt-spark > .sparkline--min-color { color: $accent 25%; }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.border_title = "Throughput"
        self.border_subtitle = f"last {HISTORY_S:.0f} s"
        self.view: ThroughputView | None = None

    def compose(self) -> ComposeResult:
        yield Line("collecting…", id="gen-label")
        yield Sparkline([], id="gen-spark")
        yield Line("", id="prompt-label")
        yield Sparkline([], id="prompt-spark")
        yield Line("", id="totals")

    def show(self, view: ThroughputView) -> None:
        self.view = view
        try:
            labels = [self.query_one(f"#{name}", Line) for name in ("gen-label", "prompt-label", "totals")]
            gen, prompt = self.query_one("#gen-spark", Sparkline), self.query_one("#prompt-spark", Sparkline)
        except NoMatches:
            return  # a refresh before the panel has its lines, or while the app closes: the next one shows it
        for line, text in zip(labels, (gen_label(view), prompt_label(view), totals_label(view))):
            line.set(text)
        if gen.data != list(view.gen_history):
            gen.data = list(view.gen_history)
        if prompt.data != list(view.prompt_history):
            prompt.data = list(view.prompt_history)
