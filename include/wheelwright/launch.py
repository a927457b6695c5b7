"""`wheelwright run`: the whole system on one machine, on the embedded defaults.

It prepares what a fresh machine lacks and then hands over to ``airflow standalone`` (API server with
the UI, scheduler, DAG processor, triggerer) running our DAGs:

1. the catalog: the embedded PostgreSQL under ``$WHEELWRIGHT_HOME`` (or ``WHEELWRIGHT_DSN``), schema
   applied;
2. PyPI: the real one by default; ``--pypi double`` instead serves ``data/sample-changelog.jsonl`` (or
   ``--changelog FILE``) with the PyPI double, for machines that cannot reach PyPI's XML-RPC;
3. Airflow's metadata database on the same server, migrated; the environment from airflow_env; a
   build pool per enabled target.

Ctrl-C stops Airflow and the double; the embedded catalog keeps running until `wheelwright db stop`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
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


def run(settings: Settings, *, pypi: str = "live", changelog: Path = SAMPLE_CHANGELOG,
        port: int = 8080, double_port: int = 8700) -> int:
    with db.connect(settings) as conn:
        applied = db.init_schema(conn)
    log.info("catalog ready at schema version %s%s", db.migrations()[-1][0],
             f" (applied {applied})" if applied else "")
    double = None
    if pypi == "double":
        from .pypi_double import PyPIDouble
        double = PyPIDouble(changelog)
        double.start(port=double_port)
        settings = settings.with_(pypi_url=double.xmlrpc_url)
        log.info("PyPI double serving %s at %s", changelog, double.url)
    try:
        env = airflow_environment(settings, api_port=port)
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
        if double is not None:
            double.stop()
