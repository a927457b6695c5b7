"""Paths from outside, resolved as the kernel resolves them: beneath one folder, never through a link.

A builder names files in its upload folder over SFTP; the index host later opens what it received.
Checking a path *string* and then handing the string to the OS is not enough: the OS follows symbolic
links the string does not show (with ``L -> .``, the string ``L/L/../../x`` looks as if it stays
where it is, while the OS resolves it two folders higher). So a path from outside is never opened as
a string. It is split into plain components (``..`` folded lexically, never above the root), then
opened one component at a time from a directory descriptor, each with ``O_NOFOLLOW``: a symbolic
link anywhere on the way, the last component included, is refused (``ELOOP``/``ENOTDIR``), and because
every component is then a real directory, folding ``..`` lexically is exactly what the OS would have
done. Files are opened ``O_NONBLOCK`` and must be regular files: a FIFO or a device never blocks a
reader or feeds it.

The SFTP stand-in (:mod:`wheelwright.operate.sftp_server`) serves every request through these
functions, and the index host's intake (:mod:`wheelwright.builds.transfer`,
:mod:`wheelwright.builds.incoming`) reads every received file through them, so a link that got into an
incoming folder some other way (OpenSSH's server, a bug) is still never followed.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(PermissionError):
    """A path from outside that names something other than a plain file or folder beneath its root."""

    def __init__(self, path, why: str):
        super().__init__(errno.EACCES, why, os.fsdecode(path) if isinstance(path, bytes) else path)


def components(path: str | bytes) -> list[str]:
    """The plain components of ``path`` relative to its root: ``..`` folded lexically and never above
    the root (as a chroot does), ``.`` and empty parts dropped. A NUL byte is refused."""
    text = os.fsdecode(path) if isinstance(path, bytes) else path
    if "\0" in text:
        raise Refused(text, "a path with a NUL byte")
    return [part for part in posixpath.normpath("/" + text).split("/") if part]


def open_dir(root_fd: int, parts: list[str]) -> int:
    """An ``O_PATH`` descriptor of the folder ``parts`` beneath ``root_fd``; no component may be a link."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            next_fd = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Refused("/".join(parts), f"{'/'.join(parts) or '.'} is not a folder (a link or a file "
                                           "on the way)") from None
        raise
    return fd


def parent_of(root_fd: int, path: str | bytes) -> tuple[int, str]:
    """``(descriptor of the folder holding the last component, that component)``; the caller closes
    the descriptor. The root itself has no parent here: naming it is refused."""
    parts = components(path)
    if not parts:
        raise Refused(path, "the root itself")
    return open_dir(root_fd, parts[:-1]), parts[-1]


def open_file(root_fd: int, path: str | bytes, flags: int = os.O_RDONLY, mode: int = 0o640) -> int:
    """A descriptor of the regular file ``path`` beneath ``root_fd`` (made with ``mode`` when
    ``flags`` has ``O_CREAT``); a link, a folder, a FIFO or a device is refused."""
    dir_fd, name = parent_of(root_fd, path)
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode & 0o777, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(path, f"{name} is a symbolic link") from None
        raise
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Refused(path, f"{name} is not a plain file")
    return fd


def lstat(root_fd: int, path: str | bytes) -> os.stat_result:
    """What ``path`` beneath ``root_fd`` is (a link is reported as a link, never followed)."""
    parts = components(path)
    if not parts:
        return os.fstat(root_fd)
    dir_fd = open_dir(root_fd, parts[:-1])
    try:
        return os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
    finally:
        os.close(dir_fd)


def open_root(path: str | os.PathLike) -> int:
    """An ``O_PATH`` descriptor of the folder ``path`` itself (trusted: the index host's own setting)."""
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
