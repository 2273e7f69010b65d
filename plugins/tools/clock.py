"""`clock`: the current date and time."""

from __future__ import annotations

import datetime as dt

from aiosh.api import tool


@tool(name="clock", timeout=2)
def clock(utc: bool = False) -> str:
    """The current date and time, ISO 8601 with the UTC offset (local time unless utc is true).

    Args:
        utc: give the time in UTC instead of local time
    """
    now = dt.datetime.now(dt.UTC) if utc else dt.datetime.now().astimezone()
    return now.isoformat(timespec="seconds")
