"""The catalog: PyPI's journal in, the state of every package out.

Two steps, each one transaction, each safe to crash in:

``ingest``  stores raw changelog rows in the append-only journal (keyed by serial, so re-delivery is a
            no-op) and records rows it cannot read in ``journal_rejects`` with the reason. The caller
            moves the serial watermark in the same transaction (see sync.py).
``derive``  re-folds every package with journal rows past the *derived mark* (``derived_serial``), or
            marked pending, from its *whole* journal (fold.py) and writes the result back set-based:
            rows that vanished or were reborn are deleted (their builds cascade away), new ones
            inserted, flags updated. A package whose rows come out as the catalog has them is left
            alone; one whose rows differ takes the next ``change_seq`` number. The mark moves only when
            every such package is written, so a derive that dies is simply done again.

Because derivation always starts from the full journal of a package, the catalog is a function of
the set of events, whatever order or batches they came in.

``change_seq`` numbers are handed out under one transaction-scoped advisory lock, so transactions
that bump them commit in number order: a consumer that has seen number N has seen everything before
N (``changes_since``). Builds and enrichment bump them too, through ``mark_changed``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import polars as pl
import psycopg
import psycopg.sql
from psycopg.copy import QueuedLibpqWriter

from wheelwright.catalog.bulk import fold as bulk_fold
from wheelwright.catalog import db
from wheelwright.catalog.bulk import frames as event_frames
from wheelwright.catalog.bulk import replay
from wheelwright.errors import MalformedEvent
from wheelwright.catalog.events import KIND_BY_TEXT, MAX_SERIAL, Event, Kind, packages_touched, parse_action, parse_row
from wheelwright.catalog.fold import PackageState, apply_event, is_prerelease, is_valid_version, version_ranks

log = logging.getLogger(__name__)

CHANGE_LOCK = "wheelwright.change_seq"


@dataclass
class IngestResult:
    received: int = 0
    stored: int = 0
    rejected: int = 0
    max_serial: int | None = None
    redelivered: bool = False
    events: list[Event] = field(default_factory=list, repr=False)
    frame: pl.DataFrame | None = field(default=None, repr=False)  # the events, from prepare_page


@dataclass
class DeriveResult:
    folded: int = 0
    changed: list[str] = field(default_factory=list)
    first_change: int | None = None
    last_change: int | None = None


def ingest(conn: psycopg.Connection, rows: Iterable) -> IngestResult:
    """Journal raw changelog rows; malformed rows are rejected (logged, kept with the reason).

    Rows are parsed as they are copied, so the server stores one part of a page while this process
    reads the next. ``result.events`` holds the parsed events; ``result.redelivered`` says whether
    some serials were in the journal already (their stored rows win).
    """
    result = IngestResult()
    rejects: list[tuple] = []
    events: list[Event] = []
    with conn.transaction(), conn.cursor() as cur:
        parsed = _parse(rows, result, rejects)
        try:
            # Usually every serial is new: copy straight into the journal.
            with conn.transaction(), _copy_in(cur, f"COPY journal ({_JOURNAL_COLUMNS}) FROM STDIN") as copy:
                _copy_events(copy, parsed, events)
            result.stored = len(events)
        except psycopg.errors.UniqueViolation:
            # Some are re-deliveries: stage them and keep only the new serials.
            events.extend(parsed)
            _stage_redelivery(cur, result, lambda copy: _copy_events(copy, events, []))
        _finish_page(cur, result, events, rejects)
    return result


@dataclass
class PreparedPage:
    """A page parsed before its transaction (by :func:`prepare_page`)."""

    received: int
    max_serial: int | None
    rejects: list[tuple]
    frame: pl.DataFrame   # the events (event_frames.EVENT_SCHEMA)
    journal: bytes        # the events as COPY data (text format) for the journal

    def all_above(self, serial: int) -> bool:
        """Whether every event has a serial above ``serial``, and no two the same one."""
        serials = self.frame.get_column("serial")
        return serials.is_empty() or (serials.min() > serial and serials.n_unique() == serials.len())


def prepare_page(rows: Sequence) -> PreparedPage:
    """Parse a page and format its journal rows: column by column where rows take the common shapes
    (event_frames.py), row by row for the others."""
    result = IngestResult()
    rejects: list[tuple] = []
    plain, others = event_frames.plain_rows(rows)
    parsed = event_frames.events_frame(list(_parse(others, result, rejects)))
    frame = pl.concat([plain, parsed]) if parsed.height else plain
    if plain.height:
        highest = plain.get_column("serial").max()
        result.max_serial = highest if result.max_serial is None else max(result.max_serial, highest)
    journal = event_frames.journal_text(plain, parsed)
    return PreparedPage(len(rows), result.max_serial, rejects, frame, journal)


def ingest_prepared(conn: psycopg.Connection, page: PreparedPage) -> IngestResult:
    """:func:`ingest` for a page :func:`prepare_page` parsed; the events are in ``result.frame``."""
    result = IngestResult(received=page.received, max_serial=page.max_serial, frame=page.frame)
    with conn.transaction(), conn.cursor() as cur:
        try:
            with conn.transaction(), cur.copy(f"COPY journal ({_JOURNAL_COLUMNS}) FROM STDIN",
                                              writer=db.WholeBufferWriter(cur)) as copy:
                copy.write(page.journal)
            result.stored = page.frame.height
        except psycopg.errors.UniqueViolation:
            _stage_redelivery(cur, result, lambda copy: copy.write(page.journal))
        below = _below_derived(cur, page.frame.get_column("serial").min())
        if below is not None:
            _mark_pending(cur, replay.packages_of(page.frame.filter(pl.col("serial") <= below)))
        _log_rejects(cur, result, page.rejects)
    return result


def _stage_redelivery(cur: psycopg.Cursor, result: IngestResult, write) -> None:
    """Some serials are in the journal already: stage the page and keep only the new ones."""
    cur.execute("CREATE TEMP TABLE IF NOT EXISTS journal_incoming "
                "(LIKE journal INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
    with cur.copy(f"COPY journal_incoming ({_JOURNAL_COLUMNS}) FROM STDIN") as copy:
        write(copy)
    cur.execute(db.query("journal_store"))
    result.stored = cur.rowcount
    result.redelivered = True


def _finish_page(cur: psycopg.Cursor, result: IngestResult, events: list[Event], rejects: list[tuple]) -> None:
    if events:
        below = _below_derived(cur, min(e.serial for e in events))
        if below is not None:
            _mark_pending(cur, {p for e in events if e.serial <= below for p in packages_touched(e)})
    _log_rejects(cur, result, rejects)
    result.events = events


def _log_rejects(cur: psycopg.Cursor, result: IngestResult, rejects: list[tuple]) -> None:
    for _serial, _raw, reason in rejects:
        log.warning("rejected changelog row: %s", reason)
    if rejects:
        cur.executemany("INSERT INTO journal_rejects (serial, raw, reason) VALUES (%s, %s, %s) "
                        "ON CONFLICT DO NOTHING", rejects)
    result.rejected = len(rejects)


_JOURNAL_COLUMNS = ", ".join(event_frames.JOURNAL_FIELDS)


def _copy_in(cur: psycopg.Cursor, statement: str):
    """A COPY whose rows go to the server from a worker thread: this process formats the next rows
    while the server stores the last ones, instead of waiting on the socket."""
    return cur.copy(statement, writer=QueuedLibpqWriter(cur))


def _parse(rows: Iterable, result: IngestResult, rejects: list[tuple]) -> Iterator[Event]:
    for row in rows:
        result.received += 1
        try:
            event = parse_row(row)
        except MalformedEvent as exc:
            serial = _serial_of(row)
            rejects.append((serial, _raw_text(row), str(exc)))
            # A rejected row is kept (journal_rejects), so the watermark may pass it.
            if serial is not None and (result.max_serial is None or serial > result.max_serial):
                result.max_serial = serial
            continue
        if result.max_serial is None or event.serial > result.max_serial:
            result.max_serial = event.serial
        yield event


def _copy_events(copy, events: Iterable[Event], keep: list[Event]) -> None:
    write, append = copy.write_row, keep.append
    for e in events:
        append(e)
        # A Kind is a str: it is written as its value (Kind.value is a slow property on this path).
        write((e.serial, e.name, e.package, e.version, e.timestamp, e.action, e.kind, e.other_package))


def _below_derived(cur: psycopg.Cursor, lowest: int | None) -> int | None:
    """The derived mark, if rows from ``lowest`` on reach below it: their packages would be missed by
    it, so they are marked pending."""
    if lowest is None:
        return None
    derived = cur.execute("SELECT derived_serial FROM sync_state").fetchone()[0]
    return derived if lowest <= derived else None


def _mark_pending(cur: psycopg.Cursor, packages: set[str]) -> None:
    cur.execute("INSERT INTO pending_packages (package) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                (sorted(packages),))


def _serial_of(row) -> int | None:
    if isinstance(row, (list, tuple)) and len(row) == 5:
        serial = row[4]
        if type(serial) is int and 0 < serial <= MAX_SERIAL:
            return serial
    return None


def _raw_text(row) -> str:
    try:
        return json.dumps(row, default=repr)[:4000]
    except (TypeError, ValueError):
        return repr(row)[:4000]


def drop_bulk_indexes(conn: psycopg.Connection) -> None:
    """Before a bulk replay: rows go in far faster without the indexes that are cheaper to rebuild."""
    with conn.transaction():
        conn.execute(db.query("bulk_indexes_drop"))


JOURNAL_KEY = "bulk_index_journal_key"
BULK_INDEXES = (JOURNAL_KEY, "bulk_index_journal", "bulk_index_versions_newest_first")


def ensure_bulk_indexes(conn: psycopg.Connection, names: Sequence[str] = BULK_INDEXES) -> None:
    """After a bulk replay (or a crash in one): build those indexes (the journal's key among them) in one
    sorted pass each."""
    for name in names:
        with conn.transaction():
            conn.execute(db.query(name))


@contextmanager
def journal_indexes_aside(conn: psycopg.Connection) -> Iterator[Callable[[], None]]:
    """Build the journal's indexes, dropped for a bulk replay, on a connection of its own while the
    caller derives on ``conn``: the derive folds most packages from memory and needs them only for the
    rest. Yields the function that waits until they are built. Should the second connection fail,
    ensure_bulk_indexes builds them afterwards."""
    other: list[psycopg.Connection] = []

    def build() -> None:
        try:
            other.append(db.connect_like(conn))
        except psycopg.Error as exc:
            log.warning("building the journal's indexes later: no second connection (%s)", exc)
            return
        with other[0]:
            ensure_bulk_indexes(other[0], ["bulk_index_journal", JOURNAL_KEY])

    with ThreadPoolExecutor(1, thread_name_prefix="journal-indexes") as builder:
        building = builder.submit(build)
        try:
            yield building.result
        except BaseException:
            if other:
                other[0].cancel_safe()
            building.exception()  # wait for it to stop: the caller's error is the one to raise
            raise
        building.result()


def journal_size_estimate(conn: psycopg.Connection) -> int:
    return max(0, int(conn.execute(
        "SELECT reltuples FROM pg_class WHERE oid = 'journal'::regclass").fetchone()[0]))


def advance_watermark(conn: psycopg.Connection, serial: int) -> None:
    conn.execute("UPDATE sync_state SET last_serial = greatest(last_serial, %s), updated_at = now()",
                 (serial,))


def journal_end(conn: psycopg.Connection) -> int:
    """The highest serial in the journal (0 when empty)."""
    return conn.execute("SELECT coalesce(max(serial), 0) FROM journal").fetchone()[0]


def watermark(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT last_serial FROM sync_state").fetchone()[0]


# --- derivation -----------------------------------------------------------------------------------

def derive(conn: psycopg.Connection, *, chunk: int = 50_000,
           replayed: replay.ReplayBuffer | None = None,
           journal_indexed: Callable[[], None] | None = None) -> DeriveResult:
    """Re-fold every package with journal rows past the derived mark (or pending), and write what
    changed, ``chunk`` packages per transaction; then move the mark.

    With ``replayed``, packages the catalog has never seen are folded in bulk (bulk_fold.py) and COPYed
    in, with no old rows to compare with, in one transaction: from the events the buffer kept, in memory
    or, past its bound, on disk, a hash partition of packages at a time.
    ``journal_indexed`` is called before folding packages from their history in the journal (it waits
    for the journal's indexes: see journal_indexes_aside).
    """
    result = DeriveResult()
    # A bulk replay's journal may be without its key yet: the buffer knows where it ends.
    upto = journal_end(conn) if replayed is None else replayed.end
    derived = conn.execute("SELECT derived_serial FROM sync_state").fetchone()[0]
    if replayed is None:
        todo = _todo(conn, derived, upto)
    else:
        # Not fresh: packages with rows journalled before the replay, or whose rows it may not hold.
        seen = _todo(conn, derived, replayed.before)
        todo = set(seen)
        # The replay journalled exactly the rows past replayed.before, and its parts hold every one of
        # them: their packages are the parts' own, and need no pass over the journal to be found.
        excluded = seen | replayed.tainted
        with _fresh_load(conn, result) as load:
            for events, own in replayed.parts():
                fresh = _fresh_packages(conn, own, excluded)
                load(events, fresh)
                todo.update(own.difference(fresh))
    ordered = sorted(todo)
    if ordered and journal_indexed is not None:
        journal_indexed()
    for i in range(0, len(ordered), chunk):
        _derive_chunk(conn, ordered[i:i + chunk], result)
    with conn.transaction():
        conn.execute("UPDATE sync_state SET derived_serial = greatest(derived_serial, %s)", (upto,))
    if result.changed:
        log.info("derived %d packages, %d changed (change_seq %s..%s)", result.folded,
                 len(result.changed), result.first_change, result.last_change)
    return result


def _todo(conn: psycopg.Connection, after: int, upto: int) -> set[str]:
    """Packages marked pending or with journal rows in (after, upto]."""
    return {row[0] for row in conn.execute(db.query("derive_todo"), {"after": after, "upto": upto})}


def _fresh_packages(conn: psycopg.Connection, own: set[str], excluded: set[str]) -> list[str]:
    """Of the packages ``own`` (whose whole journal some events hold), those not ``excluded`` and not in
    the catalog yet."""
    candidates = sorted(own.difference(excluded))
    known = {row[0] for row in conn.execute(db.query("derive_known"), {"packages": " ".join(candidates)})}
    return [p for p in candidates if p not in known]


@contextmanager
def _fresh_load(conn: psycopg.Connection,
                result: DeriveResult) -> Iterator[Callable[[pl.DataFrame, list[str]], None]]:
    """One transaction that loads packages the catalog has never seen, in as many parts as the replay
    comes in; yields the function that folds one part's (``events``, ``fresh``) and COPYs them in.

    The keys of the tables that were empty are set aside before the first part and built again once,
    after the last: a part loaded into keys that earlier parts filled, key by key, took two and a half
    times as long as the first (a replay of 5M events, in two parts). Until the load commits, other
    sessions wait for those tables rather than see some parts without the others."""
    loaded: list[tuple[int, list[str]]] = []
    restore: list[str] | None = None
    with conn.transaction(), conn.cursor() as cur:

        def load(events: pl.DataFrame, fresh: list[str]) -> None:
            nonlocal restore
            if not fresh:
                return
            if restore is None:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (CHANGE_LOCK,))
                restore = _set_aside_keys(cur)
            # One block of change numbers a part; the lock is held to commit, so they still commit in order.
            first = cur.execute("SELECT nextval('change_seq')").fetchone()[0]
            cur.execute("SELECT setval('change_seq', %s)", (first + len(fresh) - 1,))
            bulk_fold.write_fresh(cur, events, fresh, first)
            loaded.append((first, fresh))

        yield load
        if restore:
            cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
            for statement in reversed(restore):
                cur.execute(statement)
    for first, fresh in loaded:
        result.folded += len(fresh)
        result.changed.extend(fresh)
        result.first_change = first if result.first_change is None else result.first_change
        result.last_change = first + len(fresh) - 1


# The tables a fresh load writes. One that is empty (the first replay of PyPI's history) loads without
# its keys and indexes, which are built again after the load in one sorted pass each: inserting a
# million rows into them key by key cost the database half again as much as storing the rows.
_FRESH_TABLES = ("packages", "aliases", "versions", "source_files")


def _set_aside_keys(cur: psycopg.Cursor) -> list[str]:
    """Drop the keys and indexes of the fresh tables that are empty (and the foreign keys pointing at
    them), in this transaction; return the statements that make them again. Until it commits, other
    sessions wait for those tables (the lock that DROP takes) rather than see them without keys."""
    restore: list[str] = []
    for table in _FRESH_TABLES:
        name = psycopg.sql.Identifier(table)
        filled = psycopg.sql.SQL("SELECT EXISTS (SELECT FROM {})").format(name)
        if cur.execute(filled).fetchone()[0]:
            continue
        cur.execute(psycopg.sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(name))
        if cur.execute(filled).fetchone()[0]:
            continue  # filled while we waited for the lock
        for drop, create, _step in cur.execute(db.query("table_keys"), {"table": table}).fetchall():
            cur.execute(drop)
            restore.append(create)
    return restore


def _derive_chunk(conn: psycopg.Connection, packages: list[str], result: DeriveResult) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS derive_set (package text COLLATE \"C\" PRIMARY KEY) "
                    "ON COMMIT DELETE ROWS")
        cur.execute("INSERT INTO derive_set (package) SELECT unnest(%s::text[])", (packages,))
        cur.execute("DELETE FROM pending_packages WHERE package = ANY(%s)", (packages,))
        cur.execute("SET LOCAL work_mem = '256MB'")
        cur.execute("ANALYZE derive_set")
        states = list(_fold_pending(cur))
        result.folded += len(states)
        _stage_states(cur, states)
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (CHANGE_LOCK,))
        cur.execute(db.query("derive_apply"))
        changed = cur.execute("SELECT package, change_seq FROM packages JOIN derive_packages USING (package) "
                              "ORDER BY change_seq").fetchall()
        if changed:
            result.changed.extend(package for package, _ in changed)
            result.first_change = changed[0][1] if result.first_change is None else result.first_change
            result.last_change = changed[-1][1]


def _fold_pending(cur: psycopg.Cursor) -> Iterator[PackageState]:
    """Fold every package in derive_set from its journal (streamed in history order)."""
    state: PackageState | None = None
    for subject, serial, name, package, version, ts, action, kind, other in cur.execute(
            db.query("derive_history")):
        if state is None or state.package != subject:
            if state is not None:
                yield state
            state = PackageState(subject)
        apply_event(state, _event(serial, name, package, version, ts, action, kind, other))
    if state is not None:
        yield state


def _event(serial, name, package, version, ts, action, kind, other) -> Event:
    kind = KIND_BY_TEXT[kind]
    if kind is Kind.ADD_FILE or kind is Kind.REMOVE_FILE:
        parsed = parse_action(action)
        return Event(serial, name, package, version, ts, action, kind, parsed.filename, parsed.pyver, other)
    return Event(serial, name, package, version, ts, action, kind, None, None, other)


def _stage_states(cur: psycopg.Cursor, states: list[PackageState]) -> None:
    """COPY the folded states into the staging tables that derive_apply.sql compares and writes."""
    cur.execute(db.query("derive_stage"))
    with cur.copy("COPY derive_packages FROM STDIN") as copy:
        for state in states:
            copy.write_row((state.package, state.display_name, state.present, state.born_serial,
                            state.quarantined))
    with cur.copy("COPY derive_aliases FROM STDIN") as copy:
        for state in states:
            for alias, (ts, serial) in state.aliases.items():
                copy.write_row((state.package, alias, ts, serial))
    with cur.copy("COPY derive_versions FROM STDIN") as copy:
        for state in states:
            ranks = version_ranks(state.versions)
            for v in state.versions.values():
                copy.write_row((state.package, v.version, v.born_serial, v.released, ranks[v.version],
                                is_valid_version(v.version), is_prerelease(v.version), v.yanked,
                                v.quarantined, v.has_sdist))
    with cur.copy("COPY derive_files FROM STDIN") as copy:
        for state in states:
            for v in state.versions.values():
                for f in v.files.values():
                    copy.write_row((state.package, f.filename, v.version, f.pyver, f.born_serial,
                                    f.uploaded))


# --- change tracking ------------------------------------------------------------------------------

def mark_changed(conn: psycopg.Connection, packages: Iterable[str]) -> None:
    """Record that the visible state of ``packages`` changed (builds, enrichment, operator actions)."""
    packages = sorted(set(packages))
    if not packages:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (CHANGE_LOCK,))
        conn.execute("UPDATE packages SET change_seq = nextval('change_seq'), changed_at = now() "
                     "WHERE package = ANY(%s)", (packages,))


def changes_since(conn: psycopg.Connection, mark: int) -> tuple[list[str], int]:
    """Packages whose state changed after ``mark``, and the mark that covers them."""
    rows = conn.execute("SELECT package, change_seq FROM packages WHERE change_seq > %s "
                        "ORDER BY change_seq", (mark,)).fetchall()
    new_mark = rows[-1][1] if rows else mark
    return [package for package, _ in rows], new_mark


def consumer_mark(conn: psycopg.Connection, consumer: str) -> int:
    row = conn.execute("SELECT mark FROM consumer_marks WHERE consumer = %s", (consumer,)).fetchone()
    return row[0] if row else 0


def set_consumer_mark(conn: psycopg.Connection, consumer: str, mark: int) -> None:
    conn.execute("INSERT INTO consumer_marks (consumer, mark) VALUES (%s, %s) "
                 "ON CONFLICT (consumer) DO UPDATE SET mark = greatest(consumer_marks.mark, EXCLUDED.mark), "
                 "updated_at = now()", (consumer, mark))
