"""rebuild_history: bring a target's history into its build queue, one month of PyPI uploads per run.

    admit_history  (index host: the releases first uploaded in the run's month, for the target)

A target's queue starts with the releases uploaded after it was enabled; older releases enter it only
through this DAG, interval by interval, so the operator chooses how far back to go and fresh releases
never wait behind years of history (build_wheels claims fresh work first, backfilled history in the
capacity left). Each run admits, for the target named in its params (default: every enabled target),
the releases first uploaded in its data interval that the target has not built yet; re-running an
interval admits nothing twice. The run's return value (in the grid) counts, per target, the releases
of the interval, those built already and those admitted now.

A new target (a new Debian release, a new Python) is brought up to date with a backfill, newest
months first:

    airflow backfill create --dag-id rebuild_history --from-date 2015-01-01 --to-date 2026-12-01 \\
        --dag-run-conf '{"target": "cp313-aarch64"}' --run-backwards

The schedule itself (monthly, catchup off) only admits last month, which matters for a target enabled
during that month. All the logic is in ``wheelwright``; this file only wires it.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from wheelwright.operate import dag_tasks
from wheelwright.operate.dag_tasks import INDEX_HOST_QUEUE, NOTICES, RUN_TYPES



@dag(
    dag_id="rebuild_history",
    allowed_run_types=RUN_TYPES,   # never started from a task's token
    # Real data intervals (a month of uploads each); a plain cron would give zero-length ones.
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=pendulum.datetime(2005, 1, 1, tz="UTC"),   # PyPI's oldest uploads
    catchup=False,
    max_active_runs=4,
    dagrun_timeout=timedelta(hours=1),
    params={"target": Param(None, type=["null", "string"],
                            description="the target whose history to admit; none: every enabled target")},
    default_args={"queue": INDEX_HOST_QUEUE, "retries": 3, "retry_delay": timedelta(minutes=1)},
    tags=["wheelwright", "builds"],
    doc_md=__doc__,
    **NOTICES,   # a DAG that keeps failing tells the operator (operate/notices.py)
)
def rebuild_history():
    @task
    def admit_history(*, params=None, data_interval_start=None, data_interval_end=None) -> list[dict]:
        """Admit the interval's releases to the target's queue; per target: how many, how many new."""
        return dag_tasks.admit_history(params.get("target"), data_interval_start, data_interval_end)

    admit_history()


rebuild_history()
