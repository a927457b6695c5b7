"""The index host's incoming folder: how a build's result arrives, and nothing that arrived is forgotten.

Each builder has an SFTP account, and each account its own folder: ``<incoming>/<account>/``, which
that account alone can write (OpenSSH's chroot and folder modes in production, the stand-in's
confinement under ``make run``). A worker sends a build's files into ``<account>/<build_id>/``
(:mod:`~wheelwright.builds.transfer`), then, last, the build's outcome as ``outcome.json`` (:func:`send_manifest`): a folder with a manifest
holds everything the record step needs, whoever runs it and whenever. So recording does not depend on
the build task's XCom, nor on the run that claimed the build still being alive:

- the record step of each build (:func:`record_arrival`) reads the manifest of its own build, and
  marks the build lost when nothing arrived (its build task gave up), so the release re-queues;
- :func:`sweep`, at the start of every build_wheels run, records each folder whose build is still in
  flight and whose manifest has settled (its run timed out, or its record step never ran), re-queues
  the builds a worker handed back (:func:`send_hand_back`), and removes the folders of builds that are
  no longer in flight (lost, recorded, gone) once they have settled.

The manifest is the worker's word, no more trusted than an XCom it could have sent: intake checks
every file against it, and the build row (what the claim handed out) says what it must answer. Which
account may answer is the index host's own record too: the first account whose folder answers a
build (an outcome or a hand-back) is bound to it in the build row (:func:`answering_folder`), and
whatever any other account sends for that build, hand-backs included, is refused and removed.
Everything received is read without following links (:mod:`wheelwright.beneath`).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import stat
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from typing import TYPE_CHECKING

from wheelwright import beneath
from wheelwright.builds.builder import BuildOutcome
from wheelwright.builds.transfer import (MANIFEST, TransferError, discard, incoming_folder, is_account,
                                         make_remote_folder, remote_folder, rename_over)

if TYPE_CHECKING:  # the index host's side needs the catalog; a worker sending its manifest does not
    import psycopg

    from wheelwright.builds.queue import BuildRequest

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 4 << 20        # an outcome lists a few wheels; anything bigger is not one
SETTLE = timedelta(minutes=10)      # a folder untouched this long is not being written or recorded
HANDED_BACK = "handed-back"         # a worker's word that it will not build this one (no outcome comes)
STALE_COPIES = timedelta(days=1)    # the index host's copies no record step can still be using


# --- worker side -----------------------------------------------------------------------------------

def send_manifest(sftp, outcome: dict, remote_incoming: str) -> None:
    """Send ``outcome`` (``BuildOutcome.to_dict()``) as the build folder's manifest, after its files.

    Written under a hidden ``.part`` name and renamed: a manifest is there whole or not at all.
    """
    folder = remote_folder(remote_incoming, outcome["build_id"])
    try:
        _put_whole(sftp, folder, MANIFEST, json.dumps(outcome, sort_keys=True).encode())
    except (OSError, IOError) as exc:
        raise TransferError(f"sending the outcome of build {outcome['build_id']} failed: {exc}") from exc


def send_hand_back(sftp, remote_incoming: str, build_id: int) -> None:
    """Tell the index host that this worker will not build ``build_id`` (its batch ran long, see
    :mod:`wheelwright.builds.batches`): the next sweep puts it back in the queue."""
    folder = make_remote_folder(sftp, remote_incoming, build_id)
    try:
        _put_whole(sftp, folder, HANDED_BACK, b"")
    except (OSError, IOError) as exc:
        raise TransferError(f"handing back build {build_id} failed: {exc}") from exc


def _put_whole(sftp, folder: str, name: str, data: bytes) -> None:
    """Write ``data`` as ``folder/name`` under a hidden ``.part`` name, then rename: whole or not at all."""
    part, final = posixpath.join(folder, f".{name}.part"), posixpath.join(folder, name)
    with sftp.open(part, "wb") as f:
        f.write(data)
    rename_over(sftp, part, final)


def arrived(sftp, remote_incoming: str, build_id: int) -> bool:
    """Whether the outcome of ``build_id`` is in its folder on the index host (sent whole, not yet
    recorded): a retried task need not build it again."""
    try:
        sftp.stat(posixpath.join(remote_folder(remote_incoming, build_id), MANIFEST))
    except FileNotFoundError:
        return False
    return True


# --- index host side -------------------------------------------------------------------------------

def read_manifest(folder: str | os.PathLike) -> BuildOutcome | None:
    """The outcome a worker sent into ``folder``; None if none arrived (yet). Read beneath the folder,
    never through a link, and only from a plain file."""
    folder = Path(folder)
    try:
        fd = _open_in(folder, MANIFEST)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TransferError(f"the outcome in {folder.name} cannot be read: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise TransferError(f"the outcome in {folder.name} is over {MAX_MANIFEST_BYTES} bytes")
    try:
        return BuildOutcome.from_dict(json.loads(data))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TransferError(f"the outcome in {folder.name} is not one: {exc!r}") from exc


def _open_in(folder: Path, name: str) -> int:
    """A descriptor of the plain file ``name`` in the received ``folder``, opened beneath
    ``folder``'s parent without following any link."""
    parent = beneath.open_root(folder.parent)
    try:
        return beneath.open_file(parent, f"{folder.name}/{name}")
    finally:
        os.close(parent)


def _holds(folder: Path, name: str) -> bool:
    """Whether the received ``folder`` holds a plain file ``name`` (a link does not count)."""
    try:
        os.close(_open_in(folder, name))
    except OSError:
        return False
    return True


def _handed_back(folder: Path) -> bool:
    """Whether a build's folder holds its worker's hand-back and no outcome: nothing more will come."""
    return _holds(folder, HANDED_BACK) and not _holds(folder, MANIFEST)


def _answers(folder: Path) -> bool:
    """Whether a build's folder holds an answer: its outcome, or its worker's hand-back."""
    return _holds(folder, MANIFEST) or _holds(folder, HANDED_BACK)


def account_folders(incoming_dir: str | os.PathLike) -> dict[str, Path]:
    """Each builder account's own folder in the incoming folder (``<incoming>/<account>/``), by account."""
    try:
        entries = list(os.scandir(incoming_dir))
    except FileNotFoundError:
        return {}
    return {e.name: Path(e.path) for e in entries if is_account(e.name) and e.is_dir(follow_symlinks=False)}


def build_folders(incoming_dir: str | os.PathLike) -> dict[int, dict[str, Path]]:
    """Every build folder in every account's folder: ``build id -> {account: folder}``."""
    found: dict[int, dict[str, Path]] = {}
    for account, folder in account_folders(incoming_dir).items():
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:   # a folder its builder made unreadable: its loss alone
            log.warning("cannot read the incoming folder of account %s: %s", account, exc)
            continue
        for e in entries:
            if _is_build_id(e.name) and e.is_dir(follow_symlinks=False):
                found.setdefault(int(e.name), {})[account] = Path(e.path)
    return found


def _is_build_id(name: str) -> bool:
    """Whether ``name`` is a build folder's name exactly as :func:`incoming_folder` makes it (ASCII
    digits, no leading zero): ``017`` or ``١٧`` would be a second name for build 17."""
    return name.isascii() and name.isdigit() and name == str(int(name))


def _folders_of(incoming_dir: str | os.PathLike, build_id: int) -> dict[str, Path]:
    """The folders every account has for ``build_id``."""
    found = {}
    for account, folder in account_folders(incoming_dir).items():
        candidate = incoming_folder(folder, build_id)
        try:
            if stat.S_ISDIR(candidate.lstat().st_mode):
                found[account] = candidate
        except OSError:
            pass
    return found


def answering_folder(conn: psycopg.Connection, build_id: int, folders: dict[str, Path],
                     bound: str | None, may_answer=lambda account: True) -> Path | None:
    """The folder whose answer the index host reads for ``build_id``, binding the build to its account
    on first sight; None when no account has answered yet (or several did).

    ``folders``: every account's folder for the build; ``bound``: the account its row names;
    ``may_answer(account)``: whether the index host's configuration lets that account answer the
    build's target (``WHEELWRIGHT_BUILDER_ACCOUNTS``). The account is known from where its folder lies
    (the SSH login decides that), never from what a builder writes. Folders of accounts that may not
    answer the target are refused at once. The first account to answer (an outcome or a hand-back) is
    bound to the build in its row; every other account's folder for it is refused and discarded,
    hand-backs included. Two accounts answering a build not bound yet are both refused: the build is
    lost and is built again.
    """
    from wheelwright.builds.queue import mark_lost
    from wheelwright.catalog import db
    for account in [a for a in folders if not may_answer(a)]:
        log.warning("refused what builder account %s sent for build %d: that account does not build "
                    "its target", account, build_id)
        discard(folders.pop(account))
    if bound is None:
        answered = sorted(account for account, folder in folders.items() if _answers(folder))
        if len(answered) > 1:
            why = f"answered by several builder accounts ({', '.join(answered)}): none is believed"
            log.warning("build %d %s", build_id, why)
            mark_lost(conn, build_id, why)
            for folder in folders.values():
                discard(folder)
            return None
        if not answered:
            return None
        row = conn.execute(db.query("build_bind_account"), {"build_id": build_id, "account": answered[0]}).fetchone()
        if row is None:
            return None   # no longer in flight: a sweep removes its folders
        bound = row[0]
        log.info("build %d is bound to builder account %s", build_id, bound)
    for account, folder in folders.items():
        if account != bound:
            log.warning("refused what builder account %s sent for build %d: the build is bound to %s",
                        account, build_id, bound)
            discard(folder)
    return folders.get(bound)


def record_arrival(conn: psycopg.Connection, request: BuildRequest, incoming_dir: str | os.PathLike,
                   output: str | os.PathLike, *, may_answer=lambda account, target: True) -> list[str] | None:
    """Record what arrived for ``request``; the packages whose published files changed.

    Reads only the folder of the account the build is bound to (:func:`answering_folder`). None if
    nothing (whole) arrived: the caller decides whether that means lost. A manifest that does not
    answer the request, or files that do not match it, mark the build lost and raise
    :class:`~wheelwright.builds.transfer.TransferError`.
    """
    from wheelwright.builds import intake
    from wheelwright.builds.queue import mark_lost
    from wheelwright.catalog import db

    build_id = request["build_id"]
    row = conn.execute(db.query("build_in_flight"), {"build_id": [build_id]}).fetchone()
    folders = _folders_of(incoming_dir, build_id)
    if row is None or row[5] != "building" or not folders:
        return None
    folder = answering_folder(conn, build_id, folders, row[6], lambda account: may_answer(account, row[3]))
    if folder is None:
        return None
    try:
        outcome = read_manifest(folder)
        if outcome is None:
            return None
        if (outcome.build_id, outcome.package, outcome.version) != (
                request["build_id"], request["package"], request["version"]):
            raise TransferError(f"the outcome in {folder.name} answers build {outcome.build_id} of "
                                f"{outcome.package}=={outcome.version}, not this one")
    except TransferError as exc:
        mark_lost(conn, build_id, str(exc))
        discard(folder)
        raise
    return intake.receive(conn, request, outcome, folder.parent, output)


@dataclass
class Sweep:
    """What one sweep of the incoming folder did."""

    recorded: list[int] = field(default_factory=list)    # builds recorded that no record step had
    refused: list[int] = field(default_factory=list)     # ... whose transfer was refused (now lost)
    removed: list[str] = field(default_factory=list)     # folders of builds no longer in flight
    changed: list[str] = field(default_factory=list)     # packages whose published files changed
    handed_back: list[int] = field(default_factory=list)  # builds their worker will not build (re-queued)

    def summary(self) -> dict:
        return {"recorded": len(self.recorded), "refused": len(self.refused),
                "removed": len(self.removed), "packages_changed": len(self.changed),
                "handed_back": len(self.handed_back)}


def sweep(conn: psycopg.Connection, incoming_dir: str | os.PathLike, output: str | os.PathLike, *,
          settle: timedelta = SETTLE, now: float | None = None,
          may_answer=lambda account, target: True) -> Sweep:
    """Record settled arrivals no record step took, and remove folders of builds no longer in flight.

    Every account's folder is swept. A folder counts once nothing in it changed for ``settle``: until
    then a worker may still be sending, or a record step recording it. Folders whose build is in flight
    without an answer stay: the build may still be running (expiring lost builds ends that wait). A
    build answered from another account than the one it is bound to loses that folder at once
    (:func:`answering_folder`). A folder its worker marked handed back (and sent no outcome to) is acted
    on at once: the build is lost, so its release is claimed again, and the folder goes.
    """
    from wheelwright.builds.queue import BuildRequest, mark_lost
    from wheelwright.catalog import db

    now = time.time() if now is None else now
    result = Sweep()
    _drop_stale_copies(incoming_dir, now - STALE_COPIES.total_seconds())
    found = build_folders(incoming_dir)
    if not found:
        return result
    rows = {row[0]: row for row in conn.execute(db.query("build_in_flight"),
                                                {"build_id": sorted(found)}).fetchall()}
    for build_id, folders in sorted(found.items()):
        row = rows.get(build_id)
        if row is None or row[5] != "building":
            for folder in folders.values():
                if now - _last_change(folder) >= settle.total_seconds() or _handed_back(folder):
                    discard(folder)
                    result.removed.append(f"{folder.parent.name}/{folder.name}")
                    log.info("removed incoming folder %s/%s: its build is %s", folder.parent.name, folder.name,
                             "gone" if row is None else row[5])
            continue
        folder = answering_folder(conn, build_id, folders, row[6],
                                  lambda account, target=row[3]: may_answer(account, target))
        if folder is None:
            continue
        if _handed_back(folder):
            if mark_lost(conn, build_id, "handed back by its worker when its batch ran long; it is built "
                                         "again"):
                result.handed_back.append(build_id)
                log.info("build %d was handed back by its worker: queued again", build_id)
            discard(folder)
            continue
        if now - _last_change(folder) < settle.total_seconds():
            continue
        _, package, version, target, abi, _, _ = row
        request = BuildRequest(build_id=build_id, package=package, version=version, target=target, abi=abi)
        try:
            changed = record_arrival(conn, request, incoming_dir, output, may_answer=may_answer)
        except TransferError as exc:
            result.refused.append(build_id)
            log.warning("swept build %d of %s==%s: refused: %s", build_id, package, version, exc)
            continue
        if changed is not None:
            result.recorded.append(build_id)
            result.changed = sorted(set(result.changed) | set(changed))
            log.warning("swept build %d of %s==%s: recorded (its record step never ran)",
                        build_id, package, version)
    return result


def _drop_stale_copies(incoming_dir: str | os.PathLike, before: float) -> None:
    """Remove the index host's own copies (``.intake``) that a crashed record step left behind."""
    staging = Path(incoming_dir) / ".intake"
    try:
        entries = list(os.scandir(staging))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < before:
            discard(entry.path)
            log.info("removed copies a record step left in %s", entry.path)


def _last_change(folder: Path) -> float:
    """The newest modification time of ``folder`` and the files in it."""
    newest = folder.lstat().st_mtime
    for entry in os.scandir(folder):
        try:
            newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
        except FileNotFoundError:
            pass
    return newest
