"""A task's token cannot rewrite what the index host trusts (issue 30, point 9).

In Airflow 3.3 the execution API lets any running task write every Variable and read every
Connection (``has_variable_access`` and ``has_connection_access`` return True for every token), and a
builder runs anybody's ``setup.py``. The index host used to take PyPI's URL, the published tree and the
incoming folder from Variables: a builder out of its sandbox could point sync and every build at
another index, or the sweep at the published tree. This test runs the real thing: an api-server,
scheduler and dag-processor (LocalExecutor: each task runs with its own token, through the execution
API), a task that does what a hostile builder can (``Variable.set`` = ``PUT /execution/variables/...``
with its token; it succeeds), then a task that reads its settings as the index host's tasks do. They
are the environment's, whatever the Variables now say; and the real sweep run there takes nothing from
them. The same task's token also asks for runs of other DAGs, as TriggerDagRunOperator does: ours
refuse runs started that way.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import psycopg
import pytest

from support.catalog import REPO
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
        def trigger(dag_id: str) -> str:
            """What TriggerDagRunOperator does: ask the execution API, with this task's token, for a run."""
            from airflow.sdk.execution_time.comms import TriggerDagRun
            from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS
            try:
                return repr(SUPERVISOR_COMMS.send(TriggerDagRun(dag_id=dag_id, run_id="from-a-task",
                                                                conf={{"target": "cp311-armv7l"}})))
            except Exception as exc:
                return f"refused: {{exc!r}}"

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
        trigger.override(task_id="trigger_open")("open_door")
        trigger.override(task_id="trigger_ours")("rebuild_history")

    hostile_task()

    @dag(dag_id="open_door", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
    def open_door():
        """A DAG that does not say how its runs may start."""
        task(lambda: None, task_id="nothing")()

    open_door()
''')


@pytest.fixture(scope="module")
def run(tmp_path_factory, pg_server, catalog_template):
    root = tmp_path_factory.mktemp("task-settings")
    workdir = root / "run"
    workdir.mkdir()
    (root / "dags").mkdir()
    (root / "dags" / "hostile_task.py").write_text(DAG.format(hostile=json.dumps(HOSTILE)))
    (root / "dags" / "rebuild_history.py").write_text((REPO / "dags" / "rebuild_history.py").read_text())
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
        env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "True"   # only what the test triggers runs
        stack = AirflowStack(env=env, workdir=workdir, api_port=api_port)
        migrate(env, workdir)
        stack.start_core()
        for dag_id in ("hostile_task", "open_door", "rebuild_history"):
            stack.wait_for_dag(dag_id)
        run_id = stack.trigger("hostile_task")
        state = stack.wait_for_run("hostile_task", run_id, timeout=180)
        xcom = {task: stack.api("GET", f"dags/hostile_task/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/"
                                       "return_value?deserialize=true")["value"]
                for task in ("escape", "index_host_reads", "trigger_open", "trigger_ours")}
        runs = {dag_id: [r["run_type"] for r in stack.api("GET", f"dags/{dag_id}/dagRuns")["dag_runs"]]
                for dag_id in ("open_door", "rebuild_history")}
        variables = {v["key"]: v["value"] for v in stack.api("GET", "variables")["variables"]}
        yield {"state": state, "xcom": xcom, "variables": variables, "runs": runs, "settings": settings, "root": root,
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


def test_a_task_token_cannot_start_a_run_of_our_dags(run):
    """Any task may ask the execution API to trigger any DAG; every DAG of ours allows every way a run
    starts but that one (``allowed_run_types``), so a builder cannot start rebuild_history with a conf
    of its choosing, nor keep the index host busy."""
    assert run["runs"]["open_door"] == ["operator_triggered"], \
        f"a DAG that does not forbid it is triggered by any task: {run['xcom']['trigger_open']}"
    assert run["runs"]["rebuild_history"] == [], run["xcom"]["trigger_ours"]
    assert "operator-triggered" in str(run["xcom"]["trigger_ours"]), run["xcom"]["trigger_ours"]
