"""Operator decisions: skip, un-skip and rebuild take effect in the build queue at once."""

from __future__ import annotations

import pytest

from support.build_world import add_build, add_release, use_targets
from wheelwright.operate.admin import UnknownRelease, rebuild, skip, unskip
from wheelwright.builds.queue import queue_head
from wheelwright.errors import WheelwrightError

FIRST, SECOND = "cp39-armv7l", "cp311-armv7l"


@pytest.fixture
def world(catalog):
    """Two targets; foo 1.0 and 2.0 and bar 1.0 released, nothing built yet."""
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    add_release(catalog, "foo", "2.0")
    add_release(catalog, "bar", "1.0")
    return catalog


def change_seq(conn, package):
    return conn.execute("SELECT change_seq FROM packages WHERE package = %s", (package,)).fetchone()[0]


def test_skipping_a_package_takes_all_its_releases_out_of_the_queue(world):
    before = change_seq(world, "foo")
    skip(world, "Foo", reason="its setup.py mines coins")
    assert sorted(queue_head(world, FIRST)) == [("bar", "1.0")]
    assert world.execute("SELECT skip_reason FROM packages WHERE package = 'foo'").fetchone() == (
        "its setup.py mines coins",)
    assert change_seq(world, "foo") > before, "the project page shows the reason"


def test_skipping_a_version_leaves_the_others_queued(world):
    skip(world, "foo", "1.0", reason="takes a Pi down for a day")
    assert sorted(queue_head(world, FIRST)) == [("bar", "1.0"), ("foo", "2.0")]


def test_unskipping_queues_again(world):
    skip(world, "foo", reason="x")
    skip(world, "bar", "1.0", reason="y")
    unskip(world, "foo")
    unskip(world, "bar", "1.0")
    assert len(queue_head(world, FIRST)) == 3


def test_a_skip_needs_a_reason(world):
    with pytest.raises(WheelwrightError, match="needs a reason"):
        skip(world, "foo", reason="  ")


def test_naming_something_unknown_is_a_clear_error(world):
    with pytest.raises(UnknownRelease, match="nope is not in the catalog"):
        skip(world, "nope", reason="x")
    with pytest.raises(UnknownRelease, match="foo 9.9 is not in the catalog"):
        unskip(world, "foo", "9.9")
    with pytest.raises(UnknownRelease, match="no target named 'cp27'"):
        rebuild(world, "foo", target="cp27")


def test_a_rebuild_forgets_finished_builds_and_their_wheels(world):
    add_build(world, "foo", "1.0", FIRST, "success", wheels=("foo-1.0-cp39-cp39-linux_armv7l.whl",))
    add_build(world, "foo", "1.0", SECOND, "failure")
    add_build(world, "foo", "2.0", FIRST, "building")
    before = change_seq(world, "foo")
    assert rebuild(world, "foo", "1.0") == 2
    assert ("foo", "1.0") in queue_head(world, FIRST)
    assert world.execute("SELECT count(*) FROM wheels").fetchone()[0] == 0
    assert world.execute("SELECT version, status FROM builds").fetchall() == [("2.0", "building")], \
        "a build in flight is left to finish"
    assert change_seq(world, "foo") > before, "the next publish removes the files"


def test_a_rebuild_for_one_target_keeps_the_others(world):
    add_build(world, "foo", "1.0", FIRST, "success", wheels=("foo-1.0-cp39-cp39-linux_armv7l.whl",))
    add_build(world, "foo", "1.0", SECOND, "success", wheels=("foo-1.0-cp311-cp311-linux_armv7l.whl",))
    assert rebuild(world, "foo", "1.0", target=SECOND) == 1
    assert queue_head(world, SECOND) == [("foo", "1.0")]
    assert world.execute("SELECT filename FROM wheels").fetchall() == [("foo-1.0-cp39-cp39-linux_armv7l.whl",)]


def test_a_rebuild_of_a_whole_package_covers_every_version(world):
    add_build(world, "foo", "1.0", FIRST, "failure")
    add_build(world, "foo", "2.0", FIRST, "failure")
    add_build(world, "bar", "1.0", FIRST, "failure")
    assert rebuild(world, "foo") == 2
    assert sorted(queue_head(world, FIRST)) == [("foo", "1.0"), ("foo", "2.0")]


def test_the_admin_commands_work_from_the_command_line(world, settings, capsys):
    import argparse

    from wheelwright.catalog import db
    from wheelwright.operate.admin import add_commands

    parser = argparse.ArgumentParser(prog="wheelwright")
    add_commands(parser.add_subparsers(), db.connect)

    def run(*argv):
        args = parser.parse_args(argv)
        return args.handler(settings, args)

    assert run("skip", "Foo", "1.0", "--reason", "broken build") == 0
    assert run("rebuild", "bar", "--target", FIRST) == 0
    assert run("queue", FIRST) == 0
    out = capsys.readouterr().out
    assert "skipped foo 1.0: broken build" in out
    assert "0 builds of bar for cp39-armv7l forgotten" in out
    assert "cp39-armv7l: 2 waiting (0 fresh)\n  bar==1.0\n  foo==2.0\n" in out, "equally old: by name"
    assert run("unskip", "foo", "1.0") == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["skip", "foo"])  # --reason is required
