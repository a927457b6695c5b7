"""Batches: quick builds share one task, so Airflow's cost per task is paid once for several.

Every Airflow task costs about a second and a half before and after the work it wraps (scheduling,
the Celery hand-off, the task process starting, its API calls, an SSH session to the index host):
as much as pip takes to build a small pure-Python sdist. Most of PyPI is such releases, so one task
per build would leave a worker slot idle for a third of its time. A claimed wave is therefore handed
out in batches: the builds the catalog expects to be quick are packed, in queue order, into tasks of
up to :data:`BATCH_SIZE` builds and :data:`BATCH_SECONDS` of expected work; every other build (slow
last time, or never built and of unknown or large size) keeps a task of its own, so a three-hour build
still holds only its own slot and delays nobody's recording.

Expected is what the catalog knows (``build_expected_seconds.sql``): the package's latest finished
build, on this target if it has one; for a package never built, the sdist's size. A guess that is
wrong costs little: a batch still building after :data:`HAND_BACK_AFTER` hands the builds it has not
started back (its record step re-queues them at once, for the next run to claim), so a quick-looking
build that turns out slow delays the others by one claim interval, never by its own length.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from wheelwright.catalog import db

BATCH_SIZE = 8             # builds in one task at most
BATCH_SECONDS = 180.0      # expected seconds of work in one task at most: how long a recording may wait
QUICK_BUILD = 60.0         # seconds: a package that built this fast last time shares a task
SMALL_SDIST = 64 * 1024    # bytes: a package never built whose sdist is this small shares a task ...
FIRST_BUILD_GUESS = 20.0   # ... counted as this many seconds
HAND_BACK_AFTER = 2 * BATCH_SECONDS  # a batch running longer builds nothing more (see above)


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


UNKNOWN = Expected(None, None)


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
