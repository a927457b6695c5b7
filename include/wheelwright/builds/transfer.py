"""Transfer: built files from a worker to the index host, and nothing half-sent ever published.

Workers may be Raspberry Pis anywhere on the network; only the index host publishes. A worker sends
each build's files (wheels, their ``.metadata``, the log) over SFTP into its own account's folder on
the index host, ``<incoming>/<account>/<build_id>/``: each file is written under a hidden ``.part``
name and renamed once complete, so a connection that drops mid-file leaves only a ``.part`` that
nothing reads. The SFTP client comes from the caller (in Airflow, the ssh provider's
``SSHHook(...).get_conn().open_sftp()``, whose connection pins the host key: we never accept an
unknown host), and so does the folder (the account's, :mod:`wheelwright.operate.dag_tasks`).

On the index host, :func:`accept` believes nothing it received until each file's size and sha256 match
what the builder reported, and nothing else lies in the folder; any mismatch (a corrupted or truncated
transfer, a missing file, a file nobody announced, a name with a path in it, a link, a FIFO, a second
name for another file) discards the build's whole incoming folder with a clear :class:`TransferError`.
It reads each file without following links (:mod:`wheelwright.beneath`) and copies it while hashing
into the index host's own ``.intake`` folder: the builder may still hold its upload open, so what is
checked, and then published, is the index host's copy. :func:`place` then renames accepted files into
the published tree, each atomically, to a path made by :func:`wheel_destination` from canonical parts
and checked to stay inside the tree; the record step (:mod:`wheelwright.builds.intake`) decides
whether to place or discard them.

:class:`LocalFolder` speaks the few SFTP calls :func:`upload` makes to a folder on this machine, so
``wheelwright build`` sends its files through the same code as a worker does.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import posixpath
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from wheelwright import beneath
from wheelwright.errors import WheelwrightError
from wheelwright.names import canonical_or_none
from wheelwright.builds.analysis import FileInfo, WheelRefused, check_plain_filename
from wheelwright.builds.cleanup import remove_tree

# The outcome of a build, sent last into its folder (see :mod:`wheelwright.builds.incoming`).
MANIFEST = "outcome.json"
# Bytes of one received file: PyPI's own limit is 100 MB unless raised for a project; the largest
# wheels on PyPI are a few GB. A file above this is refused before the index host copies it.
MAX_RECEIVED = 4 << 30
# A builder's SFTP account: a Unix user name, which also names its folder in the incoming folder.
_ACCOUNT = re.compile(r"[a-z][a-z0-9-]{0,31}\Z")

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
    folder = make_remote_folder(sftp, remote_incoming, build_id)
    for f in files:
        check_plain_filename(f.filename)
        part = posixpath.join(folder, f".{f.filename}.part")
        final = posixpath.join(folder, f.filename)
        try:
            sftp.put(str(Path(local_dir) / f.filename), part, confirm=True)
            rename_over(sftp, part, final)
        except (OSError, IOError) as exc:
            raise TransferError(f"sending {f.filename} to the index host failed: {exc}") from exc
    log.info("sent %d files of build %d to %s", len(files), build_id, folder)


def make_remote_folder(sftp, remote_incoming: str, build_id: int) -> str:
    """``<remote_incoming>/<build_id>`` on the index host, made unless it exists (a retry's)."""
    folder = remote_folder(remote_incoming, build_id)
    try:
        sftp.mkdir(folder)
    except OSError as exc:
        try:
            exists = stat.S_ISDIR(sftp.stat(folder).st_mode)
        except OSError:
            exists = False
        if not exists:
            raise TransferError(f"cannot create {folder} on the index host: {exc}") from exc
    return folder


def rename_over(sftp, source: str, target: str) -> None:
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

def is_account(name: str) -> bool:
    """Whether ``name`` is a builder account's name (a-z, 0-9, '-', at most 32, a letter first)."""
    return bool(_ACCOUNT.match(name))


def incoming_folder(account_dir: str | os.PathLike, build_id: int) -> Path:
    """The folder of ``build_id`` in an account's folder (``<incoming>/<account>/<build_id>``)."""
    return Path(account_dir) / str(int(build_id))


def accept(folder: str | os.PathLike, expected: list[FileInfo] | list[tuple[str, str, int]]) -> list[AcceptedFile]:
    """Check every expected file in ``folder``; all of them, or a :class:`TransferError`.

    Every file is opened beneath the folder, never through a link (:mod:`wheelwright.beneath`), must be
    a plain file with one name, and is copied while it is hashed into the index host's own staging
    folder (:func:`staging_folder`, out of every builder's reach): what is checked and published is
    that copy, so a builder that still holds the upload open cannot change the bytes after the check.
    On any mismatch the whole folder is discarded: a build is published completely or not at all.
    """
    folder = Path(folder)
    accepted, problems = [], []
    problems += [f"{name} was not announced by the builder" for name in unannounced(folder, expected)]
    folder_fd = None
    try:
        folder_fd = _open_received(folder)
    except FileNotFoundError:
        pass
    except OSError as exc:
        problems.append(f"its folder cannot be read ({exc.strerror})")
    staging = Path(tempfile.mkdtemp(prefix=f"{folder.parent.name}.{folder.name}.", dir=staging_folder(folder.parent)))
    try:
        for item in expected:
            filename, sha256, size = (item.filename, item.sha256, item.size) if isinstance(item, FileInfo) else item
            try:
                check_plain_filename(filename)
            except WheelRefused as exc:
                problems.append(str(exc))
                continue
            if folder_fd is None:
                problems.append(f"{filename} did not arrive")
                continue
            try:
                staged = _stage(folder_fd, filename, size, staging)
            except FileNotFoundError:
                problems.append(f"{filename} did not arrive")
                continue
            except OSError as exc:
                problems.append(f"{filename} is not a plain file ({exc.strerror})")
                continue
            if isinstance(staged, str):
                problems.append(staged)
                continue
            path, actual = staged
            accepted.append(AcceptedFile(filename, path, sha256, size))
            if actual != sha256:
                problems.append(f"{filename} has sha256 {actual}, the builder sent {sha256}")
    finally:
        if folder_fd is not None:
            os.close(folder_fd)
    if problems or not accepted:
        drop_staged(accepted, staging)
    if problems:
        discard(folder)
        raise TransferError(f"refused the transfer in {folder.name}: " + "; ".join(problems)
                            + " (all its files were discarded)")
    return accepted


def staging_folder(account_dir: str | os.PathLike) -> Path:
    """Where the index host keeps its own copies of received files while it checks and places them:
    ``.intake`` beside the accounts' folders (``<incoming>/.intake``), which no builder reaches
    (account names never start with a dot)."""
    staging = Path(account_dir).parent / ".intake"
    staging.mkdir(mode=0o700, exist_ok=True)
    return staging


def drop_staged(files: list[AcceptedFile], staging: Path | None = None) -> None:
    """Remove the index host's copies of ``files`` (those not placed in the tree), and the folder
    :func:`accept` kept them in once it is empty."""
    folders = {staging} if staging is not None else set()
    for f in files:
        f.path.unlink(missing_ok=True)
        folders.add(f.path.parent)
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass   # gone already, or still holds a copy another caller drops


def _open_received(folder: Path) -> int:
    """A descriptor of the received ``folder`` (made by a builder), opened without following a link."""
    parent = beneath.open_root(folder.parent)
    try:
        return beneath.open_dir(parent, [folder.name])
    finally:
        os.close(parent)


def _stage(folder_fd: int, filename: str, size: int, staging: Path) -> tuple[Path, str] | str:
    """Copy the received ``filename`` into ``staging`` while hashing it: ``(the copy, its sha256)``, or
    why it cannot be taken."""
    fd = beneath.open_file(folder_fd, filename)
    try:
        st = os.fstat(fd)
        if st.st_nlink != 1:
            return f"{filename} has {st.st_nlink} names (a hard link), not one"
        if st.st_size != size:
            return f"{filename} is {st.st_size} bytes, the builder sent {size}"
        if size > MAX_RECEIVED:
            return f"{filename} is {size:,} bytes, more than any file a build may send ({MAX_RECEIVED:,})"
        digest = hashlib.sha256()
        tmp = staging / filename
        out_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        copied = 0
        try:
            with os.fdopen(out_fd, "wb") as out:
                while copied <= size and (chunk := os.read(fd, 1 << 20)):
                    digest.update(chunk)
                    out.write(chunk)
                    copied += len(chunk)
        except BaseException:
            os.unlink(tmp)
            raise
        if copied != size:
            os.unlink(tmp)
            return f"{filename} changed while it was read ({copied} bytes, the builder sent {size})"
        return Path(tmp), digest.hexdigest()
    finally:
        os.close(fd)


def unannounced(folder: Path, expected) -> list[str]:
    """Names in ``folder`` that are not among the ``expected`` files (the outcome's own manifest and
    hidden ``.part`` files of an interrupted upload aside: they are never taken for files)."""
    names = {item.filename if isinstance(item, FileInfo) else item[0] for item in expected}
    try:
        present = sorted(list_received(folder))
    except FileNotFoundError:
        return []
    return [name for name in present
            if name not in names and name != MANIFEST
            and not (name.startswith(".") and name.endswith(".part"))]


def list_received(folder: str | os.PathLike) -> list[str]:
    """The names in a received folder, read without following a link to it."""
    fd = _open_received(Path(folder))
    try:
        listing = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        return os.listdir(listing)
    finally:
        os.close(listing)


def discard(folder: str | os.PathLike) -> None:
    """Remove a build's incoming folder: a builder made it, so it may be any shape (see
    :mod:`wheelwright.builds.cleanup`)."""
    remove_tree(folder)




def wheel_destination(output: str | os.PathLike, package: str, filename: str) -> Path:
    """Where ``filename`` of ``package`` is published: ``<output>/simple/<canonical package>/<filename>``.

    Both parts come from outside (the package from the catalog, the file name from a wheel), so the
    path is made only from a canonical name and a plain file name, and checked to stay in the tree.
    """
    canonical = canonical_or_none(package)
    if canonical is None:
        raise TransferError(f"refused to publish under {package!r}: not a package name")
    try:
        check_plain_filename(filename)
    except WheelRefused as exc:
        raise TransferError(str(exc)) from exc
    return inside(Path(output) / "simple", canonical, filename)


def inside(root: Path, *parts: str) -> Path:
    """``root / parts`` if it stays under ``root`` once symbolic links are followed, else a TransferError."""
    root = Path(root)
    path = root.joinpath(*parts)
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root or real == real_root:
        raise TransferError(f"refused the path {path}: it leaves {root}")
    return path


def _replace_with(destination: Path, fill) -> None:
    """Fill a temp file beside ``destination`` (``fill(f)``), make it durable, rename it over."""
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, destination)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_file(destination: Path, data: bytes) -> None:
    """Write ``data`` to ``destination`` atomically and durably (readers see no file or all of it)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    _replace_with(destination, lambda f: f.write(data))


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
        with open(source, "rb") as src:
            _replace_with(destination, lambda dst: shutil.copyfileobj(src, dst))
        os.unlink(source)
    os.chmod(destination, 0o644)
    dir_fd = os.open(destination.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class LocalFolder:
    """The SFTP calls :func:`upload` makes, on this machine's file system (``wheelwright build``)."""

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def stat(self, path: str):
        return os.stat(path)

    def put(self, local: str, remote: str, confirm: bool = True) -> None:
        with open(local, "rb") as src, open(remote, "wb") as dst:
            shutil.copyfileobj(src, dst)
            dst.flush()
            os.fsync(dst.fileno())

    def posix_rename(self, source: str, target: str) -> None:
        os.replace(source, target)

    def rename(self, source: str, target: str) -> None:
        os.rename(source, target)

    def remove(self, path: str) -> None:
        os.unlink(path)
