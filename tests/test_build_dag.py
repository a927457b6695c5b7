"""The build_wheels DAG has the shape the design promises, as Airflow itself parses and serialises it.

Parsed by Airflow's DagBag from the real ``dags/`` folder with a small targets file, then checked
through the serialised form the scheduler works from: one mapped build task per enabled target on
that target's queue and pool, index-host tasks on the index host's queue, a bounded wave, the
package==version map index, retries only for infrastructure faults, the catalog Asset (or the clock)
as trigger and the builds Asset as output. Parsing must touch no database and no network.
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
    builds = {t.task_id: t for t in serialized.tasks if t.task_id.startswith("build_")}
    assert set(builds) == {f"build_{name}" for name in ENABLED}, "retired targets get no build task"
    for name, queue in ENABLED.items():
        task = builds[f"build_{name}"]
        assert task.is_mapped, f"build_{name} is mapped over its wave"
        assert task.queue == queue, f"build_{name} must go to the {queue} queue, not {task.queue}"
        assert task.pool == f"build_{name}", "each target has its own pool"
        assert task.upstream_task_ids == {f"claim_{name}"}, "a target's builds come from its own claim"


def test_index_host_tasks_run_on_the_index_host_queue(serialized, dag_module):
    index_tasks = [t for t in serialized.tasks if not t.task_id.startswith("build_")]
    assert {t.task_id for t in index_tasks} == {
        "mirror_targets", "expire_lost_builds", "announce",
        *(f"{kind}_{name}" for kind in ("claim", "record") for name in ENABLED)}
    for task in index_tasks:
        assert task.queue == dag_module.INDEX_HOST_QUEUE, \
            f"{task.task_id} needs the catalog and the published tree: the index host's queue"


def test_lost_builds_are_expired_before_any_target_claims(serialized):
    assert serialized.get_task("expire_lost_builds").upstream_task_ids == {"mirror_targets"}
    for name in ENABLED:
        assert serialized.get_task(f"claim_{name}").upstream_task_ids == {"expire_lost_builds"}


def test_each_record_step_waits_for_every_build_of_its_wave_even_failed_ones(serialized):
    for name in ENABLED:
        record = serialized.get_task(f"record_{name}")
        assert record.upstream_task_ids == {f"claim_{name}", f"build_{name}"}
        assert record.trigger_rule == "all_done"
    announce = serialized.get_task("announce")
    assert announce.upstream_task_ids == {f"record_{name}" for name in ENABLED}
    assert announce.trigger_rule == "all_done"


def test_the_builds_asset_is_announced_once_per_run(serialized):
    from airflow.sdk import Asset
    outlets = serialized.get_task("announce").outlets
    assert [o.uri for o in outlets] == [Asset("wheelwright://builds").uri]
    assert not [t.task_id for t in serialized.tasks if t.outlets and t.task_id != "announce"]


def test_triggered_by_the_catalog_asset_or_the_clock_one_run_at_a_time(dag):
    from airflow.sdk import Asset, AssetOrTimeSchedule
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert [a.uri for a in dag.timetable.asset_condition.objects] == [Asset("wheelwright://catalog").uri]
    assert dag.timetable.can_be_scheduled, "the clock is a safety net when no catalog event comes"
    assert dag.max_active_runs == 1
    assert dag.catchup is False


def test_the_map_index_shows_package_and_version(serialized):
    template = serialized.get_task("build_cp311-x86_64").map_index_template
    request = {"build_id": 7, "package": "numpy", "version": "2.1.0", "target": "cp311-x86_64",
               "abi": "cp311"}
    assert jinja2.Template(template).render(task=SimpleNamespace(op_kwargs={"request": request})) \
        == "numpy==2.1.0"


def test_a_wave_stays_within_max_map_length(dag, dag_module):
    from airflow.configuration import conf
    assert 1 <= dag_module.WAVE_SIZE <= conf.getint("core", "max_map_length")
    # the claim is called with the wave size: a run never maps more than that per target
    claim = dag.get_task("claim_cp311-x86_64")
    assert claim.op_args[1] == dag_module.WAVE_SIZE


@pytest.mark.parametrize("fault", [
    "wheelwright.builds.transfer.TransferError", "paramiko.ssh_exception.SSHException",
    "builtins.ConnectionRefusedError", "builtins.EOFError", "wheelwright.errors.ConfigError",
])
def test_the_build_task_retries_infrastructure_faults(dag, fault):
    from airflow.sdk import RetryAction
    from airflow.sdk.module_loading import import_string
    task = dag.get_task("build_cp311-x86_64")
    assert task.partial_kwargs["retries"] >= 1
    decision = task.partial_kwargs["retry_policy"].evaluate(import_string(fault)("down"), 1, 4)
    assert decision.action == RetryAction.RETRY


@pytest.mark.parametrize("bug", [ValueError, KeyError, TypeError, RuntimeError])
def test_the_build_task_never_retries_anything_else(dag, bug):
    """A failed build is an outcome, not an exception: an exception that is not the machinery's
    failing is a bug, and running it again would only repeat it."""
    from airflow.sdk import RetryAction
    task = dag.get_task("build_cp311-x86_64")
    decision = task.partial_kwargs["retry_policy"].evaluate(bug("oops"), 1, 4)
    assert decision.action == RetryAction.FAIL


def test_the_scheduler_knows_the_build_task_has_retries_and_a_policy(serialized):
    """The policy itself runs in the worker (from the DAG file); the scheduler only sees that it exists."""
    task = serialized.get_task("build_cp311-x86_64")
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
    assert not [t for t in bag.dags["build_wheels"].tasks if t.task_id.startswith("build_")]


def test_lost_builds_are_given_up_only_after_the_build_timeout(dag_module):
    assert dag_module.LOST_AFTER > dag_module.BUILD_TIMEOUT + timedelta(minutes=30)


def test_a_build_whose_task_gave_up_is_marked_lost_and_queued_again(dag_module, catalog, settings,
                                                                    monkeypatch, tmp_path):
    """The record step knows the wave it was given: a request with no outcome (its task failed on
    every try) is not left 'building' for hours, it goes back to the queue at once."""
    from support.build_world import add_release, use_targets
    from wheelwright.builds import queue as build_queue
    from wheelwright.operate import dag_tasks as dag_support

    use_targets(catalog)
    add_release(catalog, "lonely", "1.0")
    (request,) = build_queue.claim_wave(catalog, "cp39-armv7l", 10)
    catalog.commit()
    monkeypatch.setattr(dag_support, "settings_from_airflow", lambda: settings)
    monkeypatch.setattr(dag_module, "incoming_dir", lambda s: str(tmp_path / "incoming"))

    assert dag_module.record_wave([dict(request)], outcomes=[]) == []

    status, reason = catalog.execute("SELECT status, reason FROM builds WHERE build_id = %s",
                                     (request["build_id"],)).fetchone()
    catalog.commit()
    assert status == "lost" and "failed on every try" in reason
    assert [r["package"] for r in build_queue.claim_wave(catalog, "cp39-armv7l", 10)] == ["lonely"]
