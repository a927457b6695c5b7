"""The build queue: which releases each target builds next, and handing them out exactly once.

What a target should build is a question about the whole catalog (sdists, deletions, skips,
quarantine, what every other target already made), so the answer is set-based SQL next to the data:
the ``build_queue(target, fresh_window[, since])`` function of migrations 004 and 018. In words:
releases in the target's scope (uploaded since the target was enabled, or older ones a backfill
admitted), with an sdist, not deleted, quarantined or skipped, that this target has not tried, that no
target built a pure wheel of, and that every earlier target (numeric ABI order) has finished with — a
failure or a binary wheel moves a release on to the next target. Fresh work goes first, so a new
upload is built within one scheduling interval even while years of backlog wait; backfilled history
takes only the capacity fresh work leaves.

This room owns handing that queue out: :func:`claim_wave` turns the head of a target's queue into
``building`` rows under a per-target lock, so two schedulers never claim the same release, and returns
small dicts fit for XCom. It asks in widening windows of release dates (a day, a month, a year, then
everything): the head of the queue is nearly always recent, and a narrow window is an index range
whose cost does not grow with the catalog (see bench/bench_build_queue.py); then, if the wave is not
full, for backfilled history. :func:`admit_history` is what a ``rebuild_history`` run does: it admits
one interval of a target's history to its queue (see bench/bench_backfill.py). :func:`expire_lost`
and :func:`mark_lost` give up on builds whose worker never answered, so the release is built again,
not forgotten.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

import psycopg

from wheelwright.catalog import db
from wheelwright.builds.targets import Target

log = logging.getLogger(__name__)

FRESH_WINDOW = timedelta(days=1)
BACKLOG_WINDOWS = (timedelta(days=30), timedelta(days=365))
CLAIM_LOCK = "wheelwright.claim:"


class BuildRequest(TypedDict, total=False):
    """One claimed build, as it travels to a worker: small and JSON-serialisable."""

    build_id: int
    package: str      # canonical name
    version: str
    target: str       # the target's name
    abi: str          # the target's ABI tag
    sdist_sha256: str  # the sdist's hash, when the catalog knows it (the builder pins it)
    settings: dict    # the package's build settings, when an operator set some (builds/build_settings.py)


def _name(target: Target | str) -> str:
    return target.name if isinstance(target, Target) else target


def claim_wave(conn: psycopg.Connection, target: Target | str, limit: int, *,
               fresh_window: timedelta = FRESH_WINDOW) -> list[BuildRequest]:
    """Claim up to ``limit`` releases from the head of ``target``'s queue, committed on return.

    Each claimed release gets a ``building`` row; a disabled or unknown target claims nothing.
    """
    if limit < 1:
        return []
    name = _name(target)
    with conn.transaction():
        # Serialise claims per target: the next claimer's statement then sees these rows.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (CLAIM_LOCK + name,))
        now = conn.execute("SELECT now()").fetchone()[0]
        # Newest first, in widening windows: each is an index range over recent releases, cheap
        # however big the catalog, and a later window only runs if the earlier ones fell short (it
        # then holds only older releases, so the wave stays newest first). The last is everything.
        rows = []
        for window in [fresh_window, *(w for w in BACKLOG_WINDOWS if w > fresh_window), None]:
            if len(rows) >= limit:
                break
            rows += conn.execute(db.query("build_claim_wave"), {
                "target": name, "fresh": fresh_window, "limit": limit - len(rows),
                "since": None if window is None else now - window}).fetchall()
        if len(rows) < limit:  # history only in the capacity fresh work left
            rows += conn.execute(db.query("build_claim_backfill"), {
                "target": name, "fresh": fresh_window, "limit": limit - len(rows)}).fetchall()
    wave = [_request(row) for row in rows]
    if wave:
        from wheelwright.builds.build_settings import attach
        attach(conn, wave)  # the operator's settings of each package travel with its request
        log.info("claimed %d builds for %s: %s%s", len(wave), name,
                 ", ".join(f"{r['package']}=={r['version']}" for r in wave[:5]),
                 " ..." if len(wave) > 5 else "")
    return wave


def expire_lost(conn: psycopg.Connection, older_than: timedelta) -> list[BuildRequest]:
    """Mark builds in flight for longer than ``older_than`` as lost, so their releases re-queue.

    Builds waiting to retry a transient failure whose time has come re-queue too (see retries).
    """
    from wheelwright.builds.retries import release_due
    release_due(conn)
    with conn.transaction():
        rows = conn.execute(db.query("build_expire_lost"), {"older_than": older_than}).fetchall()
    lost = [_request(row) for row in rows]
    for r in lost:
        log.warning("build %d of %s==%s for %s is lost (no result within %s); it will be retried",
                    r["build_id"], r["package"], r["version"], r["target"], older_than)
    return lost


def mark_lost(conn: psycopg.Connection, build_id: int, reason: str) -> bool:
    """Give up on one build now (its transfer failed, its task gave up, its result cannot be
    published): it re-queues. False if it was not in flight. Inside a caller's transaction, a
    savepoint of it."""
    with conn.transaction():
        row = conn.execute(db.query("build_mark_lost"),
                           {"build_id": build_id, "reason": reason}).fetchone()
    return row is not None


@dataclass(frozen=True)
class AdmittedHistory:
    """What one ``rebuild_history`` interval did for one target (a run's return value, in the grid)."""

    target: str
    start: datetime
    end: datetime
    releases: int        # releases first uploaded in the interval, older than the target, with an sdist
    already_built: int   # of which the target has built or failed already
    admitted: int        # newly admitted to its queue now (0 when the interval was admitted before)

    def summary(self) -> dict:
        return {"target": self.target, "start": self.start.isoformat(), "end": self.end.isoformat(),
                "releases": self.releases, "already_built": self.already_built,
                "admitted": self.admitted}


def admit_history(conn: psycopg.Connection, target: Target | str, start: datetime,
                  end: datetime) -> AdmittedHistory:
    """Admit to ``target``'s queue the releases first uploaded in ``[start, end)`` that it lacks.

    Only releases older than the target's ``enabled_at`` (newer ones are its fresh work); admitting an
    interval twice admits nothing the second time. A disabled or unknown target admits nothing.
    Committed on return.
    """
    name = _name(target)
    with conn.transaction():
        releases, built, admitted = conn.execute(db.query("build_backfill_admit"), {
            "target": name, "start": start, "end": end}).fetchone()
    result = AdmittedHistory(name, start, end, releases, built, admitted)
    log.info("history %s .. %s for %s: %d releases, %d built already, %d admitted to its queue",
             start.date(), end.date(), name, releases, built, admitted)
    return result


def prune_history(conn: psycopg.Connection) -> int:
    """Drop backfill rows whose release is finished for their target (they would never be claimed)."""
    with conn.transaction():
        return conn.execute(db.query("build_backfill_prune")).rowcount


def queue_head(conn: psycopg.Connection, target: Target | str, limit: int = 20, *,
               fresh_window: timedelta = FRESH_WINDOW) -> list[tuple[str, str]]:
    """The next ``(package, version)`` pairs ``target`` would build, in order, without claiming them.

    Asked in widening windows of release dates, as :func:`claim_wave` asks: each wider window's head
    starts with the narrower one's (newest first), so the first window that fills ``limit`` is the
    answer; then backfilled history, which comes after all fresh work."""
    name = _name(target)
    now = conn.execute("SELECT now()").fetchone()[0]

    def head(since, backfill: bool, n: int):
        return conn.execute(db.query("build_queue_head"), {
            "target": name, "fresh": fresh_window, "since": since, "backfill": backfill,
            "limit": n}).fetchall()

    rows = []
    for window in [fresh_window, *(w for w in BACKLOG_WINDOWS if w > fresh_window), None]:
        rows = head(None if window is None else now - window, False, limit)
        if len(rows) >= limit:
            break
    if len(rows) < limit:
        rows += head(None, True, limit - len(rows))
    return [(package, version) for package, version, *_ in rows]


def queue_length(conn: psycopg.Connection, target: Target | str, *,
                 fresh_window: timedelta = FRESH_WINDOW) -> tuple[int, int]:
    """``(waiting, of which fresh)`` for ``target``."""
    total, fresh = conn.execute(db.query("build_queue_length"),
                                {"target": _name(target), "fresh": fresh_window}).fetchone()
    return total, fresh


def _request(row) -> BuildRequest:
    build_id, package, version, target, abi = row
    return BuildRequest(build_id=build_id, package=package, version=version, target=target, abi=abi)
