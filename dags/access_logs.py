"""access_logs: every 10 minutes, count downloads and searches from the web servers' access logs.

    ingest (each log named in the Variable wheelwright_access_logs) ─▶ write_stats (www/stats/)

The Variable ``wheelwright_access_logs`` maps a source name to its log file, e.g.
``{"origin": "/var/log/nginx/wheelwright.access.log", "edge": "/var/log/varnish/varnishncsa.log"}``
(without it, nothing is read). Reading is incremental and survives rotation; runs never overlap. The
task runs on the index host (queue ``default``), where the logs and the published tree are.

All the logic is in ``wheelwright.operate.access_logs`` and ``wheelwright.publish.stats``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from wheelwright.operate.dag_tasks import INDEX_HOST_QUEUE, NOTICES



@dag(
    dag_id="access_logs",
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
        import json
        from pathlib import Path

        from airflow.sdk import Variable

        from wheelwright.catalog import db
        from wheelwright.operate import access_logs as logs
        from wheelwright.operate.dag_tasks import settings_from_airflow

        sources = json.loads(Variable.get("wheelwright_access_logs", default="{}") or "{}")
        settings = settings_from_airflow()
        done = {}
        with db.connect(settings) as conn:
            db.require_schema(conn)
            for source, path in sorted(sources.items()):
                r = logs.ingest(conn, source, Path(path))
                done[source] = {"lines": r.lines, "downloads": r.downloads, "searches": r.searches,
                                "refused": r.refused, "rotated": r.rotated}
        return done

    @task
    def write_stats(counted: dict) -> dict:
        """Rewrite the public stats page and JSON from the counts."""
        from wheelwright.catalog import db
        from wheelwright.operate.dag_tasks import settings_from_airflow
        from wheelwright.publish.stats import write_stats as write

        settings = settings_from_airflow()
        with db.connect(settings) as conn:
            stats = write(conn, settings.output)
        return {"total": stats["total"], "packages": len(stats["top_packages"])}

    write_stats(ingest())


access_logs()
