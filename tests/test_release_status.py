"""Where each release stands on each target: the rows of a project page.

The pure rules from literals first; then a world with every state in it, published for real, whose
project JSON must call "queued" exactly what the build queue (the SQL that hands builds out) holds.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from support.build_world import NOW, add_build, add_package, add_release, use_targets
from wheelwright.builds.queue import queue_head
from wheelwright.publish.pages import Build, Release, WheelFile
from wheelwright.publish.status import TargetInfo, target_rows
from wheelwright.publish.writer import publish

FIRST = TargetInfo("cp39-armv7l", "cp39", "linux_armv7l", "bullseye", 1)
SECOND = TargetInfo("cp311-armv7l", "cp311", "linux_armv7l", "bookworm", 2)
BOTH = ("cp39-armv7l", "cp311-armv7l")


def release(*builds, files=(), in_scope=BOTH, **kw) -> Release:
    fields = dict(version="1.0", released="2024-01-01T00:00:00Z", prerelease=False, yanked=False,
                  yanked_reason=None, requires_python=None, skip_reason=None)
    fields.update(kw)
    return Release(**fields, builds=list(builds), files=list(files), in_scope=in_scope)


def build(target: TargetInfo, status: str, build_id=1, reason=None) -> Build:
    return Build(build_id=build_id, version="1.0", abi=target.abi, status=status, builder="pi",
                 duration=10.0, log_path=None, reason=reason, target=target.name)


def wheel(target: TargetInfo, tags: str, build_id=1) -> WheelFile:
    _py, abi, platform = tags.split("-")
    return WheelFile(filename=f"x-1.0-{tags}.whl", build_id=build_id, version="1.0", size=1, sha256="0" * 64,
                     builder_abi=target.abi, target=target.name, abi_tag=abi, platform_tag=platform,
                     requires_python=None, metadata_sha256=None, uploaded="2024-01-01T00:00:00Z")


def states(r: Release, targets=(FIRST, SECOND), **kw) -> list[tuple[str, str, str | None]]:
    return [(row.target, row.state, row.detail) for row in target_rows(r, list(targets), **kw)]


def test_an_unbuilt_release_is_queued_on_the_first_target_and_waits_on_the_next():
    assert states(release()) == [(FIRST.name, "queued", None), (SECOND.name, "waiting", FIRST.name)]


def test_a_binary_wheel_moves_it_on_and_a_pure_one_makes_the_rest_unneeded():
    binary = release(build(FIRST, "success"), files=[wheel(FIRST, "cp39-cp39-linux_armv7l")])
    assert states(binary) == [(FIRST.name, "built", None), (SECOND.name, "queued", None)]
    pure = release(build(FIRST, "success"), files=[wheel(FIRST, "py3-none-any")])
    assert states(pure)[1] == (SECOND.name, "not-needed",
                               "the pure wheel built on cp39-armv7l serves every target")


def test_failures_carry_their_reason_and_move_the_release_on():
    r = release(build(FIRST, "failure", reason="gcc: error"))
    assert states(r) == [(FIRST.name, "failed", "gcc: error"), (SECOND.name, "queued", None)]


def test_builds_in_flight_and_retries_hold_the_next_target_and_lost_ones_are_forgotten():
    assert states(release(build(FIRST, "building")))[0][1] == "building"
    assert states(release(build(FIRST, "retry", reason="PyPI answered 503"))) == [
        (FIRST.name, "retry", "PyPI answered 503"), (SECOND.name, "waiting", FIRST.name)]
    assert states(release(build(FIRST, "lost")))[0] == (FIRST.name, "queued", None)


def test_skips_missing_sdists_and_scope_say_why_nothing_will_be_built():
    assert {s for _t, s, _d in states(release(skip_reason="needs CUDA"))} == {"skipped"}
    assert states(release(), project_skip="mines coins")[0] == (FIRST.name, "skipped", "mines coins")
    assert {s for _t, s, _d in states(release(has_sdist=False))} == {"no-sdist"}
    old = release(in_scope=(FIRST.name,))
    assert states(old)[1][:2] == (SECOND.name, "not-in-queue")
    assert states(release(build(FIRST, "failure"), in_scope=(FIRST.name,)))[1][1] == "not-in-queue"


def test_an_earlier_target_that_never_will_build_it_holds_nothing_back():
    assert states(release(in_scope=(SECOND.name,)))[1] == (SECOND.name, "queued", None)


def test_a_retired_target_shows_only_what_it_did():
    retired = TargetInfo(FIRST.name, "cp39", "linux_armv7l", "bullseye", 1, enabled=False)
    assert states(release(), [retired, SECOND]) == [(SECOND.name, "queued", None)]
    r = release(build(FIRST, "success"), files=[wheel(FIRST, "cp39-cp39-linux_armv7l")], in_scope=(SECOND.name,))
    assert states(r, [retired, SECOND]) == [(FIRST.name, "built", None), (SECOND.name, "queued", None)]


# -- the same rules as the build queue, on a real catalog ---------------------------------------------

@pytest.fixture
def every_state(catalog):
    """Releases in every state on two targets, the second enabled a month ago (older releases are
    only in its queue when a backfill admitted them)."""
    use_targets(catalog)
    catalog.execute("UPDATE targets SET enabled_at = %s WHERE name = %s", (NOW - timedelta(days=30), SECOND.name))
    recent = timedelta(days=2)
    for package in ("fresh", "failed", "binary", "pure", "flying", "retried", "lost", "skipped", "nosdist"):
        add_release(catalog, package, "1.0", age=recent, has_sdist=package != "nosdist",
                    skip_reason="operator says no" if package == "skipped" else None)
    add_build(catalog, "failed", "1.0", FIRST.name, "failure")
    add_build(catalog, "binary", "1.0", FIRST.name, "success", wheels=("binary-1.0-cp39-cp39-linux_armv7l.whl",))
    add_build(catalog, "pure", "1.0", FIRST.name, "success", wheels=("pure-1.0-py3-none-any.whl",))
    add_build(catalog, "flying", "1.0", FIRST.name, "building")
    add_build(catalog, "retried", "1.0", FIRST.name, "retry")
    add_build(catalog, "lost", "1.0", FIRST.name, "lost")
    add_package(catalog, "pskip", skip_reason="takes a Pi down")
    add_release(catalog, "pskip", "1.0", age=recent)
    add_release(catalog, "history", "1.0", age=timedelta(days=400))        # older than SECOND
    add_build(catalog, "history", "1.0", FIRST.name, "failure")
    add_release(catalog, "admitted", "1.0", age=timedelta(days=400))       # ... but backfilled for it
    add_build(catalog, "admitted", "1.0", FIRST.name, "failure")
    catalog.execute("INSERT INTO build_backfill (target, package, version, released) "
                    "SELECT %s, package, version, released FROM versions WHERE package = 'admitted'",
                    (SECOND.name,))
    catalog.commit()
    return catalog


def test_the_page_calls_queued_exactly_what_the_build_queue_holds(every_state, settings):
    publish(every_state, settings.output)
    pages = {}
    for folder in (settings.output / "project").iterdir():
        data = json.loads((folder / "json" / "index.json").read_text())
        for version, r in data["releases"].items():
            for row in r["targets"]:
                pages[(data["package"], version, row["target"])] = row["state"]
    for target in BOTH:
        queued = {(p, v) for (p, v, t), state in pages.items() if t == target and state == "queued"}
        assert queued == set(queue_head(every_state, target, 1000)), target
    expected = {
        ("fresh", FIRST.name): "queued", ("fresh", SECOND.name): "waiting",
        ("failed", FIRST.name): "failed", ("failed", SECOND.name): "queued",
        ("binary", FIRST.name): "built", ("binary", SECOND.name): "queued",
        ("pure", FIRST.name): "built", ("pure", SECOND.name): "not-needed",
        ("flying", FIRST.name): "building", ("flying", SECOND.name): "waiting",
        ("retried", FIRST.name): "retry", ("retried", SECOND.name): "waiting",
        ("lost", FIRST.name): "queued", ("lost", SECOND.name): "waiting",
        ("skipped", FIRST.name): "skipped", ("pskip", SECOND.name): "skipped",
        ("nosdist", FIRST.name): "no-sdist",
        ("history", SECOND.name): "not-in-queue", ("admitted", SECOND.name): "queued",
    }
    for (package, target), state in expected.items():
        assert pages[(package, "1.0", target)] == state, (package, target)
