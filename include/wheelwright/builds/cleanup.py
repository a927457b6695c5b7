"""Removing a tree that came from outside: a build's work folder, a builder's incoming folder.

Such a tree was shaped by someone who may want its removal to fail: a ``setup.py`` that made 1,500
nested folders (``shutil.rmtree`` recurses, and Python 3.11 raises ``RecursionError``: the outcome is
lost and the tree stays), folders and files it chmod'ed to 000, links pointing anywhere, a folder
swapped for a link while it is being removed, a file system mounted inside. ``ignore_errors=True``
only hides the failure. This room owns the one way such trees are removed, :func:`remove_tree`:

- iterative: an explicit stack of names, never recursion, so depth costs memory, not the C stack;
- file-descriptor based: one folder is open at a time; each step down is ``openat(O_NOFOLLOW |
  O_DIRECTORY)`` from the folder above and each step up is ``..`` of the open folder, checked to be
  the folder it came from, so no link is ever followed and a renamed folder is noticed, not chased;
- it stays on the tree's own file system: a mount point inside is left alone and reported;
- permissions are fixed as needed (a folder made unreadable or unwritable is given back ``u+rwx``
  through a handle that cannot be a link), and one failure never stops the rest: what could not be
  removed is returned and logged, one line each.

It knows nothing of builds: callers pass a path they own the parent of.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_HANDLE = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_REPORTED = 20  # leftovers named in the result; a count stands for the rest


@dataclass
class _Level:
    """One folder on the way down: its name in the folder above, its identity, what is left in it."""

    name: str
    device: int
    inode: int
    subfolders: list[str] = field(default_factory=list)
    kept: bool = False  # something in it could not be removed, so it cannot be either


def remove_tree(path: str | os.PathLike) -> list[str]:
    """Remove ``path`` and everything under it without following a link; return what is left.

    A link or a file at ``path`` is unlinked itself. Returns a list of ``"<path>: <why>"`` for what
    could not be removed (empty when the tree is gone), at most :data:`MAX_REPORTED` entries and a
    count of the rest. Never raises for what the tree holds.
    """
    path = Path(os.path.abspath(path))
    left: list[str] = []
    try:
        parent = os.open(path.parent, _DIR)
    except FileNotFoundError:
        return []
    except OSError as exc:
        return _report(path, [f"{path}: cannot open its folder ({exc.strerror})"])
    fd = parent
    try:
        try:
            top = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return []
        if not stat.S_ISDIR(top.st_mode):
            _unlink(parent, path.name, str(path), left)
            return _report(path, left)
        stack: list[_Level] = []
        fd = _enter(parent, path.name, top, stack, str(path), left)
        if fd is None:
            fd = parent
            return _report(path, left)
        while stack:
            level = stack[-1]
            if level.subfolders:
                name = level.subfolders.pop()
                where = _Where(path, stack, name)
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    level.kept = True
                    left.append(f"{where}: {exc.strerror}")
                    continue
                if not stat.S_ISDIR(st.st_mode):  # it became something else meanwhile
                    if not _unlink(fd, name, where, left):
                        level.kept = True
                    continue
                if st.st_dev != level.device:
                    level.kept = True
                    left.append(f"{where}: another file system is mounted there; left as it is")
                    continue
                child = _enter(fd, name, st, stack, where, left)
                if child is None:
                    level.kept = True
                    continue
                os.close(fd)
                fd = child
                continue
            # Everything below this folder is done: go up and remove it.
            stack.pop()
            where = _Where(path, stack, level.name)
            if stack:
                try:
                    up = os.open("..", _DIR, dir_fd=fd)
                except OSError as exc:
                    left.append(f"{where}: cannot go back up ({exc.strerror}); stopped there")
                    return _report(path, left)
                above = os.fstat(up)
                if (above.st_dev, above.st_ino) != (stack[-1].device, stack[-1].inode):
                    os.close(up)
                    left.append(f"{where}: its folder was moved while it was removed; stopped there")
                    return _report(path, left)
            else:
                up = parent
            os.close(fd)
            fd = up
            if level.kept:
                if stack:
                    stack[-1].kept = True
                continue
            try:
                os.rmdir(level.name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                left.append(f"{where}: {exc.strerror}")
                if stack:
                    stack[-1].kept = True
        return _report(path, left)
    finally:
        if fd != parent:
            os.close(fd)
        os.close(parent)


def _enter(parent: int, name: str, st: os.stat_result, stack: list[_Level], where: str,
           left: list[str]) -> int | None:
    """Open the folder ``name`` of ``parent`` (``st`` its lstat), unlink its files, list its subfolders
    on a new level of ``stack``; its descriptor, or None (said in ``left``) when it cannot be opened."""
    try:
        fd = _open_folder(parent, name)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped for a link or a file: remove that
            _unlink(parent, name, where, left)
            return None
        left.append(f"{where}: cannot open it ({exc.strerror})")
        return None
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        left.append(f"{where}: it was replaced while it was removed; left as it is")
        return None
    level = _Level(name, opened.st_dev, opened.st_ino)
    _make_writable(fd, opened)
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    is_folder = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_folder = False
                if is_folder:
                    level.subfolders.append(entry.name)
                elif not _unlink(fd, entry.name, _Where.inside(where, entry.name), left):
                    level.kept = True
    except OSError as exc:
        left.append(f"{where}: cannot list it ({exc.strerror})")
        level.kept = True
    stack.append(level)
    return fd


def _open_folder(parent: int, name: str) -> int:
    try:
        return os.open(name, _DIR, dir_fd=parent)
    except PermissionError:
        # chmod'ed to 000 (or less than we need): give it back u+rwx, through a handle that is the
        # folder itself (O_PATH|O_NOFOLLOW: never a link's target), then open it.
        handle = os.open(name, _HANDLE, dir_fd=parent)
        try:
            if not stat.S_ISDIR(os.fstat(handle).st_mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            os.chmod(f"/proc/self/fd/{handle}", 0o700)
        finally:
            os.close(handle)
        return os.open(name, _DIR, dir_fd=parent)


def _make_writable(fd: int, st: os.stat_result) -> None:
    """Give an open folder ``u+rwx`` when we need it to empty it (we are not root)."""
    if os.geteuid() != 0 and st.st_mode & 0o700 != 0o700:
        try:
            os.fchmod(fd, (st.st_mode & 0o7777) | 0o700)
        except OSError:
            pass  # not ours: the unlinks below will say what is left


def _unlink(folder: int, name: str, where: object, left: list[str]) -> bool:
    try:
        os.unlink(name, dir_fd=folder)
        return True
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno == errno.EISDIR:  # a folder appeared under that name since it was listed
            left.append(f"{where}: a folder appeared there while it was removed")
        else:
            left.append(f"{where}: {exc.strerror}")
        return False


class _Where:
    """The path of ``name`` in the folder at the top of ``stack``, spelt out only when a message is
    written (at once: the stack changes after). A tree 1,500 folders deep would otherwise build a long
    string for every folder."""

    def __init__(self, top: Path, stack: list[_Level], name: str, folder: object = None):
        self.top, self.stack, self.depth, self.name, self.folder = top, stack, len(stack), name, folder

    @classmethod
    def inside(cls, folder: object, name: str) -> "_Where":
        """``name`` in the folder described by ``folder`` (a path or another :class:`_Where`)."""
        return cls(Path(), [], name, folder)

    def __str__(self) -> str:
        if self.folder is not None:
            return f"{self.folder}/{self.name}"
        return "/".join([str(self.top.parent), *(level.name for level in self.stack[:self.depth]),
                         self.name])


def _report(path: Path, left: list[str]) -> list[str]:
    if not left:
        return []
    shown = left[:MAX_REPORTED]
    if len(left) > MAX_REPORTED:
        shown.append(f"... and {len(left) - MAX_REPORTED} more")
    log.warning("could not remove all of %s: %s", path, "; ".join(shown))
    return shown
