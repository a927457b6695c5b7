"""The changelog grammar: what each PyPI action string means, and which rows we refuse."""

import pytest

from wheelwright.errors import MalformedEvent
from wheelwright.catalog.events import Kind, parse_action, parse_row


@pytest.mark.parametrize("action, kind", [
    ("create", Kind.CREATE),
    ("new release", Kind.NEW_RELEASE),
    ("remove release", Kind.REMOVE_RELEASE),
    ("remove project", Kind.REMOVE_PROJECT),
    ("yank release", Kind.YANK),
    ("unyank release", Kind.UNYANK),
    ("project quarantined", Kind.PROJECT_QUARANTINED),
    ("project quarantine cleared", Kind.PROJECT_QUARANTINE_CLEARED),
    ("release quarantined", Kind.RELEASE_QUARANTINED),
    ("release quarantine cleared", Kind.RELEASE_QUARANTINE_CLEARED),
    ("docupdate", Kind.METADATA),
    ("update summary, description", Kind.METADATA),
    ("rename from Old.Name", Kind.RENAME_FROM),
    ("frobnicate the widgets", Kind.UNKNOWN),
    ("", Kind.UNKNOWN),
])
def test_each_action_string_has_its_kind(action, kind):
    assert parse_action(action).kind is kind


@pytest.mark.parametrize("action", [
    "add Owner bob", "remove Owner bob", "remove Maintainer alice", "add Maintainer alice",
    "change Owner bob to Maintainer", "invite Maintainer carol", "revoke_invite Owner dave",
    "accepted Owner erin",
])
def test_a_role_change_is_never_a_deletion(action):
    assert parse_action(action).kind is Kind.ROLE
    event = parse_row(["gpiozero", None, 1600000000, action, 10])
    assert event.kind is Kind.ROLE


def test_file_actions_carry_file_name_and_python_tag():
    sdist = parse_action("add source file chai-0.1.0.tar.gz")
    assert (sdist.kind, sdist.pyver, sdist.filename) == (Kind.ADD_FILE, "source", "chai-0.1.0.tar.gz")
    wheel = parse_action("add py3 file chai-0.1.0-py3-none-any.whl")
    assert (wheel.pyver, wheel.filename) == ("py3", "chai-0.1.0-py3-none-any.whl")
    removal = parse_action("remove file chai-0.1.0.tar.gz")
    assert (removal.kind, removal.filename) == (Kind.REMOVE_FILE, "chai-0.1.0.tar.gz")


def test_bare_remove_deletes_the_release_when_a_version_is_given_else_the_project():
    assert parse_row(["chai", "0.1.0", 1, "remove", 5]).kind is Kind.REMOVE_RELEASE
    assert parse_row(["chai", None, 1, "remove", 6]).kind is Kind.REMOVE_PROJECT


def test_rows_carry_the_canonical_name_beside_the_spelling():
    event = parse_row(["RPi.GPIO", "0.7.0", 1500000000, "new release", 42])
    assert (event.name, event.package, event.version, event.serial) == ("RPi.GPIO", "rpi-gpio", "0.7.0", 42)


def test_a_rename_names_the_old_package_canonically():
    event = parse_row(["New_Name", None, 1, "rename from Old.Name", 7])
    assert (event.kind, event.package, event.other_package) == (Kind.RENAME_FROM, "new-name", "old-name")


def test_invalid_versions_are_accepted_as_text():
    assert parse_row(["x", "not a version!", 1, "new release", 3]).version == "not a version!"


@pytest.mark.parametrize("row, reason", [
    ("not a list", "expected"),
    (["x", None, 1, "create"], "expected"),
    (["x", None, 1, "create", 0], "serial"),
    (["x", None, 1, "create", "12"], "serial"),
    (["x", None, 1, "create", True], "serial"),
    (["", None, 1, "create", 3], "name"),
    ([None, None, 1, "create", 3], "name"),
    (["x\x00y", None, 1, "create", 3], "name"),
    (["../etc", None, 1, "create", 3], "canonical"),
    (["a/b", None, 1, "create", 3], "canonical"),
    (["x", 12, 1, "create", 3], "version"),
    (["x", "1.0\n", 1, "create", 3], "version"),
    (["x", None, "yesterday", "create", 3], "timestamp"),
    (["x", None, -5, "create", 3], "timestamp"),
    (["x", None, 1, None, 3], "action"),
    (["x", None, 1, "new release", 3], "no version"),
    (["x", "1.0", 1, "add source file ../../evil.tar.gz", 3], "unsafe file name"),
    (["x", "1.0", 1, "add source file a\\b.tar.gz", 3], "unsafe file name"),
])
def test_malformed_rows_are_refused_with_the_reason(row, reason):
    with pytest.raises(MalformedEvent, match=reason):
        parse_row(row)
