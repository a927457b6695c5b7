"""Following PyPI: fetch the changelog past our watermark, journal it, fold it.

One sync catches up to the serial PyPI reported when it started. Each page of the changelog is
journalled in one transaction that also moves the watermark, so a crash at any point loses nothing
and doubles nothing: the next sync fetches from the watermark again, and a re-delivered serial is a
no-op. After the pages, every package they touched is folded again (catalog.derive), so when a sync
returns, every event it received is reflected in the catalog; a derive interrupted by a crash is
redone by the next sync, because the derived mark moves only when it is done.

A catch-up much larger than the journal (the first replay of PyPI's history) runs in bulk: the
journal's indexes and key and the versions' date index are dropped first and rebuilt once at the end,
which is several times faster than maintaining them row by row (the journal's are built on a second
connection while the new packages are folded; while the key is away, re-deliveries are told apart
by their serials, see _journal_bulk). Its pages are parsed column by column
(event_frames.py), and the events are kept (in memory up to a bound, then on disk), so the packages
they bring for the first time are folded in bulk without reading their history back (replay.py,
bulk_fold.py).

Only one sync runs at a time (a session advisory lock); a second one is refused with a clear error.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psycopg

from wheelwright.catalog import store as catalog
from wheelwright.catalog.bulk import replay
from wheelwright.errors import WheelwrightError
from wheelwright.catalog.bulk.work_ahead import results_in_order

log = logging.getLogger(__name__)

SYNC_LOCK = "wheelwright.catalog.sync"
# A backlog this large, and at least a quarter of the journal, is replayed in bulk.
BULK_BACKLOG = 200_000
# Events a bulk replay keeps in memory (about 110 bytes each); past this, it keeps them on disk, in
# partitions of packages with about this many events each, which derivation folds one at a time.
REPLAY_MEMORY = 4_000_000
PROGRESS_EVERY = 10.0  # seconds between progress lines
# Pages a bulk replay parses at once while it journals the one before them. Much of a parse holds the
# GIL, the rest runs in polars without it: two of them journalled 1M events in 1.94 s, one in 2.20 s
# (medians of 5 alternating runs).
PARSERS = 2
# The GIL's switch interval in a bulk replay, in seconds (see _bulk_interpreter). Journalling 1M events
# took 3.18 s at Python's default (5 ms) and 2.70 s at this, or 2.46 s with db.WholeBufferWriter
# (medians of 4 alternating runs).
BULK_SWITCH_INTERVAL = 0.0002


class SyncBusy(WheelwrightError):
    """Another sync holds the catalog's sync lock."""


class ChangelogSource(Protocol):
    def last_serial(self) -> int: ...
    def changelog_pages(self, since: int, until: int | None = None): ...


@dataclass
class SyncResult:
    first_serial: int
    last_serial: int
    target_serial: int
    received: int = 0
    stored: int = 0
    rejected: int = 0
    changed: list[str] = field(default_factory=list)
    first_change: int | None = None
    last_change: int | None = None
    bulk: bool = False
    seconds: float = 0.0

    def summary(self) -> dict:
        """Small enough for an XCom or an Asset event's extra."""
        return {
            "serial_from": self.first_serial, "serial_to": self.last_serial,
            "events": self.received, "stored": self.stored, "rejected": self.rejected,
            "changed_packages": len(self.changed),
            "change_seq_from": self.first_change, "change_seq_to": self.last_change,
        }


def sync_once(conn: psycopg.Connection, source: ChangelogSource, *, until: int | None = None,
              spill_dir: Path | None = None) -> SyncResult:
    """Catch up with ``source`` up to its current last serial (or ``until``).

    ``conn`` must be in autocommit mode (db.connect's default): each page is its own transaction. A bulk
    replay keeps the events past its memory bound under ``spill_dir`` (Settings.replay_dir; by default
    the system's temporary folder).
    """
    started = time.monotonic()
    if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (SYNC_LOCK,)).fetchone()[0]:
        raise SyncBusy("another wheelwright sync is running against this catalog")
    try:
        start = catalog.watermark(conn)
        target = source.last_serial() if until is None else until
        result = SyncResult(first_serial=start, last_serial=start, target_serial=target)
        backlog = target - start
        buffer = None
        if backlog >= BULK_BACKLOG and backlog >= catalog.journal_size_estimate(conn) // 4:
            log.info("replaying %d serials in bulk", backlog)
            buffer = replay.ReplayBuffer(catalog.journal_end(conn), REPLAY_MEMORY, expected=backlog,
                                         spill_dir=spill_dir)
            catalog.drop_bulk_indexes(conn)
            result.bulk = True
        else:
            # Pages are told from re-deliveries by the journal's key, which a bulk replay that crashed
            # may have left dropped.
            catalog.ensure_bulk_indexes(conn, [catalog.JOURNAL_KEY])
        # The buffer lets go of its events (and removes what it spilled) at the end of the block.
        with _bulk_interpreter(result.bulk), buffer or nullcontext():
            if backlog > 0:
                _fetch(conn, source, result, buffer)
            if buffer is None:
                derived = catalog.derive(conn)
            else:
                with catalog.journal_indexes_aside(conn) as journal_indexed:
                    derived = catalog.derive(conn, replayed=buffer, journal_indexed=journal_indexed)
        result.changed = derived.changed
        result.first_change, result.last_change = derived.first_change, derived.last_change
        # Also mends an index a crashed bulk replay left dropped.
        catalog.ensure_bulk_indexes(conn)
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (SYNC_LOCK,))
    result.seconds = time.monotonic() - started
    log.info("sync: serials %d..%d, %d events (%d new, %d rejected), %d packages changed in %.1fs",
             result.first_serial, result.last_serial, result.received, result.stored,
             result.rejected, len(result.changed), result.seconds)
    return result


@contextmanager
def _bulk_interpreter(bulk: bool):
    """The interpreter set for a bulk replay's threads.

    A bulk replay makes millions of small objects, none of them cyclic: the cyclic garbage collector
    would only rescan them again and again (it doubled the time of a fold). And while one thread parses
    or folds, the one that talks to the database needs the GIL back after each round trip, and the
    server idles until it gets it: up to a switch interval each time (BULK_SWITCH_INTERVAL).
    """
    if not bulk:
        yield
        return
    collecting = gc.isenabled()
    interval = sys.getswitchinterval()
    gc.disable()
    sys.setswitchinterval(BULK_SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        if collecting:
            gc.enable()


def _fetch(conn: psycopg.Connection, source: ChangelogSource, result: SyncResult,
           buffer: replay.ReplayBuffer | None) -> None:
    next_progress = time.monotonic() + PROGRESS_EVERY
    pages = source.changelog_pages(result.first_serial, result.target_serial)
    journalled = _journal_bulk(conn, pages, buffer) if buffer is not None else _journal_each(conn, pages)
    for ingested in journalled:
        result.received += ingested.received
        result.stored += ingested.stored
        result.rejected += ingested.rejected
        if ingested.max_serial is not None:
            result.last_serial = max(result.last_serial, ingested.max_serial)
        if time.monotonic() >= next_progress:
            done = result.last_serial - result.first_serial
            total = max(1, result.target_serial - result.first_serial)
            log.info("sync progress: serial %d of %d (%.0f%%), %d events",
                     result.last_serial, result.target_serial, 100 * done / total, result.received)
            next_progress = time.monotonic() + PROGRESS_EVERY


def _journal(conn: psycopg.Connection, store, page) -> catalog.IngestResult:
    """One page journalled by ``store`` with its watermark, in one transaction."""
    with conn.transaction():
        ingested = store(conn, page)
        if ingested.max_serial is not None:
            catalog.advance_watermark(conn, ingested.max_serial)
    return ingested


def _journal_each(conn: psycopg.Connection, pages) -> Iterator[catalog.IngestResult]:
    for page in pages:
        yield _journal(conn, catalog.ingest, page)


def _journal_bulk(conn: psycopg.Connection, pages,
                  buffer: replay.ReplayBuffer) -> Iterator[catalog.IngestResult]:
    """:func:`_journal_each` for a bulk replay: pages are parsed column by column (event_frames.py),
    the next ones in threads (PARSERS) while the database stores this one, and journalled in order,
    each with its watermark in one transaction as before, and then added to ``buffer``.

    The journal's key is set aside (bulk_indexes_drop.sql): while every page brings only serials above
    the highest stored (``buffer.end``), each distinct, none can be a re-delivery. PyPI's pages climb
    so; the first page that does not brings the key back for the rest of the replay, and the journal's
    COPY tells its re-deliveries apart as it always does."""
    keyless = True

    def journal(page: catalog.PreparedPage) -> catalog.IngestResult:
        nonlocal keyless
        if keyless and not page.all_above(buffer.end):
            log.info("a page repeats serials up to %d: the journal's key is built again to tell them apart",
                     buffer.end)
            catalog.ensure_bulk_indexes(conn, [catalog.JOURNAL_KEY])
            keyless = False
        ingested = _journal(conn, catalog.ingest_prepared, page)
        buffer.add(ingested)
        return ingested

    with ThreadPoolExecutor(PARSERS, thread_name_prefix="parse") as parser:
        for page in results_in_order(parser, catalog.prepare_page, pages, PARSERS):
            yield journal(page)


def sync_forever(connect, source: ChangelogSource, *, interval: float = 60.0, sleep=time.sleep,
                 spill_dir: Path | None = None) -> None:
    """Sync, wait ``interval`` seconds, repeat; until interrupted."""
    while True:
        with connect() as conn:
            sync_once(conn, source, spill_dir=spill_dir)
        sleep(interval)
