"""Building one release here, exactly as a worker would: what ``wheelwright build`` does.

An operator tries a package that keeps failing, or a target before enabling it; tests and benchmarks
drive builds without Airflow. Whatever is learnt must be what a worker would have learnt, so nothing
here is a shortcut: the release is claimed with a build row like the queue's claim makes (for any
target of ``targets.toml``, enabled or not; by default the target next in line for it), built by the
same :func:`wheelwright.builds.builder.build`, its files sent with the same
:func:`wheelwright.builds.transfer.send_outcome` into a local incoming folder (a :class:`LocalFolder`
stands for the SFTP session), and recorded by the same :func:`wheelwright.builds.intake.receive`,
with every check of the index host. The next ``wheelwright index`` publishes it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from packaging.utils import canonicalize_name

from wheelwright.builds import builder, intake, transfer
from wheelwright.builds.queue import BuildRequest, mark_lost
from wheelwright.builds.targets import Target, load_targets, mirror_targets, target_named
from wheelwright.catalog import db
from wheelwright.errors import WheelwrightError
from wheelwright.operate.admin import UnknownRelease

log = logging.getLogger(__name__)


class NotBuildable(WheelwrightError):
    """The release exists but may not be built now (no sdist, skipped, quarantined, in flight)."""


@dataclass
class LocalBuild:
    """What became of one ``wheelwright build``."""

    build_id: int
    package: str
    version: str
    target: str
    status: str                      # the build row's status once recorded: success, failure, retry, lost
    reason: str | None
    wheels: list[str] = field(default_factory=list)   # file names the index now lists for this build
    log_path: str | None = None      # relative to the published tree

    @property
    def accepted(self) -> bool:
        return self.status == "success"

    def as_dict(self) -> dict:
        return {**asdict(self), "accepted": self.accepted}


def build_release(conn: psycopg.Connection, package: str, version: str, *, index_url: str,
                  workdir: str | os.PathLike, incoming: str | os.PathLike, output: str | os.PathLike,
                  target: str | None = None, targets: list[Target] | None = None,
                  build: Callable = builder.build, **build_options) -> LocalBuild:
    """Build ``package==version`` for ``target`` (default: next in line) and record it, as a worker would.

    Raises :class:`~wheelwright.operate.admin.UnknownRelease` for a release the catalog does not know
    and :class:`NotBuildable` for one that may not be built now; a build that fails or is refused is
    a :class:`LocalBuild` whose ``status`` says so.
    """
    package = canonicalize_name(package)
    if conn.execute("SELECT 1 FROM versions WHERE package = %s AND version = %s",
                    (package, version)).fetchone() is None:
        raise UnknownRelease(f"{package} {version} is not in the catalog (sync it first)")
    targets = load_targets() if targets is None else targets
    mirror_targets(conn, targets)  # every target of the file, disabled ones too, is a row to build for
    name = target_named(targets, target).name if target else next_target(conn, package, version)
    request = claim(conn, package, version, name)
    log.info("building %s==%s for %s here (build %d)", package, version, name, request["build_id"])
    try:
        outcome = build(dict(request), index_url=index_url, workdir_root=workdir, **build_options)
    except BaseException as exc:
        mark_lost(conn, request["build_id"], f"wheelwright build could not build it here: {exc}")
        raise
    incoming = Path(incoming)
    incoming.mkdir(parents=True, exist_ok=True)
    try:
        sent = transfer.send_outcome(transfer.LocalFolder(), outcome, str(incoming))
    except BaseException as exc:
        mark_lost(conn, request["build_id"], f"wheelwright build could not hand its files over: {exc}")
        raise
    finally:
        outcome.cleanup()
    intake.receive(conn, dict(request), sent, incoming, output)
    return result_of(conn, request["build_id"], request)


def next_target(conn: psycopg.Connection, package: str, version: str) -> str:
    row = conn.execute(db.query("build_next_target"), {"package": package, "version": version}).fetchone()
    if row is None:
        raise NotBuildable(f"{package} {version} is next in line on no enabled target (each built or tried "
                           "it, or a pure wheel serves them all): name one with --target")
    return row[0]


def claim(conn: psycopg.Connection, package: str, version: str, target: str) -> BuildRequest:
    """A build row for ``package==version`` on ``target``, committed, as the queue's claim makes one."""
    with conn.transaction():
        row = conn.execute(db.query("build_claim_one"),
                           {"package": package, "version": version, "target": target}).fetchone()
    if row is None:
        raise NotBuildable(_why_not_buildable(conn, package, version, target))
    build_id, package, version, target, abi = row
    request = BuildRequest(build_id=build_id, package=package, version=version, target=target, abi=abi)
    sdists = conn.execute("SELECT sha256 FROM source_files WHERE package = %s AND version = %s "
                          "AND pyver = 'source'", (package, version)).fetchall()
    if len(sdists) == 1 and sdists[0][0]:
        request["sdist_sha256"] = sdists[0][0]  # the builder pins the sdist by it
    from wheelwright.builds.build_settings import attach
    return attach(conn, [request])[0]


def _why_not_buildable(conn, package: str, version: str, target: str) -> str:
    row = conn.execute(
        "SELECT v.has_sdist, v.quarantined OR p.quarantined, coalesce(v.skip_reason, p.skip_reason), p.present, "
        "EXISTS (SELECT 1 FROM builds b WHERE b.package = v.package AND b.version = v.version "
        "AND b.target = %s AND b.status = 'building') "
        "FROM versions v JOIN packages p USING (package) WHERE v.package = %s AND v.version = %s",
        (target, package, version)).fetchone()
    if row is None:
        return f"{package} {version} is not in the catalog"
    has_sdist, quarantined, skipped, present, in_flight = row
    taken_down = conn.execute("SELECT reason FROM takedowns WHERE package = %s AND (version IS NULL "
                              "OR version = %s) ORDER BY version NULLS FIRST LIMIT 1",
                              (package, version)).fetchone()
    if taken_down:
        return f"{package} {version} is taken off the index: {taken_down[0]} (wheelwright restore)"
    if not present:
        return f"{package} was deleted on PyPI"
    if quarantined:
        return f"{package} {version} is quarantined on PyPI"
    if skipped:
        return f"{package} {version} is skipped: {skipped}"
    if not has_sdist:
        return f"{package} {version} has no sdist to build from"
    if in_flight:
        return f"{package} {version} is being built for {target} already"
    return f"{package} {version} cannot be built for {target}"


def result_of(conn: psycopg.Connection, build_id: int, request: BuildRequest) -> LocalBuild:
    row = conn.execute("SELECT status, reason, log_path FROM builds WHERE build_id = %s", (build_id,)).fetchone()
    if row is None:  # the release was deleted meanwhile
        return LocalBuild(build_id, request["package"], request["version"], request["target"], "lost",
                          "the release was deleted while it was built")
    status, reason, log_path = row
    wheels = [name for (name,) in conn.execute(
        "SELECT filename FROM wheels WHERE build_id = %s ORDER BY filename", (build_id,))]
    return LocalBuild(build_id, request["package"], request["version"], request["target"], status, reason,
                      wheels, log_path)
