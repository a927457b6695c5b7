"""Recording a build: the one place where a worker's result becomes part of the index.

A worker is a machine that runs anybody's ``setup.py``; what it sends back is a claim, not a fact. So
the index host believes nothing a builder says. The package, the version, the target and its ABI and
platform come from the index host's own build row, selected by the build id of the request it handed
out. The worker's outcome must name that same build, release and target, or it is refused. Every file
must have been announced, and must have arrived with the size and sha256 announced (nothing else may
lie in the build's incoming folder). Every wheel is then read again here
(:func:`wheelwright.builds.analysis.check_received_wheel`): its file name must be a wheel name of that
release whose tags fit the target (or are pure), its zip must be safe to read, its ``METADATA`` must
name the same package and version. ``Requires-Python`` and the published ``.metadata`` come from that
read, never from the worker's word. A refused outcome is logged in one line, recorded on the build row
with its reason (the project page shows it), and nothing of it reaches the published tree.

A build takes minutes or hours; the catalog moves on meanwhile. The release may be deleted on PyPI,
skipped or quarantined by an operator, or deleted and re-created (its build row then went with the
old one); the build may have been given up as lost and handed to another worker. This room owns the
decision, on the index host, in one transaction with the build row and the release locked: either the
result is recorded whole — build status, duration, builder and log, the wheels with their tags and
metadata hash, their apt dependencies, the files renamed into the published tree, the package marked
changed — or nothing of it is published and its files are dropped.

A URL never changes its bytes: a wheel whose name was ever published (``wheel_names``) with other
bytes is published under the next free PEP 427 build number instead (``foo-1.0-1-cp311-...``); one
whose bytes equal a published one adds nothing. A transient failure (the worker could not fetch the
sdist or build dependencies; files that did not arrive whole) is not final: see
:mod:`wheelwright.builds.retries`.

Published layout (shared with the index writer): wheels and their PEP 658 ``.metadata`` in
``<output>/simple/<canon>/``, logs in ``<output>/logs/NNNN/NNNN/NNNN.txt.gz`` by build id.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg
from packaging.utils import canonicalize_name

from wheelwright.builds import install_test, retries
from wheelwright.builds.analysis import (CheckedWheel, FileInfo, WheelRefused, check_plain_filename,
                                         check_received_wheel, with_build_number)
from wheelwright.builds.queue import mark_lost
from wheelwright.builds.transfer import (AcceptedFile, TransferError, accept, discard, drop_staged, incoming_folder,
                                         inside, place, unannounced, wheel_destination, write_file)
from wheelwright.catalog import db
from wheelwright.catalog.store import mark_changed
from wheelwright.errors import WheelwrightError
from wheelwright.publish.writer import log_path_for  # the published tree's layout belongs to the index writer

log = logging.getLogger(__name__)

MAX_LOG = 16 << 20                 # bytes of a gzipped build log (the builder caps its output at 1 MiB)
MAX_LOG_TEXT = 64 << 20            # bytes it may unpack to
MAX_FILES = 200                    # files one build may send
MAX_DURATION = 7 * 24 * 3600.0     # seconds a build may say it took
NAMES_LOCK = "wheelwright.wheel-names:"  # + package: one recording at a time chooses its wheel names
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_APT_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]{0,99}\Z")


class OutcomeRefused(WheelwrightError):
    """What a worker sent for a build cannot be believed; nothing of it was published."""


@dataclass(frozen=True)
class BuildRow:
    """The index host's own record of a build it handed out."""

    build_id: int
    package: str
    version: str
    target: str
    abi: str
    platform: str
    status: str


@dataclass(frozen=True)
class AnnouncedWheel:
    file: FileInfo
    metadata: FileInfo | None
    dependencies: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Announced:
    """A worker's outcome, parsed at the door: its shape is checked, its claims are not believed yet."""

    build_id: int
    package: str
    version: str
    target: str
    status: str                     # 'success' or 'failure'
    reason: str | None
    builder: str
    duration: float
    transient: bool                 # the failure says nothing about the release (see retries)
    log: FileInfo | None
    wheels: tuple[AnnouncedWheel, ...]

    def files(self) -> list[FileInfo]:
        found = []
        for wheel in self.wheels:
            found.append(wheel.file)
            if wheel.metadata is not None:
                found.append(wheel.metadata)
        if self.log is not None:
            found.append(self.log)
        return found


# --- pure: reading a worker's outcome --------------------------------------------------------------

def read_outcome(outcome) -> Announced:
    """Parse a worker's outcome (a dict from XCom, or a BuildOutcome) into :class:`Announced`.

    Refuses (:class:`OutcomeRefused`) anything not shaped like an outcome: wrong types, names with
    paths, hashes that are not hashes, too many files.
    """
    if hasattr(outcome, "to_dict"):
        outcome = outcome.to_dict()
    if not isinstance(outcome, Mapping):
        raise OutcomeRefused(f"the outcome is a {type(outcome).__name__}, not a mapping")
    try:
        status = _text(outcome, "status")
        if status not in ("success", "failure"):
            raise OutcomeRefused(f"unknown build status {status!r}")
        wheels = outcome.get("wheels") or []
        if not isinstance(wheels, list):
            raise OutcomeRefused("its wheels are not a list")
        announced = Announced(
            build_id=_integer(outcome.get("build_id"), "build_id"),
            package=_text(outcome, "package"), version=_text(outcome, "version"),
            target=_text(outcome, "target"), status=status,
            reason=_one_line(outcome.get("reason")), builder=_one_line(outcome.get("builder"), 200) or "",
            duration=_duration(outcome.get("duration")), transient=outcome.get("transient") is True,
            log=None if outcome.get("log") is None else _file_info(outcome["log"]),
            wheels=tuple(_wheel(w) for w in wheels))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise OutcomeRefused(f"the outcome is malformed ({type(exc).__name__}: {str(exc)[:200]})") from exc
    files = announced.files()
    if len(files) > MAX_FILES:
        raise OutcomeRefused(f"it announces {len(files)} files, more than {MAX_FILES}")
    names = [f.filename for f in files]
    if len(set(names)) != len(names):
        raise OutcomeRefused("it announces a file name twice")
    return announced


def _text(d: Mapping, key: str) -> str:
    value = d[key]
    if not isinstance(value, str) or not value or len(value) > 300:
        raise OutcomeRefused(f"its {key} is not a short string: {str(value)[:100]!r}")
    return value


def _integer(value, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise OutcomeRefused(f"its {what} is not an integer: {str(value)[:100]!r}")
    return value


def _one_line(value, limit: int = 500) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise OutcomeRefused(f"a text field is a {type(value).__name__}")
    return " ".join(value.split())[:limit] or None


def _duration(value) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OutcomeRefused(f"its duration is not a number: {str(value)[:100]!r}")
    return min(max(float(value), 0.0), MAX_DURATION)


def _file_info(d) -> FileInfo:
    if not isinstance(d, Mapping):
        raise OutcomeRefused("a file entry is not a mapping")
    filename, sha256, size = d["filename"], d["sha256"], d["size"]
    try:
        check_plain_filename(filename)
    except WheelRefused as exc:
        raise OutcomeRefused(str(exc)) from exc
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise OutcomeRefused(f"the sha256 of {filename} is not a sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise OutcomeRefused(f"the size of {filename} is not a size")
    return FileInfo(filename, sha256, size)


def _wheel(d) -> AnnouncedWheel:
    if not isinstance(d, Mapping):
        raise OutcomeRefused("a wheel entry is not a mapping")
    file = _file_info(d)
    if not file.filename.endswith(".whl"):
        raise OutcomeRefused(f"{file.filename} is announced as a wheel but is not named like one")
    metadata = None if d.get("metadata") is None else _file_info(d["metadata"])
    if metadata is not None and metadata.filename != file.filename + ".metadata":
        raise OutcomeRefused(f"{metadata.filename} is announced as the metadata of {file.filename}")
    dependencies = d.get("dependencies") or []
    if not isinstance(dependencies, list) or len(dependencies) > 1000:
        raise OutcomeRefused(f"the dependencies of {file.filename} are not a short list")
    deps = []
    for dep in dependencies:
        if (not isinstance(dep, (list, tuple)) or len(dep) != 2
                or not all(isinstance(part, str) for part in dep)):
            raise OutcomeRefused(f"a dependency of {file.filename} is malformed")
        tool, name = dep
        if tool == "apt" and _APT_PACKAGE.match(name):
            deps.append((tool, name))
        elif tool == "unowned" and 0 < len(name) <= 300 and name.isprintable():
            deps.append((tool, name))
        else:
            raise OutcomeRefused(f"a dependency of {file.filename} is malformed: {str(dep)[:100]!r}")
    return AnnouncedWheel(file, metadata, tuple(sorted(set(deps))))


def identity_problem(request: Mapping, claim: Announced, row: BuildRow) -> str | None:
    """Why ``claim`` does not answer ``request`` for the build ``row``, or None."""
    if request.get("package") != row.package or request.get("version") != row.version or (
            request.get("target") is not None and request.get("target") != row.target):
        raise ValueError(f"request {dict(request)!r} does not match its build row {row!r}")
    if claim.build_id != row.build_id:
        return f"the outcome is of build {claim.build_id}, not of build {row.build_id}"
    if canonicalize_name(claim.package) != row.package:
        return f"the outcome is of the package {claim.package!r}, not {row.package!r}"
    if claim.version != row.version:
        return f"the outcome is of version {claim.version!r}, not {row.version!r}"
    if claim.target != row.target:
        return f"the outcome is for the target {claim.target!r}, not {row.target!r}"
    return None


def choose_name(wheel: CheckedWheel, slot: list[tuple[str, int, str, int | None]],
                taken_on_disk=lambda name: False) -> tuple[str, bool]:
    """``(file name to publish wheel under, whether that name is listed already)``.

    ``slot``: every ``(filename, build_number, sha256, listing build or None)`` ever published with the
    wheel's package, version and tags. The same bytes take their old name again; other bytes never take
    a name that was published: they get the next free build number. ``taken_on_disk(name)`` says a file
    of other bytes lies under that name in the tree (left by something the catalog no longer lists).
    """
    for filename, _number, sha256, listed_by in slot:
        if sha256 == wheel.sha256:
            return filename, listed_by is not None
    names = {filename for filename, *_ in slot}
    if wheel.filename not in names and not taken_on_disk(wheel.filename) and not slot:
        return wheel.filename, False
    number = max([n for _, n, _, _ in slot] + [wheel.build_number]) + 1
    while (candidate := with_build_number(wheel.filename, number)) in names or taken_on_disk(candidate):
        number += 1
    return candidate, False


# --- the edge: the catalog and the tree ------------------------------------------------------------

def build_row(conn: psycopg.Connection, build_id: int) -> BuildRow | None:
    row = conn.execute(db.query("build_intake_row"), (build_id,)).fetchone()
    return None if row is None else BuildRow(*row)


def receive(conn: psycopg.Connection, request: Mapping, outcome, account_dir: str | os.PathLike,
            output: str | os.PathLike) -> list[str]:
    """Check what a worker sent for ``request`` and record it: the record step's one call.

    ``request`` is the build request the index host handed out (its claim), ``outcome`` what the
    worker answered (an XCom dict), ``account_dir`` the folder of the account the index host decided
    answers this build (:func:`wheelwright.builds.incoming.answering_folder`): its files are in
    ``<account_dir>/<build_id>/``. Returns the packages whose pages change. Whatever the worker did
    wrong is recorded, never raised: a forged or malformed outcome is refused (a failure with the
    reason), files that did not arrive whole make the build wait and retry. Exceptions mean the index
    host itself failed (the catalog, the disk): the files stay in the incoming folder for a retry.
    """
    if not isinstance(request, Mapping) or "build_id" not in request:
        raise TypeError(f"receive needs the build request the index host handed out, not {request!r}")
    build_id = int(request["build_id"])
    folder = incoming_folder(account_dir, build_id)
    row = build_row(conn, build_id)
    if row is None:
        log.warning("build %d of %s==%s dropped: the build is gone (its release was deleted while it ran)",
                    build_id, request.get("package"), request.get("version"))
        discard(folder)
        return []
    try:
        claim = read_outcome(outcome)
        problem = identity_problem(request, claim, row)
        if problem is not None:
            raise OutcomeRefused(problem)
        if extra := unannounced(folder, claim.files()):
            raise OutcomeRefused(f"files it did not announce arrived: {', '.join(extra[:5])[:300]}")
        accepted = accept(folder, claim.files())
    except OutcomeRefused as exc:
        discard(folder)
        return refuse(conn, row, str(exc), builder=_builder_of(outcome))
    except TransferError as exc:
        discard(folder)
        return _retry(conn, row, f"its files did not arrive whole: {exc}")
    try:
        changed = record(conn, request, claim, accepted, output)
    finally:
        drop_staged(accepted)   # the index host's copies; what was published is no longer among them
    discard(folder)  # only now: if recording failed, a retry of this step finds the files again
    return changed


def refuse(conn: psycopg.Connection, row: BuildRow, why: str, *, builder: str = "") -> list[str]:
    """Record that the outcome of ``row``'s build was refused (a final failure); the tree is untouched."""
    reason = f"refused: {why}"[:500]
    log.warning("build %d of %s==%s for %s refused: %s", row.build_id, row.package, row.version,
                row.target, why)
    with conn.transaction():
        updated = conn.execute(db.query("build_record_result"), {
            "build_id": row.build_id, "status": "failure", "reason": reason, "builder": builder[:200],
            "duration": None, "log_path": None, "transient": False, "not_before": None}).rowcount
        if updated:
            mark_changed(conn, [row.package])
    return [row.package] if updated else []


def _retry(conn: psycopg.Connection, row: BuildRow, why: str) -> list[str]:
    with conn.transaction():
        locked = conn.execute("SELECT status FROM builds WHERE build_id = %s FOR UPDATE",
                              (row.build_id,)).fetchone()
        if locked is None or locked[0] != "building":
            return []
        status, reason, not_before = retries.transient_outcome(conn, row.build_id, why)
        conn.execute(db.query("build_record_result"), {
            "build_id": row.build_id, "status": status, "reason": reason[:500], "builder": "",
            "duration": None, "log_path": None, "transient": True, "not_before": not_before})
        mark_changed(conn, [row.package])
    log.warning("build %d of %s==%s for %s: %s", row.build_id, row.package, row.version, row.target, reason)
    return [row.package]


def _builder_of(outcome) -> str:
    try:
        builder = outcome.get("builder") if isinstance(outcome, Mapping) else getattr(outcome, "builder", "")
        return " ".join(str(builder or "").split())[:200]
    except Exception:  # noqa: BLE001 - a hostile object: it named no builder
        return ""


def record(conn: psycopg.Connection, request: Mapping, outcome, accepted_files: list[AcceptedFile],
           output: str | os.PathLike, *, imported: bool = False) -> list[str]:
    """Record ``outcome`` of ``request`` and publish its ``accepted_files``, or drop them.

    ``accepted_files`` passed :func:`~wheelwright.builds.transfer.accept` (sizes and hashes). Returns
    the packages whose pages change ([] when the result was dropped). ``imported``: an operator's wheel
    built by hand (:mod:`wheelwright.builds.imports`), published even for a release skipped for the
    builders (a skip stops builds, not what an operator brings).
    """
    claim = outcome if isinstance(outcome, Announced) else read_outcome(outcome)
    row = build_row(conn, int(request["build_id"]))
    if row is None:
        log.warning("build %d of %s==%s dropped: the build is gone (its release was deleted while it ran)",
                    request["build_id"], request.get("package"), request.get("version"))
        drop_staged(accepted_files)
        return []
    if (problem := identity_problem(request, claim, row)) is not None:
        drop_staged(accepted_files)
        return refuse(conn, row, problem, builder=claim.builder)
    output = Path(output)
    by_name = {f.filename: f for f in accepted_files}
    missing = [f.filename for f in claim.files() if f.filename not in by_name]
    if missing:
        raise TransferError(f"build {row.build_id}: not received: {', '.join(missing)}")

    status, reason, transient = claim.status, claim.reason, claim.transient and claim.status == "failure"
    checked: list[tuple[AnnouncedWheel, CheckedWheel]] = []
    refused = False
    if status == "success":
        try:
            if not claim.wheels:
                raise WheelRefused("the builder reported success but sent no wheel")
            slots = set()
            for wheel in claim.wheels:
                accepted = by_name[wheel.file.filename]
                received = check_received_wheel(accepted.path, package=row.package, version=row.version,
                                                abi=row.abi, platform=row.platform,
                                                digest=(accepted.sha256, accepted.size))
                slot = (received.python_tag, received.abi_tag, received.platform_tag)
                if slot in slots:
                    raise WheelRefused(f"refused {received.filename}: another wheel of the build has its tags")
                slots.add(slot)
                checked.append((wheel, received))
        except WheelRefused as exc:
            log.warning("build %d of %s==%s for %s refused: %s", row.build_id, row.package, row.version,
                        row.target, exc)
            status, reason, checked = "failure", str(exc), []
            refused = True
    elif status == "failure" and not reason:
        reason = "the build failed (the builder gave no reason)"
    tests: dict[str, install_test.TestResult] = {}
    if status == "success" and checked:
        tests, failed = install_tests(row, request, [(wheel, by_name[wheel.filename].path) for _a, wheel in checked])
        if failed is not None:  # a wheel that does not load is not served: the build failed
            log.warning("build %d of %s==%s for %s: %s", row.build_id, row.package, row.version, row.target,
                        failed.sentence())
            status, reason, checked = "failure", failed.sentence()[:500], []
    # A worker that sent a wheel its own checks should have stopped is not believed about its log either.
    log_file = by_name.get(claim.log.filename) if claim.log is not None and not refused else None
    if log_file is not None and (why_not_log := log_problem(log_file.path, log_file.size)) is not None:
        log.warning("build %d of %s==%s: its log is not published: %s", row.build_id, row.package,
                    row.version, why_not_log)
        log_file = None

    placed: list[tuple[Path | None, Path]] = []  # (where it came from or None if made here, where it went)
    published: list[str] = []
    try:
        with conn.transaction():
            locked = conn.execute(db.query("build_record_lock"), (row.build_id,)).fetchone()
            why_not = _why_not_published(locked, skip_holds=not imported)
            if why_not is not None:
                if locked is not None and locked[0] == "building":
                    mark_lost(conn, row.build_id, f"not published: {why_not}")
                log.warning("build %d of %s==%s dropped: %s", row.build_id, row.package, row.version, why_not)
                drop_staged(accepted_files)
                return []
            not_before = None
            if transient:
                status, reason, not_before = retries.transient_outcome(
                    conn, row.build_id, reason or "a transient failure")
            new_wheels: list[tuple[AnnouncedWheel, CheckedWheel, str]] = []
            if checked:
                # Names of one package are chosen one build at a time: two builds never take one name.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (NAMES_LOCK + row.package,))
                notes = []
                for announced, wheel in checked:
                    name, listed = _name_for(conn, row, wheel, output)
                    if listed:
                        notes.append(f"{wheel.filename} is identical to the published {name}")
                    else:
                        new_wheels.append((announced, wheel, name))
                if notes and not reason:
                    reason = "; ".join(notes)[:500]
            log_rel = log_path_for(row.build_id) if log_file is not None else None
            conn.execute(db.query("build_record_result"), {
                "build_id": row.build_id, "status": status, "reason": reason, "builder": claim.builder,
                "duration": timedelta(seconds=claim.duration), "log_path": log_rel,
                "transient": transient, "not_before": not_before})
            if new_wheels:
                conn.execute(db.query("build_record_wheels"), _wheel_columns(row, new_wheels, tests))
                conn.execute(db.query("build_remember_wheels"), _name_columns(row, new_wheels))
                deps = [(name, tool, dep) for announced, _w, name in new_wheels
                        for tool, dep in announced.dependencies]
                if deps:
                    conn.execute(db.query("build_record_dependencies"), {
                        "filename": [d[0] for d in deps], "tool": [d[1] for d in deps],
                        "dependency": [d[2] for d in deps]})
            mark_changed(conn, [row.package])
            # Files go into place before the commit: a placed file nobody lists is harmless, a listed
            # file that is not there is a 404 for pip.
            for _announced, wheel, name in new_wheels:
                source = by_name[wheel.filename].path
                destination = wheel_destination(output, row.package, name)
                metadata = destination.with_name(name + ".metadata")
                write_file(metadata, wheel.metadata)  # the bytes the index host read from the wheel
                placed.append((None, metadata))
                place(source, destination)
                placed.append((source, destination))
                published.append(name)
            if log_rel is not None:
                destination = inside(output, *log_rel.split("/"))
                place(log_file.path, destination)
                placed.append((log_file.path, destination))
    except BaseException:
        # The transaction rolled back: unpublish what it would have listed and put the files back
        # where they were (receive's copies, which it drops; the builder's upload stays in the incoming
        # folder, where a retry of the record step finds it again).
        for source, destination in placed:
            try:
                if source is None:
                    destination.unlink(missing_ok=True)
                else:
                    os.replace(destination, source)
            except OSError:
                destination.unlink(missing_ok=True)
        raise
    drop_staged([f for f in accepted_files if f.path.exists()])
    log.info("recorded build %d of %s==%s for %s: %s%s%s", row.build_id, row.package, row.version,
             row.target, status, f" ({reason})" if reason else "",
             f"; published {', '.join(published)}" if published else "")
    return [row.package]


def install_tests(row: BuildRow, request: Mapping, wheels: list[tuple[CheckedWheel, Path]]
                  ) -> tuple[dict[str, install_test.TestResult], install_test.TestResult | None]:
    """The index host's own install test of each compiled wheel of ``row``'s build, in a clean copy of
    the target's image (with the apt packages of the package's build settings); ``(results by received
    file name, the first failure or None)``. Targets built on a worker's own system are not tested."""
    results: dict[str, install_test.TestResult] = {}
    if not install_test.tested_on("index-host"):
        return results, None
    compiled = [(wheel, path) for wheel, path in wheels if not wheel.pure and install_test.has_compiled_code(path)]
    if not compiled:
        return results, None
    from wheelwright.builds import images, sandbox
    from wheelwright.builds.builder import DEFAULT_BUILD_USER
    from wheelwright.builds.targets import load_targets
    from wheelwright.config import Settings
    target = next((t for t in load_targets() if t.name == row.target), None)
    if target is None or not target.image:
        return results, None
    settings = Settings.from_env()
    extra = tuple((request.get("settings") or {}).get("apt") or ())
    root = images.image_root(target, images.default_store(settings), extra=extra,
                             progress=lambda line: log.info("%s", line))
    for wheel, path in compiled:
        result = install_test.run_test(path, row.package, root=root, where=install_test.where_of(target),
                                       workdir=settings.home / "install-tests",
                                       identity=sandbox.build_identity(DEFAULT_BUILD_USER))
        if not result.loads:
            return results, result
        results[wheel.filename] = result
    return results, None


def _name_for(conn: psycopg.Connection, row: BuildRow, wheel: CheckedWheel, output: Path) -> tuple[str, bool]:
    slot = conn.execute(db.query("build_wheel_slot"), {
        "package": row.package, "version": row.version, "python_tag": wheel.python_tag,
        "abi_tag": wheel.abi_tag, "platform_tag": wheel.platform_tag}).fetchall()

    def taken_on_disk(name: str) -> bool:
        return wheel_destination(output, row.package, name).exists()  # bytes we never recorded

    name, listed = choose_name(wheel, slot, taken_on_disk)
    if name != wheel.filename:
        log.info("build %d of %s==%s: %s is published as %s", row.build_id, row.package, row.version,
                 wheel.filename, name)
    return name, listed


def log_problem(path: Path, size: int) -> str | None:
    """Why the build log at ``path`` may not be published (served as gzip-encoded text), or None.

    It must be one gzip stream of at most :data:`MAX_LOG` bytes that unpacks to at most
    :data:`MAX_LOG_TEXT` (the builder caps its output far below that: more is a bomb).
    """
    if size > MAX_LOG:
        return f"{size:,} bytes, more than {MAX_LOG:,}"
    unpacked = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                unpacked += len(chunk)
                if unpacked > MAX_LOG_TEXT:
                    return f"it unpacks to more than {MAX_LOG_TEXT:,} bytes"
    except (OSError, EOFError, zlib.error) as exc:
        return f"not a gzip file ({exc})"
    return None


def _why_not_published(row, *, skip_holds: bool = True) -> str | None:
    if row is None:
        return "the build is gone (its release was deleted while it ran)"
    status, present, package_quarantined, package_skip, version_quarantined, version_skip, _, _ = row
    if status != "building":
        return f"the build was already {status} (given up or recorded) when its result arrived"
    if not present:
        return "the package was deleted while it was built"
    if package_quarantined or version_quarantined:
        return "the release was quarantined while it was built"
    if package_skip is not None and skip_holds:
        return f"the package was skipped while it was built ({package_skip})"
    if version_skip is not None and skip_holds:
        return f"the release was skipped while it was built ({version_skip})"
    return None


def _wheel_columns(row: BuildRow, wheels: list[tuple[AnnouncedWheel, CheckedWheel, str]],
                   tests: Mapping[str, install_test.TestResult] = {}) -> dict:
    tested = [tests.get(w.filename) for _a, w, _n in wheels]
    return {
        "glibc_floor": [w.glibc_floor for _a, w, _n in wheels],
        "tested_on": [t.where if t else None for t in tested],
        "test_result": [t.result if t else None for t in tested],
        "test_detail": [t.detail if t else None for t in tested],
        "filename": [name for _a, _w, name in wheels],
        "build_id": row.build_id, "package": row.package, "version": row.version,
        "size": [w.size for _a, w, _n in wheels], "sha256": [w.sha256 for _a, w, _n in wheels],
        "python_tag": [w.python_tag for _a, w, _n in wheels], "abi_tag": [w.abi_tag for _a, w, _n in wheels],
        "platform_tag": [w.platform_tag for _a, w, _n in wheels],
        "requires_python": [w.requires_python for _a, w, _n in wheels],
        "metadata_sha256": [w.metadata_sha256 for _a, w, _n in wheels],
        # one JSON array per wheel: PostgreSQL arrays of arrays must be rectangular
        "requires_dist": [json.dumps(list(w.requires_dist)) for _a, w, _n in wheels],
    }


def _name_columns(row: BuildRow, wheels: list[tuple[AnnouncedWheel, CheckedWheel, str]]) -> dict:
    from wheelwright.builds.analysis import build_number
    return {
        "package": row.package, "version": row.version,
        "filename": [name for _a, _w, name in wheels],
        "python_tag": [w.python_tag for _a, w, _n in wheels], "abi_tag": [w.abi_tag for _a, w, _n in wheels],
        "platform_tag": [w.platform_tag for _a, w, _n in wheels],
        "build_number": [build_number(name) for _a, _w, name in wheels],
        "sha256": [w.sha256 for _a, w, _n in wheels],
    }
