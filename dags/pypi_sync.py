"""pypi_sync: every minute, follow PyPI's changelog into the catalog, then read the JSON API.

When a sync changes packages, the catalog Asset gets an event (extra: serial range, events, changed
packages) that build_wheels and publish_index are scheduled on; so does an enrichment that brought
new summaries, hashes or yank reasons. A step that changed nothing is skipped, so downstream DAGs are
not woken for nothing.
"""

from datetime import datetime, timedelta

from airflow.sdk import dag, task

from wheelwright.operate.assets import CATALOG
from wheelwright.operate.dag_tasks import NOTICES, RUN_TYPES


@dag(
    allowed_run_types=RUN_TYPES,   # never started from a task's token
    schedule="* * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=6),
    default_args={
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    },
    tags=["wheelwright"],
    doc_md=__doc__,
    **NOTICES,   # a DAG that keeps failing tells the operator (operate/notices.py)
)
def pypi_sync():
    @task(outlets=[CATALOG])
    def sync_changelog(*, outlet_events=None):
        from airflow.exceptions import AirflowSkipException

        from wheelwright.catalog import db
        from wheelwright.operate.dag_tasks import task_settings
        from wheelwright.pypi.client import PyPI
        from wheelwright.catalog.sync import sync_once

        settings = task_settings()
        with PyPI(settings.pypi_url) as pypi, db.connect(settings) as conn:
            db.require_schema(conn)
            result = sync_once(conn, pypi, spill_dir=settings.replay_dir)
        if not result.changed:
            raise AirflowSkipException(f"caught up at serial {result.last_serial}; nothing changed")
        outlet_events[CATALOG].extra = result.summary()
        return result.summary()

    @task(outlets=[CATALOG], trigger_rule="none_failed")
    def enrich_changed(*, outlet_events=None):
        from airflow.exceptions import AirflowSkipException

        from wheelwright.catalog import db
        from wheelwright.operate.dag_tasks import task_settings
        from wheelwright.catalog.enrich import enrich
        from wheelwright.pypi.client import PyPI

        settings = task_settings()
        with db.connect(settings) as conn:
            result = enrich(conn, lambda: PyPI(settings.pypi_url), limit=500)
        summary = {"enriched": len(result.enriched), "missing": len(result.missing),
                   "failed": len(result.failed)}
        if not result.enriched:
            raise AirflowSkipException(f"nothing new from the JSON API: {summary}")
        outlet_events[CATALOG].extra = summary
        return summary

    sync_changelog() >> enrich_changed()


pypi_sync()
