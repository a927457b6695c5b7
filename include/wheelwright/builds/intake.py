"""Recording a build: the one place where a worker's result becomes part of the index.

A build takes minutes or hours; the catalog moves on meanwhile. The release may be deleted on PyPI,
skipped or quarantined by an operator, or deleted and re-created (its build row then went with the
old one); the build may have been given up as lost and handed to another worker. This room owns the
decision, on the index host, in one transaction with the build row and the release locked: either the
result is recorded whole — build status, duration, builder and log, the wheels with their tags and
metadata hash, their apt dependencies, the files renamed into the published tree, the package marked
changed — or nothing of it is published and its files are dropped.

Published layout (shared with the index writer): wheels and their PEP 658 ``.metadata`` in
``<output>/simple/<canon>/``, logs in ``<output>/logs/NNNN/NNNN/NNNN.txt.gz`` by build id.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

import psycopg

from wheelwright.catalog import db
from wheelwright.builds.queue import mark_lost
from wheelwright.builds.builder import BuildOutcome
from wheelwright.catalog.store import mark_changed
from wheelwright.publish.writer import log_path_for  # the published tree's layout belongs to the index writer
from wheelwright.builds.transfer import AcceptedFile, TransferError, accept, discard, incoming_folder, place, wheel_destination

log = logging.getLogger(__name__)


def receive(conn: psycopg.Connection, request, outcome: BuildOutcome | dict,
            incoming_dir: str | os.PathLike, output: str | os.PathLike) -> list[str]:
    """Check what a worker sent for ``outcome`` and record it: the record step's one call.

    A transfer that does not match what the builder reported is refused: the build is marked lost
    (so it is built again) and :class:`~wheelwright.builds.transfer.TransferError` is raised.
    """
    if isinstance(outcome, dict):
        outcome = BuildOutcome.from_dict(outcome)
    folder = incoming_folder(incoming_dir, outcome.build_id)
    try:
        accepted = accept(folder, outcome.files())
    except TransferError as exc:
        mark_lost(conn, outcome.build_id, str(exc))
        raise
    changed = record(conn, request, outcome, accepted, output)
    discard(folder)  # only now: if recording failed, a retry of this step finds the files again
    return changed


def record(conn: psycopg.Connection, request, outcome: BuildOutcome | dict,
           accepted_files: list[AcceptedFile], output: str | os.PathLike) -> list[str]:
    """Record ``outcome`` of ``request`` and publish its ``accepted_files``, or drop them.

    Returns the packages whose published files changed ([] when the result was dropped).
    """
    if isinstance(outcome, dict):
        outcome = BuildOutcome.from_dict(outcome)
    if request is not None and (request["build_id"], request["package"], request["version"]) != (
            outcome.build_id, outcome.package, outcome.version):
        raise ValueError(f"outcome of build {outcome.build_id} does not answer request {request!r}")
    output = Path(output)
    by_name = {f.filename: f for f in accepted_files}
    missing = [f.filename for f in outcome.files() if f.filename not in by_name]
    if missing:
        raise TransferError(f"build {outcome.build_id}: not received: {', '.join(missing)}")

    placed: list[tuple[Path, Path]] = []  # (where it came from, where it went)
    try:
        with conn.transaction():
            row = conn.execute(db.query("build_record_lock"), (outcome.build_id,)).fetchone()
            why_not = _why_not_published(row)
            if why_not is not None:
                if row is not None and row[0] == "building":
                    mark_lost(conn, outcome.build_id, f"not published: {why_not}")
                log.warning("build %d of %s==%s dropped: %s", outcome.build_id, outcome.package,
                            outcome.version, why_not)
                _drop(accepted_files)
                return []
            status, reason = outcome.status, outcome.reason
            wheels = outcome.wheels if status == "success" else []
            taken = _already_published(conn, [w.filename for w in wheels])
            if wrong := _wrong_worker(wheels, abi=row[6], platform=row[7]):
                status, wheels, reason = "failure", [], f"not published: {wrong}"
            elif taken:
                status, wheels = "failure", []
                reason = "not published: " + "; ".join(f"{name} is already published by build {by}"
                                                        for name, by in taken)
            log_rel = log_path_for(outcome.build_id) if outcome.log is not None else None
            conn.execute(db.query("build_record_result"), {
                "build_id": outcome.build_id, "status": status, "reason": reason,
                "builder": outcome.builder[:200], "duration": timedelta(seconds=max(outcome.duration, 0)),
                "log_path": log_rel})
            if wheels:
                conn.execute(db.query("build_record_wheels"), _wheel_columns(outcome, wheels))
                deps = [(w.filename, tool, dep) for w in wheels for tool, dep in w.dependencies]
                if deps:
                    conn.execute(db.query("build_record_dependencies"), {
                        "filename": [d[0] for d in deps], "tool": [d[1] for d in deps],
                        "dependency": [d[2] for d in deps]})
            mark_changed(conn, [outcome.package])
            # Files go into place before the commit: a placed file nobody lists is harmless, a listed
            # file that is not there is a 404 for pip.
            for wheel in wheels:
                for name in (wheel.filename, wheel.metadata.filename):
                    destination = wheel_destination(output, outcome.package, name)
                    place(by_name[name].path, destination)
                    placed.append((by_name[name].path, destination))
            if log_rel is not None:
                destination = output / log_rel
                place(by_name[outcome.log.filename].path, destination)
                placed.append((by_name[outcome.log.filename].path, destination))
    except BaseException:
        # The transaction rolled back: unpublish what it would have listed, and put the files back
        # where a retry of the record step will look for them.
        for source, destination in placed:
            try:
                os.replace(destination, source)
            except OSError:
                destination.unlink(missing_ok=True)
        raise
    _drop([f for f in accepted_files if f.path.exists()])
    log.info("recorded build %d of %s==%s for %s: %s%s", outcome.build_id, outcome.package,
             outcome.version, outcome.target, status, f" ({reason})" if reason else "")
    return [outcome.package]


def _why_not_published(row) -> str | None:
    if row is None:
        return "the build is gone (its release was deleted while it ran)"
    status, present, package_quarantined, package_skip, version_quarantined, version_skip, _, _ = row
    if status != "building":
        return f"the build was already {status} (given up or recorded) when its result arrived"
    if not present:
        return "the package was deleted while it was built"
    if package_quarantined or version_quarantined:
        return "the release was quarantined while it was built"
    if package_skip is not None:
        return f"the package was skipped while it was built ({package_skip})"
    if version_skip is not None:
        return f"the release was skipped while it was built ({version_skip})"
    return None


def _wrong_worker(wheels, *, abi: str, platform: str) -> str | None:
    """Why ``wheels`` cannot be the target's (a worker of another kind served its queue), or None."""
    for w in wheels:
        if w.platform_tag not in ("any", platform):
            return (f"{w.filename} is for {w.platform_tag}, but the target builds for {platform}: "
                    "a worker of another platform serves its queue")
        if w.abi_tag not in ("none", "abi3", abi):
            return (f"{w.filename} is for {w.abi_tag}, but the target builds for {abi}: "
                    "the worker built with another Python")
    return None


def _already_published(conn: psycopg.Connection, filenames: list[str]) -> list[tuple[str, int]]:
    if not filenames:
        return []
    return conn.execute("SELECT filename, build_id FROM wheels WHERE filename = ANY(%s) ORDER BY filename",
                        (filenames,)).fetchall()


def _wheel_columns(outcome: BuildOutcome, wheels) -> dict:
    return {
        "filename": [w.filename for w in wheels],
        "build_id": outcome.build_id, "package": outcome.package, "version": outcome.version,
        "size": [w.size for w in wheels], "sha256": [w.sha256 for w in wheels],
        "python_tag": [w.python_tag for w in wheels], "abi_tag": [w.abi_tag for w in wheels],
        "platform_tag": [w.platform_tag for w in wheels],
        "requires_python": [w.requires_python for w in wheels],
        "metadata_sha256": [w.metadata.sha256 for w in wheels],
    }


def _drop(files: list[AcceptedFile]) -> None:
    for f in files:
        f.path.unlink(missing_ok=True)
