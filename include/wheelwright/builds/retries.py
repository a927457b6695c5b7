"""Transient failures: a build that could not start is tried again later, not failed for good.

piwheels failed releases for ever because their builders asked for the sdist a moment before it reached
PyPI's CDN ("No matching distribution" right after an upload), or because the network hiccupped. Only
a build that ran and failed says something about the release; a build that could not fetch its sdist or
its build dependencies (the worker's builder marks its outcome ``transient``), or whose files did not
arrive whole, says something about the moment. This room owns what happens then, on the index host:

- the build row becomes ``retry`` with ``not_before`` = now + a back-off that doubles with each attempt
  (:data:`BASE_DELAY`, capped at :data:`MAX_DELAY`); a ``retry`` build counts as tried, so the release
  is neither claimed again at once nor handed on to the next target;
- :func:`release_due` turns ``retry`` builds whose time has come into ``lost`` ones, which the build
  queue does not count as tried: the release is claimed again (the scheduling run calls it with the
  expiry of lost builds);
- the attempts of a release on a target are its transient builds so far; the :data:`MAX_ATTEMPTS`-th
  transient failure is final (``failure``, with the reason and the count), and shows on the project page.

An operator re-queues the failures of a target at once with ``wheelwright requeue-failures``
(:func:`wheelwright.operate.admin.requeue_failures`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import psycopg

from wheelwright.catalog import db

log = logging.getLogger(__name__)

BASE_DELAY = timedelta(minutes=5)
MAX_DELAY = timedelta(hours=6)
MAX_ATTEMPTS = 6       # 5 min, 10, 20, 40, 80: a release waits about 2.5 hours before it fails for good


def retry_delay(attempt: int, *, base: timedelta = BASE_DELAY, cap: timedelta = MAX_DELAY) -> timedelta:
    """How long a release waits after its ``attempt``-th transient failure (1-based): doubling, capped."""
    if attempt < 1:
        raise ValueError(f"attempts count from 1, not {attempt}")
    return min(base * (2 ** min(attempt - 1, 30)), cap)


def plan(attempt: int, reason: str, now: datetime, *,
         max_attempts: int = MAX_ATTEMPTS) -> tuple[str, str, datetime | None]:
    """``(status, reason, not_before)`` for the ``attempt``-th transient failure of a release on a target."""
    if attempt >= max_attempts:
        return "failure", f"gave up after {attempt} attempts: {reason}", None
    not_before = now + retry_delay(attempt)
    return ("retry", f"{reason} (attempt {attempt} of {max_attempts}; tried again from "
                     f"{not_before:%Y-%m-%d %H:%M} UTC)", not_before)


def transient_outcome(conn: psycopg.Connection, build_id: int, reason: str, *,
                      max_attempts: int = MAX_ATTEMPTS) -> tuple[str, str, datetime | None]:
    """``(status, reason, not_before)`` for build ``build_id``, whose failure was transient.

    Runs in the caller's transaction, which holds the build row; the caller writes the row.
    """
    attempt, now = conn.execute(db.query("build_retry_attempts"), {"build_id": build_id}).fetchone()
    return plan(attempt, reason, now, max_attempts=max_attempts)


def release_due(conn: psycopg.Connection) -> list[tuple[int, str, str, str]]:
    """Turn ``retry`` builds whose ``not_before`` has passed into ``lost`` ones: their releases queue again.

    Returns ``(build_id, package, version, target)`` of each.
    """
    with conn.transaction():
        rows = conn.execute(db.query("build_retry_release_due")).fetchall()
    for build_id, package, version, target in rows:
        log.info("build %d of %s==%s for %s: its retry is due; the release queues again",
                 build_id, package, version, target)
    return rows
