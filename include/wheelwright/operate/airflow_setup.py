"""Airflow around wheelwright: the environment its processes need, on the embedded defaults.

Airflow reads its configuration from ``AIRFLOW__*`` variables when it is imported, so everything that
runs Airflow for us (``make run``, the tests' ``dag.test()``, workers) is a subprocess started with the
environment built here:

* ``AIRFLOW_HOME`` under ``$WHEELWRIGHT_HOME/airflow``, our ``dags/`` and ``plugins/``, no examples;
* the metadata database: ``WHEELWRIGHT_AIRFLOW_DB`` (an SQLAlchemy URL) if set, else a database
  ``airflow`` on the catalog's server (the embedded one by default), created on first use;
* the secrets that the API server and workers must share (JWT, API secret key), made once and kept
  in ``AIRFLOW_HOME`` with mode 0600;
* the execution API URL the task runners talk to.

Nothing here imports Airflow.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from wheelwright.catalog import db
from wheelwright.config import Settings
from wheelwright.errors import ConfigError

# dags/ and plugins/ are not package data: Airflow runs them from a checkout (or the image's copy).
REPO = Path(__file__).resolve().parents[3]
AIRFLOW_BIN = Path(sys.executable).parent / "airflow"


def sqlalchemy_url(dsn: str, driver: str = "postgresql+psycopg2") -> str:
    """The SQLAlchemy URL of a libpq DSN (a Unix-socket host becomes the ``host`` query parameter)."""
    params = conninfo_to_dict(dsn)
    user = params.get("user") or "postgres"
    password = params.get("password") or ""
    auth = f"{user}:{password}@" if password else f"{user}@"
    host = params.get("host") or "127.0.0.1"
    port = params.get("port")
    dbname = params.get("dbname") or "postgres"
    if host.startswith("/"):
        return f"{driver}://{auth}/{dbname}?host={host}" + (f"&port={port}" if port else "")
    return f"{driver}://{auth}{host}{':' + str(port) if port else ''}/{dbname}"


def ensure_database(server_dsn: str, name: str) -> str:
    """Create database ``name`` on the server of ``server_dsn`` if missing; return its DSN."""
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = name
    return make_conninfo(**params)


def _shared_secrets(airflow_home: Path) -> dict[str, str]:
    path = airflow_home / "wheelwright-secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    values = {"jwt_secret": secrets.token_urlsafe(32), "secret_key": secrets.token_urlsafe(32)}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return values


def airflow_environment(settings: Settings, airflow_home: Path | None = None, *,
                        executor: str = "LocalExecutor", metadata_url: str | None = None,
                        broker_url: str | None = None, api_port: int = 8080,
                        dags_folder: Path | None = None, base: dict | None = None) -> dict[str, str]:
    """Environment variables for an Airflow process that runs wheelwright's DAGs."""
    airflow_home = (airflow_home or settings.home / "airflow").absolute()
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("AIRFLOW")}
    if metadata_url is None:
        metadata_url = os.environ.get("WHEELWRIGHT_AIRFLOW_DB")
    if metadata_url is None:
        metadata_url = sqlalchemy_url(ensure_database(db.dsn(settings), "airflow"))
    if not metadata_url.startswith("postgresql"):
        raise ConfigError("the Airflow metadata database must be PostgreSQL (CeleryExecutor and "
                          f"LocalExecutor need it), got {metadata_url.split(':', 1)[0]}")
    shared = _shared_secrets(airflow_home)
    env.update({
        # Airflow's own processes (standalone, the task runners) find `airflow` on the PATH.
        "PATH": os.pathsep.join([str(AIRFLOW_BIN.parent), env.get("PATH", os.defpath)]),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Our DAGs are the deployment, not samples: they run as soon as they are parsed.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__API_AUTH__JWT_SECRET": shared["jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": shared["secret_key"],
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "WHEELWRIGHT_HOME": str(settings.home),
        "WHEELWRIGHT_PYPI_URL": settings.pypi_url,
        "WHEELWRIGHT_OUTPUT": str(settings.output),
        "WHEELWRIGHT_INCOMING": str(settings.incoming),
    })
    if settings.dsn:
        env["WHEELWRIGHT_DSN"] = settings.dsn
    if broker_url:
        env["AIRFLOW__CELERY__BROKER_URL"] = broker_url
        # Airflow's Celery defaults plus the operator's worker commands (builds/worker_control.py)
        env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] = "wheelwright.operate.celery_config.CELERY_CONFIG"
        env["AIRFLOW__CELERY__RESULT_BACKEND"] = "db+" + metadata_url.replace("+psycopg2", "")
    return env


def migrate_metadata(env: dict[str, str]) -> None:
    """Create or upgrade Airflow's metadata database (``airflow db migrate``)."""
    subprocess.run([str(AIRFLOW_BIN), "db", "migrate"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
