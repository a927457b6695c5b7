"""A page parsed column by column gives exactly the events and rejects of parse_row, row by row."""

from hypothesis import given, settings
from hypothesis import strategies as st

from wheelwright.catalog import store as catalog
from wheelwright.errors import MalformedEvent
from wheelwright.catalog.bulk.frames import events_frame, plain_rows
from wheelwright.catalog.events import parse_row

NAMES = st.sampled_from(["pkg", "Pkg.Name", "pkg_-name", "x", "A9", "a b", "", " ", "-x", "x-", "x--y",
                         "caf\u00e9", "\u212aelvin", "tab\tname", "a/b", "n" * 1025, "..", "x.", "_"])
VERSIONS = st.sampled_from([None, "1.0", "2.0rc1", "", " ", " 1.0", "1.0\n", "\u00fc", "a\\b",
                            "v" * 1025, "not valid", "~"])
STAMPS = st.one_of(st.integers(-2, 2**40), st.sampled_from([253_402_300_799, 253_402_300_800]))
ACTIONS = st.sampled_from([
    "create", "new release", "remove release", "remove project", "yank release", "unyank release",
    "project quarantined", "release quarantine cleared", "docupdate", "remove", "",
    "add source file x-1.0.tar.gz", "add py3 file x.whl", "add  py3 file x", "add py3 file ",
    "add py3 file  ", "add py3 file  x", "add py3 file .", "add py3 file ..", "add py3 file a/b",
    "add py3 file a\\b", "add py3 file x\x00", "add py3 file x\ny", "add py3 file file x",
    "add \u00e9 file x", "add cp311 file " + "f" * 256, "add a b file x", "add Owner bob",
    "remove Owner bob", "invite Maintainer bob", "revoke_invite Owner bob", "accepted Owner bob",
    "add Owner  bob", "add Owner bob smith", "remove Owner b\u00f6b", "add Owner bob\t",
    "change Owner bob to Maintainer", "invite bob", "accepted Owner bob smith", "remove file",
    "remove file x.whl", "remove file ", "remove file  ", "remove file a/b", "remove file x y",
    "rename from Old.Name", "rename from ", "update summary", "frobnicate", "a" * 5000,
])
SERIALS = st.integers(-1, 10**6)
ROW = st.lists(st.tuples(NAMES, VERSIONS, STAMPS, ACTIONS, SERIALS).map(list), max_size=30)
# Rows that send the whole page down the row-by-row path.
ODD = st.sampled_from([None, "row", ["x", None, 1, "create"], ["x", None, 1.0, "create", 7],
                       ["x", None, 1, "create", True], ["x", 5, 1, "create", 8], ("x", None, 2, "create", 9),
                       ["x", None, 1, "create", 2**63], ["x", None, 2**70, "create", 10]])


def row_by_row(rows):
    events, rejects = [], []
    for row in rows:
        try:
            events.append(parse_row(row))
        except MalformedEvent as exc:
            rejects.append((catalog._serial_of(row), catalog._raw_text(row), str(exc)))
    return events, rejects


def by_serial(frame):
    return sorted(frame.rows(), key=repr)


@settings(max_examples=500, deadline=None)
@given(ROW, st.lists(ODD, max_size=2).filter(lambda odd: len(odd) < 2 or odd[0] is None))
def test_a_page_parses_to_the_events_and_rejects_of_parse_row(rows, odd):
    page = rows + odd
    prepared = catalog.prepare_page(page)
    events, rejects = row_by_row(page)
    assert by_serial(prepared.frame) == by_serial(events_frame(events))
    assert prepared.rejects == rejects
    serials = [e.serial for e in events] + [serial for serial, _, _ in rejects if serial is not None]
    assert prepared.max_serial == (max(serials) if serials else None)
    assert prepared.received == len(page)


def test_common_rows_take_the_column_path_and_the_rest_go_row_by_row():
    plain, others = plain_rows([
        ["Foo.Bar", "1.0", 5, "add source file foo-1.0.tar.gz", 3], ["foo-bar", None, 1, "create", 1],
        ["foo-bar", None, 2, "add Owner bob", 2], ["bad name", None, 1, "create", 4],
        ["foo-bar", None, 3, "rename from foo", 5]])
    assert plain.select("serial", "package", "kind", "filename", "pyver").rows() == [
        (3, "foo-bar", "add_file", "foo-1.0.tar.gz", "source"), (1, "foo-bar", "create", None, None),
        (2, "foo-bar", "role", None, None)]
    assert [row[4] for row in others] == [4, 5]
