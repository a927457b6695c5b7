"""The build queue: what each target builds next, handed out once, and lost builds retried."""

from __future__ import annotations

import threading
from datetime import timedelta

import psycopg

from support.build_world import add_build, add_package, add_release, use_targets
from wheelwright.builds.queue import claim_wave, expire_lost, mark_lost, queue_head, queue_length

FIRST, SECOND = "cp39-armv7l", "cp311-armv7l"


def claimed(wave):
    return [(r["package"], r["version"]) for r in wave]


def test_a_release_with_an_sdist_goes_to_the_first_target_only(catalog):
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    wave = claim_wave(catalog, FIRST, 10)
    assert claimed(wave) == [("foo", "1.0")]
    assert wave[0]["target"] == FIRST and wave[0]["abi"] == "cp39" and wave[0]["build_id"] > 0
    assert claim_wave(catalog, SECOND, 10) == [], "the second target waits for the first"


def test_a_claimed_release_is_not_claimed_again(catalog):
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    assert claimed(claim_wave(catalog, FIRST, 10)) == [("foo", "1.0")]
    assert claim_wave(catalog, FIRST, 10) == []


def test_unbuildable_releases_are_never_queued(catalog):
    use_targets(catalog)
    add_release(catalog, "nosdist", "1.0", has_sdist=False)
    add_release(catalog, "vquarantined", "1.0", quarantined=True)
    add_release(catalog, "vskipped", "1.0", skip_reason="mines coins")
    for package, flags in [("gone", {"present": False}), ("pquarantined", {"quarantined": True}),
                           ("pskipped", {"skip_reason": "takes a Pi down"})]:
        add_package(catalog, package, **flags)
        add_release(catalog, package, "1.0")
    add_release(catalog, "fine", "1.0")
    assert queue_head(catalog, FIRST) == [("fine", "1.0")]


def test_a_pure_wheel_from_any_target_satisfies_every_target(catalog):
    use_targets(catalog)
    add_release(catalog, "pure", "1.0")
    add_build(catalog, "pure", "1.0", FIRST, "success", wheels=("pure-1.0-py3-none-any.whl",))
    assert queue_head(catalog, SECOND) == []
    assert queue_head(catalog, FIRST) == []


def test_a_binary_wheel_moves_the_release_on_to_the_next_target(catalog):
    use_targets(catalog)
    add_release(catalog, "ext", "1.0")
    add_build(catalog, "ext", "1.0", FIRST, "success", wheels=("ext-1.0-cp39-cp39-linux_armv7l.whl",))
    assert queue_head(catalog, SECOND) == [("ext", "1.0")]
    assert queue_head(catalog, FIRST) == []


def test_a_failure_moves_the_release_on_to_the_next_target(catalog):
    use_targets(catalog)
    add_release(catalog, "broken", "1.0")
    add_build(catalog, "broken", "1.0", FIRST, "failure")
    assert queue_head(catalog, SECOND) == [("broken", "1.0")]


def test_the_next_target_waits_while_the_first_is_still_building(catalog):
    use_targets(catalog)
    add_release(catalog, "slow", "1.0")
    add_build(catalog, "slow", "1.0", FIRST, "building")
    assert queue_head(catalog, SECOND) == []


def test_a_retired_earlier_target_holds_nothing_back(catalog):
    use_targets(catalog, """
        [[target]]
        name = "cp39-armv7l"
        abi = "cp39"
        platform = "linux_armv7l"
        distro = "bullseye"
        enabled = false
        [[target]]
        name = "cp311-armv7l"
        abi = "cp311"
        platform = "linux_armv7l"
        distro = "bookworm"
    """)
    add_release(catalog, "foo", "1.0")
    assert claim_wave(catalog, FIRST, 10) == [], "a retired target takes no builds"
    assert claimed(claim_wave(catalog, SECOND, 10)) == [("foo", "1.0")]


def test_a_fresh_release_goes_before_any_backlog(catalog):
    use_targets(catalog)
    for i in range(30):
        add_release(catalog, f"old{i}", "1.0", age=timedelta(days=3000 - i))
    add_release(catalog, "fresh", "2.0", age=timedelta(minutes=5))
    add_release(catalog, "fresher", "1.0", age=timedelta(minutes=1))
    assert claimed(claim_wave(catalog, FIRST, 2)) == [("fresher", "1.0"), ("fresh", "2.0")]
    assert queue_length(catalog, FIRST) == (30, 0)
    assert claimed(claim_wave(catalog, FIRST, 1)) == [("old29", "1.0")], "then the backlog, newest first"


def test_two_schedulers_never_claim_the_same_release(catalog, catalog_dsn):
    use_targets(catalog)
    for i in range(200):
        add_release(catalog, f"pkg{i:03d}", "1.0")
    waves, errors = [], []

    def scheduler():
        try:
            with psycopg.connect(catalog_dsn) as conn:
                for _ in range(10):
                    waves.append(claimed(claim_wave(conn, FIRST, 15)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=scheduler) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    everything = [pair for wave in waves for pair in wave]
    assert len(everything) == len(set(everything)) == 200


def test_a_lost_build_is_retried_after_the_timeout(catalog):
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    add_release(catalog, "bar", "1.0")
    wave = claim_wave(catalog, FIRST, 10)
    assert len(wave) == 2
    catalog.execute("UPDATE builds SET started_at = now() - interval '3 hours' "
                    "WHERE package = 'foo'")
    catalog.commit()
    lost = expire_lost(catalog, timedelta(hours=2))
    assert claimed(lost) == [("foo", "1.0")], "only builds older than the timeout are lost"
    assert catalog.execute("SELECT status, reason FROM builds WHERE package = 'foo'").fetchone() == (
        "lost", "no result within 02:00:00")
    assert claimed(claim_wave(catalog, FIRST, 10)) == [("foo", "1.0")], "a lost build was never tried"


def test_marking_a_build_lost_requeues_it_at_once(catalog):
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    [request] = claim_wave(catalog, FIRST, 10)
    assert mark_lost(catalog, request["build_id"], "the transfer was corrupted")
    assert not mark_lost(catalog, request["build_id"], "twice"), "only a build in flight can be lost"
    assert claimed(claim_wave(catalog, FIRST, 10)) == [("foo", "1.0")]


def test_a_deleted_release_takes_its_builds_with_it(catalog):
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    claim_wave(catalog, FIRST, 10)
    catalog.execute("DELETE FROM versions WHERE package = 'foo'")
    catalog.commit()
    assert catalog.execute("SELECT count(*) FROM builds").fetchone()[0] == 0


def test_a_wave_is_newest_first_across_the_claim_windows(catalog):
    use_targets(catalog)
    ages = {"hour": timedelta(hours=1), "week": timedelta(days=7), "quarter": timedelta(days=90),
            "decade": timedelta(days=3650)}
    for name, age in ages.items():
        add_release(catalog, name, "1.0", age=age)
    assert claimed(claim_wave(catalog, FIRST, 3)) == [("hour", "1.0"), ("week", "1.0"), ("quarter", "1.0")]
    assert claimed(claim_wave(catalog, FIRST, 3)) == [("decade", "1.0")]
