"""Waves and batches: what one build_wheels run claims for a target, and how it is cut into tasks.

A run claims the head of a target's queue up to a number of builds and a budget of expected work
(:func:`claim_batches`): enough to keep the target's workers busy, not so much that the last of it
waits in the pool for hours (a claimed build still waiting after ``LOST_AFTER`` would be given up and
claimed again). When the claim stopped short of the queue's end, the run asks for the next one at
once (the DAG's backlog Asset), so a deep queue keeps every slot fed without claiming it all at once.

Batches: quick builds share one task, so Airflow's cost per task is paid once for several.

Every Airflow task costs about a second and a half before and after the work it wraps (scheduling,
the Celery hand-off, the task process starting, its API calls, an SSH session to the index host):
as much as pip takes to build a small pure-Python sdist. Most of PyPI is such releases, so one task
per build would leave a worker slot idle for a third of its time. A claimed wave is therefore handed
out in batches: the builds the catalog expects to be quick are packed, in queue order, into tasks of
up to :data:`BATCH_SIZE` builds and :data:`BATCH_SECONDS` of expected work; every other build (slow
last time, or never built and of unknown or large size) keeps a task of its own, so a three-hour build
still holds only its own slot and delays nobody's recording.

Expected is what the catalog knows (``build_expected_seconds.sql``): the package's latest finished
build, on this target if it has one; for a package never built, the sdist's size. A wrong guess, a
quick-looking build that turns out slow (a release that gained a C extension), must not hold the
builds after it: a batch still running after :data:`HAND_BACK_AFTER` hands the builds it has not
started back to the index host while the slow one goes on, and the next run's sweep puts them back
in the queue for any free slot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from wheelwright.builds import queue
from wheelwright.catalog import db

log = logging.getLogger(__name__)

BATCH_SIZE = 8             # builds in one task at most
BATCH_SECONDS = 180.0      # expected seconds of work in one task at most: how long a recording may wait
QUICK_BUILD = 60.0         # seconds: a package that built this fast last time shares a task
SMALL_SDIST = 64 * 1024    # bytes: a package never built whose sdist is this small shares a task ...
FIRST_BUILD_GUESS = 20.0   # ... counted as this many seconds
HAND_BACK_AFTER = 2 * BATCH_SECONDS  # a batch running longer hands back what it has not started
UNKNOWN_GUESS = 60.0       # seconds a build the catalog knows nothing of counts against a wave's budget


@dataclass(frozen=True)
class Expected:
    """What the catalog knows ahead of one build."""

    last_seconds: float | None   # the package's latest finished build, None if it never built
    sdist_size: int | None       # bytes, None when the JSON API has not told us yet

    def quick_seconds(self) -> float | None:
        """Seconds this build is expected to take if it is quick enough to share a task, else None."""
        if self.last_seconds is not None:
            return self.last_seconds if self.last_seconds <= QUICK_BUILD else None
        if self.sdist_size is not None and self.sdist_size <= SMALL_SDIST:
            return FIRST_BUILD_GUESS
        return None

    def seconds(self) -> float:
        """Seconds this build is expected to take, a guess when nothing is known."""
        if self.last_seconds is not None:
            return self.last_seconds
        return self.quick_seconds() or UNKNOWN_GUESS


UNKNOWN = Expected(None, None)


def claim_batches(conn: psycopg.Connection, target: str, limit: int,
                  seconds: float) -> tuple[list[list[dict]], bool]:
    """Claim the head of ``target``'s queue: up to ``limit`` builds and ``seconds`` of expected work
    (the first build always), as batches. Committed on return, with the claim lock held throughout.

    Returns the batches and whether builds were left waiting (the claim was full or over budget).
    """
    with conn.transaction():
        wave = [dict(r) for r in queue.claim_wave(conn, target, limit)]
        known = expected(conn, [r["build_id"] for r in wave])
        kept, spent = [], 0.0
        for request in wave:
            cost = known.get(request["build_id"], UNKNOWN).seconds()
            if kept and spent + cost > seconds:
                break
            kept.append(request)
            spent += cost
        if len(kept) < len(wave):
            conn.execute(db.query("build_unclaim"),
                         {"build_ids": [r["build_id"] for r in wave[len(kept):]]})
            log.info("kept %d of the %d builds claimed for %s: %.0f s of expected work, the budget is "
                     "%.0f s; the rest wait for the next run", len(kept), len(wave), target, spent, seconds)
    return plan(kept, known), len(wave) == limit or len(kept) < len(wave)


def expected(conn: psycopg.Connection, build_ids: list[int]) -> dict[int, Expected]:
    """What the catalog knows ahead of each of ``build_ids`` (claimed builds)."""
    if not build_ids:
        return {}
    rows = conn.execute(db.query("build_expected_seconds"), {"build_ids": list(build_ids)}).fetchall()
    return {build_id: Expected(seconds, size) for build_id, seconds, size in rows}


def plan(requests: list[dict], known: dict[int, Expected], *, size: int = BATCH_SIZE,
         seconds: float = BATCH_SECONDS) -> list[list[dict]]:
    """``requests`` (in queue order) as batches, each one task's work; every request in exactly one.

    Quick builds are packed into the open batch until it holds ``size`` builds or ``seconds`` of
    expected work; any other build is a batch of its own. Batches keep the queue's order by their
    first build, so the head of the queue starts first.
    """
    batches: list[list[dict]] = []
    open_batch: list[dict] | None = None
    open_seconds = 0.0
    for request in requests:
        quick = known.get(request["build_id"], UNKNOWN).quick_seconds()
        if quick is None:
            batches.append([request])
            continue
        if open_batch is None or len(open_batch) >= size or open_seconds + quick > seconds:
            open_batch, open_seconds = [], 0.0
            batches.append(open_batch)
        open_batch.append(request)
        open_seconds += quick
    return batches


def label(batch: list[dict]) -> str:
    """How the grid names a batch: its first release, and how many more it holds."""
    first = f"{batch[0]['package']}=={batch[0]['version']}"
    return first if len(batch) == 1 else f"{first} +{len(batch) - 1}"
