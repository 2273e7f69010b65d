"""Paths confined to a folder, resolved so that no check can be raced.

A path given to a file tool is never handed to the operating system as a string. It is walked one component at
a time from an open descriptor of the working folder: each folder is opened with `O_NOFOLLOW | O_DIRECTORY`
relative to the descriptor of the one before it, a symbolic link is read (`readlinkat`) and its target walked
the same way (from the folder that holds it, or from the working folder when it is absolute and names a place
inside it), and `..` goes back to the descriptor the walk came from — never above the working folder. The tool
then opens the last component relative to the descriptor of its folder, with `O_NOFOLLOW`, and does its I/O on
the descriptor it checked. Swapping a folder on the path for a symbolic link while a tool runs therefore changes
nothing: the walk holds descriptors, not names (what `openat2(RESOLVE_IN_ROOT)` does in the kernel, which Python
does not expose).

What this cannot stop: a folder already walked being *moved* out of the working folder (a rename, by someone who
may write both inside and outside it) keeps its descriptor, which then points outside.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from dataclasses import dataclass, field

__all__ = ["MAX_LINKS", "Outside", "Resolved", "open_root", "resolve", "split"]

MAX_LINKS = 40  # symbolic links followed in one path (Linux's own limit)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Outside(PermissionError):
    """The path leads outside the working folder (`..` above it, or a symbolic link that points out)."""


def split(path: str) -> list[str]:
    """The components of a relative path ('' and '.' dropped); ValueError for an absolute path."""
    if path.startswith("/"):
        raise ValueError("absolute path")
    return [p for p in path.split("/") if p not in ("", ".")]


def open_root(folder: str) -> int:
    """A descriptor of the working folder itself (the folder is trusted: symbolic links in its own path are
    followed, as a shell's `cd` does)."""
    return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


@dataclass
class Resolved:
    """Where a path leads: the open folder that holds it and the name in that folder.

    `name` is "" when the path is the working folder itself (then `dirfd` is that folder). `missing` lists the
    components that do not exist yet (a write may create them); `parts` are the components from the working
    folder to the path, after links. Close it (or use it as a context manager) to release the descriptor."""

    dirfd: int
    name: str
    parts: tuple[str, ...]
    root_real: str
    missing: tuple[str, ...] = ()
    _closed: bool = field(default=False, repr=False)

    @property
    def real(self) -> str:
        """The absolute path this resolution names (what capabilities and the audit log see)."""
        return os.path.join(self.root_real, *self.parts) if self.parts else self.root_real

    @property
    def rel(self) -> str:
        return "/".join(self.parts) or "."

    def open(self, flags: int, mode: int = 0o644) -> int:
        """Open the last component in its folder, never following a symbolic link there (ELOOP if one was put
        in its place since the walk)."""
        if self.missing and len(self.missing) > 1:
            raise FileNotFoundError(errno.ENOENT, "no such folder", "/".join(self.missing[:-1]))
        if not self.name:
            return os.dup(self.dirfd) if flags & os.O_DIRECTORY else os.open(".", flags, dir_fd=self.dirfd)
        return os.open(self.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.dirfd)

    def lstat(self) -> os.stat_result:
        """The last component itself (a symbolic link is not followed)."""
        if not self.name:
            return os.fstat(self.dirfd)
        return os.stat(self.name, dir_fd=self.dirfd, follow_symlinks=False)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.dirfd)

    def __enter__(self) -> Resolved:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve(root_fd: int, root_real: str, path: str, *, follow_last: bool = True,
            create_dirs: bool = False) -> Resolved:
    """Walk `path` from `root_fd`; `Outside` when it leads out of the folder.

    follow_last: a symbolic link as the last component is followed (read, write) or kept (delete: the link
    itself is what goes). create_dirs: missing folders on the way are created (mkdirat), else they are listed
    in `missing`. OSError (ENOTDIR, ELOOP …) for a path that cannot be walked."""
    if path.startswith("/"):
        raise Outside(errno.EACCES, "absolute path")
    stack = [os.dup(root_fd)]  # stack[i + 1] is the open folder names[i]; stack[0] the working folder
    names: list[str] = []
    todo = deque(split(path))
    links = 0
    missing: list[str] = []
    final: str | None = None
    try:
        while todo:
            comp = todo.popleft()
            if missing:  # below a folder that does not exist: nothing more to walk, only names to keep
                if comp == "..":
                    raise FileNotFoundError(errno.ENOENT, "no such folder", "/".join(missing))
                missing.append(comp)
                continue
            if comp == "..":
                if len(stack) == 1:
                    raise Outside(errno.EACCES, "outside the working folder")
                os.close(stack.pop())
                names.pop()
                continue
            last = not todo
            target = _link_target(stack[-1], comp) if (follow_last or not last) else None
            if target is not None:
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links")
                if target.startswith("/"):
                    rel = _inside(target, root_real)
                    if rel is None:
                        raise Outside(errno.EACCES, "outside the working folder")
                    while len(stack) > 1:
                        os.close(stack.pop())
                    names.clear()
                    todo.extendleft(reversed(rel))
                else:
                    todo.extendleft(reversed(split(target)))
                continue
            if last:
                if _exists(stack[-1], comp):
                    final = comp
                else:
                    missing.append(comp)
                break
            try:
                fd = os.open(comp, _DIR_FLAGS, dir_fd=stack[-1])
            except FileNotFoundError:
                if not create_dirs:
                    missing.append(comp)
                    continue
                try:
                    os.mkdir(comp, 0o755, dir_fd=stack[-1])
                except FileExistsError:
                    pass
                fd = os.open(comp, _DIR_FLAGS, dir_fd=stack[-1])  # ELOOP if a link took its place meanwhile
            stack.append(fd)
            names.append(comp)
        if missing:
            return Resolved(stack.pop(), missing[-1], (*names, *missing), root_real, tuple(missing))
        if final is not None:
            return Resolved(stack.pop(), final, (*names, final), root_real)
        if len(stack) > 1:  # the path names a folder the walk opened: hand it over as (its parent, its name)
            os.close(stack.pop())
            return Resolved(stack.pop(), names[-1], tuple(names), root_real)
        return Resolved(stack.pop(), "", (), root_real)
    finally:
        for fd in stack:
            os.close(fd)


def _link_target(dirfd: int, name: str) -> str | None:
    """The target of `name` in `dirfd` if it is a symbolic link, else None."""
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISLNK(st.st_mode):
        return None
    try:
        return os.readlink(name, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # replaced by a non-link since the stat: walk it as what it is now
            return None
        raise


def _exists(dirfd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _inside(target: str, root_real: str) -> list[str] | None:
    """The components of an absolute link target below the working folder, or None when it is outside."""
    norm = os.path.normpath(target)
    if norm == root_real:
        return []
    prefix = root_real.rstrip("/") + "/"
    if not norm.startswith(prefix):
        return None
    return split(norm[len(prefix):])
