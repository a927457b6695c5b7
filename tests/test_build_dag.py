"""The build_wheels DAG has the shape the design promises, as Airflow itself parses and serialises it.

Parsed by Airflow's DagBag from the real ``dags/`` folder with a small targets file, then checked
through the serialised form the scheduler works from: one mapped wave (build, then record, per
batch) per enabled target, the build on that target's queue and pool, index-host tasks on the index
host's queue, a bounded wave, the package==version map index, retries only for infrastructure faults,
the catalog Asset (or the clock) as trigger and the builds Asset as output of each record. Parsing must
touch no database and no network. Then the record step and the sweep of the incoming folder, as the
tasks call them: a build whose task gave up goes back to the queue, and a build whose run timed out
before its record step is recorded by the next run.
"""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import jinja2
import pytest

from support.catalog import REPO

TARGETS = """
[[target]]
name = "cp311-x86_64"
abi = "cp311"
platform = "linux_x86_64"
distro = "bookworm"

[[target]]
name = "cp39-armv7l"
abi = "cp39"
platform = "linux_armv7l"
distro = "bullseye"
queue = "pi-bullseye"

[[target]]
name = "cp313-aarch64"
abi = "cp313"
platform = "linux_aarch64"
distro = "trixie"
enabled = false
"""
ENABLED = {"cp39-armv7l": "pi-bullseye", "cp311-x86_64": "cp311-x86_64"}


def build_of(name: str) -> str:
    return f"wave_{name}.build"


def record_of(name: str) -> str:
    return f"wave_{name}.record"


@pytest.fixture(scope="module", autouse=True)
def airflow_home(tmp_path_factory):
    """Airflow reads its home when first imported: give it a private one before anything imports it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow")))
        mp.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        yield


@pytest.fixture
def dag_module(monkeypatch):
    """The DAG file imported as a module, for its constants."""
    import importlib.util
    import sys
    monkeypatch.setenv("WHEELWRIGHT_TARGETS", str(REPO / "data" / "targets.toml"))
    spec = importlib.util.spec_from_file_location("dags_build_wheels", REPO / "dags" / "build_wheels.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "dags_build_wheels", module)
    spec.loader.exec_module(module)
    return module


def parse(monkeypatch, tmp_path, targets_text: str):
    """The DagBag of the real dags/ folder, parsed with ``targets_text`` and an unreachable catalog."""
    targets = tmp_path / "targets.toml"
    targets.write_text(targets_text)
    monkeypatch.setenv("WHEELWRIGHT_TARGETS", str(targets))
    # Nothing listens on port 9: a parse that touched the catalog would fail (or hang) here.
    monkeypatch.setenv("WHEELWRIGHT_DSN", "postgresql://nobody@127.0.0.1:9/none?connect_timeout=1")
    from airflow.dag_processing.dagbag import DagBag
    return DagBag(dag_folder=str(REPO / "dags" / "build_wheels.py"))


@pytest.fixture
def dag(monkeypatch, tmp_path):
    bag = parse(monkeypatch, tmp_path, TARGETS)
    assert not bag.import_errors, bag.import_errors
    return bag.dags["build_wheels"]


@pytest.fixture
def serialized(dag):
    """The DAG as the scheduler sees it: serialised by the dag-processor, read back."""
    from airflow.serialization.serialized_objects import DagSerialization
    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


def test_one_mapped_build_task_per_enabled_target_on_its_own_queue_and_pool(serialized):
    builds = {t.task_id: t for t in serialized.tasks if t.task_id.endswith(".build")}
    assert set(builds) == {build_of(name) for name in ENABLED}, "retired targets get no build task"
    for name, queue in ENABLED.items():
        task = builds[build_of(name)]
        assert task.get_closest_mapped_task_group() is not None, f"{task.task_id} is mapped over its wave"
        assert task.queue == queue, f"{task.task_id} must go to the {queue} queue, not {task.queue}"
        assert task.pool == f"build_{name}", "each target has its own pool"
        assert task.upstream_task_ids == {f"claim_{name}"}, "a target's builds come from its own claim"


def test_index_host_tasks_run_on_the_index_host_queue(serialized, dag_module):
    index_tasks = [t for t in serialized.tasks if not t.task_id.endswith(".build")]
    assert {t.task_id for t in index_tasks} == {
        "mirror_targets", "expire_lost_builds", "sweep_incoming", "more_waiting",
        *(f"claim_{name}" for name in ENABLED), *(record_of(name) for name in ENABLED)}
    for task in index_tasks:
        assert task.queue == dag_module.INDEX_HOST_QUEUE, \
            f"{task.task_id} needs the catalog and the published tree: the index host's queue"


def test_lost_builds_are_expired_before_any_target_claims_or_the_sweep(serialized):
    assert serialized.get_task("expire_lost_builds").upstream_task_ids == {"mirror_targets"}
    assert serialized.get_task("sweep_incoming").upstream_task_ids == {"expire_lost_builds"}
    for name in ENABLED:
        assert serialized.get_task(f"claim_{name}").upstream_task_ids == {"expire_lost_builds"}


def test_each_build_is_recorded_on_its_own_as_soon_as_it_is_done_even_a_failed_one(serialized):
    """build and record are mapped together in one task group: record[i] waits for build[i] only,
    so a slow build delays no other build's recording (and nothing waits for the whole wave)."""
    for name in ENABLED:
        record = serialized.get_task(record_of(name))
        assert record.upstream_task_ids == {f"claim_{name}", build_of(name)}
        assert record.trigger_rule == "all_done"
        assert record.get_closest_mapped_task_group().group_id == f"wave_{name}"
        assert serialized.get_task(build_of(name)).task_group is record.task_group
        assert not record.downstream_task_ids, "nothing waits for a wave to finish"


def test_every_recording_announces_the_builds_asset(serialized):
    from airflow.sdk import Asset
    announcing = {t.task_id for t in serialized.tasks if t.outlets} - {"more_waiting"}
    assert announcing == {"sweep_incoming", *(record_of(name) for name in ENABLED)}
    for task_id in announcing:
        assert [o.uri for o in serialized.get_task(task_id).outlets] == [Asset("wheelwright://builds").uri]


def test_a_claim_that_left_builds_waiting_asks_for_the_next_run_at_once(dag, serialized):
    """more_waiting follows every claim and announces the backlog Asset, which schedules the DAG
    itself: a deep queue is claimed run after run, not once per catalog change."""
    from airflow.sdk import Asset
    backlog = Asset("wheelwright://build-backlog").uri
    task = serialized.get_task("more_waiting")
    assert task.upstream_task_ids == {f"claim_{name}" for name in ENABLED}
    assert [o.uri for o in task.outlets] == [backlog]
    assert backlog in [a.uri for a in dag.timetable.asset_condition.objects]


@pytest.mark.parametrize("waiting, announced", [
    ({"cp311-x86_64": False, "cp39-armv7l": True}, ["cp39-armv7l"]),
    ({"cp311-x86_64": False, "cp39-armv7l": False}, None),
])
def test_more_waiting_announces_only_the_targets_left_waiting(dag, waiting, announced):
    from types import SimpleNamespace
    from airflow.sdk.exceptions import AirflowSkipException
    from wheelwright.operate.assets import BUILD_BACKLOG
    events = {BUILD_BACKLOG: SimpleNamespace(extra=None)}
    call = dag.get_task("more_waiting").python_callable
    if announced is None:
        with pytest.raises(AirflowSkipException):
            call(waiting, outlet_events=events)
        return
    assert call(waiting, outlet_events=events) == announced
    assert events[BUILD_BACKLOG].extra == {"targets": announced}


def test_triggered_by_the_catalog_asset_its_backlog_or_the_clock_several_runs_at_a_time(dag):
    from airflow.sdk import Asset, AssetAny, AssetOrTimeSchedule
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert isinstance(dag.timetable.asset_condition, AssetAny), "either asset alone starts a run"
    assert [a.uri for a in dag.timetable.asset_condition.objects] == [
        Asset("wheelwright://catalog").uri, Asset("wheelwright://build-backlog").uri]
    assert dag.timetable.can_be_scheduled, "the clock is a safety net when no catalog event comes"
    assert dag.max_active_runs > 1, "a slow wave must not hold back the next run's claims"
    assert dag.catchup is False


def test_the_map_index_shows_package_and_version(serialized, dag_module):
    """Each task of a wave names its release in its context; the template shows it in the grid."""
    for task_id in (build_of("cp311-x86_64"), record_of("cp311-x86_64")):
        template = serialized.get_task(task_id).map_index_template
        assert jinja2.Template(template).render(release="numpy==2.1.0") == "numpy==2.1.0"


def test_a_wave_stays_within_max_map_length(dag, dag_module):
    from airflow.configuration import conf
    assert 1 <= dag_module.WAVE_SIZE <= conf.getint("core", "max_map_length")
    # the claim is called with the wave size and its budget: a run never maps more than that per target
    claim = dag.get_task("claim_cp311-x86_64")
    assert tuple(claim.op_args[1:]) == (dag_module.WAVE_SIZE, dag_module.WAVE_SECONDS)
    # every active run's wave waiting in a pool ends well before its builds would be given up
    assert timedelta(seconds=dag_module.MAX_ACTIVE_RUNS * dag_module.WAVE_SECONDS) <= dag_module.LOST_AFTER / 2


@pytest.mark.parametrize("fault", [
    "wheelwright.builds.transfer.TransferError", "paramiko.ssh_exception.SSHException",
    "builtins.ConnectionRefusedError", "builtins.EOFError", "wheelwright.errors.ConfigError",
])
def test_the_build_task_retries_infrastructure_faults(dag, fault):
    from airflow.sdk import RetryAction
    from airflow.sdk.module_loading import import_string
    task = dag.get_task(build_of("cp311-x86_64"))
    assert task.retries >= 1
    decision = task.retry_policy.evaluate(import_string(fault)("down"), 1, 4)
    assert decision.action == RetryAction.RETRY


@pytest.mark.parametrize("bug", [ValueError, KeyError, TypeError, RuntimeError])
def test_the_build_task_never_retries_anything_else(dag, bug):
    """A failed build is an outcome, not an exception: an exception that is not the machinery's
    failing is a bug, and running it again would only repeat it."""
    from airflow.sdk import RetryAction
    task = dag.get_task(build_of("cp311-x86_64"))
    decision = task.retry_policy.evaluate(bug("oops"), 1, 4)
    assert decision.action == RetryAction.FAIL


def test_the_scheduler_knows_the_build_task_has_retries_and_a_policy(serialized):
    """The policy itself runs in the worker (from the DAG file); the scheduler only sees that it exists."""
    task = serialized.get_task(build_of("cp311-x86_64"))
    assert task.retries >= 1 and task.has_retry_policy


def test_a_broken_targets_file_is_an_import_error_that_names_the_problem(monkeypatch, tmp_path):
    bag = parse(monkeypatch, tmp_path, '[[target]]\nabi = "cp3x"\nplatform = "linux_armv7l"\n'
                                       'distro = "bookworm"\n')
    assert "build_wheels" not in bag.dags
    (error,) = bag.import_errors.values()
    assert "cp3x" in error and "ABI tag" in error


def test_no_enabled_target_still_gives_a_valid_dag(monkeypatch, tmp_path):
    bag = parse(monkeypatch, tmp_path, TARGETS.replace("distro = \"bookworm\"",
                                                       "distro = \"bookworm\"\nenabled = false")
                .replace("queue = \"pi-bullseye\"", "queue = \"pi-bullseye\"\nenabled = false"))
    assert not bag.import_errors
    assert not [t for t in bag.dags["build_wheels"].tasks if t.task_id.startswith("wave_")]


def test_lost_builds_are_given_up_only_after_the_build_timeout(dag_module):
    assert dag_module.LOST_AFTER > dag_module.BUILD_TIMEOUT + timedelta(minutes=30)


@pytest.fixture
def index_host(catalog, settings, monkeypatch, tmp_path):
    """The index-host tasks as the DAG calls them, with this test's catalog and incoming folder."""
    from support.build_world import use_targets
    from wheelwright.operate import dag_tasks
    use_targets(catalog)
    incoming = tmp_path / "incoming"
    (incoming / "pi-1").mkdir(parents=True)   # the one builder account's folder
    monkeypatch.setattr(dag_tasks, "task_settings", lambda: settings.with_(incoming=incoming))
    return SimpleNamespace(tasks=dag_tasks, incoming=incoming / "pi-1", output=settings.output)


def arrive(incoming, request, *, manifest=True) -> None:
    """What a worker sends for a failed build of ``request``: its log, then its outcome."""
    import gzip
    import hashlib
    import json
    from wheelwright.builds.incoming import MANIFEST
    folder = incoming / str(request["build_id"])
    folder.mkdir()
    log = folder / f"{request['build_id']}.txt.gz"
    log.write_bytes(gzip.compress(b"error: it did not build\n"))
    outcome = {**request, "status": "failure", "reason": "it did not build", "builder": "pi-1",
               "duration": 12.5, "wheels": [],
               "log": {"filename": log.name, "sha256": hashlib.sha256(log.read_bytes()).hexdigest(),
                       "size": log.stat().st_size}}
    if manifest:
        (folder / MANIFEST).write_text(json.dumps(outcome))


def status_of(conn, build_id) -> tuple:
    row = conn.execute("SELECT status, reason FROM builds WHERE build_id = %s", (build_id,)).fetchone()
    conn.commit()
    return row


def test_each_build_is_recorded_from_what_arrived(index_host, catalog):
    from support.build_world import add_release
    from wheelwright.builds import queue as build_queue
    add_release(catalog, "lonely", "1.0")
    (request,) = build_queue.claim_wave(catalog, "cp39-armv7l", 10)
    arrive(index_host.incoming, request)

    assert index_host.tasks.record_build([dict(request)]) == ["lonely"]
    assert status_of(catalog, request["build_id"]) == ("failure", "it did not build")
    assert list(index_host.incoming.iterdir()) == [], "its incoming folder is emptied"


def test_a_build_whose_task_gave_up_is_marked_lost_and_queued_again(index_host, catalog):
    """Nothing arrived for a request (its task failed on every try): it is not left 'building' for
    hours, it goes back to the queue at once."""
    from support.build_world import add_release
    from wheelwright.builds import queue as build_queue
    add_release(catalog, "lonely", "1.0")
    (request,) = build_queue.claim_wave(catalog, "cp39-armv7l", 10)

    assert index_host.tasks.record_build([dict(request)]) == []

    status, reason = status_of(catalog, request["build_id"])
    assert status == "lost" and "failed on every try" in reason
    assert [r["package"] for r in build_queue.claim_wave(catalog, "cp39-armv7l", 10)] == ["lonely"]


def test_a_run_past_its_timeout_loses_nothing(index_host, catalog):
    """A run timed out after its builds had sent their results, before their record steps ran: the
    next run's sweep records them; a folder of a build given up as lost is removed; a build still
    sending (no outcome yet) is left alone."""
    import os
    import time
    from support.build_world import add_release
    from wheelwright.builds import queue as build_queue
    for package in ("finished", "abandoned", "sending"):
        add_release(catalog, package, "1.0")
    requests = {r["package"]: r for r in build_queue.claim_wave(catalog, "cp39-armv7l", 10)}
    arrive(index_host.incoming, requests["finished"])
    arrive(index_host.incoming, requests["abandoned"])
    arrive(index_host.incoming, requests["sending"], manifest=False)
    build_queue.mark_lost(catalog, requests["abandoned"]["build_id"], "no result within 4 hours")
    (index_host.incoming / "not-a-build").mkdir()
    settled = time.time() - 3600  # the sweep takes only folders nothing has touched for a while
    for path in index_host.incoming.rglob("*"):
        os.utime(path, (settled, settled))
    for path in index_host.incoming.iterdir():
        os.utime(path, (settled, settled))

    swept = index_host.tasks.sweep_incoming()

    assert swept == {"recorded": 1, "refused": 0, "removed": 1, "packages_changed": 1,
                     "handed_back": 0, "packages": ["finished"]}
    assert status_of(catalog, requests["finished"]["build_id"]) == ("failure", "it did not build")
    assert status_of(catalog, requests["sending"]["build_id"])[0] == "building"
    assert sorted(p.name for p in index_host.incoming.iterdir()) == sorted(
        ["not-a-build", str(requests["sending"]["build_id"])])
    assert index_host.tasks.record_build([dict(requests["finished"])]) == [], \
        "a record step that runs after the sweep finds the build recorded"
    assert status_of(catalog, requests["finished"]["build_id"])[0] == "failure"
    assert index_host.tasks.sweep_incoming()["recorded"] == 0


def test_a_fresh_arrival_is_left_to_its_own_record_step(index_host, catalog):
    from support.build_world import add_release
    from wheelwright.builds import queue as build_queue
    add_release(catalog, "quick", "1.0")
    (request,) = build_queue.claim_wave(catalog, "cp39-armv7l", 10)
    arrive(index_host.incoming, request)
    assert index_host.tasks.sweep_incoming()["recorded"] == 0
    assert status_of(catalog, request["build_id"])[0] == "building"


def test_runs_active_at_once_never_claim_a_release_twice(catalog, settings):
    """Several build_wheels runs claim at the same time, each from its own connection: the claim lock
    serialises them, so every release is handed out exactly once and no claim fails."""
    from concurrent.futures import ThreadPoolExecutor
    from support.build_world import add_release, use_targets
    from wheelwright.builds import queue as build_queue
    from wheelwright.catalog import db
    use_targets(catalog)
    for i in range(12):
        add_release(catalog, f"pkg{i:02d}", "1.0")

    def one_run(_):
        with db.connect(settings) as conn:
            return [r["package"] for r in build_queue.claim_wave(conn, "cp39-armv7l", 5)]

    with ThreadPoolExecutor(4) as pool:
        waves = list(pool.map(one_run, range(4)))
    claimed = [p for wave in waves for p in wave]
    assert sorted(claimed) == [f"pkg{i:02d}" for i in range(12)], "each release once, none left out"
    assert sorted(len(w) for w in waves) == [0, 2, 5, 5]
