"""The error of a tool call (a leaf: every part of the tool manager raises it)."""

from __future__ import annotations


class ToolError(Exception):
    """A tool call that could not be made or failed; the message is one line that names the tool."""
