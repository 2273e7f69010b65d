"""The context a tool runs with: its caller, and the checked way to the files of the caller's working folder."""

from __future__ import annotations

import errno
import os
import stat
import threading
from typing import Any, Literal, Protocol

from .. import safepath
from ..safepath import Resolved
from .errors import ToolError


class Managers(Protocol):
    """What a ToolContext uses of the tool manager: the access manager (checks, audit) and the memory manager."""

    access: Any
    memory: Any


class ToolContext:
    """What a running tool knows of its caller; methods are safe to call from the tool's thread."""

    def __init__(self, manager: Managers, spec: Any, pid: int, agent: str, cwd: str,
                 conversations: list[str]) -> None:
        self._manager = manager
        self.tool = spec.name
        self.pid = pid
        self.agent = agent
        self.cwd = os.path.realpath(cwd)
        self.cancelled = threading.Event()  # set when the call timed out: a long tool may stop early
        self._conversations = conversations
        self._checked: set[tuple[str, str]] = set()

    def resolve(self, path: str, mode: Literal["read", "write"] = "read", *, follow: bool = True,
                create_dirs: bool = False) -> Resolved:
        """Where `path` leads inside the working folder, as an open folder and a name in it (see safepath.py),
        if this agent may `mode` it; else PermissionError. Close the result (it is a context manager).

        The path is walked from a descriptor of the working folder, one component at a time, never through a
        symbolic link that leads out; `follow=False` keeps a symbolic link as the last component (to delete the
        link itself). `create_dirs` creates missing folders on the way, after the capability check. Refused:
        absolute paths, `..` above the folder, links out of it, and paths the agent's `read:`/`write:`
        capabilities do not cover. Every answer is audited, naming where the path really leads."""
        if mode not in ("read", "write"):
            raise ValueError(f"mode must be 'read' or 'write', not {mode!r}")
        if not isinstance(path, str) or not path or "\0" in path:
            raise ToolError(f"{self.tool}: invalid path {path!r}")
        access = self._manager.access
        if os.path.isabs(path) or path.startswith("~"):
            access.record(self.pid, f"{mode}:{path}", "deny", f"{self.tool}: absolute path")
            raise PermissionError(f"{self.tool}: {path}: absolute paths are refused (use a path relative to the "
                                  "working folder)")
        res = self._walk(path, mode, follow, False)
        try:
            self._check(res.real, mode, path)
            if create_dirs and len(res.missing) > 1:
                res.close()
                res = self._walk(path, mode, follow, True)
                self._check(res.real, mode, path)
        except BaseException:
            res.close()
            raise
        return res

    def _walk(self, path: str, mode: str, follow: bool, create: bool) -> Resolved:
        try:
            root = safepath.open_root(self.cwd)
        except OSError as exc:
            raise ToolError(f"{self.tool}: working folder {self.cwd}: {exc.strerror or exc}") from None
        try:
            return safepath.resolve(root, self.cwd, path, follow_last=follow, create_dirs=create)
        except safepath.Outside:
            self._manager.access.record(self.pid, f"{mode}:{path}", "deny",
                                               f"{self.tool}: outside the working folder")
            raise PermissionError(f"{self.tool}: {path}: outside the working folder") from None
        except OSError as exc:
            raise ToolError(f"{self.tool}: {path}: {_walk_error(exc)}") from None
        finally:
            os.close(root)

    def _check(self, real: str, mode: str, path: str) -> None:
        if (real, mode) in self._checked:
            return
        if not self._manager.access.check(self.pid, f"{mode}:{real}", f"{self.tool} {path}"):
            raise PermissionError(f"{mode}:{path}: {self.agent}[{self.pid}] may not {mode} {path}")
        self._checked.add((real, mode))

    def path(self, path: str, mode: Literal["read", "write"] = "read", *, follow: bool = True) -> str:
        """The real path `path` leads to inside the working folder, if this agent may `mode` it; else
        PermissionError. For naming and checking only: a path string can be raced (a folder on it swapped for a
        symbolic link), so do the I/O on what `open` or `resolve` returns, never on this string."""
        with self.resolve(path, mode, follow=follow) as res:
            return res.real

    def open(self, path: str, mode: Literal["read", "write"] = "read", *, append: bool = False,
             folder: bool = False) -> int:
        """A descriptor of the regular file (or, with `folder`, the folder) `path` names inside the working
        folder, checked as `resolve` does; the caller closes it. "write" creates the file (and its folders) and
        empties it unless `append`. Refused with one line: FIFOs, devices and sockets (opened with O_NONBLOCK, so
        a FIFO never hangs the call, and checked with fstat), and regular files with more than one hard link (a
        hard link to a file outside the folder is that file)."""
        with self.resolve(path, mode, create_dirs=(mode == "write")) as res:
            if res.missing and (mode == "read" or len(res.missing) > 1):
                raise ToolError(f"{self.tool}: {path}: no such {'folder' if folder else 'file'}")
            if not res.missing:
                self._vet(res.lstat(), path, folder, mode)
            if folder:
                flags = os.O_RDONLY | os.O_DIRECTORY
            elif mode == "read":
                flags = os.O_RDONLY | os.O_NONBLOCK
            else:
                flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | (os.O_APPEND if append else 0)
            try:
                fd = res.open(flags)
            except OSError as exc:
                raise ToolError(f"{self.tool}: {path}: {_open_error(exc, folder)}") from None
        try:
            self._vet(os.fstat(fd), path, folder, mode)  # what was opened, whatever happened since the walk
            if mode == "write" and not append:
                os.ftruncate(fd, 0)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _vet(self, st: os.stat_result, path: str, folder: bool, how: str) -> None:
        mode = st.st_mode
        if folder:
            if not stat.S_ISDIR(mode):
                raise ToolError(f"{self.tool}: {path}: not a folder")
            return
        if stat.S_ISDIR(mode):
            raise ToolError(f"{self.tool}: {path}: is a directory" + (" (use list_dir)" if self.tool == "read_file"
                                                                       else ""))
        if stat.S_ISLNK(mode):
            raise PermissionError(f"{self.tool}: {path}: replaced by a symbolic link while in use")
        if not stat.S_ISREG(mode):
            raise ToolError(f"{self.tool}: {path}: not a regular file ({_kind(mode)}): refused")
        if st.st_nlink > 1:
            self._manager.access.record(self.pid, f"{how}:{path}", "deny",
                                               f"{self.tool}: {st.st_nlink} hard links")
            raise PermissionError(f"{self.tool}: {path}: has {st.st_nlink} hard links (another name may be "
                                  "outside the working folder): refused")

    def search_memory(self, query: str, limit: int = 5) -> list:
        """Full-text search over the calling agent's own memory and messages (SearchHit rows, best first)."""
        mm = self._manager.memory
        if mm.storage.enabled:
            return mm.storage.search(query, pid=self.pid, conversations=self._conversations, limit=limit)
        return mm.local_search(self.pid, query, limit)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def _walk_error(exc: OSError) -> str:
    if exc.errno == errno.ENOTDIR:
        return "a component of the path is not a folder"
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    if exc.errno == errno.ENOENT:
        return "no such folder"
    return exc.strerror or str(exc)


def _open_error(exc: OSError, folder: bool) -> str:
    if exc.errno == errno.ENOENT:
        return f"no such {'folder' if folder else 'file'}"
    if exc.errno == errno.ELOOP:
        return "replaced by a symbolic link while in use: refused"
    if exc.errno == errno.ENOTDIR:
        return "not a folder"
    if exc.errno == errno.ENXIO:
        return "not a regular file (a FIFO with no reader): refused"
    return exc.strerror or str(exc)
