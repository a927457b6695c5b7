"""Sync: the real client against the PyPI double over HTTP, into a real catalog."""

import gc
import sys
import tempfile

import psycopg
import pytest

from support.catalog import catalog_snapshot, schema_keys
from support.histories import CHAI
from wheelwright.catalog import store as cat
from wheelwright.catalog.bulk import fold as bulk_fold
from wheelwright.catalog import db
from wheelwright.catalog.bulk import replay
from wheelwright.catalog import sync
from wheelwright.catalog.events import parse_row
from wheelwright.catalog.fold import fold_log
from wheelwright.pypi.client import PyPI
from wheelwright.testing.pypi_double import PyPIDouble

LOG = CHAI + [
    ["RPi.GPIO", None, 1400000000, "create", 300000],
    ["RPi.GPIO", "0.7.0", 1400000001, "new release", 300001],
    ["RPi.GPIO", "0.7.0", 1400000002, "add source file RPi.GPIO-0.7.0.tar.gz", 300002],
    ["rpi_gpio", "0.7.1", 1400000100, "new release", 300003],
    ["RPi.GPIO", None, 1400000200, "remove Owner ben", 300004],
    ["doomed", None, 1400000300, "create", 300005],
    ["doomed", "1.0", 1400000301, "new release", 300006],
    ["Doomed", None, 1400000400, "remove project", 300007],
]


@pytest.fixture
def pypi():
    with PyPIDouble(LOG, page_size=4) as double:
        yield double


def client(double, **kwargs):
    return PyPI(double.xmlrpc_url, sleep=lambda s: None, **kwargs)


def spying(method, calls):
    """``method``, noting the height of each frame it is called with in ``calls``."""
    def spy(self, frame):
        calls.append(frame.height)
        return method(self, frame)
    return spy


def expected_snapshot_packages(rows):
    states = fold_log(parse_row(r) for r in rows)
    return sorted((p, s.display_name, s.present) for p, s in states.items())


def test_sync_pages_through_the_changelog_and_reflects_every_event(catalog, pypi):
    result = sync.sync_once(catalog, client(pypi))
    assert (result.first_serial, result.last_serial, result.received) == (0, 300007, len(LOG))
    assert cat.watermark(catalog) == 300007
    calls = [params for method, params in pypi.calls if method == "changelog_since_serial"]
    assert len(calls) >= 4, "a page size of 4 means several pages"
    packages = catalog.execute("SELECT package, display_name, present FROM packages ORDER BY 1").fetchall()
    assert packages == expected_snapshot_packages(LOG)
    assert catalog.execute("SELECT count(*) FROM pending_packages").fetchone()[0] == 0


def test_a_second_sync_is_a_no_op_and_new_events_are_picked_up(catalog, pypi):
    sync.sync_once(catalog, client(pypi))
    again = sync.sync_once(catalog, client(pypi))
    assert (again.received, again.changed) == (0, [])
    pypi.append([["RPi.GPIO", "0.7.1", 1400000500, "yank release", 300010]])
    later = sync.sync_once(catalog, client(pypi))
    assert later.changed == ["rpi-gpio"] and later.last_serial == 300010
    assert catalog.execute("SELECT yanked FROM versions WHERE package = 'rpi-gpio' AND version = '0.7.1'"
                           ).fetchone() == (True,)


def test_a_rate_limited_pypi_is_waited_for_not_given_up_on(catalog, pypi):
    waits = []
    pypi.fail_next(2, "rate_limit")
    result = sync.sync_once(catalog, PyPI(pypi.xmlrpc_url, sleep=waits.append))
    assert result.last_serial == 300007
    assert waits[:2] == [1, 1], "the fault says the limit resets in 1 second"


# With memory for 3 events, the replay keeps the others on disk, in partitions.
@pytest.mark.parametrize("memory", [sync.REPLAY_MEMORY, 3], ids=["kept", "spilled"])
def test_bulk_replay_and_incremental_sync_build_the_same_catalog(catalog, pypi, monkeypatch, tmp_path, memory):
    monkeypatch.setattr(sync, "BULK_BACKLOG", 1)
    monkeypatch.setattr(sync, "REPLAY_MEMORY", memory)
    monkeypatch.setattr(bulk_fold, "FOLD_SLICE", 3)  # many slices, folded while others are stored
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    keys = schema_keys(catalog)
    spills = []
    monkeypatch.setattr(replay.ReplayBuffer, "_spill", spying(replay.ReplayBuffer._spill, spills))
    bulk = sync.sync_once(catalog, client(pypi))
    assert bulk.bulk
    assert bool(spills) == (memory == 3)
    assert list(tmp_path.iterdir()) == [], "what the replay spilled is removed"
    bulk_snapshot = catalog_snapshot(catalog)
    assert schema_keys(catalog) == keys, "the indexes and keys set aside for a bulk replay are built again"
    catalog.execute("TRUNCATE journal, packages, aliases, versions, source_files, pending_packages CASCADE")
    catalog.execute("UPDATE sync_state SET last_serial = 0, derived_serial = 0")
    monkeypatch.setattr(sync, "BULK_BACKLOG", 10**12)
    for stop in (259151, 300003, 300007):
        sync.sync_once(catalog, client(pypi), until=stop)
    assert catalog_snapshot(catalog) == bulk_snapshot


def test_a_bulk_replay_without_a_second_connection_builds_the_journal_indexes_itself(catalog, pypi, monkeypatch):
    monkeypatch.setattr(sync, "BULK_BACKLOG", 1)
    keys = schema_keys(catalog)

    def refused(conn):
        raise psycopg.OperationalError("too many clients already")

    monkeypatch.setattr(db, "connect_like", refused)
    assert sync.sync_once(catalog, client(pypi)).bulk
    assert schema_keys(catalog) == keys
    assert catalog.execute("SELECT package, display_name, present FROM packages ORDER BY 1").fetchall() == \
        expected_snapshot_packages(LOG)


def test_a_bulk_replay_whose_fold_fails_raises_that_error_and_the_next_sync_mends_it(catalog, pypi, monkeypatch,
                                                                                     tmp_path):
    monkeypatch.setattr(sync, "BULK_BACKLOG", 1)
    monkeypatch.setattr(sync, "REPLAY_MEMORY", 3)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    keys = schema_keys(catalog)
    derive = cat.derive

    interpreter = []

    def fails(*args, **kwargs):
        interpreter.append((gc.isenabled(), sys.getswitchinterval()))
        raise RuntimeError("fold failed")

    monkeypatch.setattr(cat, "derive", fails)
    before = (gc.isenabled(), sys.getswitchinterval())
    with pytest.raises(RuntimeError, match="fold failed"):
        sync.sync_once(catalog, client(pypi))
    assert interpreter == [(False, pytest.approx(sync.BULK_SWITCH_INTERVAL))], \
        "the replay ran with the bulk settings"
    assert (gc.isenabled(), sys.getswitchinterval()) == before, "and gave the interpreter back as it was"
    assert list(tmp_path.iterdir()) == [], "and removed the events it had spilled"
    monkeypatch.setattr(cat, "derive", derive)
    sync.sync_once(catalog, client(pypi))
    assert schema_keys(catalog) == keys
    assert catalog.execute("SELECT package, display_name, present FROM packages ORDER BY 1").fetchall() == \
        expected_snapshot_packages(LOG)


class Pages:
    """A changelog that serves these pages as they are, re-deliveries and all; ``fail_after`` pages, it
    fails as a connection to PyPI would."""

    def __init__(self, pages, fail_after=None):
        self.pages, self.fail_after = pages, fail_after

    def last_serial(self):
        return max(row[4] for page in self.pages for row in page)

    def changelog_pages(self, since, until=None):
        for number, page in enumerate(self.pages):
            if number == self.fail_after:
                raise ConnectionError("PyPI went away")
            yield page


def journal_key(conn) -> bool:
    return conn.execute("SELECT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'journal'::regclass "
                        "AND contype = 'p')").fetchone()[0]


def test_a_bulk_replay_stores_each_serial_once_however_often_it_arrives(catalog, monkeypatch):
    monkeypatch.setattr(sync, "BULK_BACKLOG", 1)
    keys = schema_keys(catalog)
    keyed = []
    ingest_prepared = cat.ingest_prepared

    def noting_the_key(conn, page):
        keyed.append(journal_key(conn))
        return ingest_prepared(conn, page)

    monkeypatch.setattr(cat, "ingest_prepared", noting_the_key)
    # The third page repeats serials of the first, one of them with another time (the stored row
    # wins); the fourth brings one serial twice.
    moved = [*LOG[2][:2], LOG[2][2] + 99, *LOG[2][3:]]
    pages = [LOG[:6], LOG[6:12], [LOG[1], moved, *LOG[12:14]], [LOG[14], LOG[14], *LOG[15:]]]
    result = sync.sync_once(catalog, Pages(pages))
    assert result.bulk and keyed == [False, False, True, True], "keyless while the serials climb"
    assert catalog.execute("SELECT derived_serial FROM sync_state").fetchone() == (LOG[-1][4],)
    assert catalog.execute("SELECT serial, ts FROM journal ORDER BY serial").fetchall() == \
        [(row[4], row[2]) for row in LOG]
    assert schema_keys(catalog) == keys
    assert catalog.execute("SELECT package, display_name, present FROM packages ORDER BY 1").fetchall() == \
        expected_snapshot_packages(LOG)


def test_a_bulk_replay_that_dies_journalling_leaves_no_way_to_store_a_serial_twice(catalog, monkeypatch):
    monkeypatch.setattr(sync, "BULK_BACKLOG", 1)
    keys = schema_keys(catalog)
    # PyPI fails when the replay asks for the page after those it parses ahead of the first one.
    ahead = sync.PARSERS
    pages = [LOG[:4], *([row] for row in LOG[4:4 + ahead]), LOG[4 + ahead:]]
    with pytest.raises(ConnectionError):
        sync.sync_once(catalog, Pages(pages, fail_after=ahead + 1))
    assert cat.journal_end(catalog) == LOG[3][4] and not journal_key(catalog), \
        "the replay died with its first page journalled and the journal's key set aside"
    # The next sync is not in bulk, and PyPI delivers some stored serials again.
    monkeypatch.setattr(sync, "BULK_BACKLOG", 10**12)
    sync.sync_once(catalog, Pages([LOG[2:8], LOG[8:]]))
    assert catalog.execute("SELECT serial FROM journal ORDER BY serial").fetchall() == [(row[4],) for row in LOG]
    assert schema_keys(catalog) == keys
    assert catalog.execute("SELECT package, display_name, present FROM packages ORDER BY 1").fetchall() == \
        expected_snapshot_packages(LOG)


@pytest.mark.parametrize("bulk", [False, True], ids=["incremental", "bulk"])
def test_malformed_rows_from_pypi_are_rejected_loudly_and_the_watermark_records_them(catalog, caplog, monkeypatch,
                                                                                      bulk):
    if bulk:  # pages are parsed column by column
        monkeypatch.setattr(sync, "BULK_BACKLOG", 1)
    rows = [["fine", None, 1, "create", 1], ["bad/name", None, 2, "create", 2], ["fine", "1.0", 3, "new release", 3]]
    with PyPIDouble(rows) as double:
        result = sync.sync_once(catalog, client(double))
    assert (result.rejected, result.last_serial, result.bulk) == (1, 3, bulk)
    assert "rejected changelog row" in caplog.text and "bad/name" in caplog.text
    assert catalog.execute("SELECT serial FROM journal_rejects").fetchall() == [(2,)]


def test_two_syncs_at_once_are_refused(catalog, pypi, settings):
    from wheelwright.catalog import db
    with db.connect(settings) as other:
        other.execute("SELECT pg_advisory_lock(hashtext(%s))", (sync.SYNC_LOCK,))
        with pytest.raises(sync.SyncBusy):
            sync.sync_once(catalog, client(pypi))
