"""The data-frame fold of a bulk replay gives exactly the rows of the Python fold, on any log."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.histories import CHAI, ROW, valid_events
from wheelwright.catalog.bulk import fold as bulk_fold
from wheelwright.catalog.bulk.fold import fold_frame
from wheelwright.catalog.bulk.frames import events_frame
from wheelwright.catalog.events import parse_row
from wheelwright.catalog.fold import fold_log, is_prerelease, is_valid_version, version_ranks


def python_rows(states) -> dict:
    """fold.py's states as the catalog rows derive writes for them."""
    rows = {"packages": [], "aliases": [], "versions": [], "files": []}
    for package in sorted(states):
        state = states[package]
        rows["packages"].append((package, state.display_name, state.present, state.born_serial,
                                 state.quarantined))
        rows["aliases"].extend((package, alias, ts, serial) for alias, (ts, serial) in sorted(state.aliases.items()))
        ranks = version_ranks(state.versions)
        for name in sorted(state.versions):
            v = state.versions[name]
            rows["versions"].append((package, name, v.born_serial, v.released, ranks[name],
                                     is_valid_version(name), is_prerelease(name), v.yanked, v.quarantined,
                                     v.has_sdist))
        files = [(package, f.filename, v.version, f.pyver, f.born_serial, f.uploaded)
                 for v in state.versions.values() for f in v.files.values()]
        rows["files"].extend(sorted(files))
    return rows


def frame_rows(folded) -> dict:
    """The frames' rows, each frame in key order (a package's rows come together, in no order)."""
    frames = folded._asdict()
    assert all(frames[name].get_column("package").is_sorted() for name in frames)
    return {name: sorted(frames[name].rows()) for name in ("packages", "aliases", "versions", "files")}


@settings(max_examples=400, deadline=None)
@given(st.lists(ROW, max_size=40))
def test_the_frame_fold_gives_the_rows_of_the_python_fold_on_any_log(rows):
    events = valid_events(rows)
    assert frame_rows(fold_frame(events_frame(events))) == python_rows(fold_log(events))


def test_chai_folds_alike_in_both():
    events = [parse_row(row) for row in CHAI]
    folded = frame_rows(fold_frame(events_frame(events)))
    assert folded == python_rows(fold_log(events))
    assert [row[1] for row in folded["versions"]] == ["0.1.0", "0.1.16", "0.1.17", "0.1.18", "0.1.19"]


def test_only_the_packages_asked_for_are_folded_and_a_rename_ends_the_old_name():
    events = [parse_row(row) for row in [
        ["old", None, 1, "create", 1], ["old", "1.0", 2, "new release", 2],
        ["new", None, 3, "rename from old", 3], ["third", None, 4, "create", 4]]]
    folded = fold_frame(events_frame(events), ["old", "new"])
    assert folded.packages.rows() == [("new", "new", True, 3, False), ("old", "old", False, None, False)]
    assert folded.versions.height == 0


def test_equal_versions_rank_in_the_order_they_were_born():
    events = [parse_row(row) for row in [
        ["x", "1.0.0", 1, "new release", 1], ["x", "1.0", 2, "new release", 2],
        ["x", "0.9", 3, "new release", 3]]]
    folded = fold_frame(events_frame(events))
    assert sorted(folded.versions.select("version", "rank").rows()) == [("0.9", 1), ("1.0", 3), ("1.0.0", 2)]
    assert frame_rows(folded) == python_rows(fold_log(events))


# Few names, versions and actions: uploads, moves and removals of one file name meet often.
FILE_ROW = st.tuples(
    st.sampled_from(["x", "X"]),
    st.sampled_from(["1.0", "2.0", "1.0.0"]),
    st.integers(0, 12),
    st.sampled_from(["add source file f.tar.gz", "add py3 file f.tar.gz", "add py3 file g.whl",
                     "remove file f.tar.gz", "remove release", "new release", "yank release",
                     "remove project", "release quarantined"]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(FILE_ROW, max_size=25))
def test_the_frame_fold_agrees_on_file_moves_and_removals(rows):
    events = valid_events(rows)
    assert frame_rows(fold_frame(events_frame(events))) == python_rows(fold_log(events))


def test_a_file_added_again_after_a_move_is_that_later_upload():
    events = [parse_row(row) for row in [
        ["x", "1.0", 1, "add source file f.tar.gz", 1], ["x", "2.0", 2, "add source file f.tar.gz", 2],
        ["x", "1.0", 3, "add source file f.tar.gz", 3], ["x", "1.0", 4, "add source file f.tar.gz", 4]]]
    folded = fold_frame(events_frame(events))
    assert folded.files.rows() == [("x", "f.tar.gz", "1.0", "source", 3, 3)]
    assert sorted(folded.versions.select("version", "has_sdist").rows()) == [("1.0", True), ("2.0", False)]


def test_a_fold_of_more_packages_than_its_sort_key_can_number_is_refused(monkeypatch):
    events = [parse_row(row) for row in [["a", "1.0", 1, "new release", 1], ["b", "1.0", 2, "new release", 2]]]
    monkeypatch.setattr(bulk_fold, "_MAX_SORTED_PACKAGES", 2)
    with pytest.raises(ValueError, match="2 packages in one fold"):
        fold_frame(events_frame(events))
    assert fold_frame(events_frame(events), ["a"]).packages.get_column("package").to_list() == ["a"]
