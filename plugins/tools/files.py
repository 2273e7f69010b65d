"""File tools, all confined to the calling agent's working folder: `read_file`, `list_dir`, `write_file` and
`delete_file` (irreversible: the user confirms each call).

No path is ever handed to the operating system as a string: `ctx.resolve` walks it one component at a time from a
descriptor of the working folder (see kernel/safepath.py), checks the agent's `read:`/`write:` capabilities on
where it really leads, and the tool does its I/O on the descriptor it checked. Refused, with one line each:
absolute paths, `..` above the folder, symbolic links that lead out of it, files that are not regular files
(FIFOs, devices, sockets: opened with O_NONBLOCK and checked with fstat, so a FIFO never hangs a call), and
regular files with more than one hard link (a hard link to a file outside the folder is indistinguishable from
the file itself: both names are equal, so any name but the only one may lead outside). `delete_file` removes the
name it is given — a symbolic link itself, never what it points to; a hard link's other names keep the data.
"""

from __future__ import annotations

import os
import stat
from typing import Annotated

from aiosh.api import ToolContext, ToolError, tool

MAX_WRITE = 1_000_000  # characters one write_file call may write
MAX_READ = 200_000  # characters one read_file call may return
MAX_ENTRIES = 1000  # entries one list_dir call may return
MAX_SCAN = 100_000  # entries list_dir reads at most (to sort them); a bigger folder is reported as such


@tool(name="read_file", timeout=10, concurrency=4, paths={"path": "read"})
def read_file(ctx: ToolContext, path: str,
              max_chars: Annotated[int, {"minimum": 1, "maximum": MAX_READ}] = 20000) -> str:
    """Read a text file in the working folder.

    Args:
        path: the file, relative to the working folder
        max_chars: return at most this many characters
    """
    if not 1 <= max_chars <= MAX_READ:
        raise ToolError(f"max_chars must be from 1 to {MAX_READ}, got {max_chars}")
    fd = ctx.open(path, "read")
    with open(fd, "rb", closefd=True) as f:
        data = f.read(max_chars * 4)  # a character is at most 4 bytes of UTF-8
    return data.decode("utf-8", errors="replace")[:max_chars]


@tool(name="list_dir", timeout=10, concurrency=4, paths={"path": "read"})
def list_dir(ctx: ToolContext, path: str = ".",
             max_entries: Annotated[int, {"minimum": 1, "maximum": MAX_ENTRIES}] = MAX_ENTRIES) -> list[str]:
    """List a folder inside the working folder: names sorted, folders end with '/', symbolic links with '@'.

    Args:
        path: the folder, relative to the working folder
        max_entries: return at most this many entries
    """
    if not 1 <= max_entries <= MAX_ENTRIES:
        raise ToolError(f"max_entries must be from 1 to {MAX_ENTRIES}, got {max_entries}")
    fd = ctx.open(path, "read", folder=True)
    entries: list[str] = []
    more = False
    try:
        with os.scandir(fd) as it:
            for e in it:
                if len(entries) >= MAX_SCAN:
                    more = True
                    break
                kind = "@" if e.is_symlink() else "/" if e.is_dir(follow_symlinks=False) else ""
                entries.append(e.name + kind)
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    entries.sort()
    if len(entries) > max_entries or more:
        rest = f"more than {MAX_SCAN - max_entries}" if more else str(len(entries) - max_entries)
        entries = [*entries[:max_entries], f"... ({rest} more)"]
    return entries


@tool(name="write_file", irreversible=True, timeout=10, concurrency=2, paths={"path": "write"})
def write_file(ctx: ToolContext, path: str, content: str, append: bool = False) -> str:
    """Write text to a file in the working folder (replacing it, or appending), creating folders as needed.

    Args:
        path: the file, relative to the working folder
        content: the text to write
        append: add to the end of the file instead of replacing it
    """
    if len(content) > MAX_WRITE:
        raise ToolError(f"content too long ({len(content)} characters, at most {MAX_WRITE})")
    fd = ctx.open(path, "write", append=append)
    try:
        with open(fd, "w", encoding="utf-8", closefd=False) as f:
            f.write(content)
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return f"{'appended' if append else 'wrote'} {len(content)} characters to {path}"


def _what_goes(ctx: ToolContext, args: dict) -> str:
    """For the y/N question: what delete_file will really remove."""
    path = args.get("path", "")
    try:
        with ctx.resolve(path, "write", follow=False) as res:
            st = res.lstat()
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(res.name, dir_fd=res.dirfd)
                return f"it removes the symbolic link {res.rel} itself, not what it points to ({target})"
            if stat.S_ISDIR(st.st_mode):
                return f"{res.rel} is a folder: it will be refused"
            links = f", one of its {st.st_nlink} hard links: the others keep the data" if st.st_nlink > 1 else ""
            return f"it removes the file {res.rel} ({st.st_size} bytes{links})"
    except (OSError, ToolError):
        return f"{path} does not exist or cannot be examined"


@tool(name="delete_file", irreversible=True, timeout=10, concurrency=2, paths={"path": "delete"},
      confirm=_what_goes)
def delete_file(ctx: ToolContext, path: str) -> str:
    """Delete a file in the working folder (not a folder); a symbolic link is removed itself, never its target.

    Args:
        path: the file, relative to the working folder
    """
    with ctx.resolve(path, "write", follow=False) as res:
        if not res.name:
            raise ToolError(f"{path}: is the working folder")
        try:
            st = res.lstat()
        except FileNotFoundError:
            raise ToolError(f"{path}: no such file") from None
        if stat.S_ISDIR(st.st_mode):
            raise ToolError(f"{path}: is a directory (delete_file removes files only)")
        target = os.readlink(res.name, dir_fd=res.dirfd) if stat.S_ISLNK(st.st_mode) else None
        try:
            os.unlink(res.name, dir_fd=res.dirfd)  # unlinkat never follows a link: the name itself goes
        except FileNotFoundError:
            raise ToolError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise ToolError(f"{path}: is a directory (delete_file removes files only)") from None
        except OSError as exc:
            raise ToolError(f"{path}: {exc.strerror or exc}") from None
    if target is not None:
        return f"deleted the symbolic link {path} (its target {target} was not touched)"
    return f"deleted {path}"
