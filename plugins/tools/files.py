"""File tools, all confined to the calling agent's working folder: `read_file`, `list_dir`, `write_file` and
`delete_file` (irreversible: the user confirms each call).

`ctx.path` does the confinement: absolute paths, `..` escapes and symlinks that lead outside the folder are
refused, and the agent's `read:PATH/` / `write:PATH/` capabilities must cover the path.
"""

from __future__ import annotations

import os

from aiosh.api import ToolContext, ToolError, tool

MAX_WRITE = 1_000_000  # characters one write_file call may write
MAX_ENTRIES = 1000


@tool(name="read_file", timeout=10, concurrency=4, paths={"path": "read"})
def read_file(ctx: ToolContext, path: str, max_chars: int = 20000) -> str:
    """Read a text file in the working folder.

    Args:
        path: the file, relative to the working folder
        max_chars: return at most this many characters
    """
    real = ctx.path(path, "read")
    if max_chars < 1:
        raise ToolError(f"max_chars must be at least 1, got {max_chars}")
    if os.path.isdir(real):
        raise ToolError(f"{path}: is a directory (use list_dir)")
    try:
        with open(real, encoding="utf-8", errors="replace") as f:
            return f.read(max_chars)
    except FileNotFoundError:
        raise ToolError(f"{path}: no such file") from None
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror or exc}") from None


@tool(name="list_dir", timeout=10, concurrency=4, paths={"path": "read"})
def list_dir(ctx: ToolContext, path: str = ".") -> list[str]:
    """List a folder inside the working folder: names sorted, folders end with '/'.

    Args:
        path: the folder, relative to the working folder
    """
    real = ctx.path(path, "read")
    try:
        with os.scandir(real) as it:
            entries = sorted(e.name + ("/" if e.is_dir() else "") for e in it)
    except FileNotFoundError:
        raise ToolError(f"{path}: no such folder") from None
    except NotADirectoryError:
        raise ToolError(f"{path}: not a folder") from None
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror or exc}") from None
    if len(entries) > MAX_ENTRIES:
        entries = [*entries[:MAX_ENTRIES], f"... ({len(entries) - MAX_ENTRIES} more)"]
    return entries


@tool(name="write_file", irreversible=True, timeout=10, concurrency=2, paths={"path": "write"})
def write_file(ctx: ToolContext, path: str, content: str, append: bool = False) -> str:
    """Write text to a file in the working folder (replacing it, or appending), creating folders as needed.

    Args:
        path: the file, relative to the working folder
        content: the text to write
        append: add to the end of the file instead of replacing it
    """
    real = ctx.path(path, "write")
    if len(content) > MAX_WRITE:
        raise ToolError(f"content too long ({len(content)} characters, at most {MAX_WRITE})")
    if os.path.isdir(real):
        raise ToolError(f"{path}: is a directory")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC) | getattr(os, "O_NOFOLLOW", 0)
    try:
        os.makedirs(os.path.dirname(real), exist_ok=True)
        fd = os.open(real, flags, 0o644)
        with open(fd, "w", encoding="utf-8") as f:
            f.write(content)
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror or exc}") from None
    return f"{'appended' if append else 'wrote'} {len(content)} characters to {path}"


@tool(name="delete_file", irreversible=True, timeout=10, concurrency=2, paths={"path": "write"})
def delete_file(ctx: ToolContext, path: str) -> str:
    """Delete a file in the working folder (not a folder).

    Args:
        path: the file, relative to the working folder
    """
    real = ctx.path(path, "write")
    if os.path.isdir(real):
        raise ToolError(f"{path}: is a directory (delete_file removes files only)")
    try:
        os.unlink(real)
    except FileNotFoundError:
        raise ToolError(f"{path}: no such file") from None
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror or exc}") from None
    return f"deleted {path}"
