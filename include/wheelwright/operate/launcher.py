"""`wheelwright run`: the whole system on one machine, on the embedded defaults.

It prepares what a fresh machine lacks and then runs Airflow's processes with our DAGs, as a deployment
would, on one machine:

0. ``wheelwright doctor``'s checks of every role (index host, builder, edge): when one fails, its FAIL
   lines are printed and nothing is started;
1. the catalog: the embedded PostgreSQL under ``$WHEELWRIGHT_HOME`` (or ``WHEELWRIGHT_DSN``), schema
   applied;
2. PyPI: the real one by default; ``--pypi double`` instead serves ``data/sample-changelog.jsonl`` (or
   ``--changelog FILE``) with the PyPI double, for machines that cannot reach PyPI's XML-RPC, with the
   build backends (setuptools, wheel) beside it so builds work offline;
3. the index host: unless the Connection ``wheelwright_index_host`` is given in the environment, this
   machine is it, with a real SFTP server on 127.0.0.1 (sftp_server.py, host key pinned in the
   Connection) receiving builds into ``$WHEELWRIGHT_HOME/index-host/incoming/<account>``; the published tree is
   served on 127.0.0.1 (``--index-port``), and builds take their build dependencies from it as well as
   from PyPI (``WHEELWRIGHT_INDEX_URL``), as piwheels' builders use piwheels;
4. Airflow's metadata database on the same server, migrated; the environment from airflow_env; a
   build pool per enabled target; Debian's ``redis-server`` on loopback, with a password, as the
   Celery broker;
5. Airflow itself: API server (with the UI), scheduler, DAG processor, triggerer, and two Celery
   workers: ``index-host`` on the ``default`` queue (sync, claims, recording, publishing) and
   ``builder`` serving every enabled target's queue (one worker, several targets: the Pi targets'
   builds run in their images under emulation, the host's on its own system), started through
   ``wheelwright worker`` as a builder anywhere is (its doctor's part, its report, then Celery);
6. the targets' images: ``wheelwright image build --all`` starts right after the doctor's checks,
   before the rest of start-up, since on a new machine it is the longest step before the first Pi
   wheel (a build that arrives before its image waits for it).

Ctrl-C, or SIGTERM from a service manager, stops all of it; the embedded catalog keeps running until
`wheelwright db stop`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from wheelwright import package_data
from wheelwright.catalog import db
from wheelwright.operate.airflow_setup import AIRFLOW_BIN, REPO, airflow_environment, migrate_metadata
from wheelwright.operate.dag_tasks import build_pool
from wheelwright.config import Settings
from wheelwright.errors import ConfigError

log = logging.getLogger(__name__)

SAMPLE_CHANGELOG = Path(str(package_data.data("sample-changelog.jsonl")))
WHEELWRIGHT_BIN = Path(sys.executable).parent / "wheelwright"


def create_build_pools(env: dict[str, str], slots: int = 1) -> None:
    """One pool per enabled target (the build DAG's tasks wait forever for a missing pool)."""
    from wheelwright.builds.targets import enabled_targets
    for target in enabled_targets():
        subprocess.run([str(AIRFLOW_BIN), "pools", "set", build_pool(target.name), str(slots),
                        f"builds for {target.name}"], env=env, check=True, stdout=subprocess.DEVNULL)


def build_backends(folder: Path) -> Path:
    """setuptools and wheel as wheels, for the builds' isolated environments (fetched once)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (list(folder.glob("setuptools-*.whl")) and list(folder.glob("wheel-*.whl"))):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:",
                        "--no-deps", "-d", str(folder), "setuptools==80.9.0", "wheel==0.45.1"], check=True)
    return folder


# A small C extension for the double to serve as cext-demo 1.0 (data/sample-changelog.jsonl): a
# binary wheel on this machine's target moves it on to the Pi targets, so `make run` builds it for
# armv7l and aarch64 too, in their images.
CEXT_DEMO = {
    "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61", "wheel"]\n'
                      'build-backend = "setuptools.build_meta"\n',
    "setup.py": "from setuptools import Extension, setup\n"
                "setup(name='cext-demo', version='1.0', ext_modules=[Extension('cext', ['cext.c'])])\n",
    "cext.c": "#include <Python.h>\n#include <unistd.h>\n"
              "static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, \"cext\", NULL, -1, NULL};\n"
              "PyMODINIT_FUNC PyInit_cext(void) {\n    PyObject *m = PyModule_Create(&module);\n"
              "    if (m) PyModule_AddIntConstant(m, \"pid\", (long)getpid());\n    return m;\n}\n",
}


def demo_sdist(folder: Path) -> Path:
    """``cext_demo-1.0.tar.gz`` in ``folder`` (deterministic bytes: fixed mtimes, sorted members)."""
    import gzip
    import io
    import tarfile
    path = folder / "cext_demo-1.0.tar.gz"
    members = {"PKG-INFO": "Metadata-Version: 2.1\nName: cext-demo\nVersion: 1.0\n", **CEXT_DEMO}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, text in sorted(members.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"cext_demo-1.0/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 315532800
            tar.addfile(info, io.BytesIO(data))
    # the same bytes every time (gzip's own mtime too): the catalog pins the sdist by its sha256
    path.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
    return path


def local_index_host(settings: Settings, env: dict[str, str]):
    """Make this machine the index host: an SFTP server on 127.0.0.1 (one account, ``builder``, for the
    one builder worker) and the Connection to it; the index host's incoming folder in ``env``."""
    from wheelwright.operate.sftp_server import SFTPServer
    root = settings.home / "index-host"
    server = SFTPServer(root, settings.home / "ssh", accounts=("builder",)).start()
    env.update({
        "AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST": json.dumps({
            "conn_type": "ssh", "host": "127.0.0.1", "port": server.port, "login": "builder",
            "extra": {"key_file": str(server.client_key_file), "host_key": server.host_key_line,
                      "no_host_key_check": False, "look_for_keys": False}}),
        "WHEELWRIGHT_INCOMING": str(server.incoming),
        "WHEELWRIGHT_REMOTE_INCOMING": "/incoming",   # each account's folder is /incoming/<account> there
    })
    log.info("index host: SFTP on 127.0.0.1:%d into %s", server.port, server.incoming)
    return server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _private_file(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def start_broker(home: Path) -> tuple[str, subprocess.Popen]:
    """Debian's redis-server on a free loopback port, behind a password kept 0600 under ``home``;
    nothing saved to disk. Returns the broker URL (with the password) and the process."""
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(redis_server, os.X_OK):
        raise ConfigError("redis-server (the Celery broker) is not installed: as root, "
                          "`apt-get install redis-server` (make setup does it)")
    folder = home / "broker"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = folder / "password"
    if not secret.exists():
        _private_file(secret, secrets.token_urlsafe(24))
    password = secret.read_text().strip()
    port = _free_port()
    config = folder / "redis.conf"
    _private_file(config, f"bind 127.0.0.1\nport {port}\nrequirepass {password}\nsave \"\"\n"
                          f"appendonly no\ndir {folder}\nprotected-mode yes\n")
    with open(folder / "redis.log", "ab") as out:
        process = subprocess.Popen([redis_server, str(config)], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    import redis
    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis.from_url(url, socket_timeout=1).ping()
            return url, process
        except redis.exceptions.RedisError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise ConfigError(f"the broker (redis-server) did not start: see {folder / 'redis.log'}")
            time.sleep(0.1)


def serve_published(output: Path, port: int):
    """The published tree on 127.0.0.1:``port`` (for pip, and for builds' build dependencies)."""
    from wheelwright.operate.static_server import make_server
    output.mkdir(parents=True, exist_ok=True)
    server = make_server(output, port)
    threading.Thread(target=server.serve_forever, name="published-index", daemon=True).start()
    return server


def airflow_processes(port: int, target_queues: list[str], *, build_slots: int = 2) -> list[tuple[str, list[str]]]:
    """The Airflow processes of a one-machine deployment, by name: the core and two Celery workers (the
    builder through `wheelwright worker`: it checks the machine, reports, then runs Airflow's worker)."""
    airflow = str(AIRFLOW_BIN)
    options = ["--without-gossip", "--without-mingle"]
    processes = [
        ("api-server", [airflow, "api-server", "--port", str(port), "--host", "127.0.0.1"]),
        ("scheduler", [airflow, "scheduler"]),
        ("dag-processor", [airflow, "dag-processor"]),
        ("triggerer", [airflow, "triggerer"]),
        ("worker-index-host", [airflow, "celery", "worker", *options, "--queues", "default", "--concurrency", "4",
                               "--celery-hostname", "index-host@%h"]),
    ]
    if target_queues:
        processes.append(("worker-builder", [str(WHEELWRIGHT_BIN), "worker", *options,
                                             "--queues", ",".join(target_queues), "--concurrency",
                                             str(build_slots), "--skip-serve-logs", "--celery-hostname",
                                             "builder@%h"]))
    return processes


def start_image_builds(targets) -> list[tuple[str, subprocess.Popen]]:
    """Start building the targets' images (each once; the terminal shows their progress)."""
    if not any(t.image for t in targets):
        return []
    argv = [str(WHEELWRIGHT_BIN), "image", "build", "--all"]
    return [("images", subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL))]


def run(settings: Settings, *, pypi: str = "live", changelog: Path = SAMPLE_CHANGELOG,
        port: int = 8080, double_port: int = 8700, index_port: int = 8081) -> int:
    from wheelwright.builds.targets import enabled_targets
    from wheelwright.operate import doctor
    targets = enabled_targets()
    # This machine plays every role: check them all before anything starts.
    findings = doctor.examine(doctor.Machine(settings, launching=True), doctor.ROLES, targets,
                              each=lambda finding: print(finding.line(), file=sys.stderr, flush=True))
    if doctor.failed(findings):
        print(f"wheelwright run: {doctor.summary(findings)}; nothing was started. Fix the FAIL lines above "
              "(`wheelwright doctor` checks again).", file=sys.stderr, flush=True)
        return doctor.exit_code(findings)
    log.info("doctor: %s", doctor.summary(findings))
    images = start_image_builds(targets)
    try:
        return _run(settings, targets, images, pypi=pypi, changelog=changelog, port=port,
                    double_port=double_port, index_port=index_port)
    finally:
        _stop_all([proc for _, proc in images if proc.poll() is None], grace=10)  # if start-up failed


def _run(settings: Settings, targets, images: list[tuple[str, subprocess.Popen]], *, pypi: str,
         changelog: Path, port: int, double_port: int, index_port: int) -> int:
    with db.connect(settings) as conn:
        applied = db.init_schema(conn)
    log.info("catalog ready at schema version %s%s", db.migrations()[-1][0],
             f" (applied {applied})" if applied else "")
    double = sftp = broker = published = None
    if pypi == "double":
        from wheelwright.testing.pypi_double import PyPIDouble
        files = build_backends(settings.home / "pypi-files")
        demo_sdist(files)
        double = PyPIDouble(changelog, files_dir=files)
        double.start(port=double_port)
        settings = settings.with_(pypi_url=double.xmlrpc_url)
        log.info("PyPI double serving %s at %s", changelog, double.url)
    try:
        broker_url, broker = start_broker(settings.home)
        env = airflow_environment(settings, api_port=port, executor="CeleryExecutor", broker_url=broker_url)
        if "AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST" not in os.environ:
            sftp = local_index_host(settings, env)
            # One machine is builder and index host: the index host's install test is the one that
            # counts (it trusts no builder), and the builder's first filter would only run it twice.
            env.setdefault("WHEELWRIGHT_INSTALL_TEST", "index-host")
        published = serve_published(settings.output, index_port)
        env.setdefault("WHEELWRIGHT_INDEX_URL", f"http://127.0.0.1:{index_port}/simple/")
        log.info("published index at %s (builds take build dependencies from it too)",
                 env["WHEELWRIGHT_INDEX_URL"])
        log.info("migrating Airflow's metadata database (first run takes a minute)")
        migrate_metadata(env)
        create_build_pools(env)
        logs = Path(env["AIRFLOW_HOME"]) / "logs"
        processes = airflow_processes(port, [t.queue for t in targets])
        log.info("starting Airflow (%s): UI and API at http://127.0.0.1:%d (login details in %s); "
                 "process logs in %s", ", ".join(name for name, _ in processes), port,
                 Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated", logs)
        return supervise_all(processes, env, log_dir=logs, started=images)
    finally:
        if published is not None:
            published.shutdown()
        for server in (sftp, double):
            if server is not None:
                server.stop()
        if broker is not None:
            broker.terminate()
            try:
                broker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                broker.kill()


class _Stopped(Exception):
    """We were told to stop by ``signum``."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum, _frame):
    raise _Stopped(signum)


# Ctrl-C; a service manager's stop (systemd, `docker stop`, `timeout`); the terminal going away.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def supervise(argv: list[str], env: dict[str, str], *, grace: float = 60.0) -> int:
    """Run ``argv`` until it exits and return its exit code; or stop it when we are told to stop.

    It runs in a session of its own, so a Ctrl-C at the terminal reaches only us, and its processes form
    one group: on any of STOP_SIGNALS we send the group SIGTERM, then SIGKILL after ``grace`` seconds or
    at a second signal, and return 128 + the signal's number, as a shell would. Without this, Airflow's
    API server, scheduler and workers outlived a SIGTERM to `wheelwright run`.
    """
    return supervise_all([(Path(argv[0]).name, argv)], env, grace=grace)


def supervise_all(processes: list[tuple[str, list[str]]], env: dict[str, str], *, grace: float = 60.0,
                  log_dir: Path | None = None, one_shots: list[tuple[str, list[str]]] = (),
                  started: list[tuple[str, subprocess.Popen]] = ()) -> int:
    """Run ``processes`` (name, argv) together until one of them exits, or we are told to stop.

    Each runs in a session of its own (its output into ``log_dir/<name>.log`` when given); when one
    exits, or a stop signal comes, every other one's group gets SIGTERM, then SIGKILL after ``grace``
    seconds or at a second signal. Returns the exit code of the process that ended first, or 128 + the
    signal's number. ``one_shots`` run beside them with the terminal as output, and may end at any time
    (their end is logged, nothing else stops); ``started`` are one-shots started earlier.
    """
    previous = {signum: signal.signal(signum, _raise_stopped) for signum in STOP_SIGNALS}
    running: list[tuple[str, subprocess.Popen]] = []
    side: list[tuple[str, subprocess.Popen]] = list(started)
    try:
        for name, argv in processes:
            out = None
            if log_dir is not None:
                log_dir.mkdir(parents=True, exist_ok=True)
                out = open(log_dir / f"{name}.log", "ab")
            try:
                running.append((name, subprocess.Popen(argv, env=env, start_new_session=True, stdout=out,
                                                        stderr=subprocess.STDOUT if out else None)))
            finally:
                if out is not None:
                    out.close()
        for name, argv in one_shots:
            side.append((name, subprocess.Popen(argv, env=env, start_new_session=True,
                                                stdin=subprocess.DEVNULL)))
        while True:
            for name, proc in running:
                code = proc.poll()
                if code is not None:
                    if len(running) > 1:
                        log.error("%s exited with status %d: stopping the rest", name, code)
                    _stop_all([p for n, p in running + side if p is not proc], grace)
                    return code
            for name, proc in list(side):
                code = proc.poll()
                if code is not None:
                    (log.info if code == 0 else log.error)("%s finished with status %d", name, code)
                    side.remove((name, proc))
            time.sleep(0.2)
    except _Stopped as stopped:
        if running or side:
            log.info("stopping %s (signal %d)", ", ".join(n for n, _ in running + side), stopped.signum)
            _stop_all([p for _, p in running + side], grace)
        return 128 + stopped.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_all(procs: list[subprocess.Popen], grace: float) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    try:
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    except _Stopped:
        pass  # told again: no more waiting
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
