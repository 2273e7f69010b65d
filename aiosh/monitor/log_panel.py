"""The log panel: live text of a Pipe (the script's output under `aiosh --monitor SCRIPT`).

A thread worker blocks on `Pipe.read(timeout)` and posts `LogText` messages; the widget only appends them.
The monitor is that pipe's reader: what it reads is shown here and nowhere else.
"""

from __future__ import annotations

from textual import work
from textual.widgets import Log
from textual.worker import get_current_worker

from aiosh.monitor.messages import LogEnded, LogText

POLL_S = 0.2
MAX_LINES = 2000


class LogPanel(Log):
    DEFAULT_CSS = """
    LogPanel {
        height: 9;
        overflow-x: hidden;
        overflow-y: auto;
        border: round $secondary 60%;
        border-title-color: $text;
        border-title-style: bold;
    }
    """

    def __init__(self, source: object, *, title: str = "Output", id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, max_lines=MAX_LINES, highlight=False, auto_scroll=True)
        self.source = source
        self.border_title = title
        self.ended = False

    def on_mount(self) -> None:
        self._pump()

    @work(thread=True, exit_on_error=False, group="log", name="log pump")
    def _pump(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            text = self.source.read(POLL_S)  # type: ignore[attr-defined]
            if text == "":
                self.post_message(LogEnded())
                return
            if text:
                self.post_message(LogText(text))

    def on_log_text(self, message: LogText) -> None:
        message.stop()
        self.write(message.text)

    def on_log_ended(self, message: LogEnded) -> None:
        message.stop()
        self.ended = True
        self.border_subtitle = "ended"
