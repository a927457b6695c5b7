"""A mapped build task runs on the Celery queue named after its ABI, and only there.

Queue routing is done by Airflow's scheduler, the CeleryExecutor and Redis, so this test runs all of them
for real: a redis-server, a migrated Airflow metadata database in the session's PostgreSQL, an
api-server, a scheduler, a dag-processor, and two ``airflow celery worker`` processes. One worker
serves only the ABI's queue (a Raspberry Pi of that target); the other serves the index host's queue
and a second target's queue. The DAG has the shape of ``build_wheels`` (claim on the index host's
queue, ``build.override(task_id=f"build_{abi}", queue=abi, pool=f"build_{abi}").expand(...)``, record
on the index host's queue); each task writes down which worker ran it, from that worker's own
environment, so the proof does not rest on Airflow's bookkeeping alone.

The second test runs the real ``dags/build_wheels.py`` the same way, end to end: real sdists from the
PyPI double built by real pip on the target's worker, sent over SFTP to a real SSH server, recorded
in the catalog and announced as an Asset event. The third shows that builds never wait on each
other: of two builds in one wave, the one that waits (its setup.py blocks until the test lets it go)
does not delay the recording of the other, and the test lets it go only once the other is recorded.
The stack and its workers are shared by the tests: start-up is most of the time. The real DAG's target
queue is served by the same "Pi" worker and a second one (two slots: two builds at once).
"""

from __future__ import annotations

import json
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from support.airflow_processes import (AirflowStack, BuildWorld, Process, airflow_variables, create_database,
                             drop_database, free_port, migrate, pure_sdist, start_build_world, start_redis)
from support.build_world import C_SOURCE, add_release, make_sdist, setup_py
from support.catalog import REPO, database_dsn

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ABI = "cp311"           # the target whose builds are under test
OTHER_ABI = "cp313"     # a second target, served by the other worker
INDEX_QUEUE = "default"  # the index host's queue: claim and record run there
REQUESTS = {ABI: [("alpha", "1.0"), ("beta", "2.0"), ("gamma", "0.1")],
            OTHER_ABI: [("delta", "3.0")]}

DAG = textwrap.dedent('''
    """Test double of build_wheels: the same wiring, a build that only records where it ran."""
    import json, os, pathlib
    import pendulum
    from airflow.sdk import dag, task

    REQUESTS = {requests!r}
    INDEX_QUEUE = {index_queue!r}


    def evidence(kind, name, **facts):
        folder = pathlib.Path(os.environ["EVIDENCE_DIR"])
        facts.update(worker=os.environ.get("WORKER_NAME"), pid=os.getpid())
        facts.update(kind=kind, name=name)
        (folder / f"{{kind}}-{{name}}-{{os.getpid()}}.json").write_text(json.dumps(facts))


    @dag(dag_id="queue_proof", schedule=None, start_date=pendulum.datetime(2024, 1, 1), catchup=False,
         max_active_runs=1)
    def queue_proof():
        @task(queue=INDEX_QUEUE)
        def claim(abi):
            evidence("claim", abi)
            return [{{"package": p, "version": v, "abi": abi}} for p, v in REQUESTS[abi]]

        @task(map_index_template="{{{{ task.op_kwargs['request']['package'] }}}}=="
                                 "{{{{ task.op_kwargs['request']['version'] }}}}")
        def build(request):
            evidence("build", f"{{request['abi']}}-{{request['package']}}", abi=request["abi"])
            return {{"package": request["package"], "status": "success"}}

        @task(queue=INDEX_QUEUE)
        def record(abi, outcomes):
            evidence("record", abi, outcomes=list(outcomes))

        for abi in REQUESTS:
            built = build.override(task_id=f"build_{{abi}}", queue=abi, pool=f"build_{{abi}}") \\
                .expand(request=claim.override(task_id=f"claim_{{abi}}")(abi))
            record.override(task_id=f"record_{{abi}}")(abi, built)


    queue_proof()
''')


REAL_TARGET = "cp311-x86_64"     # this machine's target in the real DAG's test targets file
REAL_TARGETS = f"""
[[target]]
name = "{REAL_TARGET}"
abi = "cp311"
platform = "linux_x86_64"
distro = "bookworm"

[[target]]
name = "cp313-aarch64"
abi = "cp313"
platform = "linux_aarch64"
distro = "trixie"
enabled = false
"""

@dataclass
class Deployment:
    stack: AirflowStack
    world: BuildWorld
    pi: Process          # worker serving the target queues of this machine's ABI
    pi2: Process         # a second worker of the real DAG's target
    index_host: Process  # worker serving the index host's queue (and another target's)
    evidence: Path       # where the proof DAG's tasks write down which worker ran them
    files: Path          # what the PyPI double serves (it re-reads the folder when it changes)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, pg_server, catalog_template):
    """Redis, a migrated metadata database, a build world and the core Airflow processes; all of it
    stopped and removed afterwards, whatever happened."""
    root = tmp_path_factory.mktemp("celery")
    dags = root / "dags"
    dags.mkdir()
    (dags / "queue_proof.py").write_text(DAG.format(requests=REQUESTS, index_queue=INDEX_QUEUE))
    shutil.copy(REPO / "dags" / "build_wheels.py", dags / "build_wheels.py")
    workdir = root / "run"
    workdir.mkdir()
    files = root / "files"
    files.mkdir()
    pure_sdist(files, "purepkg", "1.0")
    make_sdist(files, "cext", "1.0", {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\n'
                          'build-backend = "setuptools.build_meta"\n',
        "setup.py": setup_py("cext", "1.0", body="from setuptools import Extension",
                             ext_modules="[Extension('cext', ['cext.c'])]"),
        "cext.c": C_SOURCE})
    make_sdist(files, "broken", "1.0", {"setup.py": setup_py("broken", "1.0", body="""
        raise SystemExit("broken fails to build, on purpose")
    """)})

    cleanup = []
    stack = None
    try:
        dbname, metadata_dsn = create_database(pg_server)
        cleanup.append(lambda: drop_database(pg_server, dbname))
        catalog_name = f"wheelwright_celery_{dbname}"
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{catalog_name}" TEMPLATE "{catalog_template}"')
        cleanup.append(lambda: drop_database(pg_server, catalog_name))
        world = start_build_world(workdir, database_dsn(pg_server, catalog_name), files, REAL_TARGETS)
        cleanup.append(world.stop)
        broker, redis = start_redis(workdir)
        cleanup.append(lambda: (redis.popen.terminate(), redis.popen.wait(timeout=10)))
        api_port = free_port()
        env = {**airflow_variables(
            world.settings, airflow_home=root / "airflow", metadata_dsn=metadata_dsn, dags_folder=dags,
            api_port=api_port, executor="CeleryExecutor", broker_url=broker), **world.env,
            # runs only when the test triggers them: the cron half of the schedule stays quiet
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}
        stack = AirflowStack(env=env, workdir=workdir, api_port=api_port)
        migrate(env, workdir)
        stack.start_core(wait=False)
        evidence = root / "evidence"
        evidence.mkdir()
        # One Pi of this machine's ABI, serving the proof DAG's queue and the real DAG's target queue;
        # one index host, serving the index-host queue and a second target's queue.
        pi = stack.start_worker("pi", [ABI, REAL_TARGET],
                                extra_env={"EVIDENCE_DIR": str(evidence), "WORKER_NAME": "pi"})
        pi2 = stack.start_worker("pi2", [REAL_TARGET])
        index_host = stack.start_worker(
            "index_host", [INDEX_QUEUE, OTHER_ABI],
            extra_env={"EVIDENCE_DIR": str(evidence), "WORKER_NAME": "index_host"})
        stack.wait_core()
        for worker in (pi, pi2, index_host):
            stack.wait_worker_ready(worker)
        yield Deployment(stack, world, pi, pi2, index_host, evidence, files)
    finally:
        if stack is not None:
            stack.stop()
        for undo in reversed(cleanup):
            undo()


def test_a_mapped_build_runs_only_on_the_worker_serving_its_abi_queue(deployment):
    stack, evidence = deployment.stack, deployment.evidence
    for abi in REQUESTS:
        stack.set_pool(f"build_{abi}", 2)
    stack.wait_for_dag("queue_proof")
    assert not stack.import_errors()

    run_id = stack.trigger("queue_proof")
    state = stack.wait_for_run("queue_proof", run_id, timeout=150)
    assert state == "success", stack.tails()

    ran = [json.loads(path.read_text()) for path in evidence.glob("*.json")]
    builds = sorted(f"{f['abi']}-{f['name'].split('-', 1)[1]}" for f in ran if f["kind"] == "build")
    assert builds == sorted(f"{abi}-{p}" for abi, reqs in REQUESTS.items() for p, _ in reqs), \
        "every mapped build ran exactly once"
    for facts in ran:
        if facts["kind"] == "build":
            expected = "pi" if facts["abi"] == ABI else "index_host"
            assert facts["worker"] == expected, \
                f"{facts['name']} ran on the {facts['worker']} worker, not on the {expected} worker"
    assert {f["worker"] for f in ran if f["kind"] != "build"} == {"index_host"}, \
        "claim and record ran on the index host's queue"
    assert {f["name"] for f in ran if f["worker"] == "pi"} \
        == {f"{ABI}-{p}" for p, _ in REQUESTS[ABI]}, "the Pi's worker took only builds of its own ABI"

    instances = stack.task_instances("queue_proof", run_id)
    abi_builds = [ti for ti in instances if ti["task_id"] == f"build_{ABI}"]
    assert sorted(ti["rendered_map_index"] for ti in abi_builds) \
        == sorted(f"{p}=={v}" for p, v in REQUESTS[ABI]), "map index shows package==version"
    assert {(ti["queue"], ti["pool"], ti["state"]) for ti in abi_builds} \
        == {(ABI, f"build_{ABI}", "success")}
    assert {ti["queue"] for ti in instances if ti["task_id"].startswith(("claim_", "record_"))} \
        == {INDEX_QUEUE}


BUILD = f"wave_{REAL_TARGET}.build"
RECORD = f"wave_{REAL_TARGET}.record"


def test_the_real_dag_builds_on_the_target_queue_sends_over_sftp_records_and_announces(deployment):
    stack, world = deployment.stack, deployment.world
    with psycopg.connect(world.catalog_dsn) as conn:
        add_release(conn, "purepkg", "1.0")
        add_release(conn, "cext", "1.0")
        add_release(conn, "broken", "1.0")
    stack.set_pool(f"build_{REAL_TARGET}", 2)
    stack.wait_for_dag("build_wheels")
    assert not stack.import_errors()

    run_id = stack.trigger("build_wheels")
    state = stack.wait_for_run("build_wheels", run_id, timeout=240)
    assert state == "success", stack.tails()

    instances = stack.task_instances("build_wheels", run_id)
    builds = [ti for ti in instances if ti["task_id"] == BUILD]
    assert sorted(ti["rendered_map_index"] for ti in builds) == ["broken==1.0", "cext==1.0", "purepkg==1.0"]
    # a build that fails is an outcome: its task succeeds on the first try, nothing is retried
    assert {(ti["queue"], ti["pool"], ti["state"], ti["try_number"]) for ti in builds} \
        == {(REAL_TARGET, f"build_{REAL_TARGET}", "success", 1)}
    records = [ti for ti in instances if ti["task_id"] == RECORD]
    assert sorted((ti["rendered_map_index"], ti["queue"], ti["state"]) for ti in records) == [
        (f"{p}==1.0", INDEX_QUEUE, "success") for p in ("broken", "cext", "purepkg")], \
        "each build has its own record step, on the index host"
    # the workers' own logs say who executed what
    pi_log = deployment.pi.log.read_text() + deployment.pi2.log.read_text()
    index_log = deployment.index_host.log.read_text()
    assert pi_log.count(f"task_id='{BUILD}'") >= 3
    assert f"task_id='{BUILD}'" not in index_log, "the index host took a build"
    assert "task_id='claim_" not in pi_log and f"task_id='{RECORD}'" not in pi_log, \
        "the Pi ran index-host tasks"

    with psycopg.connect(world.catalog_dsn) as conn:
        recorded = conn.execute(
            "SELECT package, status, target, log_path IS NOT NULL FROM builds ORDER BY package").fetchall()
        wheels = conn.execute("SELECT filename, abi_tag FROM wheels ORDER BY filename").fetchall()
        deps = conn.execute("SELECT tool, dependency FROM wheel_dependencies").fetchall()
    assert recorded == [("broken", "failure", REAL_TARGET, True), ("cext", "success", REAL_TARGET, True),
                        ("purepkg", "success", REAL_TARGET, True)]
    assert [abi for _, abi in wheels] == ["cp311", "none"]
    assert ("apt", "libc6") in deps
    for filename, _ in wheels:
        package = filename.split("-")[0]
        assert (world.output / "simple" / package / filename).is_file()
        assert (world.output / "simple" / package / f"{filename}.metadata").is_file()
    assert not [p for p in world.incoming.rglob("*") if p.is_file()], "incoming is emptied"

    events = stack.api("GET", "assets/events?limit=50")["asset_events"]
    announced = sorted(p for e in events if e["uri"].startswith("wheelwright://builds")
                       for p in e["extra"].get("packages", []))
    assert announced == ["broken", "cext", "purepkg"], \
        "every recorded build changed its package's pages (a failure publishes its log)"


WAITS_FOR_SIGNAL = """
    import time, urllib.error, urllib.request
    deadline = time.monotonic() + 900  # a bound for a busy machine: the test signals within seconds
    while True:   # hold this build until the test says so (or give up, failing the build)
        try:
            urllib.request.urlopen({signal!r}, timeout=5).close()
            break
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise SystemExit("the signal never came: the other build was not recorded meanwhile")
            time.sleep(0.5)
"""


def test_a_build_that_waits_does_not_delay_the_recording_of_the_others(deployment):
    from support.waiting import wait_until
    from support.build_world import PYPROJECT
    from wheelwright.config import simple_index_url

    stack, world = deployment.stack, deployment.world
    signal = simple_index_url(world.settings.pypi_url) + "go-signal/"
    make_sdist(deployment.files, "slowpkg", "1.0", {
        "pyproject.toml": PYPROJECT,
        "setup.py": setup_py("slowpkg", "1.0", body=WAITS_FOR_SIGNAL.format(signal=signal),
                             py_modules="['slowpkg']"),
        "slowpkg.py": ""})
    pure_sdist(deployment.files, "quickpkg", "1.0")
    with psycopg.connect(world.catalog_dsn) as conn:
        add_release(conn, "slowpkg", "1.0")
        add_release(conn, "quickpkg", "1.0")
    stack.set_pool(f"build_{REAL_TARGET}", 2)
    stack.wait_for_dag("build_wheels")

    run_id = stack.trigger("build_wheels")

    def statuses():
        with psycopg.connect(world.catalog_dsn) as conn:
            return dict(conn.execute("SELECT package, status FROM builds "
                                     "WHERE package IN ('slowpkg', 'quickpkg')").fetchall())
    seen = wait_until(lambda: (s := statuses()).get("quickpkg") not in (None, "building") and s, 200,
                      "quickpkg to be recorded", interval=1, on_timeout=stack.tails)
    assert seen == {"quickpkg": "success", "slowpkg": "building"}, \
        "quickpkg was recorded while slowpkg was still building"
    pure_sdist(deployment.files, "go-signal", "1.0")   # now slowpkg may finish

    state = stack.wait_for_run("build_wheels", run_id, timeout=200)
    assert state == "success", stack.tails()
    assert statuses() == {"quickpkg": "success", "slowpkg": "success"}
    instances = {(ti["task_id"], ti["rendered_map_index"]): ti
                 for ti in stack.task_instances("build_wheels", run_id)}
    assert instances[(RECORD, "quickpkg==1.0")]["end_date"] < instances[(BUILD, "slowpkg==1.0")]["end_date"], \
        "quickpkg's record step ended before slowpkg's build did"


def test_quick_builds_share_one_task_and_each_is_recorded_and_published(deployment):
    """Releases whose sdists the catalog knows to be small are claimed as one batch: one build task
    and one record task for all three, every build recorded and its wheel published."""
    from support.build_world import add_sdist
    stack, world = deployment.stack, deployment.world
    names = ["tinya", "tinyb", "tinyc"]
    with psycopg.connect(world.catalog_dsn) as conn:
        for name in names:
            sdist = pure_sdist(deployment.files, name, "1.0")
            add_release(conn, name, "1.0")
            add_sdist(conn, name, "1.0", sdist.stat().st_size)
    stack.wait_for_dag("build_wheels")

    run_id = stack.trigger("build_wheels")
    state = stack.wait_for_run("build_wheels", run_id, timeout=240)
    assert state == "success", stack.tails()

    instances = stack.task_instances("build_wheels", run_id)
    assert [ti["rendered_map_index"] for ti in instances if ti["task_id"] == BUILD] == ["tinya==1.0 +2"]
    assert [ti["rendered_map_index"] for ti in instances if ti["task_id"] == RECORD] == ["tinya==1.0 +2"]
    with psycopg.connect(world.catalog_dsn) as conn:
        recorded = conn.execute("SELECT package, status FROM builds WHERE package = ANY(%s) "
                                "ORDER BY package", (names,)).fetchall()
    assert recorded == [(name, "success") for name in names]
    for name in names:
        assert (world.output / "simple" / name / f"{name}-1.0-py3-none-any.whl").is_file()


def test_a_claim_left_short_by_its_budget_starts_the_next_run_until_the_queue_is_empty(deployment):
    """Three releases whose packages took 20 minutes a build last time: a run claims what fits its
    budget of expected work (one), says builds are left waiting (the backlog Asset), and that starts
    the next run by itself, until a claim reaches the end of the queue. Only the first run is ours.

    (Last in this module: the scheduler is restarted with scheduling on, which asset-triggered runs
    need; a tick of the ten-minute clock may then add a run, which the assertions allow.)"""
    from datetime import timedelta
    from support.waiting import wait_until
    from support.build_world import add_build, use_targets
    stack, world = deployment.stack, deployment.world
    names = ["chain1", "chain2", "chain3"]
    with psycopg.connect(world.catalog_dsn) as conn:
        use_targets(conn, REAL_TARGETS)  # (what the first run does, if this test runs alone)
        for name in names:
            pure_sdist(deployment.files, name, "1.0")
            add_release(conn, name, "0.9", age=timedelta(days=800))
            add_release(conn, name, "1.0")
            build_id = add_build(conn, name, "0.9", REAL_TARGET, "failure")
            conn.execute("UPDATE builds SET duration = '20 minutes', finished_at = now() "
                         "WHERE build_id = %s", (build_id,))
    stack.set_pool(f"build_{REAL_TARGET}", 2)
    scheduler = next(p for p in stack.processes if p.name == "scheduler")
    stack.stop_process(scheduler)
    stack.start("scheduler", "scheduler", extra_env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True"})
    stack.wait_for_dag("build_wheels")
    before = {r["dag_run_id"] for r in stack.api("GET", "dags/build_wheels/dagRuns?limit=100")["dag_runs"]}

    ours = stack.trigger("build_wheels")

    def built():
        with psycopg.connect(world.catalog_dsn) as conn:
            return dict(conn.execute("SELECT package, status FROM builds WHERE package = ANY(%s) "
                                     "AND version = '1.0'", (names,)).fetchall())
    wait_until(lambda: built() == {name: "success" for name in names}, 300,
               "all three releases to be built, one run after another", interval=2,
               on_timeout=stack.tails)
    runs = {r["dag_run_id"]: r for r in stack.api("GET", "dags/build_wheels/dagRuns?limit=100")["dag_runs"]
            if r["dag_run_id"] not in before}
    claimed_by = {}
    for run_id, run in runs.items():
        assert stack.wait_for_run("build_wheels", run_id, timeout=150) == "success", stack.tails()
        instances = stack.task_instances("build_wheels", run_id)
        # (a run whose claim found nothing has one unexpanded build, skipped, with no release name)
        claimed = [ti["rendered_map_index"] for ti in instances
                   if ti["task_id"] == BUILD and ti["rendered_map_index"]]
        claimed_by.update({release: (run_id, run["run_type"]) for release in claimed})
        more = [ti["state"] for ti in instances if ti["task_id"] == "more_waiting"]
        left_waiting = bool(claimed) and "chain3==1.0" not in claimed  # claims are newest, then a-z
        assert more == (["success"] if left_waiting else ["skipped"]), (run["run_type"], claimed, more)
    assert set(claimed_by) == {f"{name}==1.0" for name in names}
    assert len({run_id for run_id, _ in claimed_by.values()}) == 3, "one release a run: the budget held"
    kinds = [kind for _, kind in claimed_by.values()]
    assert kinds.count("manual") == 1 and "asset_triggered" in kinds, \
        f"the runs after ours were started by the backlog Asset, not by us: {claimed_by}"
