"""Changelog histories the tests share: the seeds' chai case and a generator of messy logs."""

from hypothesis import strategies as st

from wheelwright.errors import MalformedEvent
from wheelwright.catalog.events import parse_row

# The chai history from the seeds, in serial (arrival) order: releases before the back-dated create,
# and a remove timestamped before the create.
CHAI = [
    ["chai", "0.1.18", 1320779633, "new release", 256850],
    ["chai", "0.1.19", 1320788944, "new release", 256914],
    ["chai", "0.1.17", 1320416429, "new release", 258871],
    ["chai", "0.1.16", 1320361639, "new release", 259151],
    ["chai", None, 1299029402, "create", 264082],
    ["chai", "0.1.0", 1299029402, "new release", 264084],
    ["chai", None, 1299029397, "remove", 264426],
]

# One changelog row without its serial: few names (spellings of one package, a rename partner), few
# versions (one invalid) and timestamps, every kind of action, so collisions and reorderings are common.
ROW = st.tuples(
    st.sampled_from(["pkg", "Pkg", "PKG", "pkg_", "other", "third.one"]),
    st.sampled_from([None, "1.0", "1.0.0", "2.0", "2.0b1", "not valid"]),
    st.integers(0, 30),
    st.sampled_from(["create", "new release", "add source file f-1.0.tar.gz", "add py3 file f.whl",
                     "remove file f-1.0.tar.gz", "remove release", "remove project", "remove",
                     "yank release", "unyank release", "add Owner bob", "remove Owner bob",
                     "project quarantined", "project quarantine cleared", "release quarantined",
                     "release quarantine cleared", "add py3 file f-1.0.tar.gz",
                     "rename from other", "frobnicate"]),
)


def numbered(rows) -> list[list]:
    """Changelog rows from ROW tuples, serials in list order."""
    return [[name, version, ts, action, serial] for serial, (name, version, ts, action) in enumerate(rows, 1)]


def valid_events(rows) -> list:
    """The events of the ROW tuples that parse (the others are malformed, and left out)."""
    events = []
    for row in numbered(rows):
        try:
            events.append(parse_row(row))
        except MalformedEvent:
            pass
    return events
