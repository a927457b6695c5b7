"""The production topology, run without Docker: a sync, a build per target and a publish across it.

docker-compose.yaml cannot run here (no Docker daemon), so this test runs what it describes with the
same code: the services come from ``wheelwright.operate.stack.topology`` (the function the compose file
is generated from), their environment from ``stack.airflow_environment`` with loopback addresses in
place of service names, and ``airflow-init`` is ``stack.init`` itself, making the two databases and
their roles on the real PostgreSQL (the session's embedded one), the catalog schema, Airflow's
migration and the pools (no Variables: nothing trusted lives where a task can write it). Redis requires a password. The index host's SFTP endpoint
(``operate/sftp_server.py``) has one account per builder, each with its own key. Builders get no
database URL (a dead one, so any attempt would fail) and no JWT secret: they reach the broker, the API
server and the SFTP endpoint only. There is no edge here (the publisher purges nothing) and no triggerer
(no DAG defers).

Then PyPI (the double) announces a new release; ``pypi_sync`` is triggered once, and everything after it
happens because the Assets say so: ``build_wheels`` builds on the target's own worker, sends the wheel
over SFTP with that builder's account, and records it on the index host; ``publish_index`` writes the
page pip reads.

Targets come from the repository's targets.toml: every enabled target whose builds can run on this
machine gets its worker. A target that needs a foreign image (armv7l, aarch64) is left out of this run,
named in the test's output: building its image takes minutes (tests/test_images.py covers it).
"""

from __future__ import annotations

import json
import socket
import sysconfig
import time
import tomllib

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from wheelwright import package_data
from wheelwright.builds.targets import parse_targets
from wheelwright.operate import doctor_reports, stack
from wheelwright.operate.airflow_setup import sqlalchemy_url
from wheelwright.operate.sftp_server import SFTPServer

from support.airflow_processes import (AIRFLOW, BIN, AirflowStack, airflow_variables, free_port, start_build_world,
                                       start_redis, wait_until)
from support.catalog import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

PACKAGE, VERSION = "topology-sample", "1.0"
HOST_PLATFORM = "linux_" + sysconfig.get_platform().split("-", 1)[1].replace("-", "_")


def runnable_targets_file() -> tuple[str, list[str]]:
    """targets.toml with only the enabled targets this machine builds without an image; the others' names."""
    rows = tomllib.loads(package_data.data("targets.toml").read_text())["target"]
    kept, left_out = [], []
    for row in rows:
        if not row.get("enabled", True):
            continue
        runs_here = row["platform"] == HOST_PLATFORM and not row.get("image", False)
        (kept if runs_here else left_out).append(row)
    text = "".join("[[target]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in row.items()) + "\n"
                   for row in kept)
    return text, [row.get("name", f"{row['abi']}-{row['platform']}") for row in left_out]


@pytest.fixture(scope="module")
def topology(tmp_path_factory, pg_server):
    root = tmp_path_factory.mktemp("topology")
    workdir = root / "run"
    workdir.mkdir()
    files = root / "files"
    files.mkdir()
    targets_text, left_out = runnable_targets_file()
    targets = parse_targets(targets_text)
    assert targets, f"no enabled target of targets.toml can build on {HOST_PLATFORM}"
    print(f"targets built here: {[t.name for t in targets]}; left out (need an image): {left_out}")

    suffix = f"{int(time.time()) % 100000}"
    # The roles and databases airflow-init makes, with the passwords .env would give it.
    catalog_role, metadata_role = f"wheelwright_{suffix}", f"airflow_{suffix}"
    catalog_db, metadata_db = f"topology_catalog_{suffix}", f"topology_airflow_{suffix}"
    server = conninfo_to_dict(pg_server)
    catalog_dsn = make_conninfo(**{**server, "dbname": catalog_db, "user": catalog_role,
                                   "password": "catalog-" + suffix})
    metadata_url = sqlalchemy_url(make_conninfo(**{**server, "dbname": metadata_db, "user": metadata_role,
                                                    "password": "metadata-" + suffix}))

    world = sftp = redis = stack_ = None
    try:
        world = start_build_world(workdir, catalog_dsn, files, targets_text)
        world.sftp.stop()  # the world's one-account endpoint gives way to one account per builder
        accounts = tuple(stack.builder_account(t) for t in targets)
        sftp = SFTPServer(workdir / "index-host", workdir / "keys-accounts", accounts=accounts).start()
        broker, redis = start_redis(workdir, password="broker-" + suffix)
        api_port = free_port()
        base = airflow_variables(world.settings, airflow_home=root / "airflow", metadata_dsn=pg_server,
                                 dags_folder=REPO / "dags", api_port=api_port, broker_url=broker)

        def environment(side: str) -> dict[str, str]:
            shared = stack.airflow_environment(
                side, broker=broker, result_backend=broker[:-1] + "1", api_url=f"http://127.0.0.1:{api_port}",
                jwt_secret="jwt-" + suffix * 4, secret_key="key-" + suffix * 4,
                metadata_url=metadata_url, catalog_dsn=catalog_dsn)
            # container paths give way to this machine's folders
            for key in ("WHEELWRIGHT_HOME", "AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER",
                        "AIRFLOW__CORE__PLUGINS_FOLDER", "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
                        "WHEELWRIGHT_PYPI_URL", "WHEELWRIGHT_INDEX_URL"):
                shared.pop(key)
            # the index host's connection is each builder's own (below)
            world_env = {k: v for k, v in world.env.items() if not k.startswith("AIRFLOW_CONN")}
            env = {**base, **world_env, **shared,
                   # only the DAGs under test run (the test unpauses them); asset schedules need the job
                   # schedule, so it stays on
                   "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                   "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(root / "logs")}
            if side == "builder":
                for key in ("WHEELWRIGHT_DSN", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                            "AIRFLOW__API_AUTH__JWT_SECRET"):
                    env.pop(key, None)
                # a builder has no database: point Airflow at one nobody listens on, so any use fails
                env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = \
                    f"postgresql+psycopg2://nobody:nothing@127.0.0.1:{free_port()}/none"
            return env

        index_env = environment("index")
        index_env.update({"WHEELWRIGHT_POSTGRES_ADMIN": pg_server,
                          "WHEELWRIGHT_INCOMING": str(sftp.incoming)})
        stack.init(index_env, airflow=AIRFLOW)                      # airflow-init

        stack_ = AirflowStack(env=index_env, workdir=workdir, api_port=api_port)
        builders = {}
        for service in stack.topology(targets):
            if service.name in ("airflow-init", "triggerer"):
                continue  # init ran above; no DAG here defers to the triggerer
            args = list(service.argv[1:])
            program = str(BIN / service.argv[0])   # airflow, or wheelwright (a builder's worker)
            if service.name == "api-server":
                args = ["api-server", "--port", str(api_port), "--host", "127.0.0.1"]
            if "worker" in args:
                args += ["--skip-serve-logs", "--without-gossip", "--without-mingle"]
            if service.side == "builder":
                env = environment("builder")
                env[f"AIRFLOW_CONN_{stack.INDEX_HOST_CONN_ID.upper()}"] = stack.index_host_connection(
                    "127.0.0.1", sftp.port, service.name, str(sftp.client_key_files[service.name]),
                    sftp.host_key_line)
                builders[service.name] = _start_with_env(stack_, service.name, args, env, program)
            else:
                # the tree and incoming are this machine's folders, not the container's paths; no edge
                extra = {k: v for k, v in service.env.items()
                         if k not in ("WHEELWRIGHT_OUTPUT", "WHEELWRIGHT_INCOMING", "WHEELWRIGHT_CDN")}
                stack_.start(service.name, *args, extra_env=extra)
        stack_.wait_core()
        for name, process in builders.items():
            stack_.wait_worker_ready(process)
        stack_.wait_worker_ready(next(p for p in stack_.processes if p.name == "worker-index"))
        yield {"stack": stack_, "world": world, "sftp": sftp, "targets": targets, "builders": builders,
               "broker": broker, "catalog_dsn": catalog_dsn, "pg_server": pg_server,
               "roles": (catalog_role, metadata_role), "databases": (catalog_db, metadata_db)}
    finally:
        if stack_ is not None:
            stack_.stop()
        if redis is not None:
            redis.popen.terminate()
            redis.popen.wait(timeout=10)
        if sftp is not None:
            sftp.stop()
        if world is not None:
            world.stop()
        with psycopg.connect(pg_server, autocommit=True) as admin:
            for database in (catalog_db, metadata_db):
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            for role in (catalog_role, metadata_role):
                admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def _start_with_env(stack_: AirflowStack, name: str, args: list[str], env: dict[str, str], program: str):
    """Start a process with exactly ``env`` (a builder's), not the index host's plus extras."""
    index_env = stack_.env
    stack_.env = env
    try:
        return stack_.start(name, *args, program=program)
    finally:
        stack_.env = index_env


def test_a_release_is_synced_built_on_its_targets_worker_sent_with_its_account_and_published(topology):
    stack_, world, targets = topology["stack"], topology["world"], topology["targets"]
    first = targets[0]
    t0 = 1_760_000_000
    world.pypi.append([[PACKAGE, None, t0, "create", 1], [PACKAGE, VERSION, t0 + 1, "new release", 2],
                       [PACKAGE, VERSION, t0 + 2, f"add source file topology_sample-{VERSION}.tar.gz", 3]])
    for dag_id in ("pypi_sync", "build_wheels", "publish_index"):
        stack_.wait_for_dag(dag_id, timeout=120)
        stack_.api("PATCH", f"dags/{dag_id}", {"is_paused": False})
    assert not stack_.import_errors()

    run_id = stack_.trigger("pypi_sync")
    assert stack_.wait_for_run("pypi_sync", run_id, timeout=120) == "success", stack_.tails()

    # build_wheels and publish_index run because the Assets say so; the page appears with the wheel
    page = world.output / "simple" / PACKAGE / "index.html"

    def published():
        for process in stack_.processes:
            stack_._check_alive(process)
        return page.exists() and ".whl" in page.read_text() and page
    wait_until(published, 180, f"{PACKAGE}'s page with its wheel", interval=2, on_timeout=stack_.tails)

    with psycopg.connect(topology["catalog_dsn"]) as conn:
        builds = conn.execute("SELECT package, version, target, status FROM builds").fetchall()
        wheels = conn.execute("SELECT filename FROM wheels").fetchall()
    assert builds == [(PACKAGE, VERSION, first.name, "success")]
    (wheel,), = wheels
    assert (world.output / "simple" / PACKAGE / wheel).is_file()
    left = [p for p in world.incoming.rglob("*") if p.is_file()]
    reports = [p for p in left if p.name.startswith(doctor_reports.PREFIX)]
    assert {p.parent.name for p in reports} <= set(topology["builders"]), "each in its builder's own folder"
    assert not set(left) - set(reports), "incoming is emptied of all but the doctor reports builder_health records"

    runs = stack_.api("GET", "dags/build_wheels/dagRuns?limit=10")["dag_runs"]
    assert "asset_triggered" in {r["run_type"] for r in runs}, \
        "build_wheels ran because the catalog changed, nobody triggered it"
    on_target_queue = [ti for run in runs for ti in stack_.task_instances("build_wheels", run["dag_run_id"])
                       if ti["queue"] == first.queue and ti["state"] == "success"]
    assert on_target_queue and {ti["pool"] for ti in on_target_queue} == {stack.pool_name(first)}, \
        "the build ran on the target's queue, in the target's pool"
    account = stack.builder_account(first)
    builder_log = topology["builders"][account].log.read_text()
    index_log = next(p for p in stack_.processes if p.name == "worker-index").log.read_text()
    assert f"queue='{first.queue}'" in builder_log, "the target's own worker built it"
    assert f"queue='{stack.INDEX_HOST_QUEUE}'" not in builder_log, "the builder ran no index-host task"
    assert f"queue='{first.queue}'" not in index_log, "the index host built nothing"
    assert topology["sftp"].logins and set(topology["sftp"].logins) == {account}, \
        "the builder logged in to the index host with its own account"


def test_the_broker_refuses_a_client_without_its_password(topology):
    port = int(topology["broker"].rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"KEYS *\r\n")
        assert s.recv(128).startswith(b"-NOAUTH")


def test_init_made_the_pools_and_two_databases_each_its_own_roles(topology):
    stack_, targets = topology["stack"], topology["targets"]
    pools = {p["name"] for p in stack_.api("GET", "pools")["pools"]}
    assert {stack.pool_name(t) for t in targets} <= pools
    catalog_role, metadata_role = topology["roles"]
    catalog_db, metadata_db = topology["databases"]
    with psycopg.connect(topology["pg_server"]) as admin:
        owners = dict(admin.execute("SELECT datname, pg_get_userbyid(datdba) FROM pg_database "
                                    "WHERE datname = ANY(%s)", ([catalog_db, metadata_db],)).fetchall())
    assert owners == {catalog_db: catalog_role, metadata_db: metadata_role}
    assert stack_.api("GET", "variables")["variables"] == [], \
        "nothing the index host trusts is an Airflow Variable (any task may write those)"


def test_a_key_logs_in_only_as_its_own_account(topology):
    import paramiko
    sftp = topology["sftp"]
    accounts = list(sftp.client_key_files)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        client.connect("127.0.0.1", port=sftp.port, username="someone-else",
                       key_filename=str(sftp.client_key_files[accounts[0]]), look_for_keys=False,
                       allow_agent=False, timeout=10)
    client.close()
