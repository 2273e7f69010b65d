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



class SelectionMoved(Message):
    """The selected agent is gone from the table (collected): the selection moved to a neighbour (or to none)."""

    def __init__(self, gone: int, gone_agent: str, now: int | None, now_agent: str) -> None:
        super().__init__()
        self.gone, self.gone_agent, self.now, self.now_agent = gone, gone_agent, now, now_agent


class SelectedExited(Message):
    """The selected agent has exited (state Z); the selection stays on it until it is collected."""

    def __init__(self, pid: int, agent: str, status: int | None) -> None:
        super().__init__()
        self.pid, self.agent, self.status = pid, agent, status
