"""The build's disk: where ``/build`` lives, with a quota of bytes and of files.

A build writes what it likes into its work folder for up to three hours; bound from the worker's disk
as it is, it could fill that disk (under ``make run`` the catalog's too). This room owns the folder's
quota, :class:`DiskQuota` (``WHEELWRIGHT_BUILD_DISK``, default 10 GiB: piwheels builds numpy-class
packages, several GiB of objects; ``WHEELWRIGHT_BUILD_FILES``, default 1,000,000 files and folders),
and two ways of holding a build to it, chosen per worker:

- **a file system of its own** (a worker running as root, as ``make run`` and CI do, with loop
  devices): a sparse file of the quota's size, ``mkfs.ext4`` with that many inodes and no journal,
  loop-mounted ``nosuid,nodev`` as the work folder. The kernel enforces both limits (the build gets
  ``ENOSPC``); the file costs the worker's disk only what the build wrote; nothing of it is in memory
  (a tmpfs would be, and would count against the build's memory cgroup: several GiB of objects on a
  Pi of 1-8 GiB would leave nothing to compile with); and removing it is an unmount and one unlink,
  however the build shaped its tree. A worker killed mid-build leaves the file locked by nobody: the
  next build on that worker unmounts and removes it.
- **a watched folder** (a worker that is not root, as on a Pi or in the production containers, which
  may not mount): the folder is on the worker's disk, and the file system holding it may grow by at
  most the quota, in bytes and in inodes, while the build runs, measured with ``statvfs`` every second
  (cheap, and no folder the build hides with mode 000 escapes it); past that the build is stopped. An
  operator who wants a hard limit here too mounts a file system of its own at the workers' build folder
  (``$WHEELWRIGHT_HOME/builds``, e.g. an ext4 image in ``/etc/fstab``: README, "A Pi joins"); the log
  says which case a build ran in.

Either way the quota is cut to what the worker's disk has free, less a reserve
(:data:`DISK_RESERVE`, or a tenth of a smaller file system), so a build never fills the disk it runs on; and the reason a build overran is
one sentence ("the build wrote more than 10 GiB, its disk quota").
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from wheelwright.builds.cleanup import remove_tree
from wheelwright.errors import ConfigError

log = logging.getLogger(__name__)

MiB, GiB = 1 << 20, 1 << 30
DEFAULT_DISK = 10 * GiB               # bytes a build may write (piwheels: numpy-class builds, several GiB)
DEFAULT_FILES = 1_000_000             # files and folders it may make
DISK_RESERVE = 1 * GiB                # what the worker's disk keeps free whatever the quota says
RESERVE_SHARE = 10                    # ... or a tenth of it, when that is less (a file system for builds)
SMALLEST_DISK = 64 * MiB              # below this the worker's disk is too full to build on
FULL_MARGIN = 1 * MiB                 # a build's own file system with less free than this is full
CHECK_EVERY = 0.2                     # seconds between two looks at the file system (statvfs: cheap)
NEARLY_FULL = 0.95                    # a peak this close to a limit, with a failed build, is an overrun
_NO_SPACE = re.compile(rb"No space left on device|Disk quota exceeded|ENOSPC")
DISK_SETTING, FILES_SETTING = "WHEELWRIGHT_BUILD_DISK", "WHEELWRIGHT_BUILD_FILES"
MKFS, MOUNT, UMOUNT = "/usr/sbin/mkfs.ext4", "/usr/bin/mount", "/usr/bin/umount"
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*\Z", re.I)


def parse_size(text: str) -> int:
    """Bytes of ``10G``, ``512MiB``, ``1.5T`` or a plain number of bytes."""
    m = _SIZE.match(str(text))
    if not m:
        raise ConfigError(f"{text!r} is not a size (say 10G, 512M or a number of bytes)")
    return int(float(m[1]) * (1 << (10 * " KMGT".index(m[2].upper() or " "))))


def size_text(size: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB)):
        if size >= scale:
            return f"{size / scale:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{size} bytes"


@dataclass(frozen=True)
class DiskQuota:
    """How much one build may write: ``size`` bytes and ``files`` files and folders."""

    size: int = DEFAULT_DISK
    files: int = DEFAULT_FILES

    @classmethod
    def from_env(cls, env=os.environ) -> "DiskQuota":
        size = parse_size(env[DISK_SETTING]) if env.get(DISK_SETTING) else DEFAULT_DISK
        try:
            files = int(env[FILES_SETTING]) if env.get(FILES_SETTING) else DEFAULT_FILES
        except ValueError:
            raise ConfigError(f"{FILES_SETTING} must be a number of files, not {env[FILES_SETTING]!r}") from None
        if size < SMALLEST_DISK or files < 1000:
            raise ConfigError(f"a build's disk quota of {size_text(size)} and {files:,} files is too small "
                              f"to build anything ({DISK_SETTING}, {FILES_SETTING})")
        return cls(size, files)

    def overrun(self, *, wrote: int, made: int, cut: bool = False) -> str | None:
        """The sentence for a build that wrote ``wrote`` bytes and made ``made`` files, if over."""
        if wrote > self.size:
            return (f"the build wrote more than {size_text(self.size)}, its disk quota"
                    + (" (cut to what the worker's disk had free)" if cut else ""))
        if made > self.files:
            return f"the build made more than {self.files:,} files and folders, its quota"
        return None


class Workspace:
    """One build's work folder (:attr:`path`, bound at ``/build``) and how its quota holds.

    :meth:`overrun` says, at any moment, whether the build went past its quota (and remembers it);
    :meth:`close` removes everything.
    """

    how: str

    def __init__(self, path: Path, quota: DiskQuota, cut: bool):
        self.path, self.quota, self.cut = path, quota, cut
        self.reason: str | None = None
        self.peak_bytes = self.peak_files = 0   # the most seen used at once
        self._checked = 0.0
        st = os.statvfs(path)
        self._free, self._files = st.f_bavail * st.f_frsize, st.f_favail   # before the build

    def watch(self) -> str | None:
        """:meth:`overrun`, at most every :data:`CHECK_EVERY` seconds (the sandbox asks often)."""
        now = time.monotonic()
        if self.reason is None and now - self._checked >= CHECK_EVERY:
            self._checked = now
            self.overrun()
        return self.reason

    def overrun(self) -> str | None:
        """The reason, once the build is past its quota (looking now, remembering what it saw)."""
        if self.reason is None:
            try:
                wrote, made = self.used()
            except OSError:
                return None
            self.peak_bytes, self.peak_files = max(self.peak_bytes, wrote), max(self.peak_files, made)
            self.reason = self.quota.overrun(wrote=wrote, made=made, cut=self.cut)
        return self.reason

    def explain(self, tail: bytes) -> str | None:
        """Why a failed build failed, if its disk is why: past the quota now or when last seen, or out
        of space by its own words (``tail``, its last output) while near a limit or at it. A build that
        filled its own file system and was then cleaned up by pip is no longer full when it ends."""
        if self.overrun() is not None:
            return self.reason
        bytes_share, files_share = self.peak_bytes / self.quota.size, self.peak_files / self.quota.files
        if max(bytes_share, files_share) >= NEARLY_FULL or _NO_SPACE.search(tail):
            over_files = files_share > bytes_share
            return self.quota.overrun(wrote=0 if over_files else self.quota.size + 1,
                                      made=self.quota.files + 1 if over_files else 0, cut=self.cut)
        return None

    def used(self) -> tuple[int, int]:
        """Bytes and files the build has used so far: how far its file system's free space and free
        inodes went down since it started."""
        st = os.statvfs(self.path)
        return self._free - st.f_bavail * st.f_frsize, self._files - st.f_favail

    def close(self) -> list[str]:
        raise NotImplementedError


class OwnDisk(Workspace):
    """A loop-mounted ext4 of the quota's size and inodes: the kernel holds the build to it."""

    def __init__(self, path: Path, image: Path, lock: int, quota: DiskQuota, cut: bool):
        super().__init__(path, quota, cut)
        self.image, self._lock = image, lock
        self.how = (f"a file system of its own, {size_text(quota.size)} and {quota.files:,} files "
                    f"(ext4 on a loop device{', cut to what the worker had free' if cut else ''})")

    def used(self) -> tuple[int, int]:
        # The kernel holds the build to its file system, whose own metadata takes a little of it:
        # full (less than a block or two left, or no inode) counts as past the quota.
        wrote, made = super().used()
        st = os.statvfs(self.path)
        return (self.quota.size + 1 if st.f_bavail * st.f_frsize < FULL_MARGIN else wrote,
                self.quota.files + 1 if st.f_favail == 0 else made)

    def close(self) -> list[str]:
        left = _unmount(self.path)
        try:
            self.image.unlink()
        except FileNotFoundError:
            pass
        os.close(self._lock)
        return left + remove_tree(self.path)


class WatchedFolder(Workspace):
    """A folder whose file system may grow by the quota while the build runs, and no more."""

    def __init__(self, path: Path, quota: DiskQuota, cut: bool):
        super().__init__(path, quota, cut)
        own = os.path.ismount(path.parent)
        where = "a file system of its own for builds" if own else "the worker's disk"
        self.how = (f"a folder on {where}, "
                    f"watched: the build is stopped once that file system grew by "
                    f"{size_text(quota.size)} or {quota.files:,} files"
                    + ("" if own else " (a worker that is root gives each build a file system of its own)"))

    def close(self) -> list[str]:
        return remove_tree(self.path)


def open_workspace(workdir_root: Path, name: str, quota: DiskQuota,
                   owner: tuple[int, int] | None = None) -> Workspace:
    """A fresh work folder ``<workdir_root>/<name>-…`` held to ``quota`` (cut to what the disk has free
    less :data:`DISK_RESERVE`), owned by ``owner`` (uid, gid) when given: a file system of its own
    when this worker may mount one, else a watched folder."""
    workdir_root.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(workdir_root)
    reserve = min(DISK_RESERVE, st.f_blocks * st.f_frsize // RESERVE_SHARE)
    free = st.f_bavail * st.f_frsize - reserve
    if free < SMALLEST_DISK:
        raise ConfigError(f"the worker's disk holding {workdir_root} has {size_text(max(free, 0) + reserve)} "
                          f"free: too little to build on (a build may write {size_text(quota.size)})")
    cut = free < quota.size
    if cut:
        quota = DiskQuota(free, quota.files)
    if can_mount():
        sweep_disks(workdir_root)
        try:
            return _own_disk(workdir_root, name, quota, owner, cut)
        except OSError as exc:
            log.warning("a build's own file system could not be made (%s): its folder is watched instead", exc)
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir_root))
    if owner is not None:
        os.chown(path, *owner)
    return WatchedFolder(path, quota, cut)


def can_mount() -> bool:
    """Whether this worker may loop-mount a file system (root, with loop devices and the tools)."""
    return (os.geteuid() == 0 and os.path.exists("/dev/loop-control")
            and all(os.access(tool, os.X_OK) for tool in (MKFS, MOUNT, UMOUNT)))


def _own_disk(workdir_root: Path, name: str, quota: DiskQuota, owner, cut: bool) -> OwnDisk:
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir_root))
    image = path.with_name(path.name + ".disk")
    making = path.with_name(path.name + ".making")  # not *.disk until locked: sweep_disks never sees it unlocked
    lock = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)      # held while the build runs; see sweep_disks
        os.rename(making, image)
        os.ftruncate(lock, quota.size)        # sparse: costs what is written
        uid, gid = owner if owner is not None else (os.getuid(), os.getgid())
        _run([MKFS, "-q", "-F", "-m", "0", "-N", str(quota.files), "-O", "^has_journal",
              "-E", f"lazy_itable_init=1,nodiscard,root_owner={uid}:{gid}", str(image)])
        _run([MOUNT, "-t", "ext4", "-o", "loop,nosuid,nodev,noatime,noinit_itable", str(image), str(path)])
    except BaseException:
        os.close(lock)
        making.unlink(missing_ok=True)
        image.unlink(missing_ok=True)
        path.rmdir()
        raise
    try:
        os.rmdir(path / "lost+found")
    except OSError:
        pass
    return OwnDisk(path, image, lock, quota, cut)


def sweep_disks(workdir_root: Path) -> list[str]:
    """Unmount and remove the file systems of builds that no process holds any more (a worker killed
    mid-build); the names of those removed."""
    removed = []
    for image in sorted(workdir_root.glob("*.disk")):
        try:
            lock = os.open(image, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            continue  # a build is using it
        try:
            folder = image.with_suffix("")
            _unmount(folder)
            remove_tree(folder)
            image.unlink(missing_ok=True)
            removed.append(image.name)
            log.warning("removed the file system of a build that ended without removing it: %s", image.name)
        finally:
            os.close(lock)
    return removed


def _unmount(path: Path) -> list[str]:
    if not os.path.ismount(path):
        return []
    if subprocess.run([UMOUNT, str(path)], capture_output=True).returncode == 0:
        return []
    # busy (a process of the build not yet reaped): detach now, the kernel frees it when the last goes
    done = subprocess.run([UMOUNT, "-l", str(path)], capture_output=True, text=True)
    return [] if done.returncode == 0 else [f"{path}: could not be unmounted ({done.stderr.strip()})"]


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    if done.returncode != 0:
        raise OSError(f"{os.path.basename(argv[0])} failed: {(done.stderr or done.stdout).strip()[:300]}")

