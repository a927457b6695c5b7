"""`wheelwright run`: the whole system on one machine, on the embedded defaults.

It prepares what a fresh machine lacks and then hands over to ``airflow standalone`` (API server with
the UI, scheduler, DAG processor, triggerer) running our DAGs:

1. the catalog: the embedded PostgreSQL under ``$WHEELWRIGHT_HOME`` (or ``WHEELWRIGHT_DSN``), schema
   applied;
2. PyPI: the real one by default; ``--pypi double`` instead serves ``data/sample-changelog.jsonl`` (or
   ``--changelog FILE``) with the PyPI double, for machines that cannot reach PyPI's XML-RPC, with the
   build backends (setuptools, wheel) beside it so builds work offline;
3. the index host: unless the Connection ``wheelwright_index_host`` is given in the environment, this
   machine is it, with a real SFTP server on 127.0.0.1 (sftp_server.py, host key pinned in the
   Connection) receiving builds into ``$WHEELWRIGHT_HOME/index-host/incoming``;
4. Airflow's metadata database on the same server, migrated; the environment from airflow_env; a
   build pool per enabled target.

Ctrl-C, or SIGTERM from a service manager, stops Airflow and the double; the embedded catalog keeps
running until `wheelwright db stop`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from wheelwright import package_data
from wheelwright.catalog import db
from wheelwright.operate.airflow_setup import AIRFLOW_BIN, REPO, airflow_environment, migrate_metadata
from wheelwright.config import Settings

log = logging.getLogger(__name__)

SAMPLE_CHANGELOG = Path(str(package_data.data("sample-changelog.jsonl")))


def create_build_pools(env: dict[str, str], slots: int = 1) -> None:
    """One pool per enabled target (the build DAG's tasks wait forever for a missing pool)."""
    from wheelwright.builds.targets import enabled_targets
    for target in enabled_targets():
        subprocess.run([str(AIRFLOW_BIN), "pools", "set", f"build_{target.name}", str(slots),
                        f"builds for {target.name}"], env=env, check=True, stdout=subprocess.DEVNULL)


def build_backends(folder: Path) -> Path:
    """setuptools and wheel as wheels, for the builds' isolated environments (fetched once)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (list(folder.glob("setuptools-*.whl")) and list(folder.glob("wheel-*.whl"))):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:",
                        "--no-deps", "-d", str(folder), "setuptools==80.9.0", "wheel==0.45.1"], check=True)
    return folder


def local_index_host(settings: Settings, env: dict[str, str]):
    """Make this machine the index host: an SFTP server on 127.0.0.1 and the Connection to it."""
    from wheelwright.operate.sftp_server import SFTPServer
    root = settings.home / "index-host"
    (root / "incoming").mkdir(parents=True, exist_ok=True)
    server = SFTPServer(root, settings.home / "ssh").start()
    env.update({
        "AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST": json.dumps({
            "conn_type": "ssh", "host": "127.0.0.1", "port": server.port, "login": "builder",
            "extra": {"key_file": str(server.client_key_file), "host_key": server.host_key_line,
                      "no_host_key_check": False, "look_for_keys": False}}),
        "AIRFLOW_VAR_WHEELWRIGHT_INCOMING": str(root / "incoming"),
        "AIRFLOW_VAR_WHEELWRIGHT_REMOTE_INCOMING": "/incoming",   # the server is chrooted to root
    })
    log.info("index host: SFTP on 127.0.0.1:%d into %s", server.port, root / "incoming")
    return server


def run(settings: Settings, *, pypi: str = "live", changelog: Path = SAMPLE_CHANGELOG,
        port: int = 8080, double_port: int = 8700) -> int:
    with db.connect(settings) as conn:
        applied = db.init_schema(conn)
    log.info("catalog ready at schema version %s%s", db.migrations()[-1][0],
             f" (applied {applied})" if applied else "")
    double = sftp = None
    if pypi == "double":
        from wheelwright.testing.pypi_double import PyPIDouble
        double = PyPIDouble(changelog, files_dir=build_backends(settings.home / "pypi-files"))
        double.start(port=double_port)
        settings = settings.with_(pypi_url=double.xmlrpc_url)
        log.info("PyPI double serving %s at %s", changelog, double.url)
    try:
        env = airflow_environment(settings, api_port=port)
        if "AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST" not in os.environ:
            sftp = local_index_host(settings, env)
        log.info("migrating Airflow's metadata database (first run takes a minute)")
        migrate_metadata(env)
        create_build_pools(env)
        log.info("starting Airflow: UI and API at http://127.0.0.1:%d (login details in %s)", port,
                 Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated")
        return supervise([str(AIRFLOW_BIN), "standalone"], env)
    finally:
        for server in (sftp, double):
            if server is not None:
                server.stop()


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
    previous = {signum: signal.signal(signum, _raise_stopped) for signum in STOP_SIGNALS}
    proc = None
    try:
        proc = subprocess.Popen(argv, env=env, start_new_session=True)
        return proc.wait()
    except _Stopped as stopped:
        if proc is not None:
            log.info("stopping %s (signal %d)", Path(argv[0]).name, stopped.signum)
            _stop_group(proc, grace)
        return 128 + stopped.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    for stop, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(proc.pid, stop)
        try:
            proc.wait(timeout=wait)
            return
        except (subprocess.TimeoutExpired, _Stopped):
            pass  # too slow, or told again: no more waiting
