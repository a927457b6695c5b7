"""The catalog in PostgreSQL: journal once, derive from the whole history, whatever the order."""

import random

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.catalog import catalog_snapshot, schema_keys
from support.histories import CHAI, ROW, numbered
from wheelwright.catalog.bulk import fold as bulk_fold
from wheelwright.catalog import store as cat
from wheelwright.catalog import db
from wheelwright.catalog import status
from wheelwright.catalog.events import parse_row
from wheelwright.catalog.fold import fold_log
from wheelwright.catalog.bulk.replay import ReplayBuffer

def apply(conn, rows):
    with conn.transaction():
        result = cat.ingest(conn, rows)
    derived = cat.derive(conn)
    return result, derived


def versions(conn, package):
    return [v for (v,) in conn.execute(
        "SELECT version FROM versions WHERE package = %s ORDER BY rank", (package,))]


def test_chai_arriving_row_by_row_ends_with_every_release(catalog):
    for row in CHAI:
        apply(catalog, [row])
    assert versions(catalog, "chai") == ["0.1.0", "0.1.16", "0.1.17", "0.1.18", "0.1.19"]
    assert catalog.execute("SELECT present FROM packages WHERE package = 'chai'").fetchone() == (True,)


def test_redelivered_rows_store_nothing_and_change_nothing(catalog):
    apply(catalog, CHAI)
    mark = catalog.execute("SELECT max(change_seq) FROM packages").fetchone()[0]
    result, derived = apply(catalog, CHAI)
    assert result.stored == 0
    assert derived.changed == [], "a re-delivery must not look like a change to consumers"
    assert catalog.execute("SELECT max(change_seq) FROM packages").fetchone()[0] == mark
    assert catalog.execute("SELECT count(*) FROM journal").fetchone()[0] == len(CHAI)


def test_a_late_event_with_an_old_timestamp_rederives_its_package(catalog):
    apply(catalog, [["x", None, 100, "create", 1], ["x", "1.0", 110, "new release", 2],
                    ["x", "2.0", 300, "new release", 4]])
    # Arrives late: the release 1.0 was removed at t=200, before 2.0 existed.
    apply(catalog, [["x", "1.0", 200, "remove release", 9]])
    assert versions(catalog, "x") == ["2.0"]


def test_deleting_a_project_takes_its_builds_and_recreating_it_starts_clean(catalog):
    apply(catalog, [["Foo", None, 1, "create", 1], ["Foo", "1.0", 2, "new release", 2],
                    ["Foo", "1.0", 3, "add source file Foo-1.0.tar.gz", 3]])
    catalog.execute("INSERT INTO targets (abi, platform, distro, position, name, queue) "
                    "VALUES ('cp311', 'linux_armv7l', 'bookworm', 1, 'cp311', 'cp311')")
    catalog.execute("INSERT INTO builds (package, version, abi, target, status) "
                    "VALUES ('foo', '1.0', 'cp311', 'cp311', 'failure')")
    apply(catalog, [["FOO", None, 10, "remove project", 4]])
    assert catalog.execute("SELECT count(*) FROM builds").fetchone()[0] == 0
    assert catalog.execute("SELECT present FROM packages WHERE package = 'foo'").fetchone() == (False,)
    assert versions(catalog, "foo") == []
    apply(catalog, [["foo", None, 20, "create", 5], ["foo", "1.0", 21, "new release", 6]])
    row = catalog.execute("SELECT present, display_name FROM packages WHERE package = 'foo'").fetchone()
    assert row == (True, "foo")
    assert catalog.execute("SELECT born_serial, has_sdist FROM versions WHERE package = 'foo'").fetchall() \
        == [(6, False)]


def test_a_version_reborn_under_the_same_string_loses_its_builds(catalog):
    apply(catalog, [["x", "1.0", 1, "add source file x-1.0.tar.gz", 1]])
    catalog.execute("INSERT INTO targets (abi, platform, distro, position, name, queue) "
                    "VALUES ('cp311', 'linux_armv7l', 'bookworm', 1, 'cp311', 'cp311')")
    catalog.execute("INSERT INTO builds (package, version, abi, target, status) "
                    "VALUES ('x', '1.0', 'cp311', 'cp311', 'success')")
    apply(catalog, [["x", "1.0", 2, "remove release", 2], ["x", "1.0", 3, "new release", 3]])
    assert catalog.execute("SELECT count(*) FROM builds").fetchone()[0] == 0
    assert versions(catalog, "x") == ["1.0"]


def test_unchanged_yank_flag_moves_no_build(catalog):
    apply(catalog, [["x", "1.0", 1, "add source file x-1.0.tar.gz", 1]])
    catalog.execute("INSERT INTO targets (abi, platform, distro, position, name, queue) "
                    "VALUES ('cp311', 'linux_armv7l', 'bookworm', 1, 'cp311', 'cp311')")
    catalog.execute("INSERT INTO builds (package, version, abi, target, status) "
                    "VALUES ('x', '1.0', 'cp311', 'cp311', 'success')")
    apply(catalog, [["x", "1.0", 2, "yank release", 2]])
    assert catalog.execute("SELECT yanked FROM versions").fetchone() == (True,)
    assert catalog.execute("SELECT count(*) FROM builds").fetchone()[0] == 1, "a yank keeps files"


def test_malformed_rows_are_recorded_and_do_not_stop_the_rest(catalog):
    result, _ = apply(catalog, [["ok", None, 1, "create", 1], ["bad/name", None, 1, "create", 2],
                                ["x", None, 1, "create", "nope"]])
    assert (result.stored, result.rejected, result.max_serial) == (1, 2, 2)
    reasons = catalog.execute("SELECT serial, reason FROM journal_rejects ORDER BY reject_id").fetchall()
    assert reasons[0][0] == 2 and "canonical" in reasons[0][1]
    assert reasons[1][0] is None and "serial" in reasons[1][1]
    apply(catalog, [["bad/name", None, 1, "create", 2]])
    assert catalog.execute("SELECT count(*) FROM journal_rejects").fetchone()[0] == 2, "recorded once"


def test_unknown_actions_are_kept_counted_and_ignored(catalog):
    apply(catalog, [["x", None, 1, "create", 1], ["x", None, 2, "frobnicate", 2]])
    snapshot = status.read_status(catalog)
    assert (snapshot.events, snapshot.unknown_actions, snapshot.packages) == (2, 1, 1)


def test_invalid_versions_are_kept_as_text_and_ranked_last(catalog):
    apply(catalog, [["x", "banana", 1, "new release", 1], ["x", "1.0", 2, "new release", 2],
                    ["x", "0.5", 3, "new release", 3]])
    rows = catalog.execute("SELECT version, valid FROM versions ORDER BY rank").fetchall()
    assert rows == [("0.5", True), ("1.0", True), ("banana", False)]


def test_consumers_see_every_change_once_in_order(catalog):
    apply(catalog, [["a", None, 1, "create", 1]])
    changed, mark = _changes(catalog, 0)
    assert changed == ["a"]
    apply(catalog, [["b", None, 2, "create", 2], ["a", "1.0", 3, "new release", 3]])
    changed, mark2 = _changes(catalog, mark)
    assert sorted(changed) == ["a", "b"] and mark2 > mark
    assert _changes(catalog, mark2) == ([], mark2)
    cat.mark_changed(catalog, ["b"])
    assert _changes(catalog, mark2)[0] == ["b"]


def _changes(conn, mark):
    return cat.changes_since(conn, mark)


# --- the property: any shuffle or split of the same events gives the same catalog ------------------

def _reset(conn):
    conn.execute("TRUNCATE journal, journal_rejects, pending_packages, packages, aliases, versions, "
                 "source_files CASCADE")
    conn.execute("UPDATE sync_state SET last_serial = 0, derived_serial = 0")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=30), seed=st.integers(0, 2**32))
def test_any_shuffle_or_split_of_the_events_yields_the_same_catalog(catalog, rows, seed):
    log = numbered(rows)
    _reset(catalog)
    apply(catalog, log)
    in_order = catalog_snapshot(catalog)

    rng = random.Random(seed)
    shuffled = log[:]
    rng.shuffle(shuffled)
    _reset(catalog)
    while shuffled:
        cut = rng.randint(1, len(shuffled))
        batch, shuffled = shuffled[:cut], shuffled[cut:]
        with catalog.transaction():
            cat.ingest(catalog, batch)
            cat.ingest(catalog, batch[: rng.randint(0, len(batch))])  # partial re-delivery
        if rng.random() < 0.5:
            cat.derive(catalog)
    cat.derive(catalog)
    assert catalog_snapshot(catalog) == in_order


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=30), seed=st.integers(0, 2**32),
       memory=st.sampled_from([0, 6, 10_000]))
def test_a_bulk_replay_over_any_catalog_ends_where_row_by_row_derivation_does(catalog, rows, seed, memory):
    log = numbered(rows)
    _reset(catalog)
    apply(catalog, log)
    expected = catalog_snapshot(catalog)

    # Some events derived as usual, some journalled by a sync that died before deriving, the rest
    # replayed in bulk (with re-deliveries of rows the journal has); memory 0 and 6 overflow the buffer.
    rng = random.Random(seed)
    shuffled = log[:]
    rng.shuffle(shuffled)
    cut1, cut2 = sorted(rng.randint(0, len(shuffled)) for _ in range(2))
    derived, crashed, replayed = shuffled[:cut1], shuffled[cut1:cut2], shuffled[cut2:]
    _reset(catalog)
    apply(catalog, derived)
    with catalog.transaction():
        cat.ingest(catalog, crashed)
    with ReplayBuffer(cat.journal_end(catalog), memory, expected=len(replayed)) as buffer:
        while replayed:
            cut = rng.randint(1, len(replayed))
            batch, replayed = replayed[:cut], replayed[cut:]
            if rng.random() < 0.3:
                batch += rng.sample(log[:cut2], rng.randint(0, min(3, cut2)))
            with catalog.transaction():
                buffer.add(cat.ingest(catalog, batch))
        cat.derive(catalog, replayed=buffer)
    assert catalog_snapshot(catalog) == expected
    catalog.execute("INSERT INTO pending_packages (package) SELECT package FROM packages")
    assert cat.derive(catalog).changed == [], "a later row-by-row fold must see no change"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=40), memory=st.sampled_from([0, 4]))
def test_a_replay_past_its_buffer_folds_its_events_kept_on_disk_in_partitions(catalog, rows, memory):
    log = numbered(rows)
    _reset(catalog)
    apply(catalog, log)
    expected = catalog_snapshot(catalog)

    _reset(catalog)
    with ReplayBuffer(cat.journal_end(catalog), memory, expected=len(log)) as buffer:
        with catalog.transaction():
            buffer.add(cat.ingest(catalog, log))
        derived = cat.derive(catalog, replayed=buffer)
    assert catalog_snapshot(catalog) == expected
    assert derived.folded == len(expected["packages"])


@pytest.mark.parametrize("memory", [100, 0], ids=["kept", "spilled"])
def test_a_replay_folds_the_packages_the_catalog_has_from_their_whole_history(catalog, memory):
    apply(catalog, [["known", None, 1, "create", 1], ["known", "1.0", 2, "new release", 2]])
    with ReplayBuffer(cat.journal_end(catalog), memory, expected=3) as buffer:
        with catalog.transaction():
            buffer.add(cat.ingest(catalog, [
                ["known", "2.0", 3, "new release", 3],
                ["fresh", None, 4, "create", 4], ["fresh", "0.1", 5, "new release", 5]]))
        derived = cat.derive(catalog, replayed=buffer)
    assert versions(catalog, "known") == ["1.0", "2.0"]
    assert versions(catalog, "fresh") == ["0.1"]
    assert sorted(derived.changed) == ["fresh", "known"]


def replay(conn, rows, memory=100) -> cat.DeriveResult:
    with ReplayBuffer(cat.journal_end(conn), memory, expected=len(rows)) as buffer:
        with conn.transaction():
            buffer.add(cat.ingest(conn, rows))
        return cat.derive(conn, replayed=buffer)


# A replay past its buffer (memory 0) keeps its events on disk, and is loaded in many parts.
@pytest.mark.parametrize("memory", [100, 0], ids=["kept", "spilled"])
def test_a_replay_into_an_empty_catalog_loads_without_keys_and_builds_them_again(catalog, memory):
    keys = schema_keys(catalog)
    assert ("versions", "versions_pkey", "PRIMARY KEY (package, version)") in keys
    replay(catalog, CHAI + [["sip", None, 1, "create", 800]], memory)
    assert schema_keys(catalog) == keys
    assert versions(catalog, "chai") == ["0.1.0", "0.1.16", "0.1.17", "0.1.18", "0.1.19"]

    # The restored keys hold: one more release replayed into the now filled tables keeps them.
    replay(catalog, [["sip", None, 1, "create", 900], ["sip", "1.0", 2, "new release", 901]])
    assert schema_keys(catalog) == keys
    with pytest.raises(psycopg.errors.UniqueViolation):
        catalog.execute("INSERT INTO versions SELECT * FROM versions WHERE package = 'sip'")


@pytest.mark.parametrize("memory", [100, 0], ids=["kept", "spilled"])
def test_a_fresh_load_that_fails_leaves_the_keys_and_the_catalog_as_they_were(catalog, monkeypatch, memory):
    keys = schema_keys(catalog)
    write_fresh = bulk_fold.write_fresh
    parts = []

    def dies_after_writing(*args):
        write_fresh(*args)
        parts.append(args[2])
        # Spilled, chai and sip fall in different parts: the load dies after its second.
        if len(parts) == 2 or memory:
            raise RuntimeError("killed halfway")

    monkeypatch.setattr(bulk_fold, "write_fresh", dies_after_writing)
    with pytest.raises(RuntimeError):
        replay(catalog, CHAI + [["sip", None, 1, "create", 800]], memory)
    assert len(parts) == (1 if memory else 2)
    assert schema_keys(catalog) == keys
    assert catalog.execute("SELECT count(*) FROM versions").fetchone() == (0,)
    monkeypatch.setattr(bulk_fold, "write_fresh", write_fresh)
    cat.derive(catalog)
    assert versions(catalog, "chai") == ["0.1.0", "0.1.16", "0.1.17", "0.1.18", "0.1.19"]


def test_a_replay_that_meets_a_serial_the_journal_has_folds_the_stored_row(catalog):
    buffer = ReplayBuffer(cat.journal_end(catalog), 100)
    for page in ([["keep", "1.0", 10, "new release", 1]],
                 [["keep", "1.0", 11, "remove release", 1], ["keep", "2.0", 12, "new release", 2]]):
        with catalog.transaction():
            buffer.add(cat.ingest(catalog, page))
    cat.derive(catalog, replayed=buffer)
    assert versions(catalog, "keep") == ["1.0", "2.0"], "serial 1 is the row the journal kept"


def test_a_row_arriving_below_the_derived_mark_is_still_derived(catalog):
    apply(catalog, [["late", None, 100, "create", 10], ["late", "1.0", 101, "new release", 11]])
    assert catalog.execute("SELECT derived_serial FROM sync_state").fetchone() == (11,)
    _, derived = apply(catalog, [["late", "1.0", 102, "add source file late-1.0.tar.gz", 5]])
    assert derived.changed == ["late"]
    assert catalog.execute("SELECT has_sdist FROM versions WHERE package = 'late'").fetchone() == (True,)
    assert catalog.execute("SELECT count(*) FROM pending_packages").fetchone() == (0,)


def test_the_database_fold_agrees_with_the_pure_fold(catalog):
    rows = CHAI + [["Other", None, 5, "create", 300000], ["other", "1.0", 6, "new release", 300001],
                   ["OTHER", "1.0", 7, "yank release", 300002]]
    apply(catalog, rows)
    states = fold_log(parse_row(r) for r in rows)
    for package, state in states.items():
        row = catalog.execute("SELECT present, display_name, born_serial FROM packages WHERE package = %s",
                              (package,)).fetchone()
        assert row == (state.present, state.display_name, state.born_serial)


def test_names_versions_and_file_names_compare_byte_by_byte_whatever_the_server_locale(catalog):
    identifiers = {
        "journal": ["name", "package", "version", "action", "kind", "other_package"],
        "pending_packages": ["package"], "packages": ["package", "display_name"],
        "aliases": ["package", "alias"], "versions": ["package", "version"],
        "source_files": ["package", "filename", "version", "pyver"],
        "builds": ["package", "version"], "wheels": ["filename", "package", "version"],
        "wheel_dependencies": ["filename"],
    }
    collations = {(table, column): collation for table, column, collation in catalog.execute(
        "SELECT table_name, column_name, collation_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ANY(%s)", (list(identifiers),))}
    assert {(table, column): collations[table, column] for table, columns in identifiers.items()
            for column in columns} == {(table, column): "C" for table, columns in identifiers.items()
                                       for column in columns}
    # The derive's staging tables join the catalog's keys in the same collation.
    apply(catalog, CHAI)
    staged = catalog.execute(
        "SELECT DISTINCT a.attcollation::regcollation::text FROM pg_attribute a JOIN pg_class c "
        "ON c.oid = a.attrelid WHERE c.relname LIKE 'derive%%' AND c.relpersistence = 't' "
        "AND a.atttypid = 'text'::regtype").fetchall()
    assert staged == [('"C"',)]


def test_the_history_index_is_remade_on_the_package_even_where_a_crashed_replay_dropped_it(catalog):
    history = "SELECT pg_get_indexdef('journal_history'::regclass)"
    assert catalog.execute(history).fetchone()[0].endswith("(package)")
    # A catalog from before migration 008, whose bulk replay died with the journal's indexes dropped.
    catalog.execute("DELETE FROM schema_migrations WHERE version = 8")
    catalog.execute("DROP INDEX journal_history")
    assert db.init_schema(catalog) == [8]
    assert catalog.execute(history).fetchone()[0].endswith("(package)")


def test_renames_and_unknown_actions_are_found_through_one_partial_index(catalog):
    apply(catalog, [["old", None, 1, "create", 1], ["new", None, 2, "rename from old", 2],
                    ["x", None, 3, "frobnicate", 3]] + [["y", f"{n}.0", 4, "new release", 4 + n]
                                                        for n in range(200)])
    indexes = dict(catalog.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'journal'"))
    assert set(indexes) == {"journal_pkey", "journal_history", "journal_unusual"}
    assert indexes["journal_unusual"].endswith(
        "(other_package) WHERE ((other_package IS NOT NULL) OR (kind = 'unknown'::text))")
    # Both kinds of lookup imply the index's predicate: the planner may use it for either.
    with catalog.transaction():
        catalog.execute("SET LOCAL enable_seqscan = off")
        catalog.execute("INSERT INTO derive_set VALUES ('old')")  # derive's own, emptied at commit
        for statement in (db.query("derive_history"), "SELECT count(*) FROM journal WHERE kind = 'unknown'"):
            plan = "\n".join(row[0] for row in catalog.execute("EXPLAIN " + statement))
            assert "journal_unusual" in plan, plan
        assert [row[1] for row in catalog.execute(db.query("derive_history"))] == [1, 2]
    assert status.read_status(catalog).unknown_actions == 1


def test_copy_data_sent_whole_is_stored_entire_and_a_bad_row_fails_with_the_servers_error(catalog):
    # About 10 MB in one buffer: psycopg's own writer would hand it to libpq 128 KB at a time.
    rows = b"".join(b"%d,%s\n" % (n, b"x" * 90) for n in range(100_000))
    catalog.execute("CREATE TEMP TABLE sent (n bigint, t text)")

    def send(data):
        with catalog.cursor() as cur:
            with cur.copy("COPY sent FROM STDIN (FORMAT csv)", writer=db.WholeBufferWriter(cur)) as copy:
                copy.write(data)

    send(rows)
    assert catalog.execute("SELECT count(*), sum(n), min(t) = max(t) FROM sent").fetchone() == \
        (100_000, sum(range(100_000)), True)
    assert catalog.pgconn.nonblocking == 1, "psycopg's own mode is given back"
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        send(rows + b"not a number,x\n" + rows)
    assert catalog.pgconn.nonblocking == 1
    assert catalog.execute("SELECT count(*) FROM sent").fetchone()[0] == 100_000, \
        "the failed COPY left nothing"


# Values PostgreSQL's text COPY format must escape, or could mistake for its NULL (\N).
ESCAPED_VERSIONS = st.sampled_from([None, "1.0", "a\\b", "\\N", "1.0\\", "\\t"])
ESCAPED_ACTIONS = st.sampled_from([
    "create", "new release", "add source file x-1.0.tar.gz", "frobnicate\tnow", "odd\naction",
    "carriage\rreturn", "back\\slash", "\\N", "add Owner b\\ob", "remove file x\\y.whl",
    "add py3 file x\ty.whl", "\\.", "tab\t\\N\tand more"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(page=st.lists(st.tuples(st.sampled_from(["pkg", "Pkg.Name", "a\\b"]), ESCAPED_VERSIONS,
                               st.integers(0, 10), ESCAPED_ACTIONS), min_size=1, max_size=20))
def test_a_prepared_page_journals_exactly_the_rows_the_row_path_journals(catalog, page):
    rows = [[name, version, ts, action, serial] for serial, (name, version, ts, action) in enumerate(page, 1)]
    journal = "SELECT serial, name, package, version, ts, action, kind, other_package FROM journal ORDER BY 1"
    _reset(catalog)
    with catalog.transaction():
        cat.ingest(catalog, rows)
    row_by_row = catalog.execute(journal).fetchall()
    _reset(catalog)
    prepared = cat.prepare_page(rows)
    assert cat.ingest_prepared(catalog, prepared).stored == len(row_by_row)
    assert catalog.execute(journal).fetchall() == row_by_row
    assert cat.ingest_prepared(catalog, prepared).stored == 0, "a re-delivery is staged and stores nothing"
    assert catalog.execute(journal).fetchall() == row_by_row
