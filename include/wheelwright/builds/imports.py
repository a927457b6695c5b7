"""Wheels built by hand: what ``wheelwright import`` does (piwheels' ``piw-import``).

Some releases cannot build in a builder: they need a day of a Pi, a library no image carries, a
compiler flag nobody should set for everyone. An operator builds the wheel by hand and imports it.
Such a wheel is believed no more than a builder's: it goes through the index host's own door
(:mod:`wheelwright.builds.intake`), and this room owns bringing it there:

- the file name is read first: a wheel name whose project canonicalises to a package the catalog
  knows, of one of its releases (:class:`~wheelwright.operate.admin.UnknownRelease` otherwise);
- its tags choose the target (:func:`~wheelwright.builds.analysis.check_target_tags`): the first
  target, in build order, whose interpreter installs it (for a pure wheel the first target, where it
  serves every other one), or the one named with ``--target``; a wheel no target installs is refused
  with a sentence naming the targets;
- it is read as intake reads a builder's wheel (``check_received_wheel``: tags, a zip safe to read, a
  ``METADATA`` naming that release), and its compiled objects' libraries are resolved in the target's
  image, as a builder's analysis does, for its apt dependencies; all before anything is recorded, so a
  refused import leaves no trace;
- the wheels of one release and target become one build row that says who imported them
  (``imported_by``; its builder reads "imported by ..."), recorded by :func:`intake.record` like a
  builder's build: a build number if its name was published with other bytes, the ``.metadata``, the
  apt dependencies, the log (``--log``, gzipped here if it is plain text), the project page.

A release the builders skip may be imported; one deleted, quarantined or taken down may not, nor one
being built on that target right now. An imported success counts as the target's build of that
release: the queue does not build it there again (``wheelwright rebuild`` forgets it, as any build).
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from wheelwright.builds import intake, transfer
from wheelwright.builds.analysis import (FileInfo, WheelRefused, analyse_wheel, check_plain_filename,
                                         check_received_wheel, check_target_tags, sha256_of)
from wheelwright.catalog import db
from wheelwright.errors import WheelwrightError

log = logging.getLogger(__name__)

MAX_WHEEL = 4 << 30            # bytes of one imported wheel (the largest on PyPI are about 2 GiB)
LOG_NAME = "imported.txt.gz"


class ImportRefused(WheelwrightError):
    """A wheel an operator brought cannot be published; the message says why, in one sentence."""


@dataclass
class Imported:
    """One build made of imported wheels, as recorded."""

    build_id: int
    package: str
    version: str
    target: str
    wheels: list[str] = field(default_factory=list)           # the names the index publishes them under
    apt_dependencies: list[str] = field(default_factory=list)
    note: str | None = None     # e.g. "identical to the published ..."

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Planned:
    path: Path
    package: str
    version: str      # as the catalog spells it
    target: str
    abi: str
    platform: str


def import_wheels(conn: psycopg.Connection, wheels: list[str | os.PathLike], *, by: str,
                  output: str | os.PathLike, scratch: str | os.PathLike, log_file: str | os.PathLike | None = None,
                  target: str | None = None,
                  root_for: Callable[[str], Path] | None = None) -> list[Imported]:
    """Import ``wheels`` (paths) as built by ``by``; one :class:`Imported` per release and target.

    ``scratch`` is a folder for copies (on the output's file system, ideally); ``root_for(target)`` the
    root file system libraries are resolved in (default: the target's image, built on first use).
    ``log_file`` is the build's log, published with the build (only when the wheels make one build).
    Raises :class:`ImportRefused` (or ``UnknownRelease``) before recording anything for a wheel that
    cannot be imported.
    """
    by = " ".join((by or "").split())[:100]
    if not by:
        raise ImportRefused("an import needs the name of who built the wheel (--by)")
    if not wheels:
        raise ImportRefused("name at least one wheel to import")
    if root_for is None:
        from wheelwright.builds.images import root_for_target
        root_for = root_for_target
    plans = [_plan(conn, Path(w), target) for w in wheels]
    groups: dict[tuple[str, str, str], list[_Planned]] = {}
    for plan in plans:
        groups.setdefault((plan.package, plan.version, plan.target), []).append(plan)
    if log_file is not None and len(groups) > 1:
        raise ImportRefused("--log belongs to one build: these wheels are of several releases or targets; "
                            "import them one build at a time")
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    done = []
    for group in groups.values():
        with tempfile.TemporaryDirectory(prefix="import-", dir=scratch) as tmp:
            done.append(_import_one(conn, group, by=by, output=Path(output), tmp=Path(tmp),
                                    log_file=None if log_file is None else Path(log_file), root_for=root_for))
    return done


def _plan(conn: psycopg.Connection, path: Path, target: str | None) -> _Planned:
    """What ``path`` is: its release, as the catalog spells it, and the target it is for."""
    filename = path.name
    try:
        check_plain_filename(filename)
        name, wheel_version, _build, _tags = parse_wheel_filename(filename)
    except (WheelRefused, InvalidWheelFilename) as exc:
        raise ImportRefused(f"refused {filename}: not a wheel file name ({exc})") from None
    package = str(name)
    versions = [v for (v,) in conn.execute("SELECT version FROM versions WHERE package = %s", (package,))]
    if not versions:
        from wheelwright.operate.admin import UnknownRelease
        raise UnknownRelease(f"refused {filename}: {package} is not in the catalog (a wheel is imported "
                             "only for a project PyPI has, once the sync knows it)")
    version = next((v for v in versions if _normal(v) == str(wheel_version)), None)
    if version is None:
        from wheelwright.operate.admin import UnknownRelease
        raise UnknownRelease(f"refused {filename}: {package} has no release {wheel_version} in the catalog")
    down = conn.execute("SELECT reason FROM takedowns WHERE package = %s AND (version IS NULL OR version = %s) "
                        "ORDER BY version NULLS FIRST LIMIT 1", (package, version)).fetchone()
    if down is not None:
        raise ImportRefused(f"refused {filename}: {package} {version} is taken off the index ({down[0]}); "
                            "`wheelwright restore` it first")
    rows = conn.execute("SELECT name, abi, platform FROM targets WHERE %s::text IS NULL OR name = %s "
                        "ORDER BY enabled DESC, position, name", (target, target)).fetchall()
    if not rows:
        raise ImportRefused(f"refused {filename}: there is no target named {target!r}" if target else
                            f"refused {filename}: the catalog has no targets yet (the build_wheels DAG "
                            "mirrors targets.toml)")
    for name_, abi, platform in rows:
        try:
            check_target_tags(filename, abi, platform)
        except WheelRefused:
            continue
        return _Planned(path, package, version, name_, abi, platform)
    known = ", ".join(f"{n} ({a} on {p})" for n, a, p in rows)
    tags = "-".join(filename[:-len(".whl")].split("-")[-3:])
    raise ImportRefused(f"refused {filename}: its tags ({tags}) install on no target "
                        f"{'named' if target else 'of this index'}: {known}")


def _import_one(conn: psycopg.Connection, plans: list[_Planned], *, by: str, output: Path, tmp: Path,
                log_file: Path | None, root_for: Callable[[str], Path]) -> Imported:
    first = plans[0]
    files = tmp / "files"
    files.mkdir()
    infos = []
    root = None
    for plan in plans:
        staged = files / plan.path.name
        _copy_in(plan.path, staged)
        try:
            check_received_wheel(staged, package=first.package, version=first.version, abi=first.abi,
                                 platform=first.platform)
            if root is None:
                root = root_for(first.target)
            infos.append(analyse_wheel(staged, first.package, first.version, root=root, scratch=tmp))
        except WheelRefused as exc:
            raise ImportRefused(str(exc)) from None
    log_info = _stage_log(log_file, files) if log_file is not None else None

    with conn.transaction():
        row = conn.execute(db.query("build_import_claim"), {
            "package": first.package, "version": first.version, "target": first.target,
            "builder": f"imported by {by}", "imported_by": by}).fetchone()
    if row is None:
        raise ImportRefused(_why_not(conn, first))
    build_id, abi = row
    request = {"build_id": build_id, "package": first.package, "version": first.version,
               "target": first.target, "abi": abi}
    outcome = {**request, "status": "success", "reason": None, "builder": f"imported by {by}",
               "duration": 0.0, "transient": False,
               "log": None if log_info is None else vars(log_info).copy(),
               "wheels": [info.to_dict() for info in infos]}
    try:
        announced = intake.read_outcome(outcome)
        accepted = transfer.accept(files, announced.files())
        intake.record(conn, request, announced, accepted, output, imported=True)
    except BaseException:
        _forget(conn, build_id)
        raise
    status, reason = conn.execute("SELECT status, reason FROM builds WHERE build_id = %s",
                                  (build_id,)).fetchone() or (None, "the release was deleted meanwhile")
    if status != "success":
        _forget(conn, build_id)
        raise ImportRefused(f"not imported: {reason}")
    wheels = [name for (name,) in conn.execute("SELECT filename FROM wheels WHERE build_id = %s ORDER BY filename",
                                               (build_id,))]
    apt = sorted({d for info in infos for tool, d in info.dependencies if tool == "apt"})
    log.info("imported %s for %s==%s on %s by %s (build %d)", ", ".join(wheels) or "nothing new",
             first.package, first.version, first.target, by, build_id)
    return Imported(build_id, first.package, first.version, first.target, wheels, apt, reason)


def _normal(version: str) -> str:
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


def _copy_in(source: Path, destination: Path) -> None:
    """Copy the operator's file (a plain file, of a sane size) into the staging folder."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ImportRefused(f"cannot read {source}: {exc.strerror}") from None
    with open(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ImportRefused(f"refused {source.name}: not a plain file")
        if st.st_size > MAX_WHEEL:
            raise ImportRefused(f"refused {source.name}: {st.st_size:,} bytes, more than {MAX_WHEEL:,}")
        with open(destination, "xb") as dst:
            shutil.copyfileobj(src, dst)


def _stage_log(log_file: Path, folder: Path) -> FileInfo:
    """The build log, gzipped (as builders send theirs), capped like a builder's."""
    try:
        with open(log_file, "rb") as f:
            data = f.read(intake.MAX_LOG_TEXT + 1)
    except OSError as exc:
        raise ImportRefused(f"cannot read the log {log_file}: {exc.strerror}") from None
    if data[:2] != b"\x1f\x8b":
        if len(data) > intake.MAX_LOG_TEXT:
            raise ImportRefused(f"the log {log_file} is larger than {intake.MAX_LOG_TEXT:,} bytes")
        data = gzip.compress(data, mtime=0)
    path = folder / LOG_NAME
    path.write_bytes(data)
    if (problem := intake.log_problem(path, len(data))) is not None:
        raise ImportRefused(f"the log {log_file} cannot be published: {problem}")
    sha256, size = sha256_of(path)
    return FileInfo(LOG_NAME, sha256, size)


def _why_not(conn: psycopg.Connection, plan: _Planned) -> str:
    row = conn.execute(
        "SELECT p.present, p.quarantined OR v.quarantined, EXISTS (SELECT 1 FROM builds b "
        "WHERE b.package = v.package AND b.version = v.version AND b.target = %s AND b.status = 'building') "
        "FROM versions v JOIN packages p USING (package) WHERE v.package = %s AND v.version = %s",
        (plan.target, plan.package, plan.version)).fetchone()
    name = f"{plan.package} {plan.version}"
    if row is None:
        return f"refused: {name} left the catalog meanwhile"
    present, quarantined, in_flight = row
    if not present:
        return f"refused: {plan.package} was deleted on PyPI"
    if quarantined:
        return f"refused: {name} is quarantined on PyPI"
    if in_flight:
        return f"refused: {name} is being built for {plan.target} right now; import once that build is recorded"
    return f"refused: {name} cannot be imported for {plan.target}"


def _forget(conn: psycopg.Connection, build_id: int) -> None:
    with conn.transaction():
        conn.execute("DELETE FROM builds WHERE build_id = %s", (build_id,))


def image_root_built(target_name: str) -> Path:
    """The root file system of ``target_name``'s image if it is built here; never builds one (a web
    request must not wait minutes): a missing image is a sentence naming the command that builds it."""
    from wheelwright.builds import images
    from wheelwright.builds.targets import load_targets
    from wheelwright.config import Settings
    target = next((t for t in load_targets() if t.name == target_name), None)
    if target is None or not target.image:
        return Path("/")
    return images.image_root(target, images.default_store(Settings.from_env()), build=False)
