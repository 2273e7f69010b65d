"""The filter line (`/`): typing narrows the agents table at once; Enter keeps the filter, Esc clears it."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input


class FilterBar(Input):
    DEFAULT_CSS = """
    FilterBar {
        display: none;
        height: 3;
        border: round $accent;
    }
    FilterBar.-active {
        display: block;
    }
    """
    BINDINGS = [Binding("escape", "clear", "Clear filter", show=False)]

    class Cleared(Message):
        """The user cleared the filter (Esc)."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(placeholder="filter: part of a command line, or a pid · Enter keep · Esc clear", id=id)
        self.border_title = "Filter"

    def open(self) -> None:
        self.add_class("-active")
        self.focus()

    def close(self) -> None:
        self.remove_class("-active")

    def action_clear(self) -> None:
        self.value = ""
        self.close()
        self.post_message(self.Cleared())
