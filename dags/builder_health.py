"""builder_health: every 5 minutes, check each registered builder over SSH, and sample the dashboard.

    check_builders (SSH: temperature, load, memory, disk, images) ─▶ builder_health rows the claim reads
    sample_dashboard (every 15 minutes: queue depth per target, PyPI's serial, wheels, rankings)
                                                                    ─▶ the dashboard's trends
    record_doctor_reports (what each builder's worker found at start-up, sent over SFTP)
                                                                    ─▶ the dashboard's doctor panel
    keep_workers_asleep (the broker: workers an operator put to sleep and that restarted since)

A builder too hot, out of disk or unreachable is held: its target's claim hands out nothing until a
later check finds it recovered. Each builder's Connection (its ``ssh_conn_id`` in the builders table)
pins its host key. Both tasks run on the index host (queue ``default``).

All the logic is in ``wheelwright.operate.builder_health``, ``wheelwright.operate.dashboard`` and
``wheelwright.operate.doctor_reports``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from wheelwright.operate.dag_tasks import INDEX_HOST_QUEUE, NOTICES, RUN_TYPES



@dag(
    dag_id="builder_health",
    allowed_run_types=RUN_TYPES,   # never started from a task's token
    schedule="*/5 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=30),
    default_args={"queue": INDEX_HOST_QUEUE, "retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["wheelwright", "operations"],
    doc_md=__doc__,
    **NOTICES,   # a DAG that keeps failing tells the operator (operate/notices.py)
)
def builder_health():
    @task
    def check_builders() -> dict:
        """Reach every registered builder, record its health, hold or release it."""
        from wheelwright.catalog import db
        from wheelwright.operate import builder_health as health
        from wheelwright.operate.dag_tasks import builder_ssh_client, task_settings

        with db.connect(task_settings()) as conn:
            db.require_schema(conn)
            return health.check_all(conn, builder_ssh_client)

    @task
    def sample_dashboard() -> dict:
        """Sample what the dashboard cannot count per page view: queues, PyPI's serial, wheels."""
        from wheelwright.catalog import db
        from wheelwright.errors import WheelwrightError
        from wheelwright.operate import dashboard
        from wheelwright.operate.dag_tasks import task_settings
        from wheelwright.pypi.client import PyPI

        from airflow.sdk.exceptions import AirflowSkipException

        settings = task_settings()
        with db.connect(settings) as conn:
            if not dashboard.sample_due(conn):
                raise AirflowSkipException("the latest sample is recent enough")
        try:
            with PyPI(settings.pypi_url, max_attempts=2) as pypi:
                pypi_serial = pypi.last_serial()
        except (WheelwrightError, OSError):
            pypi_serial = None  # the sample still counts the queues; the lag waits for the next one
        with db.connect(settings) as conn:
            db.require_schema(conn)
            return dashboard.take_samples(conn, pypi_serial)

    @task
    def record_doctor_reports() -> dict:
        """Record the doctor reports builders sent when their workers started."""
        from wheelwright.operate.dag_tasks import record_doctor_reports
        return record_doctor_reports()

    @task
    def keep_workers_asleep() -> list[str]:
        """Workers an operator put to sleep stay asleep: one that restarted consumes its queues again."""
        from airflow.sdk.exceptions import AirflowSkipException

        from wheelwright.operate import dag_tasks
        slept_again = dag_tasks.keep_workers_asleep()
        if slept_again is None:
            raise AirflowSkipException("no worker is asleep")
        return slept_again

    check_builders()
    sample_dashboard()
    record_doctor_reports()
    keep_workers_asleep()


builder_health()
