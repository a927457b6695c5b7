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

Ctrl-C stops Airflow and the double; the embedded catalog keeps running until `wheelwright db stop`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from . import db
from .airflow_env import AIRFLOW_BIN, REPO, airflow_environment, migrate_metadata
from .config import Settings

log = logging.getLogger(__name__)

SAMPLE_CHANGELOG = REPO / "data" / "sample-changelog.jsonl"


def create_build_pools(env: dict[str, str], slots: int = 1) -> None:
    """One pool per enabled target (the build DAG's tasks wait forever for a missing pool)."""
    from .targets import enabled_targets
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
    from .sftp_server import SFTPServer
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
        from .pypi_double import PyPIDouble
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
        proc = subprocess.Popen([str(AIRFLOW_BIN), "standalone"], env=env, start_new_session=True)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            return 130
    finally:
        for server in (sftp, double):
            if server is not None:
                server.stop()
