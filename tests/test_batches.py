"""Quick builds share a task; every other build keeps one of its own.

The plan is pure (what the catalog expects of each claimed build → batches); the expectation comes
from the catalog (the package's last finished build, this target's first; else the sdist's size);
and a batch is built and recorded build by build, a retried task building nothing twice.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from support.build_world import add_build, add_release, add_sdist, use_targets
from wheelwright.builds import batches, queue
from wheelwright.builds.batches import BATCH_SECONDS, BATCH_SIZE, QUICK_BUILD, SMALL_SDIST, Expected

TARGET = "cp39-armv7l"
OTHER = "cp311-armv7l"


def requests(n: int) -> list[dict]:
    return [{"build_id": i, "package": f"p{i}", "version": "1.0"} for i in range(1, n + 1)]


def ids(plan) -> list[list[int]]:
    return [[r["build_id"] for r in batch] for batch in plan]


def test_quick_builds_are_packed_in_queue_order_up_to_the_batch_size():
    wave = requests(BATCH_SIZE + 3)
    known = {r["build_id"]: Expected(2.5, None) for r in wave}
    assert ids(batches.plan(wave, known)) == [list(range(1, BATCH_SIZE + 1)),
                                              list(range(BATCH_SIZE + 1, BATCH_SIZE + 4))]


def test_a_slow_or_unknown_build_has_a_task_of_its_own_and_the_head_still_starts_first():
    wave = requests(6)
    known = {1: Expected(QUICK_BUILD + 1, None),     # slow last time
             2: Expected(3.0, None), 3: Expected(None, 900),         # quick; never built but tiny
             4: Expected(None, SMALL_SDIST + 1),      # never built, big sdist
             5: Expected(None, None),                 # nothing known
             6: Expected(4.0, 10 * SMALL_SDIST)}      # built quickly before: its history wins
    assert ids(batches.plan(wave, known)) == [[1], [2, 3, 6], [4], [5]]
    assert ids(batches.plan(wave, {})) == [[i] for i in range(1, 7)], "no knowledge, no sharing"


def test_a_batch_holds_no_more_expected_work_than_its_budget():
    wave = requests(5)
    each = QUICK_BUILD                                # quick, but not very
    plan = batches.plan(wave, {r["build_id"]: Expected(each, None) for r in wave})
    per_batch = int(BATCH_SECONDS // each)
    assert [len(b) for b in plan] == [per_batch] * (5 // per_batch) + ([5 % per_batch] if 5 % per_batch else [])
    assert sorted(r["build_id"] for b in plan for r in b) == [1, 2, 3, 4, 5], "each request exactly once"


def test_the_grid_names_a_batch_by_its_first_release():
    assert batches.label(requests(1)) == "p1==1.0"
    assert batches.label(requests(3)) == "p1==1.0 +2"


def finish(conn, build_id: int, seconds: float, *, ago: timedelta) -> None:
    conn.execute("UPDATE builds SET duration = %s, finished_at = now() - %s WHERE build_id = %s",
                 (timedelta(seconds=seconds), ago, build_id))
    conn.commit()


def test_the_catalog_expects_the_latest_build_of_the_package_on_this_target_first(catalog):
    use_targets(catalog)
    for package, version in [("fast", "1.0"), ("fast", "2.0"), ("armslow", "1.0"), ("armslow", "2.0"),
                             ("fresh", "1.0"), ("bare", "1.0")]:
        add_release(catalog, package, version, age=timedelta(days=400 if version == "1.0" else 2))
    # fast: built twice on this target, the latest in 3 s; on the other target last (yet it counts less)
    finish(catalog, add_build(catalog, "fast", "1.0", TARGET, "success"), 300, ago=timedelta(days=9))
    finish(catalog, add_build(catalog, "fast", "1.0", TARGET, "failure"), 3, ago=timedelta(days=5))
    finish(catalog, add_build(catalog, "fast", "1.0", OTHER, "success"), 500, ago=timedelta(days=1))
    # armslow: only the other target built it: 2 s there
    finish(catalog, add_build(catalog, "armslow", "1.0", OTHER, "success"), 2, ago=timedelta(days=3))
    add_build(catalog, "armslow", "1.0", TARGET, "lost")   # a lost build tells nothing
    add_sdist(catalog, "fresh", "1.0", 1234)

    from wheelwright.builds.queue import claim_wave
    claimed = {r["package"]: r["build_id"] for r in claim_wave(catalog, TARGET, 10)}
    known = batches.expected(catalog, list(claimed.values()))

    assert set(claimed) == {"fast", "armslow", "fresh", "bare"}
    assert known[claimed["fast"]] == Expected(3.0, None)
    assert known[claimed["armslow"]] == Expected(2.0, None)
    assert known[claimed["fresh"]] == Expected(None, 1234)
    assert known[claimed["bare"]] == Expected(None, None)
    assert batches.expected(catalog, []) == {}


# --- a batch through the DAG's tasks ------------------------------------------------------------------

@pytest.fixture
def index_host(catalog, settings, monkeypatch, tmp_path):
    """The build and record tasks as the DAG calls them, the index host's SFTP being a local folder."""
    from types import SimpleNamespace
    from wheelwright.builds import transfer
    from wheelwright.operate import dag_tasks

    class LocalSFTP(transfer.LocalFolder):
        def open(self, path: str, mode: str):
            return open(path, mode)

    use_targets(catalog)
    incoming = tmp_path / "incoming"
    (incoming / "builder").mkdir(parents=True)   # the one builder account's folder
    here = settings.with_(incoming=incoming, remote_incoming=str(incoming))
    monkeypatch.setattr(dag_tasks, "task_settings", lambda: here)
    monkeypatch.setattr(dag_tasks, "index_host_account", lambda: "builder")
    monkeypatch.setattr(dag_tasks._IndexHostSession, "sftp", lambda self: LocalSFTP())
    return SimpleNamespace(tasks=dag_tasks, incoming=incoming / "builder")


def failing_builder(built: list, scratch):
    """builder.build as a worker would run it, for a release that does not build: a log, no wheel."""
    import gzip
    from wheelwright.builds.analysis import FileInfo, sha256_of
    from wheelwright.builds.builder import BuildOutcome

    def build(request, **kwargs):
        built.append(request["package"])
        folder = scratch / str(request["build_id"])
        folder.mkdir()
        log = folder / f"{request['build_id']}.txt.gz"
        log.write_bytes(gzip.compress(b"error: no\n"))
        sha256, size = sha256_of(log)
        return BuildOutcome(build_id=request["build_id"], package=request["package"],
                            version=request["version"], target=request["target"], abi=request["abi"],
                            status="failure", reason="it did not build", builder="pi-1", duration=1.0,
                            log=FileInfo(log.name, sha256, size), files_dir=folder)
    return build


def test_a_batch_is_built_and_sent_build_by_build_and_each_is_recorded(index_host, catalog, monkeypatch,
                                                                      tmp_path):
    from wheelwright.builds import builder
    for package in ("one", "two", "three"):
        add_release(catalog, package, "1.0")
    batch = [dict(r) for r in queue.claim_wave(catalog, TARGET, 10)]
    built: list[str] = []
    monkeypatch.setattr(builder, "build", failing_builder(built, tmp_path))

    sent = index_host.tasks.build_and_send(batch, timedelta(minutes=5))

    assert built == [r["package"] for r in batch]
    assert [s["status"] for s in sent] == ["failure"] * 3
    assert sorted(p.name for p in index_host.incoming.iterdir()) == sorted(str(r["build_id"]) for r in batch)
    assert index_host.tasks.record_build(batch) == ["one", "three", "two"]
    statuses = catalog.execute("SELECT package, status FROM builds ORDER BY package").fetchall()
    assert statuses == [("one", "failure"), ("three", "failure"), ("two", "failure")]


def test_a_retried_batch_builds_only_what_no_earlier_try_sent_and_loses_nothing(index_host, catalog,
                                                                               monkeypatch, tmp_path):
    """The first try sent one build and then lost the index host: the retry builds the other two;
    if it too gives up, the record step records what arrived and re-queues the rest."""
    from wheelwright.builds import builder
    for package in ("one", "two", "three"):
        add_release(catalog, package, "1.0")
    batch = [dict(r) for r in queue.claim_wave(catalog, TARGET, 10)]
    built: list[str] = []
    monkeypatch.setattr(builder, "build", failing_builder(built, tmp_path))
    index_host.tasks.build_and_send(batch[:1], timedelta(minutes=5))           # the first try's work

    sent = index_host.tasks.build_and_send(batch, timedelta(minutes=5), retrying=True)

    assert built == [r["package"] for r in batch], "the first build was not built again"
    assert sent[0] == {"build_id": batch[0]["build_id"], "status": "sent earlier"}

    # a batch whose task gave up after its first build: that one is recorded, the others re-queue
    for package in ("four", "five"):
        add_release(catalog, package, "1.0")
    index_host.tasks.record_build(batch)
    second = [dict(r) for r in queue.claim_wave(catalog, TARGET, 10)]
    index_host.tasks.build_and_send(second[:1], timedelta(minutes=5))
    assert index_host.tasks.record_build(second) == [second[0]["package"]]
    statuses = dict(catalog.execute("SELECT package, status FROM builds WHERE build_id = ANY(%s)",
                                    ([r["build_id"] for r in second],)).fetchall())
    assert statuses == {second[0]["package"]: "failure", second[1]["package"]: "lost"}
    assert [r["package"] for r in queue.claim_wave(catalog, TARGET, 10)] == [second[1]["package"]]


def test_a_batch_that_runs_long_hands_back_what_it_has_not_started_while_the_slow_build_runs(
        index_host, catalog, monkeypatch, tmp_path):
    """The first build of a batch turns out slow. While it still runs, the builds not started are
    handed back to the index host; the worker does not build them, and the next sweep re-queues them
    for any free slot. (The slow build here waits for the hand-back: event order, not timing.)"""
    from support.waiting import wait_until
    from wheelwright.builds import builder, incoming
    for package in ("slow", "two", "three"):
        add_release(catalog, package, "1.0")
    batch = [dict(r) for r in queue.claim_wave(catalog, TARGET, 10)]
    built: list[str] = []
    fail = failing_builder(built, tmp_path)
    handed_back = [index_host.incoming / str(r["build_id"]) / incoming.HANDED_BACK for r in batch[1:]]

    def slow_first(request, **kwargs):
        if request["build_id"] == batch[0]["build_id"]:
            wait_until(lambda: all(marker.is_file() for marker in handed_back), 30,
                       "the builds not started to be handed back while this one runs")
        return fail(request, **kwargs)
    monkeypatch.setattr(builder, "build", slow_first)
    monkeypatch.setattr(batches, "HAND_BACK_AFTER", 0)

    sent = index_host.tasks.build_and_send(batch, timedelta(minutes=5))

    assert built == [batch[0]["package"]]
    assert [s["status"] for s in sent] == ["failure", "handed back", "handed back"]
    assert index_host.tasks.sweep_incoming()["handed_back"] == 2
    statuses = dict(catalog.execute("SELECT build_id, status FROM builds").fetchall())
    assert statuses == {batch[0]["build_id"]: "building",       # sent; its record step comes next
                        batch[1]["build_id"]: "lost", batch[2]["build_id"]: "lost"}
    catalog.commit()
    assert sorted(r["package"] for r in queue.claim_wave(catalog, TARGET, 10)) == \
        sorted(r["package"] for r in batch[1:]), "the handed-back releases are claimed again"
    assert index_host.tasks.record_build(batch) == [batch[0]["package"]]


def test_a_hand_back_changes_nothing_for_a_build_that_is_not_in_flight(index_host, catalog, monkeypatch,
                                                                        tmp_path):
    """A hand-back is a worker's word: for a build already recorded it is only removed."""
    from wheelwright.builds import builder, incoming
    add_release(catalog, "done", "1.0")
    batch = [dict(r) for r in queue.claim_wave(catalog, TARGET, 10)]
    monkeypatch.setattr(builder, "build", failing_builder([], tmp_path))
    index_host.tasks.build_and_send(batch, timedelta(minutes=5))
    index_host.tasks.record_build(batch)
    marker = index_host.incoming / str(batch[0]["build_id"]) / incoming.HANDED_BACK
    marker.parent.mkdir()
    marker.touch()

    assert index_host.tasks.sweep_incoming()["handed_back"] == 0
    assert catalog.execute("SELECT status FROM builds").fetchall() == [("failure",)]
    assert not marker.parent.exists()


def test_a_claim_keeps_its_budget_of_expected_work_and_leaves_the_rest_at_the_head_of_the_queue(catalog):
    use_targets(catalog)
    for package in ("a", "b", "c", "d"):
        add_release(catalog, package, "2.0", age=timedelta(days=1))
        add_release(catalog, package, "1.0", age=timedelta(days=400))
    for package, seconds in (("a", 100.0), ("b", 100.0), ("c", 100.0), ("d", 1.0)):
        finish(catalog, add_build(catalog, package, "1.0", TARGET, "success"), seconds, ago=timedelta(days=1))

    claimed, more = batches.claim_batches(catalog, TARGET, 10, seconds=250)

    assert ids_of(claimed) == [["a"], ["b"]], "the first two fit 250 s; c would not"
    assert more, "builds were left waiting"
    assert [p for p, _ in queue.queue_head(catalog, TARGET)] == ["c", "d"], \
        "what the budget left is not claimed: the next run takes it first"
    claimed, more = batches.claim_batches(catalog, TARGET, 10, seconds=250)
    assert ids_of(claimed) == [["c"], ["d"]] and not more, "the end of the queue: nothing waits"
    claimed, more = batches.claim_batches(catalog, TARGET, 10, seconds=250)
    assert (claimed, more) == ([], False)


def test_a_claim_keeps_its_first_build_however_long_and_says_when_it_was_full(catalog):
    use_targets(catalog)
    for package in ("huge", "small1", "small2"):
        add_release(catalog, package, "2.0", age=timedelta(days=1))
        add_release(catalog, package, "1.0", age=timedelta(days=400))
        finish(catalog, add_build(catalog, package, "1.0", TARGET, "success"),
               5 * 3600 if package == "huge" else 1.0, ago=timedelta(days=1))

    claimed, more = batches.claim_batches(catalog, TARGET, 10, seconds=60)
    assert ids_of(claimed) == [["huge"]] and more
    claimed, more = batches.claim_batches(catalog, TARGET, 1, seconds=3600)
    assert ids_of(claimed) == [["small1"]] and more, "a full claim may leave builds waiting"


def ids_of(plan) -> list[list[str]]:
    return [[r["package"] for r in batch] for batch in plan]
