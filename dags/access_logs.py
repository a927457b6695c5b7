"""access_logs: every 10 minutes, count downloads and searches from the web servers' access logs.

    ingest (each log named in $WHEELWRIGHT_ACCESS_LOGS) ─┬▶ write_stats (www/stats/)
                                                          └▶ refresh_figures ─(catalog)▶ publish

``WHEELWRIGHT_ACCESS_LOGS``, in the index host's environment, maps a source name to its log file, e.g.
``{"origin": "/var/log/nginx/wheelwright.access.log", "edge": "/var/log/varnish/varnishncsa.log"}``
(without it, nothing is read). Not a Variable: any task can write those, and the index host would read
whatever file it named. Reading is incremental and survives rotation; runs never overlap. The
task runs on the index host (queue ``default``), where the logs and the published tree are.

Once a day (its first run of the day) ``refresh_figures`` brings the download figures of the
project pages and ``packages.json`` to the end of yesterday and announces the catalog Asset, so
``publish_index`` rewrites the pages whose figures moved; on other runs it is skipped.

All the logic is in ``wheelwright.operate.access_logs`` and ``wheelwright.publish.stats``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from wheelwright.operate.assets import CATALOG
from wheelwright.operate.dag_tasks import INDEX_HOST_QUEUE, NOTICES, RUN_TYPES



@dag(
    dag_id="access_logs",
    allowed_run_types=RUN_TYPES,   # never started from a task's token
    schedule="*/10 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=1),
    default_args={"queue": INDEX_HOST_QUEUE, "retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["wheelwright", "stats"],
    doc_md=__doc__,
    **NOTICES,   # a DAG that keeps failing tells the operator (operate/notices.py)
)
def access_logs():
    @task
    def ingest() -> dict:
        """Count the lines each log gained since the last run."""
        from wheelwright.catalog import db
        from wheelwright.operate import access_logs as logs
        from wheelwright.operate.dag_tasks import task_settings

        sources = logs.sources_from_env()
        settings = task_settings()
        done = {}
        with db.connect(settings) as conn:
            db.require_schema(conn)
            for source, path in sorted(sources.items()):
                r = logs.ingest(conn, source, path)
                done[source] = {"lines": r.lines, "downloads": r.downloads, "searches": r.searches,
                                "refused": r.refused, "rotated": r.rotated}
        return done

    @task
    def write_stats(counted: dict) -> dict:
        """Rewrite the public stats page and JSON from the counts."""
        from wheelwright.catalog import db
        from wheelwright.operate.dag_tasks import task_settings
        from wheelwright.publish.stats import write_stats as write

        settings = task_settings()
        with db.connect(settings) as conn:
            stats = write(conn, settings.output)
        return {"total": stats["total"], "packages": len(stats["top_packages"])}

    @task(outlets=[CATALOG])
    def refresh_figures(counted: dict) -> dict:
        """Once a day: the download figures the project pages show, to the end of yesterday."""
        from airflow.sdk.exceptions import AirflowSkipException

        from wheelwright.catalog import db
        from wheelwright.operate.access_logs import refresh_download_counts
        from wheelwright.operate.dag_tasks import task_settings

        with db.connect(task_settings()) as conn:
            done = refresh_download_counts(conn)
        if done.through is None or not done.packages:
            raise AirflowSkipException("the download figures are up to date")
        return {"through": done.through.isoformat(), "releases": done.rows, "packages": done.packages}

    counted = ingest()
    write_stats(counted)
    refresh_figures(counted)


access_logs()
