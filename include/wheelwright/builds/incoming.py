"""The index host's incoming folder: how a build's result arrives, and nothing that arrived is forgotten.

A worker sends a build's files into ``<incoming>/<build_id>/`` (:mod:`~wheelwright.builds.transfer`),
then, last, the build's outcome as ``outcome.json`` (:func:`send_manifest`): a folder with a manifest
holds everything the record step needs, whoever runs it and whenever. So recording does not depend on
the build task's XCom, nor on the run that claimed the build still being alive:

- the record step of each build (:func:`record_arrival`) reads the manifest of its own build, and
  marks the build lost when nothing arrived (its build task gave up), so the release re-queues;
- :func:`sweep`, at the start of every build_wheels run, records each folder whose build is still in
  flight and whose manifest has settled (its run timed out, or its record step never ran), re-queues
  the builds a worker handed back (:func:`send_hand_back`), and removes the folders of builds that are
  no longer in flight (lost, recorded, gone) once they have settled.

The manifest is the worker's word, no more trusted than an XCom it could have sent: intake checks
every file against it, and the build row (what the claim handed out) says what it must answer.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from typing import TYPE_CHECKING

from wheelwright.builds.builder import BuildOutcome
from wheelwright.builds.transfer import (MANIFEST, TransferError, discard, incoming_folder, make_remote_folder,
                                         remote_folder, rename_over)

if TYPE_CHECKING:  # the index host's side needs the catalog; a worker sending its manifest does not
    import psycopg

    from wheelwright.builds.queue import BuildRequest

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 4 << 20        # an outcome lists a few wheels; anything bigger is not one
SETTLE = timedelta(minutes=10)      # a folder untouched this long is not being written or recorded
HANDED_BACK = "handed-back"         # a worker's word that it will not build this one (no outcome comes)


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
    """The outcome a worker sent into ``folder``; None if none arrived (yet)."""
    path = Path(folder) / MANIFEST
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_MANIFEST_BYTES:
        raise TransferError(f"the outcome in {Path(folder).name} is over {MAX_MANIFEST_BYTES} bytes")
    try:
        return BuildOutcome.from_dict(json.loads(data))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TransferError(f"the outcome in {Path(folder).name} is not one: {exc!r}") from exc


def record_arrival(conn: psycopg.Connection, request: BuildRequest, incoming_dir: str | os.PathLike,
                   output: str | os.PathLike) -> list[str] | None:
    """Record what arrived for ``request``; the packages whose published files changed.

    None if nothing (whole) arrived: the caller decides whether that means lost. A manifest that does
    not answer the request, or files that do not match it, mark the build lost and raise
    :class:`~wheelwright.builds.transfer.TransferError`.
    """
    from wheelwright.builds import intake
    from wheelwright.builds.queue import mark_lost

    folder = incoming_folder(incoming_dir, request["build_id"])
    try:
        outcome = read_manifest(folder)
        if outcome is None:
            return None
        if (outcome.build_id, outcome.package, outcome.version) != (
                request["build_id"], request["package"], request["version"]):
            raise TransferError(f"the outcome in {folder.name} answers build {outcome.build_id} of "
                                f"{outcome.package}=={outcome.version}, not this one")
    except TransferError as exc:
        mark_lost(conn, request["build_id"], str(exc))
        discard(folder)
        raise
    return intake.receive(conn, request, outcome, incoming_dir, output)


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
          settle: timedelta = SETTLE, now: float | None = None) -> Sweep:
    """Record settled arrivals no record step took, and remove folders of builds no longer in flight.

    A folder counts once nothing in it changed for ``settle``: until then a worker may still be
    sending, or a record step recording it. Folders whose build is in flight without a manifest stay:
    the build may still be running (expiring lost builds ends that wait). A folder its worker marked
    handed back (and sent no outcome to) is acted on at once: the build is lost, so its release is
    claimed again, and the folder goes.
    """
    from wheelwright.builds.queue import BuildRequest, mark_lost
    from wheelwright.catalog import db

    incoming_dir = Path(incoming_dir)
    now = time.time() if now is None else now
    result = Sweep()
    try:
        entries = list(os.scandir(incoming_dir))
    except FileNotFoundError:
        return result
    builds = {int(e.name): Path(e.path) for e in entries if e.name.isdigit() and e.is_dir(follow_symlinks=False)}
    for build_id, folder in sorted(builds.items()):
        if (folder / HANDED_BACK).is_file() and not (folder / MANIFEST).exists():
            if mark_lost(conn, build_id, "handed back by its worker when its batch ran long; it is built "
                                         "again"):
                result.handed_back.append(build_id)
                log.info("build %d was handed back by its worker: queued again", build_id)
            discard(folder)
            del builds[build_id]
    folders = {build_id: folder for build_id, folder in builds.items()
               if now - _last_change(folder) >= settle.total_seconds()}
    if not folders:
        return result
    rows = {row[0]: row for row in conn.execute(db.query("build_in_flight"),
                                                {"build_id": sorted(folders)}).fetchall()}
    for build_id, folder in sorted(folders.items()):
        row = rows.get(build_id)
        if row is None or row[5] != "building":
            discard(folder)
            result.removed.append(folder.name)
            log.info("removed incoming folder %s: its build is %s", folder.name,
                     "gone" if row is None else row[5])
            continue
        _, package, version, target, abi, _ = row
        request = BuildRequest(build_id=build_id, package=package, version=version, target=target, abi=abi)
        try:
            changed = record_arrival(conn, request, incoming_dir, output)
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


def _last_change(folder: Path) -> float:
    """The newest modification time of ``folder`` and the files in it."""
    newest = folder.stat().st_mtime
    for entry in os.scandir(folder):
        try:
            newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
        except FileNotFoundError:
            pass
    return newest
