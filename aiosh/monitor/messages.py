"""The monitor's messages, named as nouns (what happened), posted by workers and widgets."""

from __future__ import annotations

from textual.message import Message

from aiosh.monitor.collector import MonitorData


class SnapshotCollected(Message):
    """A collection finished on the worker thread: here is the next picture to render."""

    def __init__(self, data: MonitorData) -> None:
        super().__init__()
        self.data = data


class CollectionFailed(Message):
    """A collection raised (the kernel shutting down, say); the refresh is re-armed all the same."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class LogText(Message):
    """Text read from the log source (the script's output)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class LogEnded(Message):
    """The log source reached end of file."""

