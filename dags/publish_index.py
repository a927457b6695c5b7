"""publish_index: bring the static index in line with the catalog whenever the catalog or builds change.

    (Asset catalog | Asset builds) ─▶ publish ─▶ (Asset index: the packages whose files changed)

Either Asset triggers a run; runs never overlap (max_active_runs=1), and events that arrive during a
run queue the next one. The Asset events' extras only say what is likely to have changed: the
catalog's high-water mark (consumer_marks 'publish_index') is what decides, so a failed or skipped
run loses nothing, and the next run rewrites exactly the packages changed since the last success.
The task runs on the index host (queue ``default``), where the catalog and the published tree live.
After publishing it purges the CDN ($WHEELWRIGHT_CDN, in the index host's environment): the
surrogate keys of exactly what changed, recorded in the catalog with the publisher's mark, so a purge
that fails is retried by the next run and never fails the publish. Its outlet event names the changed
packages and the keys purged.

All the logic is in ``wheelwright.publish.writer`` and ``wheelwright.publish.cdn``; this file only
wires it.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from wheelwright.operate.assets import BUILDS, CATALOG, INDEX
from wheelwright.operate.dag_tasks import INDEX_HOST_QUEUE, NOTICES, RUN_TYPES

CHANGED_IN_EVENT = 1000   # packages named in the outlet event (the purge itself is never truncated)


@dag(
    dag_id="publish_index",
    allowed_run_types=RUN_TYPES,   # never started from a task's token
    schedule=(CATALOG | BUILDS),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    default_args={"queue": INDEX_HOST_QUEUE, "retries": 3, "retry_delay": timedelta(seconds=30),
                  "retry_exponential_backoff": True, "max_retry_delay": timedelta(minutes=5)},
    tags=["wheelwright", "index"],
    doc_md=__doc__,
    **NOTICES,   # a DAG that keeps failing tells the operator (operate/notices.py)
)
def publish_index():
    @task(outlets=[INDEX])
    def publish(*, outlet_events=None) -> dict:
        """Rewrite the pages of every package changed since the last publish (and the root if needed),
        then purge exactly those at the CDN."""
        from airflow.sdk.exceptions import AirflowSkipException

        from wheelwright.catalog import db
        from wheelwright.operate.dag_tasks import task_settings
        from wheelwright.publish import cdn

        settings = task_settings()
        purger = cdn.purger_from_env()
        with db.connect(settings) as conn:
            db.require_schema(conn)
            result, delivery = cdn.publish_and_purge(conn, settings, purger)
        summary = {"packages": result.packages, "changed": len(result.changed),
                   "removed": result.removed, "root_written": result.root_written,
                   "files_written": result.files_written, "mark": result.mark_to,
                   "seconds": round(result.seconds, 3)}
        if delivery is not None:
            summary["purged"] = len(delivery.purged)
            summary["purges_owed"] = len(delivery.failed)
        if not result.changed and not result.root_written and not (delivery and delivery.purged):
            raise AirflowSkipException(f"nothing to publish: {summary}")
        outlet_events[INDEX].extra = {
            **summary,
            "packages_changed": result.changed[:CHANGED_IN_EVENT],
            "keys_purged": (delivery.purged if delivery else [])[:CHANGED_IN_EVENT],
        }
        return summary

    publish()


publish_index()
