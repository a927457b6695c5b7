"""The catalog: PyPI's journal in, the state of every package out.

Two steps, each one transaction, each safe to crash in:

``ingest``  stores raw changelog rows in the append-only journal (keyed by serial, so re-delivery is a
            no-op), records rows it cannot read in ``journal_rejects`` with the reason, and marks every
            package the rows touch as pending. The caller moves the serial watermark in the same
            transaction (see sync.py).
``derive``  re-folds every pending package from its *whole* journal (fold.py) and writes the result
            back set-based: rows that vanished or were reborn are deleted (their builds cascade away),
            new ones inserted, flags updated. A package whose folded state did not change (same
            fingerprint) is left alone; one that did takes the next ``change_seq`` number.

Because derivation always starts from the full journal of a package, the catalog is a function of
the set of events, whatever order or batches they came in.

``change_seq`` numbers are handed out under one transaction-scoped advisory lock, so transactions
that bump them commit in number order: a consumer that has seen number N has seen everything before
N (``changes_since``). Builds and enrichment bump them too, through ``mark_changed``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import psycopg

from . import db
from .errors import MalformedEvent
from .events import Event, Kind, parse_action, parse_row
from .fold import PackageState, apply_event, is_prerelease, is_valid_version, version_ranks

log = logging.getLogger(__name__)

CHANGE_LOCK = "wheelwright.change_seq"


@dataclass
class IngestResult:
    received: int = 0
    stored: int = 0
    rejected: int = 0
    max_serial: int | None = None


@dataclass
class DeriveResult:
    folded: int = 0
    changed: list[str] = field(default_factory=list)
    first_change: int | None = None
    last_change: int | None = None


def ingest(conn: psycopg.Connection, rows: Iterable) -> IngestResult:
    """Journal raw changelog rows; malformed rows are rejected (logged, kept with the reason)."""
    result = IngestResult()
    events: list[Event] = []
    rejects: list[tuple] = []
    for row in rows:
        result.received += 1
        serial = _serial_of(row)
        if serial is not None and (result.max_serial is None or serial > result.max_serial):
            result.max_serial = serial
        try:
            events.append(parse_row(row))
        except MalformedEvent as exc:
            log.warning("rejected changelog row: %s", exc)
            rejects.append((serial, _raw_text(row), str(exc)))
    result.rejected = len(rejects)
    with conn.transaction(), conn.cursor() as cur:
        result.stored = _store(conn, cur, events)
        if rejects:
            cur.executemany("INSERT INTO journal_rejects (serial, raw, reason) VALUES (%s, %s, %s) "
                            "ON CONFLICT DO NOTHING", rejects)
    return result


_JOURNAL_COLUMNS = "serial, name, package, version, ts, action, kind, other_package"


def _copy_events(cur: psycopg.Cursor, table: str, events: list[Event]) -> None:
    with cur.copy(f"COPY {table} ({_JOURNAL_COLUMNS}) FROM STDIN") as copy:
        write = copy.write_row
        for e in events:
            write((e.serial, e.name, e.package, e.version, e.timestamp, e.action, e.kind.value,
                   e.other_package))


def _store(conn: psycopg.Connection, cur: psycopg.Cursor, events: list[Event]) -> int:
    """Append events to the journal, skipping serials it has; mark their packages pending."""
    if not events:
        return 0
    try:
        # Usually every serial is new: copy straight into the journal.
        with conn.transaction():
            _copy_events(cur, "journal", events)
        stored = len(events)
    except psycopg.errors.UniqueViolation:
        # Some are re-deliveries: stage them and keep only the new serials.
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS journal_incoming "
                    "(LIKE journal INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        _copy_events(cur, "journal_incoming", events)
        cur.execute(db.query("journal_store"))
        stored = cur.rowcount
    touched = {e.package for e in events}
    touched.update(e.other_package for e in events if e.other_package is not None)
    cur.execute("INSERT INTO pending_packages (package) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                (sorted(touched),))
    return stored


def _serial_of(row) -> int | None:
    if isinstance(row, (list, tuple)) and len(row) == 5:
        serial = row[4]
        if type(serial) is int and serial > 0:
            return serial
    return None


def _raw_text(row) -> str:
    try:
        return json.dumps(row, default=repr)[:4000]
    except (TypeError, ValueError):
        return repr(row)[:4000]


def drop_history_index(conn: psycopg.Connection) -> None:
    """Before a bulk replay: journal rows go in far faster without the per-package index."""
    with conn.transaction():
        conn.execute("DROP INDEX IF EXISTS journal_history")


def ensure_history_index(conn: psycopg.Connection) -> None:
    """After a bulk replay (or a crash in one): build the per-package index in one sorted pass."""
    with conn.transaction():
        conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        conn.execute("CREATE INDEX IF NOT EXISTS journal_history ON journal (package, ts, serial)")


def journal_size_estimate(conn: psycopg.Connection) -> int:
    return max(0, int(conn.execute(
        "SELECT reltuples FROM pg_class WHERE oid = 'journal'::regclass").fetchone()[0]))


def advance_watermark(conn: psycopg.Connection, serial: int) -> None:
    conn.execute("UPDATE sync_state SET last_serial = greatest(last_serial, %s), updated_at = now()",
                 (serial,))


def watermark(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT last_serial FROM sync_state").fetchone()[0]


# --- derivation -----------------------------------------------------------------------------------

def derive(conn: psycopg.Connection, *, chunk: int = 50_000) -> DeriveResult:
    """Re-fold every pending package and write what changed, ``chunk`` packages per transaction."""
    result = DeriveResult()
    while _derive_chunk(conn, chunk, result):
        pass
    if result.changed:
        log.info("derived %d packages, %d changed (change_seq %s..%s)", result.folded,
                 len(result.changed), result.first_change, result.last_change)
    return result


def _derive_chunk(conn: psycopg.Connection, limit: int, result: DeriveResult) -> bool:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS derive_set (package text PRIMARY KEY) "
                    "ON COMMIT DELETE ROWS")
        cur.execute(db.query("derive_take_pending"), {"limit": limit})
        if cur.rowcount == 0:
            return False
        cur.execute("SET LOCAL work_mem = '256MB'")
        cur.execute("ANALYZE derive_set")
        known = dict(cur.execute("SELECT p.package, p.state_hash FROM packages p "
                                 "JOIN derive_set USING (package)").fetchall())
        changed: list[tuple[PackageState, str]] = []
        for state in _fold_pending(cur):
            result.folded += 1
            fingerprint = state.fingerprint()
            if known.get(state.package) != fingerprint:
                changed.append((state, fingerprint))
        if changed:
            _write_states(cur, changed)
            result.changed.extend(state.package for state, _ in changed)
            first, last = cur.execute("SELECT min(change_seq), max(change_seq) FROM packages "
                                      "JOIN derive_packages USING (package)").fetchone()
            result.first_change = first if result.first_change is None else result.first_change
            result.last_change = last
    return True


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


_KINDS = {kind.value: kind for kind in Kind}  # Kind(value) is a slow call on a hot path


def _event(serial, name, package, version, ts, action, kind, other) -> Event:
    kind = _KINDS[kind]
    if kind is Kind.ADD_FILE or kind is Kind.REMOVE_FILE:
        parsed = parse_action(action)
        return Event(serial, name, package, version, ts, action, kind, parsed.filename, parsed.pyver, other)
    return Event(serial, name, package, version, ts, action, kind, None, None, other)


def _write_states(cur: psycopg.Cursor, changed: list[tuple[PackageState, str]]) -> None:
    cur.execute(db.query("derive_stage"))
    with cur.copy("COPY derive_packages FROM STDIN") as copy:
        for state, fingerprint in changed:
            copy.write_row((state.package, state.display_name, state.present, state.born_serial,
                            state.quarantined, fingerprint))
    with cur.copy("COPY derive_aliases FROM STDIN") as copy:
        for state, _ in changed:
            for alias, (ts, serial) in state.aliases.items():
                copy.write_row((state.package, alias, ts, serial))
    with cur.copy("COPY derive_versions FROM STDIN") as copy:
        for state, _ in changed:
            ranks = version_ranks(state.versions)
            for v in state.versions.values():
                copy.write_row((state.package, v.version, v.born_serial, v.released, ranks[v.version],
                                is_valid_version(v.version), is_prerelease(v.version), v.yanked,
                                v.quarantined, v.has_sdist))
    with cur.copy("COPY derive_files FROM STDIN") as copy:
        for state, _ in changed:
            for v in state.versions.values():
                for f in v.files.values():
                    copy.write_row((state.package, f.filename, v.version, f.pyver, f.born_serial,
                                    f.uploaded))
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (CHANGE_LOCK,))
    cur.execute(db.query("derive_apply"))


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
