"""A small MCP server written with the official SDK, for the tests: `python mcp_server.py` (stdio) or
`python mcp_server.py http PORT` (streamable HTTP on 127.0.0.1:PORT/mcp)."""

from __future__ import annotations

import os
import sys
import time

try:
    from mcp.server.mcpserver import MCPServer
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP as MCPServer  # type: ignore[no-redef]
from mcp.types import ToolAnnotations

server = MCPServer("aiosh-test")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """The text in capitals."""
    return text.upper()


@server.tool()
def slow(seconds: float) -> str:
    """Wait, then answer."""
    time.sleep(seconds)
    return "slept"


@server.tool()
def crash() -> str:
    """End the server process at once (a crash)."""
    os._exit(3)


@server.tool()
def fail() -> str:
    """Report an error."""
    raise ValueError("it went wrong on purpose")


@server.tool(annotations=ToolAnnotations(destructiveHint=True))
def wipe(name: str) -> str:
    """Delete a record (marked destructive)."""
    return f"wiped {name}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
