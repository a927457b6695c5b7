"""The DAG files: they import cleanly without touching anything, and pypi_sync really runs."""

import json
import subprocess
import sys
import textwrap

import psycopg

from support.catalog import REPO
from wheelwright.testing.pypi_double import PyPIDouble

PARSE_WITHOUT_IO = textwrap.dedent("""
    import json, socket, sys
    import psycopg

    def refuse(*args, **kwargs):
        raise RuntimeError("I/O at DAG parse time")

    socket.socket.connect = refuse
    socket.create_connection = refuse
    psycopg.connect = refuse
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
    print(json.dumps({"dags": sorted(bag.dag_ids), "errors": bag.import_errors}))
""")

RUN_DAG_TEST = textwrap.dedent("""
    import json, sys
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    run = bag.get_dag(sys.argv[2]).test()
    print(json.dumps({"state": str(run.state)}))
""")


def test_every_dag_file_imports_without_errors_and_without_io(airflow_env):
    result = subprocess.run([sys.executable, "-c", PARSE_WITHOUT_IO, str(REPO / "dags")], env=airflow_env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == {}
    assert {"pypi_sync", "build_wheels", "publish_index", "rebuild_history"} <= set(parsed["dags"])


def test_pypi_sync_runs_under_dag_test_against_the_double(airflow_env, settings):
    rows = [["RPi.GPIO", None, 1, "create", 1], ["RPi.GPIO", "0.7.0", 2, "new release", 2],
            ["RPi.GPIO", "0.7.0", 3, "add source file RPi.GPIO-0.7.0.tar.gz", 3]]
    with PyPIDouble(rows, summaries={"rpi-gpio": "GPIO for the Pi"}) as double:
        env = dict(airflow_env, WHEELWRIGHT_DSN=settings.dsn, WHEELWRIGHT_PYPI_URL=double.xmlrpc_url)
        result = subprocess.run([sys.executable, "-c", RUN_DAG_TEST, str(REPO / "dags"), "pypi_sync"],
                                env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["state"] == "success"
    with psycopg.connect(settings.dsn) as conn:
        assert conn.execute("SELECT last_serial FROM sync_state").fetchone() == (3,)
        assert conn.execute("SELECT display_name, summary FROM packages").fetchall() == \
            [("RPi.GPIO", "GPIO for the Pi")]
    metadata = airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg2", "postgresql")
    with psycopg.connect(metadata) as meta:
        extras = [row[0] for row in meta.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.name = 'wheelwright://catalog' ORDER BY e.id")]
    assert extras and extras[0]["serial_to"] == 3 and extras[0]["changed_packages"] == 1
