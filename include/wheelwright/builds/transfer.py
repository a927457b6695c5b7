"""Transfer: built files from a worker to the index host, and nothing half-sent ever published.

Workers may be Raspberry Pis anywhere on the network; only the index host publishes. A worker sends
each build's files (wheels, their ``.metadata``, the log) over SFTP into ``<incoming>/<build_id>/`` on
the index host: each file is written under a hidden ``.part`` name and renamed once complete, so a
connection that drops mid-file leaves only a ``.part`` that nothing reads. The SFTP client comes from
the caller (in Airflow, the ssh provider's ``SSHHook(...).get_conn().open_sftp()``, whose connection
pins the host key: we never accept an unknown host).

On the index host, :func:`accept` believes nothing it received until each file's size and sha256 match
what the builder reported; any mismatch (a corrupted or truncated transfer, a missing file, a name
with a path in it) discards the build's whole incoming folder with a clear :class:`TransferError`.
:func:`place` then renames accepted files into the published tree, each atomically; the record step
decides whether to place or discard them.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import posixpath
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from wheelwright.errors import WheelwrightError
from wheelwright.builds.analysis import FileInfo, WheelRefused, check_plain_filename

log = logging.getLogger(__name__)


class TransferError(WheelwrightError):
    """Files did not arrive as the builder sent them; nothing of that build was published."""


@dataclass(frozen=True)
class AcceptedFile:
    """A received file whose size and sha256 were checked, still in the incoming folder."""

    filename: str
    path: Path
    sha256: str
    size: int


# --- worker side -----------------------------------------------------------------------------------

def remote_folder(remote_incoming: str, build_id: int) -> str:
    return posixpath.join(remote_incoming, str(int(build_id)))


def upload(sftp, local_dir: Path, files: list[FileInfo], remote_incoming: str, build_id: int) -> None:
    """Send ``files`` (found in ``local_dir``) to ``<remote_incoming>/<build_id>/`` over ``sftp``."""
    folder = remote_folder(remote_incoming, build_id)
    try:
        sftp.mkdir(folder)
    except OSError as exc:
        try:  # it may exist already: a retry of the same build's transfer
            exists = stat.S_ISDIR(sftp.stat(folder).st_mode)
        except OSError:
            exists = False
        if not exists:
            raise TransferError(f"cannot create {folder} on the index host: {exc}") from exc
    for f in files:
        check_plain_filename(f.filename)
        part = posixpath.join(folder, f".{f.filename}.part")
        final = posixpath.join(folder, f.filename)
        try:
            sftp.put(str(Path(local_dir) / f.filename), part, confirm=True)
            _rename_over(sftp, part, final)
        except (OSError, IOError) as exc:
            raise TransferError(f"sending {f.filename} to the index host failed: {exc}") from exc
    log.info("sent %d files of build %d to %s", len(files), build_id, folder)


def _rename_over(sftp, source: str, target: str) -> None:
    try:
        sftp.posix_rename(source, target)  # OpenSSH's extension: replaces an existing target
    except OSError:
        try:
            sftp.remove(target)
        except OSError:
            pass
        sftp.rename(source, target)


def send_outcome(sftp, outcome, remote_incoming: str) -> dict:
    """Send every file of ``outcome`` (a :class:`~wheelwright.builds.builder.BuildOutcome`); its dict for XCom."""
    if outcome.files_dir is None:
        raise TransferError(f"build {outcome.build_id}: its files were already cleaned up")
    upload(sftp, outcome.files_dir, outcome.files(), remote_incoming, outcome.build_id)
    return outcome.to_dict()


# --- index host side -------------------------------------------------------------------------------

def incoming_folder(incoming_dir: str | os.PathLike, build_id: int) -> Path:
    return Path(incoming_dir) / str(int(build_id))


def accept(folder: str | os.PathLike, expected: list[FileInfo] | list[tuple[str, str, int]]) -> list[AcceptedFile]:
    """Check every expected file in ``folder``; all of them, or a :class:`TransferError`.

    On any mismatch the whole folder is discarded: a build is published completely or not at all.
    """
    folder = Path(folder)
    accepted, problems = [], []
    for item in expected:
        filename, sha256, size = (item.filename, item.sha256, item.size) if isinstance(item, FileInfo) else item
        try:
            check_plain_filename(filename)
        except WheelRefused as exc:
            problems.append(str(exc))
            continue
        path = folder / filename
        try:
            st = path.lstat()
        except FileNotFoundError:
            problems.append(f"{filename} did not arrive")
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append(f"{filename} is not a plain file")
            continue
        if st.st_size != size:
            problems.append(f"{filename} is {st.st_size} bytes, the builder sent {size}")
            continue
        actual = _sha256(path)
        if actual != sha256:
            problems.append(f"{filename} has sha256 {actual}, the builder sent {sha256}")
            continue
        accepted.append(AcceptedFile(filename, path, sha256, size))
    if problems:
        discard(folder)
        raise TransferError(f"refused the transfer in {folder.name}: " + "; ".join(problems)
                            + " (all its files were discarded)")
    return accepted


def discard(folder: str | os.PathLike) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def wheel_destination(output: Path, package: str, filename: str) -> Path:
    return Path(output) / "simple" / canonicalize_name(package) / filename


def place(source: Path, destination: Path) -> None:
    """Move ``source`` to ``destination`` atomically: readers see the old file or the whole new one."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as f:
        os.fsync(f.fileno())
    try:
        os.replace(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # incoming is on another file system: copy beside the destination, then rename
        fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
        try:
            with os.fdopen(fd, "wb") as dst, open(source, "rb") as src:
                shutil.copyfileobj(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, destination)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        os.unlink(source)
    os.chmod(destination, 0o644)
    dir_fd = os.open(destination.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
