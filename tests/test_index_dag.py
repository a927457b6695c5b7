"""The publish_index DAG: scheduled on the catalog and builds Assets, and really publishes under dag.test().

Slow (an Airflow metadata database is migrated first): marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import psycopg
import pytest

from support.catalog import REPO
from support.index_world import World

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

INSPECT_AND_RUN = textwrap.dedent("""
    import json, sys
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("publish_index")
    info = {"max_active_runs": dag.max_active_runs, "catchup": dag.catchup,
            "schedule": repr(dag.timetable), "tasks": [t.task_id for t in dag.tasks],
            "queues": sorted({t.queue for t in dag.tasks})}
    run = dag.test()
    info["state"] = str(run.state)
    print(json.dumps(info))
""")


def test_publish_index_runs_under_dag_test(airflow_env, catalog, settings):
    world = World(catalog, settings.output)
    world.target()
    p = world.package("RPi.GPIO")
    world.release(p, "0.7.1")
    world.wheel(p, "0.7.1")
    env = dict(airflow_env, WHEELWRIGHT_DSN=settings.dsn, WHEELWRIGHT_OUTPUT=str(settings.output))
    result = subprocess.run([sys.executable, "-c", INSPECT_AND_RUN, str(REPO / "dags")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["state"] == "success", info
    assert info["max_active_runs"] == 1 and info["catchup"] is False
    assert "wheelwright://catalog" in info["schedule"] and "wheelwright://builds" in info["schedule"]
    assert info["tasks"] == ["publish"] and info["queues"] == ["default"]
    assert (settings.output / "simple" / "rpi-gpio" / "index.html").exists()
    metadata = airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg2", "postgresql")
    with psycopg.connect(metadata) as meta:
        extras = [row[0] for row in meta.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.name = 'wheelwright://index' ORDER BY e.id")]
    assert extras and extras[-1]["packages_changed"] == ["rpi-gpio"]
