"""The doctor where it matters: `wheelwright run` starts nothing on a failing machine; a builder's worker
(`wheelwright worker`) refuses its queues with the same words, sends them to the index host over SFTP,
and the dashboard shows each builder's last result; a worker on a sound machine becomes Airflow's
Celery worker. Reports come from builders: the index host reads them as hostile input.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import psycopg
import pytest

from support.airflow_processes import airflow_variables, free_port, start_redis, wait_until
from support.build_world import open_folder
from wheelwright.builds.targets import load_targets
from wheelwright.config import Settings
from wheelwright.operate import dashboard, doctor, doctor_reports, launcher, stack, worker
from wheelwright.operate.dashboard_app import render_page
from wheelwright.operate.sftp_server import SFTPServer

BIN = Path(sys.executable).parent
HOST = socket.gethostname()


def clean_env(**settings) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WHEELWRIGHT", "AIRFLOW"))}
    return {**base, **{k: str(v) for k, v in settings.items()}}


@pytest.fixture
def home():
    path = open_folder("wheelwright-wiring-home-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def index_host(tmp_path):
    """The index host's SFTP endpoint, chrooted to a folder holding incoming/ (as `make run`'s is)."""
    (tmp_path / "index-host" / "incoming").mkdir(parents=True)
    server = SFTPServer(tmp_path / "index-host", tmp_path / "keys").start()
    yield server
    server.stop()


def builder_settings(server: SFTPServer, home: Path, tmp_path: Path) -> dict:
    """A Pi's worker.env, pointed at ``server``: no catalog, the index host's Connection (key pinned)."""
    return {"WHEELWRIGHT_HOME": home, "WHEELWRIGHT_IMAGES": tmp_path / "images",
            "AIRFLOW_HOME": tmp_path / "airflow",
            "AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST": json.dumps({
                "conn_type": "ssh", "host": "127.0.0.1", "port": server.port, "login": "builder",
                "extra": {"key_file": str(server.client_key_file), "host_key": server.host_key_line,
                          "no_host_key_check": False, "look_for_keys": False}}),
            "AIRFLOW_VAR_WHEELWRIGHT_REMOTE_INCOMING": "/incoming"}


# --- wheelwright run --------------------------------------------------------------------------------

def test_make_run_stops_with_the_doctors_words_and_starts_nothing(tmp_path, catalog_dsn, home):
    (tmp_path / "a-file").write_text("")
    env = clean_env(WHEELWRIGHT_HOME=home, WHEELWRIGHT_DSN=catalog_dsn,
                    WHEELWRIGHT_OUTPUT=tmp_path / "a-file" / "www", WHEELWRIGHT_IMAGES=tmp_path / "images")
    port = free_port()
    result = subprocess.run([str(BIN / "wheelwright"), "run", "--pypi", "double", "--port", str(port)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith("FAIL published tree") and "— fix: install -d" in line for line in lines)
    assert any(line.startswith("ok  build sandbox") for line in lines), "every role was examined"
    assert "nothing was started" in result.stderr
    assert sorted(p.name for p in home.iterdir()) == ["builds"], "no broker, no Airflow, no SFTP, no PyPI double"
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))   # the UI's port was never taken


def test_make_runs_builder_starts_through_wheelwright_worker():
    processes = dict(launcher.airflow_processes(8080, ["cp311-armv7l", "cp313-aarch64"]))
    assert processes["worker-builder"][:2] == [str(BIN / "wheelwright"), "worker"]
    assert "--queues" in processes["worker-builder"] and "builder@%h" in processes["worker-builder"]
    assert processes["worker-index-host"][:3] == [str(BIN / "airflow"), "celery", "worker"]


def test_every_builder_of_the_stack_starts_through_wheelwright_worker():
    services = {s.name: s for s in stack.topology(load_targets())}
    builders = [s for s in services.values() if s.side == "builder"]
    assert builders and all(s.argv[:2] == ("wheelwright", "worker") for s in builders)
    assert services["worker-index"].argv[:3] == ("airflow", "celery", "worker")


# --- wheelwright worker -----------------------------------------------------------------------------

def test_a_workers_options_say_what_it_serves():
    assert worker.celery_options(["--queues", "a,b", "--concurrency", "1", "-H", "pi@%h"]) == (["a", "b"], "pi@%h")
    assert worker.celery_options([]) == (["default"], None), "Airflow's default queue"
    targets = load_targets()
    roles, mine = worker.served(["cp311-armv7l"], targets)
    assert roles == ["builder"] and [t.name for t in mine] == ["cp311-armv7l"]
    assert worker.served(["default"], targets) == (["index-host"], [])
    assert doctor_reports.worker_name("pi-kitchen@%h", "pi.example.org") == "pi-kitchen@pi.example.org"
    assert doctor_reports.worker_name("%n-builder@%d", "pi.example.org") == "pi-builder@example.org"
    assert doctor_reports.worker_name(None, "pi") == "celery@pi"


def test_a_failing_builder_refuses_its_queue_and_the_dashboard_shows_why(tmp_path, home, index_host, catalog):
    (tmp_path / "a-file").write_text("")
    env = clean_env(**builder_settings(index_host, home, tmp_path))
    env["WHEELWRIGHT_HOME"] = str(tmp_path / "a-file" / "home")   # no build folder can be made there
    result = subprocess.run([str(BIN / "wheelwright"), "worker", "--queues", "cp311-x86_64", "--concurrency", "1",
                             "--celery-hostname", "pi-test@%h"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stderr
    assert any(line.startswith("FAIL build folder") for line in result.stderr.splitlines()), result.stderr
    assert f"pi-test@{HOST} takes nothing from cp311-x86_64" in result.stderr
    assert "celery@" not in result.stderr and "[tasks]" not in result.stderr, "Celery never started"

    incoming = tmp_path / "index-host" / "incoming"
    mine = incoming / "builder"  # its account's own folder
    assert [p.name for p in mine.iterdir()] == [f"doctor-pi-test@{HOST}.json"], "the report arrived whole"
    recorded = doctor_reports.record(catalog, incoming)
    assert recorded.recorded == [f"builder/pi-test@{HOST}"] and not list(mine.iterdir())

    [row] = dashboard.snapshot(catalog)["doctor"]
    assert row["builder"] == f"builder/pi-test@{HOST}" and row["ok"] is False and row["roles"] == ["builder"]
    assert [c["what"] for c in row["failing"]] == [f"build folder ({tmp_path}/a-file/home/builds)"]
    html = render_page(dashboard.snapshot(catalog), user="viewer", can_act=False)
    assert f'data-doctor="builder/pi-test@{HOST}"' in html and "takes no builds" in html
    assert "FAIL build folder" in html and "set WHEELWRIGHT_HOME to a folder this user may write" in html


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_sound_builder_becomes_airflows_celery_worker_and_reports_ok(tmp_path, home, index_host, catalog):
    broker, redis = start_redis(tmp_path, password="broker-secret")
    process = None
    try:
        settings = Settings(home=home, dsn=None, pypi_url="http://127.0.0.1:9/pypi", output=tmp_path / "www")
        # a builder has no database: Airflow is pointed at one nobody listens on (as tests/test_topology.py)
        nowhere = f"host=127.0.0.1 port={free_port()} dbname=none user=nobody password=nothing"
        env = airflow_variables(settings, airflow_home=tmp_path / "airflow", metadata_dsn=nowhere,
                                dags_folder=tmp_path / "dags", api_port=free_port(), broker_url=broker)
        env.pop("AIRFLOW__API_AUTH__JWT_SECRET")
        env.update({k: str(v) for k, v in builder_settings(index_host, home, tmp_path).items()
                    if k != "AIRFLOW_HOME"})
        env["AIRFLOW__CELERY__RESULT_BACKEND"] = broker[:-1] + "1"
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(BIN / "wheelwright"), "worker", "--queues", "cp311-x86_64", "--concurrency", "1",
                 "--skip-serve-logs", "--without-gossip", "--without-mingle", "--celery-hostname", "pi-ok@%h"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def ready():
            assert process.poll() is None, log.read_text()
            return b" ready." in log.read_bytes()
        wait_until(ready, 120, "the worker to become Airflow's Celery worker", on_timeout=log.read_text)
        said = log.read_text()
        assert said.index("ok  build sandbox") < said.index("starting airflow celery worker as pi-ok@")
        assert "ok  broker (redis://127.0.0.1" in said and "answers with its password" in said
        assert "broker-secret" not in said
        title = " ".join(psutil.Process(process.pid).cmdline())
        assert f"celeryd: pi-ok@{HOST}" in title, "the process we started became Airflow's Celery worker (exec)"

        incoming = tmp_path / "index-host" / "incoming"
        assert doctor_reports.record(catalog, incoming).recorded == [f"builder/pi-ok@{HOST}"]
        [row] = dashboard.snapshot(catalog)["doctor"]
        assert row["ok"] is True and row["failing"] == [] and row["checks"] >= 6
    finally:
        if process is not None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        redis.popen.terminate()
        redis.popen.wait(timeout=10)


# --- reports are a builder's word -------------------------------------------------------------------

def report_of(builder: str, *, status: str = "ok", when: datetime | None = None) -> dict:
    finding = doctor.Finding("sandbox", "build sandbox (bubblewrap)", status, "ran", "", "builder")
    return doctor_reports.make_report(builder, [finding], ["builder"], now=when)


def put(account_dir: Path, name: str, data: bytes) -> Path:
    account_dir.mkdir(parents=True, exist_ok=True)
    path = account_dir / f"doctor-{name}.json"
    path.write_bytes(data)
    return path


def test_the_newest_report_of_a_builder_wins(catalog, tmp_path):
    now = datetime.now(timezone.utc)
    kitchen = tmp_path / "pi-kitchen"
    put(kitchen, "pi", json.dumps(report_of("pi", status="FAIL", when=now)).encode())
    doctor_reports.record(catalog, tmp_path)
    put(kitchen, "pi", json.dumps(report_of("pi", when=now - timedelta(hours=1))).encode())
    doctor_reports.record(catalog, tmp_path)
    assert catalog.execute("SELECT ok FROM builder_doctor WHERE builder = 'pi-kitchen/pi'").fetchone() == (False,)
    put(kitchen, "pi", json.dumps(report_of("pi", when=now + timedelta(days=365))).encode())
    doctor_reports.record(catalog, tmp_path)
    ok, checked = catalog.execute("SELECT ok, checked_at FROM builder_doctor "
                                  "WHERE builder = 'pi-kitchen/pi'").fetchone()
    assert ok and checked <= datetime.now(timezone.utc), "a builder's clock never runs ahead of the index host's"


def test_a_builder_account_speaks_only_for_its_own_workers(catalog, tmp_path):
    """The account is the folder a report is found in (the SSH login chose it), never the report's word."""
    put(tmp_path / "pi-kitchen", "pi", json.dumps(report_of("pi")).encode())
    put(tmp_path / "pi-garage", "pi", json.dumps(report_of("pi", status="FAIL")).encode())
    doctor_reports.record(catalog, tmp_path)
    assert sorted(catalog.execute("SELECT builder, ok FROM builder_doctor").fetchall()) == [
        ("pi-garage/pi", False), ("pi-kitchen/pi", True)]


@pytest.mark.timeout(120)  # a fifo that blocked the index host would hang here
def test_what_is_not_a_report_is_refused_removed_and_never_recorded(catalog, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("not for builders")
    incoming = tmp_path / "incoming" / "pi-kitchen"
    incoming.mkdir(parents=True)
    good = report_of("pi")
    (incoming / "doctor-link.json").symlink_to(secret)
    (incoming / "doctor-folder.json").mkdir()
    os.mkfifo(incoming / "doctor-fifo.json")
    put(incoming, "big", b" " * (doctor_reports.MAX_BYTES + 1))
    put(incoming, "junk", b"{not json")
    put(incoming, "other", json.dumps(good).encode())                      # names another builder
    put(incoming, "pi", json.dumps({**good, "checks": [{**good["checks"][0], "status": "GREAT"}]}).encode())
    put(incoming, "pi2", json.dumps({**report_of("pi2"), "checks": [{**good["checks"][0], "detail": "a\nb"}]}).encode())
    put(incoming, "pi3", json.dumps({**report_of("pi3"), "checks": [{**good["checks"][0], "extra": "x"}]}).encode())
    put(incoming, "pi4", json.dumps({**report_of("pi4"), "roles": ["root"]}).encode())
    put(incoming, "pi5", json.dumps({**report_of("pi5"), "checked_at": "yesterday"}).encode())
    (incoming / "12").mkdir()                                               # a build's folder: not ours
    result = doctor_reports.record(catalog, incoming.parent)
    assert result.recorded == [] and len(result.refused) == 11
    assert [p.name for p in incoming.iterdir()] == ["12"]
    assert secret.read_text() == "not for builders"
    assert catalog.execute("SELECT count(*) FROM builder_doctor").fetchone() == (0,)


def test_the_builder_health_dag_records_the_reports_that_arrived(airflow_env, settings, tmp_path):
    from support.catalog import REPO
    from test_dags import RUN_DAG_TEST
    incoming = tmp_path / "incoming"
    put(incoming / "pi-kitchen", "pi-kitchen@pi", json.dumps(report_of("pi-kitchen@pi", status="FAIL")).encode())
    env = dict(airflow_env, WHEELWRIGHT_DSN=settings.dsn, WHEELWRIGHT_INCOMING=str(incoming))
    result = subprocess.run([sys.executable, "-c", RUN_DAG_TEST, str(REPO / "dags"), "builder_health"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["state"] == "success"
    with psycopg.connect(settings.dsn) as conn:
        assert conn.execute("SELECT builder, ok FROM builder_doctor").fetchall() == [
            ("pi-kitchen/pi-kitchen@pi", False)]
    assert not list((incoming / "pi-kitchen").iterdir())


def test_a_worker_name_that_is_not_plain_is_refused_before_anything_is_sent():
    with pytest.raises(Exception, match="not a plain name"):
        doctor_reports.make_report("../../etc/x", [], ["builder"])
