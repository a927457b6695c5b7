"""Per-builder control and failure notices on the real stack: Redis, Airflow's API server (with the
dashboard plugin, and logins: an admin and a viewer), scheduler, DAG processor, an index host's Celery
worker and two builders (``pi`` and ``pi2``) serving one target's queue, the real build_wheels DAG
building real sdists from the PyPI double, and a real SMTP server taking the operator's mail.

An operator puts a builder to sleep (from the dashboard, as an admin; a viewer may not) and the other
builder takes the target's builds; a sleeping builder that restarts is put back to sleep; the build a
builder runs is stopped (from the command line) and recorded as stopped by the operator, not retried;
and a DAG whose runs keep failing mails the operator once, then once more when it recovers.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from support.airflow_processes import (AirflowStack, BuildWorld, Process, airflow_variables, create_database,
                                       drop_database, free_port, migrate, pure_sdist, start_build_world,
                                       start_redis, wait_until)
from support.build_world import PYPROJECT, add_release, make_sdist, setup_py
from support.catalog import REPO, database_dsn
from support.smtp import SMTPServer
from wheelwright.builds.queue import queue_head

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TARGET = "cp311-x86_64"
TARGETS = f"""
[[target]]
name = "{TARGET}"
abi = "cp311"
platform = "linux_x86_64"
distro = "bookworm"
"""
BUILD = f"wave_{TARGET}.build"
HOST = socket.gethostname()
PI, PI2 = f"pi@{HOST}", f"pi2@{HOST}"
PASSWORDS = {"admin": "admin-secret", "viewer": "viewer-secret"}

NOTICE_DAG = '''
"""A DAG that fails when its run's conf says so, with wheelwright's notice callbacks."""
import pendulum
from airflow.sdk import dag, task
from wheelwright.operate.dag_tasks import INDEX_HOST_QUEUE, NOTICES


@dag(dag_id="notice_proof", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False,
     default_args={"queue": INDEX_HOST_QUEUE, "retries": 0}, **NOTICES)
def notice_proof():
    @task
    def maybe_fail(*, dag_run=None):
        if dag_run.conf.get("fail"):
            raise RuntimeError("the mirror is down")

    maybe_fail()


notice_proof()
'''

WAITS = """
    import time, urllib.error, urllib.request
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:   # a build that hangs until someone stops it
        try:
            urllib.request.urlopen({signal!r}, timeout=5).close()
            break
        except urllib.error.URLError:
            time.sleep(0.5)
"""


@dataclass
class Deployment:
    stack: AirflowStack
    world: BuildWorld
    broker: str
    smtp: SMTPServer
    files: Path
    tokens: dict
    base: str
    workers: dict


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, pg_server, catalog_template):
    root = tmp_path_factory.mktemp("builder-control")
    dags = root / "dags"
    dags.mkdir()
    shutil.copy(REPO / "dags" / "build_wheels.py", dags / "build_wheels.py")
    (dags / "notice_proof.py").write_text(NOTICE_DAG)
    workdir = root / "run"
    workdir.mkdir()
    files = root / "files"
    files.mkdir()
    passwords = root / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    cleanup, stack = [], None
    smtp = SMTPServer().start()
    cleanup.append(smtp.stop)
    try:
        dbname, metadata_dsn = create_database(pg_server)
        cleanup.append(lambda: drop_database(pg_server, dbname))
        catalog_name = f"wheelwright_control_{dbname}"
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{catalog_name}" TEMPLATE "{catalog_template}"')
        cleanup.append(lambda: drop_database(pg_server, catalog_name))
        world = start_build_world(workdir, database_dsn(pg_server, catalog_name), files, TARGETS)
        cleanup.append(world.stop)
        broker, redis = start_redis(workdir, password="broker-secret")
        cleanup.append(lambda: (redis.popen.terminate(), redis.popen.wait(timeout=10)))
        api_port = free_port()
        env = {**airflow_variables(
            world.settings, airflow_home=root / "airflow", metadata_dsn=metadata_dsn, dags_folder=dags,
            api_port=api_port, executor="CeleryExecutor", broker_url=broker), **world.env,
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW_CONN_WHEELWRIGHT_NOTIFY": json.dumps({
                "conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port,
                "extra": {"to": "ops@example.org", "from_email": "wheelwright@example.org",
                          "disable_ssl": True, "disable_tls": True, "retry_limit": 0}})}
        stack = AirflowStack(env=env, workdir=workdir, api_port=api_port)
        migrate(env, workdir)
        stack.start_core(wait=False)
        workers = {"pi": stack.start_worker("pi", [TARGET]), "pi2": stack.start_worker("pi2", [TARGET]),
                   "index_host": stack.start_worker("index_host", ["default"])}
        stack.wait_core()
        for worker in workers.values():
            stack.wait_worker_ready(worker)
        base = f"http://127.0.0.1:{api_port}"
        tokens = {user: login(base, user, password) for user, password in PASSWORDS.items()}
        stack.token = tokens["admin"]
        stack.set_pool(f"build_{TARGET}", 2)
        yield Deployment(stack, world, broker, smtp, files, tokens, base, workers)
    finally:
        if stack is not None:
            stack.stop()
        for undo in reversed(cleanup):
            undo()


def login(base: str, user: str, password: str) -> str:
    request = urllib.request.Request(f"{base}/auth/token", method="POST",
                                     data=json.dumps({"username": user, "password": password}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["access_token"]


def dashboard(d: Deployment, method: str, path: str, *, user: str | None = "admin", body=None):
    headers = {"Content-Type": "application/json"}
    if user:
        headers["Authorization"] = f"Bearer {d.tokens[user]}"
    request = urllib.request.Request(f"{d.base}/wheelwright/api/{path}", method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wheelwright(d: Deployment, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHEELWRIGHT", "AIRFLOW"))}
    env.update(WHEELWRIGHT_HOME=str(d.world.home), WHEELWRIGHT_DSN=d.world.catalog_dsn,
               WHEELWRIGHT_TARGETS=d.world.env["WHEELWRIGHT_TARGETS"], AIRFLOW__CELERY__BROKER_URL=d.broker)
    return subprocess.run([sys.executable, "-m", "wheelwright", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def control(d: Deployment):
    from celery import Celery
    return Celery("tests-control", broker=d.broker, set_as_current=False)


def builds_taken(process: Process) -> int:
    return process.log.read_text(errors="replace").count(f"task_id='{BUILD}'")


def consumed(d: Deployment, worker: str) -> list[str]:
    answer = control(d).control.inspect(destination=[worker], timeout=3).active_queues() or {}
    return sorted(q["name"] for q in answer.get(worker, []))


def build_one(d: Deployment, name: str) -> str:
    pure_sdist(d.files, name, "1.0")
    with psycopg.connect(d.world.catalog_dsn) as conn:
        add_release(conn, name, "1.0")
    run_id = d.stack.trigger("build_wheels")
    assert d.stack.wait_for_run("build_wheels", run_id, timeout=240) == "success", d.stack.tails()
    return run_id


def test_the_command_line_lists_the_workers_that_build(deployment):
    listed = wheelwright(deployment, "builder", "workers")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert sorted(line.split(":")[0] for line in lines) == sorted([PI, PI2]), "the index host's worker builds nothing"
    assert all(f"awake; queues {TARGET}; idle" in line for line in lines), lines


def test_a_worker_put_to_sleep_from_the_dashboard_takes_no_builds_until_woken(deployment):
    d = deployment
    assert dashboard(d, "POST", f"workers/{PI}/sleep", user=None, body={})[0] == 401
    assert dashboard(d, "POST", f"workers/{PI}/sleep", user="viewer", body={})[0] == 403
    status, answer = dashboard(d, "POST", f"workers/{PI}/sleep", body={"reason": "new SD card"})
    assert status == 200, answer
    assert answer["queues"] == [TARGET] and consumed(d, PI) == []
    status, listed = dashboard(d, "GET", "workers", user="viewer")
    assert status == 200
    state = {w["worker"]: (w["asleep"], w["slept_by"], w["sleep_reason"]) for w in listed["workers"]}
    assert state == {PI: (True, "admin", "new SD card"), PI2: (False, None, None)}

    before = builds_taken(d.workers["pi"]), builds_taken(d.workers["pi2"])
    build_one(d, "while-asleep")
    assert builds_taken(d.workers["pi"]) == before[0], "a sleeping worker took a build"
    assert builds_taken(d.workers["pi2"]) == before[1] + 1, "the other worker of the target built it"

    woken = wheelwright(d, "builder", "wake", PI, "--by", "bob")
    assert woken.returncode == 0 and f"{PI} awake: it builds from {TARGET} again" in woken.stdout, woken.stderr
    assert consumed(d, PI) == [TARGET]
    assert wheelwright(d, "builder", "wake", PI).returncode == 5, "waking an awake worker says so"


def test_a_sleeping_worker_that_restarts_is_put_back_to_sleep(deployment):
    from wheelwright.operate import builder_control
    d = deployment
    slept = wheelwright(d, "builder", "sleep", PI, "--reason", "overheating")
    assert slept.returncode == 0, slept.stderr
    d.stack.stop_process(d.workers["pi"])
    d.workers["pi"] = d.stack.start_worker("pi", [TARGET])
    d.stack.wait_worker_ready(d.workers["pi"])
    assert consumed(d, PI) == [TARGET], "a restarted worker consumes its queues again"
    with psycopg.connect(d.world.catalog_dsn, autocommit=True) as conn:
        assert builder_control.reconcile(control(d), conn) == [PI]
        assert builder_control.reconcile(control(d), conn) == [], "once is enough"
    assert consumed(d, PI) == []
    status, answer = dashboard(d, "POST", f"workers/{PI}/wake", body={})
    assert status == 200 and consumed(d, PI) == [TARGET], answer


def test_the_build_a_worker_runs_is_stopped_and_recorded_as_stopped_not_retried(deployment):
    from wheelwright.config import simple_index_url
    d = deployment
    assert wheelwright(d, "builder", "sleep", PI2, "--reason", "so that pi builds it").returncode == 0
    signal = simple_index_url(d.world.settings.pypi_url) + "never-comes/"
    make_sdist(d.files, "hangs", "1.0", {"pyproject.toml": PYPROJECT, "setup.py": setup_py(
        "hangs", "1.0", body=WAITS.format(signal=signal), py_modules="['hangs']"), "hangs.py": ""})
    with psycopg.connect(d.world.catalog_dsn) as conn:
        add_release(conn, "hangs", "1.0")
    run_id = d.stack.trigger("build_wheels")

    def running():
        status, listed = dashboard(d, "GET", "workers", user="viewer")
        rows = {w["worker"]: w["running"] for w in listed["workers"]} if status == 200 else {}
        return [b for b in rows.get(PI, []) if b["package"] == "hangs"]
    [build] = wait_until(running, 180, "pi to be building hangs", interval=2, on_timeout=d.stack.tails)
    assert dashboard(d, "POST", f"workers/{PI}/stop-build", user="viewer", body={})[0] == 403
    stopped = wheelwright(d, "builder", "stop-build", PI, "--by", "alice")
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped build {build['build_id']} on {PI}" in stopped.stdout

    assert d.stack.wait_for_run("build_wheels", run_id, timeout=180) == "success", d.stack.tails()
    with psycopg.connect(d.world.catalog_dsn) as conn:
        row = conn.execute("SELECT status, reason, transient, stopped_by FROM builds WHERE build_id = %s",
                           (build["build_id"],)).fetchone()
        assert row == ("failure", "stopped by the operator (alice)", False, "alice")
        assert ("hangs", "1.0") not in queue_head(conn, TARGET), "a stopped build is not built again"
        streak = conn.execute("SELECT failures FROM notice_streaks WHERE subject = %s", (f"target:{TARGET}",)
                              ).fetchone()
        assert streak in (None, (0,)), "the record step counts no failure of the target for a stopped build"
    [task] = [ti for ti in d.stack.task_instances("build_wheels", run_id) if ti["task_id"] == BUILD]
    assert (task["state"], task["try_number"]) == ("success", 1), "the task was not retried"
    again = wheelwright(d, "builder", "stop-build", PI)
    assert again.returncode == 5 and "building nothing now" in again.stderr
    assert wheelwright(d, "builder", "wake", PI2).returncode == 0


def test_a_dag_that_keeps_failing_mails_the_operator_once_then_once_when_it_recovers(deployment):
    d = deployment
    d.stack.wait_for_dag("notice_proof")

    def run(fail: bool) -> None:
        run_id = d.stack.trigger("notice_proof", {"fail": fail})
        d.stack.wait_for_run("notice_proof", run_id, timeout=120)

    def streak() -> int:
        with psycopg.connect(d.world.catalog_dsn) as conn:
            row = conn.execute("SELECT failures FROM notice_streaks WHERE subject = 'dag:notice_proof'").fetchone()
        return row[0] if row else 0

    for n in range(1, 5):
        run(True)
        wait_until(lambda: streak() == n, 90, f"the DAG processor to count failed run {n}",
                   on_timeout=d.stack.tails)
    [mail] = d.smtp.wait_for(1)
    assert mail.rcpt_to == ["ops@example.org"]
    assert mail.subject == "wheelwright: the DAG notice_proof keeps failing (3 runs in a row)"
    assert "task_failure" in mail.body or "failed" in mail.body
    run(False)
    wait_until(lambda: streak() == 0, 90, "the DAG processor to count the success", on_timeout=d.stack.tails)
    [_, recovered] = d.smtp.wait_for(2)
    assert recovered.subject == "wheelwright: the DAG notice_proof recovered after 4 failures"
    assert len(d.smtp.messages) == 2, "one mail when it started failing, one when it recovered"
