"""Transient failures are not final, and an operator can queue a target's failures again.

A worker marks an outcome ``transient`` when it could not fetch the sdist or the build dependencies
(the sdist not yet on PyPI's CDN, a 5xx, the network): the index host then makes the release wait,
longer after each attempt, and claims it again when the wait is over; the last attempt fails for good.
The waits are driven by moving ``not_before`` into the past, never by sleeping.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone

import pytest

from support.build_world import add_build, add_release, use_targets
from support.received import send
from wheelwright.builds import retries
from wheelwright.builds.intake import receive
from wheelwright.builds.queue import claim_wave, expire_lost, queue_head
from wheelwright.operate.admin import UnknownRelease, add_commands, requeue_failures

FIRST, SECOND = "cp39-armv7l", "cp311-armv7l"
NO_SDIST_YET = "could not fetch the sdist: No matching distribution found for foo==1.0"


@pytest.fixture
def world(catalog):
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    return catalog


def fail_transiently(conn, tmp_path, target=FIRST):
    """Claim foo 1.0 for ``target`` and answer with a transient failure, as a worker would."""
    [request] = claim_wave(conn, target, 1)
    outcome = send(tmp_path / "incoming", dict(request), status="failure", reason=NO_SDIST_YET, transient=True)
    assert receive(conn, dict(request), outcome, tmp_path / "incoming", tmp_path / "www") == ["foo"]
    return request["build_id"]


def time_passes(conn):
    conn.execute("UPDATE builds SET not_before = now() - interval '1 second' WHERE status = 'retry'")
    conn.commit()
    expire_lost(conn, timedelta(hours=4))  # what each scheduling run does before it claims


def test_the_back_off_doubles_with_each_attempt_up_to_a_cap():
    assert [retries.retry_delay(n) for n in (1, 2, 3)] == [timedelta(minutes=5), timedelta(minutes=10),
                                                          timedelta(minutes=20)]
    assert retries.retry_delay(40) == retries.MAX_DELAY
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    status, reason, not_before = retries.plan(2, "boom", now, max_attempts=3)
    assert (status, not_before) == ("retry", now + timedelta(minutes=10))
    assert reason == "boom (attempt 2 of 3; tried again from 2026-01-01 00:10 UTC)"
    assert retries.plan(3, "boom", now, max_attempts=3) == ("failure", "gave up after 3 attempts: boom", None)


def test_a_transient_failure_waits_and_is_built_again(world, tmp_path):
    build_id = fail_transiently(world, tmp_path)
    status, reason, not_before = world.execute(
        "SELECT status, reason, not_before > now() + interval '4 minutes' FROM builds WHERE build_id = %s",
        (build_id,)).fetchone()
    assert status == "retry" and reason.startswith(NO_SDIST_YET) and "attempt 1 of" in reason and not_before
    assert queue_head(world, FIRST) == [] and queue_head(world, SECOND) == [], \
        "it waits: not claimed again at once, and not handed on to the next target"
    expire_lost(world, timedelta(hours=4))
    assert claim_wave(world, FIRST, 5) == [], "its time has not come"
    time_passes(world)
    assert [r["package"] for r in claim_wave(world, FIRST, 5)] == ["foo"]


def test_the_last_transient_failure_is_final_and_says_how_often_it_was_tried(world, tmp_path):
    for _ in range(retries.MAX_ATTEMPTS - 1):
        fail_transiently(world, tmp_path)
        time_passes(world)
    last = fail_transiently(world, tmp_path)
    status, reason = world.execute("SELECT status, reason FROM builds WHERE build_id = %s", (last,)).fetchone()
    assert status == "failure"
    assert reason == f"gave up after {retries.MAX_ATTEMPTS} attempts: {NO_SDIST_YET}"
    assert queue_head(world, FIRST) == [] and queue_head(world, SECOND) == [("foo", "1.0")], \
        "a final failure hands the release on to the next target"


def test_a_build_that_ran_and_failed_is_final_at_once(world, tmp_path):
    [request] = claim_wave(world, FIRST, 1)
    outcome = send(tmp_path / "incoming", dict(request), status="failure", reason="pip wheel exited with status 1")
    receive(world, dict(request), outcome, tmp_path / "incoming", tmp_path / "www")
    assert world.execute("SELECT status, transient FROM builds").fetchone() == ("failure", False)


def test_requeue_failures_queues_every_failure_of_a_target_again(world, tmp_path):
    add_release(world, "bar", "1.0")
    add_release(world, "baz", "1.0")
    add_build(world, "foo", "1.0", FIRST, "failure")
    add_build(world, "bar", "1.0", FIRST, "failure")
    add_build(world, "bar", "1.0", SECOND, "failure")
    add_build(world, "baz", "1.0", FIRST, "success", wheels=("baz-1.0-cp39-cp39-linux_armv7l.whl",))
    assert queue_head(world, FIRST) == []
    assert requeue_failures(world, FIRST) == 2
    assert sorted(queue_head(world, FIRST)) == [("bar", "1.0"), ("foo", "1.0")]
    assert world.execute("SELECT count(*) FROM builds WHERE target = %s", (SECOND,)).fetchone()[0] == 1, \
        "other targets keep their failures"


def test_requeue_failures_of_one_package_and_of_transient_waits(world, tmp_path):
    add_release(world, "bar", "1.0")
    add_build(world, "bar", "1.0", FIRST, "failure")
    fail_transiently(world, tmp_path)
    assert requeue_failures(world, FIRST, package="Foo") == 1
    assert queue_head(world, FIRST) == [("foo", "1.0")], "bar's failure stays"
    assert world.execute("SELECT count(*) FROM builds WHERE transient").fetchone()[0] == 0, \
        "its attempts count afresh"


def test_requeue_failures_names_unknown_targets_and_packages(world):
    with pytest.raises(UnknownRelease, match="no target named 'nope'"):
        requeue_failures(world, "nope")
    with pytest.raises(UnknownRelease, match="nope is not in the catalog"):
        requeue_failures(world, FIRST, package="nope")


def test_requeue_failures_from_the_command_line(world, settings, capsys):
    from wheelwright.catalog import db
    add_build(world, "foo", "1.0", FIRST, "failure")
    parser = argparse.ArgumentParser(prog="wheelwright")
    add_commands(parser.add_subparsers(), db.connect)
    args = parser.parse_args(["requeue-failures", FIRST, "--package", "FOO"])
    assert args.handler(settings, args) == 0
    assert capsys.readouterr().out == f"1 failed releases of foo queued again for {FIRST}\n"
