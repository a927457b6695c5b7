"""A task's token cannot rewrite what the index host trusts (issue 30, point 9).

In Airflow 3.3 the execution API lets any running task write every Variable and read every
Connection (``has_variable_access`` and ``has_connection_access`` return True for every token), and a
builder runs anybody's ``setup.py``. The index host used to take PyPI's URL, the published tree and the
incoming folder from Variables: a builder out of its sandbox could point sync and every build at
another index, or the sweep at the published tree. This test runs the real thing: an api-server,
scheduler and dag-processor (LocalExecutor: each task runs with its own token, through the execution
API), a task that does what a hostile builder can (``Variable.set`` = ``PUT /execution/variables/...``
with its token; it succeeds), then a task that reads its settings as the index host's tasks do. They
are the environment's, whatever the Variables now say; and the real sweep and record steps run there
take nothing from them.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import psycopg
import pytest

from support.airflow_processes import (AirflowStack, airflow_variables, create_database, drop_database,
                                       free_port, migrate)
from wheelwright.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HOSTILE = {
    "wheelwright_pypi_url": "http://pypi.attacker.example/pypi",
    "wheelwright_output": "/tmp/attacker-tree",
    "wheelwright_incoming": "/",
    "wheelwright_remote_incoming": "/incoming/pi-victim",
    "wheelwright_access_logs": json.dumps({"origin": "/etc/shadow"}),
}

DAG = textwrap.dedent('''
    import json
    import pendulum
    from airflow.sdk import dag, task

    HOSTILE = json.loads({hostile!r})

    @dag(dag_id="hostile_task", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
    def hostile_task():
        @task
        def escape() -> dict:
            """What a builder out of its sandbox can do with its own task token."""
            from airflow.sdk import Variable
            for key, value in HOSTILE.items():
                Variable.set(key, value)
            return {{key: Variable.get(key) for key in HOSTILE}}

        @task
        def index_host_reads() -> dict:
            """What the index host's tasks go by afterwards."""
            from wheelwright.operate.access_logs import sources_from_env
            from wheelwright.operate.dag_tasks import sweep_incoming, task_settings
            settings = task_settings()
            return {{"pypi_url": settings.pypi_url, "output": str(settings.output),
                    "incoming": str(settings.incoming), "remote_incoming": settings.remote_incoming,
                    "access_logs": {{k: str(v) for k, v in sources_from_env().items()}},
                    "sweep": sweep_incoming()}}

        escape() >> index_host_reads()

    hostile_task()
''')


@pytest.fixture(scope="module")
def run(tmp_path_factory, pg_server, catalog_template):
    root = tmp_path_factory.mktemp("task-settings")
    workdir = root / "run"
    workdir.mkdir()
    (root / "dags").mkdir()
    (root / "dags" / "hostile_task.py").write_text(DAG.format(hostile=json.dumps(HOSTILE)))
    catalog_name = f"wheelwright_settings_{free_port()}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{catalog_name}" TEMPLATE "{catalog_template}"')
    params = psycopg.conninfo.conninfo_to_dict(pg_server)
    catalog_dsn = psycopg.conninfo.make_conninfo(**{**params, "dbname": catalog_name})
    dbname, metadata_dsn = create_database(pg_server)
    stack = None
    try:
        settings = Settings(home=root / "home", dsn=catalog_dsn, pypi_url="http://127.0.0.1:9/pypi",
                            output=root / "www", incoming=root / "incoming")
        (root / "incoming").mkdir()
        api_port = free_port()
        env = airflow_variables(settings, airflow_home=root / "airflow", metadata_dsn=metadata_dsn,
                                dags_folder=root / "dags", api_port=api_port, executor="LocalExecutor")
        env["WHEELWRIGHT_ACCESS_LOGS"] = json.dumps({"origin": str(root / "access.log")})
        stack = AirflowStack(env=env, workdir=workdir, api_port=api_port)
        migrate(env, workdir)
        stack.start_core()
        stack.wait_for_dag("hostile_task")
        run_id = stack.trigger("hostile_task")
        state = stack.wait_for_run("hostile_task", run_id, timeout=180)
        xcom = {task: stack.api("GET", f"dags/hostile_task/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/"
                                       "return_value?deserialize=true")["value"]
                for task in ("escape", "index_host_reads")}
        variables = {v["key"]: v["value"] for v in stack.api("GET", "variables")["variables"]}
        yield {"state": state, "xcom": xcom, "variables": variables, "settings": settings, "root": root,
               "tails": stack.tails()}
    finally:
        if stack is not None:
            stack.stop()
        drop_database(pg_server, dbname)
        drop_database(pg_server, catalog_name)


def _value(raw):
    return json.loads(raw) if isinstance(raw, str) else raw


def test_a_task_token_can_write_any_variable(run):
    assert run["state"] == "success", run["tails"]
    assert _value(run["xcom"]["escape"]) == HOSTILE, "the execution API took every PUT"
    assert {k: run["variables"][k] for k in HOSTILE} == HOSTILE


def test_the_index_hosts_tasks_go_by_their_own_environment_only(run):
    read = _value(run["xcom"]["index_host_reads"])
    settings = run["settings"]
    assert read["pypi_url"] == settings.pypi_url
    assert read["output"] == str(settings.output)
    assert read["incoming"] == str(settings.incoming)
    assert read["remote_incoming"] == "/incoming"
    assert read["access_logs"] == {"origin": str(run["root"] / "access.log")}
    assert read["sweep"]["recorded"] == 0 and read["sweep"]["removed"] == 0, "the sweep swept its own folder"
    assert not Path(HOSTILE["wheelwright_output"]).exists()
