"""The seam between Airflow and the package: settings from Connections and Variables.

In Airflow, the catalog is the Connection ``wheelwright_db`` (postgres) when it is defined, and the
Variables ``wheelwright_pypi_url`` and ``wheelwright_output`` override the environment; without
them, tasks fall back to the same environment variables as the CLI (so the embedded catalog works out
of the box). Everything else in the package takes plain arguments and never reads Airflow: this module
imports Airflow only inside its functions, so importing it costs nothing at DAG parse time.
"""

from __future__ import annotations

from pathlib import Path

from psycopg.conninfo import make_conninfo

from wheelwright.config import Settings

DB_CONN_ID = "wheelwright_db"
INDEX_HOST_CONN_ID = "wheelwright_index_host"


def settings_from_airflow() -> Settings:
    from airflow.sdk import BaseHook, Variable
    from airflow.sdk.exceptions import AirflowNotFoundException, AirflowRuntimeError

    settings = Settings.from_env()
    try:
        conn = BaseHook.get_connection(DB_CONN_ID)
    except (AirflowNotFoundException, AirflowRuntimeError):
        conn = None  # not defined: the environment (or the embedded catalog) it is
    if conn is not None:
        settings = settings.with_(dsn=make_conninfo(
            host=conn.host or "", port=conn.port or "", user=conn.login or "",
            password=conn.password or "", dbname=conn.schema or ""))
    pypi_url = Variable.get("wheelwright_pypi_url", default=None)
    output = Variable.get("wheelwright_output", default=None)
    if pypi_url:
        settings = settings.with_(pypi_url=pypi_url)
    if output:
        settings = settings.with_(output=Path(output))
    settings.check()
    return settings
