"""The fold: a package's history, in (timestamp, serial) order, decides its state."""

from hypothesis import given, settings
from hypothesis import strategies as st

from support.histories import CHAI, ROW, valid_events
from wheelwright.catalog.events import parse_row
from wheelwright.catalog.fold import fold_log, fold_package, version_ranks

def fold(rows, package=None):
    events = [parse_row(r) for r in rows]
    return fold_package(package or events[0].package, events)


def test_chai_keeps_every_release_because_its_remove_is_older_than_its_create():
    state = fold(CHAI)
    assert state.present
    assert sorted(state.versions) == ["0.1.0", "0.1.16", "0.1.17", "0.1.18", "0.1.19"]
    assert state.born_serial == 264082, "the back-dated create starts chai's life"


def test_remove_project_ends_a_life_and_a_later_create_starts_clean():
    state = fold([
        ["Foo", None, 100, "create", 1],
        ["Foo", "1.0", 101, "new release", 2],
        ["Foo", "1.0", 102, "add source file Foo-1.0.tar.gz", 3],
        ["Foo", None, 200, "remove project", 4],
        ["foo", None, 300, "create", 5],
        ["foo", "1.0", 301, "new release", 6],
    ])
    assert state.present and list(state.versions) == ["1.0"]
    assert state.versions["1.0"].born_serial == 6, "the re-created 1.0 is a new life"
    assert state.versions["1.0"].files == {}, "files of the old life are gone"
    assert state.display_name == "foo", "only spellings of the current life count"


def test_remove_release_deletes_the_version_and_its_files_only():
    state = fold([
        ["x", "1.0", 1, "add source file x-1.0.tar.gz", 1],
        ["x", "2.0", 2, "add source file x-2.0.tar.gz", 2],
        ["x", "1.0", 3, "remove release", 3],
    ])
    assert list(state.versions) == ["2.0"]


def test_removing_the_only_sdist_makes_a_version_unbuildable_but_keeps_other_files():
    state = fold([
        ["x", "1.0", 1, "add source file x-1.0.tar.gz", 1],
        ["x", "1.0", 2, "add py3 file x-1.0-py3-none-any.whl", 2],
        ["x", "1.0", 3, "remove file x-1.0.tar.gz", 3],
    ])
    version = state.versions["1.0"]
    assert not version.has_sdist
    assert list(version.files) == ["x-1.0-py3-none-any.whl"]


def test_yank_and_unyank_follow_history_order_not_arrival_order():
    state = fold([
        ["x", "1.0", 10, "new release", 1],
        ["x", "1.0", 30, "unyank release", 2],   # arrives first, happened last
        ["x", "1.0", 20, "yank release", 3],
    ])
    assert not state.versions["1.0"].yanked


def test_quarantine_of_project_and_release():
    state = fold([
        ["x", "1.0", 10, "new release", 1],
        ["x", None, 11, "project quarantined", 2],
        ["x", "1.0", 12, "release quarantined", 3],
    ])
    assert state.quarantined and state.versions["1.0"].quarantined
    cleared = fold([
        ["x", "1.0", 10, "new release", 1],
        ["x", None, 11, "project quarantined", 2],
        ["x", None, 13, "project quarantine cleared", 4],
    ])
    assert not cleared.quarantined


def test_role_changes_and_unknown_actions_change_nothing():
    base = [["x", None, 1, "create", 1], ["x", "1.0", 2, "new release", 2]]
    noisy = base + [["x", None, 3, "remove Owner bob", 3], ["x", None, 4, "frobnicate", 4],
                    ["x", None, 5, "change Owner bob to Maintainer", 5]]
    assert fold(noisy).versions.keys() == fold(base).versions.keys()
    assert fold(noisy).present


def test_display_name_is_the_latest_spelling_seen():
    state = fold([
        ["flask", None, 1, "create", 1],
        ["FLASK", "0.1", 5, "new release", 2],
        ["Flask", "0.2", 9, "new release", 3],
    ])
    assert state.display_name == "Flask"
    assert set(state.aliases) == {"flask", "FLASK", "Flask"}


def test_rename_ends_the_old_name_and_starts_the_new_one():
    rows = [
        ["old", None, 1, "create", 1],
        ["old", "1.0", 2, "new release", 2],
        ["new", None, 3, "rename from old", 3],
    ]
    states = fold_log(parse_row(r) for r in rows)
    assert states["new"].present
    assert not states["old"].present and states["old"].versions == {}


def test_a_rename_that_only_changes_case_is_a_new_spelling():
    rows = [["flask", None, 1, "create", 1], ["flask", "1.0", 2, "new release", 2],
            ["Flask", None, 3, "rename from flask", 3]]
    state = fold_log(parse_row(r) for r in rows)["flask"]
    assert state.present and list(state.versions) == ["1.0"]
    assert state.display_name == "Flask"


def test_invalid_versions_sort_after_every_valid_one():
    ranks = version_ranks(["1.0", "banana", "0.9", "2.0rc1", "2.0", "apple"])
    assert [v for v, _ in sorted(ranks.items(), key=lambda kv: kv[1])] == [
        "0.9", "1.0", "2.0rc1", "2.0", "apple", "banana"]


# --- order independence, without a database -------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.lists(ROW, max_size=40), st.randoms(use_true_random=False))
def test_the_fold_of_a_log_does_not_depend_on_arrival_order(rows, rng):
    events = valid_events(rows)
    shuffled = events[:]
    rng.shuffle(shuffled)
    assert fold_log(events) == fold_log(shuffled)


def test_a_file_name_belongs_to_one_version_the_latest_to_add_it():
    state = fold([["x", "1.0", 1, "add source file f-1.0.tar.gz", 1],
                  ["x", "2.0", 2, "add source file f-1.0.tar.gz", 2]])
    assert state.versions["1.0"].files == {}
    assert list(state.versions["2.0"].files) == ["f-1.0.tar.gz"]
