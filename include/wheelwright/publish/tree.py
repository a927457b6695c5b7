"""How files land in the published tree: atomically, durably, and only when their bytes change.

pip treats a missing page as "no such project", and a web server may read any file at any moment, so no
file in the tree is ever half-written or briefly absent: each one is written beside its target under a
temporary dot-name (which the web server refuses to serve), made durable, then renamed over the old one.

Durability costs a flush per file (about 0.2 ms here), which for a full publish of 900k packages and
3.6M files would dominate. So writes are *staged*: a :class:`StagedTree` collects temporary files and,
when a batch is full, makes them all durable at once (``syncfs`` on the tree's file system, or one
``fsync`` each for a handful), then renames them into place. Every rename still happens only after its
data is on disk, and :meth:`StagedTree.finish` makes the renames themselves durable before the caller
records progress anywhere else.

A directory that does not exist yet (a new package, or every package of a first publish) is built whole
instead: its files are written straight into a hidden temporary directory beside it, which is renamed
into place once, after the batch is durable. That is one rename instead of one per file, and the
directory appears complete or not at all. Should the directory appear meanwhile (the build side moves a
package's first wheel into ``simple/<package>/`` before the publisher hears of it), its files are
renamed into the existing one one by one instead.

A file whose new bytes equal its current bytes is not written at all, so an unchanged page keeps its
mtime and ETag, and caches stay warm.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

TEMP_PREFIX = ".ww-tmp."
# Below this many staged files, one fsync each is cheaper than flushing the whole file system.
_FSYNC_EACH_LIMIT = 32

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _syncfs = _libc.syncfs
    _syncfs.argtypes = [ctypes.c_int]
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _syncfs = None


def temp_name(path: str) -> str:
    head, sep, tail = path.rpartition("/")
    return head + sep + TEMP_PREFIX + tail


def is_temp(name: str) -> bool:
    return name.startswith(TEMP_PREFIX)


def read_bytes(path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _sync_path(path: str, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Staged:
    """What a tree has staged and not committed yet; another process may commit it (see
    :meth:`StagedTree.hand_over`)."""

    files: list[tuple[str, str]] = field(default_factory=list)   # (temporary file, target)
    dirs: list[tuple[str, str]] = field(default_factory=list)    # (temporary directory, target)
    # The staged directories and their subfolders: files in them are written directly.
    fresh_dirs: set[str] = field(default_factory=set)
    # Those folders and the files in them, to fsync when a batch is small.
    fresh_paths: list[str] = field(default_factory=list)

    @property
    def fresh_files(self) -> int:
        return len(self.fresh_paths) - len(self.fresh_dirs)

    def __len__(self) -> int:
        """The files to rename into place, one by one or with their directory."""
        return len(self.files) + self.fresh_files


class StagedTree:
    """Stages writes under ``root`` and commits them in durable batches.

    Paths are plain strings (this is the hot path of a full publish, where pathlib's overhead shows).
    Only one publisher writes a tree at a time (the caller holds the catalog's publish lock), so the
    temporary name of each target is fixed: a temp file left by a killed run is simply overwritten.
    ``touched`` counts every change as it is staged, so a caller can tell whether a step changed
    anything before the batch is committed. Nothing is committed behind the caller's back: it calls
    :meth:`commit_if_full` between packages, so a directory staged whole is never renamed half-written.
    """

    def __init__(self, root, *, batch: int = 2000):
        self.root = str(root)
        self.batch = batch
        self.written = 0
        self.unchanged = 0
        self.removed = 0
        self.touched = 0
        self._pending = Staged()
        self._dirs: set[str] = set()        # directories whose entries changed since the last sync
        self._known_dirs: set[str] = set()  # directories known to exist
        self._new_dirs: set[str] = set()    # directories this run created (nothing old inside)
        self.many_writers = False           # other processes wrote into the tree for this run

    # -- writing -------------------------------------------------------------------------------------

    def ensure_dir(self, path: str) -> bool:
        """Make sure ``path`` exists; True if this call created it."""
        if path in self._known_dirs:
            return False
        try:
            os.mkdir(path)
        except FileExistsError:
            self._known_dirs.add(path)
            return False
        except FileNotFoundError:
            self.ensure_dir(os.path.dirname(path))
            try:
                os.mkdir(path)
            except FileExistsError:
                self._known_dirs.add(path)
                return False
        parent = os.path.dirname(path)
        self._known_dirs.add(path)
        self._new_dirs.add(path)
        pending = self._pending
        if parent in pending.fresh_dirs:  # part of a directory staged whole
            pending.fresh_dirs.add(path)
            pending.fresh_paths.append(path)
        else:
            self._dirs.add(parent)
        return True

    def stage_dir(self, path: str, *, new: bool = False) -> str:
        """The folder to write the files of directory ``path`` in.

        ``path`` itself if it exists. If not, a new hidden directory beside it (the temporary name of
        ``path``), whose files need no temporary names of their own: :meth:`commit` renames the whole
        directory into place. The caller must write all of it before the next commit.

        ``new``: the caller knows that ``path`` did not exist a moment ago, so nobody looks. Should it
        have appeared since, the commit finds it there and moves the files in one by one.
        """
        tmp = temp_name(path)
        if not new and (path in self._known_dirs or os.path.lexists(path)):
            if os.path.lexists(tmp):  # left by a killed run that was building this directory
                shutil.rmtree(tmp)
            return path
        try:
            os.mkdir(tmp)
        except FileExistsError:  # left by a killed run; we are the only publisher
            shutil.rmtree(tmp)
            os.mkdir(tmp)
        except FileNotFoundError:
            self.ensure_dir(os.path.dirname(path))
            os.mkdir(tmp)
        self._known_dirs.add(tmp)
        self._pending.fresh_dirs.add(tmp)
        self._pending.fresh_paths.append(tmp)
        self._pending.dirs.append((tmp, path))
        return tmp

    def write(self, path: str, data: bytes) -> bool:
        """Stage ``data`` for ``path``; False (and nothing staged) when the file already holds it."""
        folder, name = os.path.split(path)
        return self.write_in(folder, name, data)

    def write_in(self, folder: str, name: str, data: bytes) -> bool:
        """:meth:`write` for a path already split into its folder and file name (the hot path)."""
        path = folder + "/" + name
        created = self.ensure_dir(folder)
        pending = self._pending
        if folder in pending.fresh_dirs:  # nobody sees it before its directory is renamed into place
            _write_file(path, data)
            pending.fresh_paths.append(path)
            self.touched += 1
            return True
        if not created and folder not in self._new_dirs and read_bytes(path) == data:
            self.unchanged += 1
            return False
        tmp = folder + "/" + TEMP_PREFIX + name
        _write_file(tmp, data)
        pending.files.append((tmp, path))
        self.touched += 1
        return True

    def symlink(self, path: str, target: str) -> bool:
        """Point the symlink ``path`` at ``target`` (relative), replacing whatever is there atomically."""
        try:
            if os.readlink(path) == target:
                return False
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: a real file or directory is there
                raise
            if os.path.isdir(path):
                log.warning("replacing directory %s with a symlink to %s", path, target)
                shutil.rmtree(path)
        self.ensure_dir(os.path.dirname(path))
        tmp = temp_name(path)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(target, tmp)
        os.replace(tmp, path)
        self._dirs.add(os.path.dirname(path))
        self.written += 1
        self.touched += 1
        return True

    def hand_over(self) -> Staged:
        """Give up everything staged, unrenamed, for another process to :meth:`adopt` and commit.

        Forked publishing workers do this so that they never wait for the disk: the parent makes
        their batches durable and renames them into place while they render the next ones.
        """
        staged, self._pending = self._pending, Staged()
        for tmp, path in staged.dirs:  # the adopter renames them before anyone looks again
            self._known_dirs.discard(tmp)
            self._known_dirs.add(path)
        return staged

    def adopt(self, staged: Staged) -> None:
        """Take over writes another process staged in this tree, to commit them with this one's."""
        pending = self._pending
        pending.files.extend(staged.files)
        pending.dirs.extend(staged.dirs)
        pending.fresh_dirs |= staged.fresh_dirs
        pending.fresh_paths.extend(staged.fresh_paths)

    def commit_if_full(self) -> None:
        """Commit when a batch's worth is staged (call it where no directory is half-written)."""
        if len(self._pending) >= self.batch:
            self.commit()

    def commit(self) -> None:
        """Make the staged files and directories durable and rename them into place."""
        pending = self._pending
        if not pending.files and not pending.dirs:
            return
        if len(pending.files) + len(pending.fresh_paths) > _FSYNC_EACH_LIMIT:
            self._flush_filesystem()
        else:
            for tmp, _path in pending.files:
                _sync_path(tmp)
            for path in pending.fresh_paths:  # files, and folders (for their entries)
                _sync_path(path, os.O_RDONLY | os.O_DIRECTORY if path in pending.fresh_dirs else os.O_RDONLY)
        replace, dirname, dirs = os.replace, os.path.dirname, self._dirs
        for tmp, path in pending.files:
            replace(tmp, path)
            dirs.add(dirname(path))
        for tmp, path in pending.dirs:
            self._place_dir(tmp, path)
        self.written += len(pending)
        self._pending = Staged()

    def _place_dir(self, tmp: str, path: str) -> None:
        """Rename a staged directory into place, or move its files into ``path`` if that appeared."""
        try:
            # rename(2) replaces only an empty directory, which holds nothing anyone could miss.
            os.rename(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise
            log.info("%s appeared while it was being published: moving its pages in one by one", path)
            for folder, _dirs, files in os.walk(tmp):
                target = os.path.normpath(os.path.join(path, os.path.relpath(folder, tmp)))
                self.ensure_dir(target)
                for name in files:  # each file is durable already: a rename is all it takes
                    os.replace(os.path.join(folder, name), os.path.join(target, name))
                self._dirs.add(target)
            shutil.rmtree(tmp)
        self._known_dirs.discard(tmp)
        self._known_dirs.add(path)
        self._dirs.add(os.path.dirname(path))

    def finish(self) -> None:
        """Commit what is staged and make every rename and removal durable."""
        self.commit()
        if self.many_writers or len(self._dirs) > _FSYNC_EACH_LIMIT:
            self._flush_filesystem()
        else:
            for path in self._dirs:
                try:
                    _sync_path(path, os.O_RDONLY | os.O_DIRECTORY)
                except FileNotFoundError:
                    pass
        self._dirs.clear()
        self._new_dirs.clear()

    def abandon(self) -> None:
        """Drop staged files and directories (after an error): the old files stay as they were."""
        pending, self._pending = self._pending, Staged()
        for tmp, _path in pending.files:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        for tmp, _path in pending.dirs:
            shutil.rmtree(tmp, ignore_errors=True)
            self._known_dirs.discard(tmp)

    def _flush_filesystem(self) -> None:
        if _syncfs is not None:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                if _syncfs(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err), self.root)
            finally:
                os.close(fd)
        else:  # pragma: no cover - not Linux
            os.sync()

    # -- removing ------------------------------------------------------------------------------------

    def remove(self, path: str) -> bool:
        """Remove a file or symlink (or a whole directory); False if it was not there."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            return self.remove_tree(path)
        self._dirs.add(os.path.dirname(path))
        self.removed += 1
        self.touched += 1
        return True

    def remove_tree(self, path: str) -> bool:
        if not os.path.lexists(path):
            return False
        if os.path.islink(path) or not os.path.isdir(path):
            return self.remove(path)
        count = sum(len(files) + len(dirs) for _, dirs, files in os.walk(path)) + 1
        shutil.rmtree(path)
        self._dirs.add(os.path.dirname(path))
        # The caches may name folders inside the removed one; forgetting them all is cheap and safe.
        self._known_dirs.clear()
        self._new_dirs.clear()
        self.removed += count
        self.touched += 1
        return True

    def remove_empty_dir(self, path: str) -> bool:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                return False
            raise
        self._dirs.add(os.path.dirname(path))
        self._known_dirs.discard(path)
        self._new_dirs.discard(path)
        self.touched += 1
        return True
