"""build_wheels: every buildable release, built for every enabled target, on that target's workers.

    mirror_targets ─▶ expire_lost_builds ─┬─▶ sweep_incoming                     (Asset builds)
                                          ├─▶ claim_<t> ─▶ wave_<t>: build ─▶ record   × each batch
                                          │     (index) │         (queue <t>)   (index, Asset builds)
                                          │             └─▶ more_waiting   (Asset build backlog, if any)
                                          └─▶ ... one such chain per enabled target ...
Triggered by the catalog Asset (pypi_sync saw changes), by its own backlog Asset (the last run left
builds waiting) or, as a safety net, every ten minutes.

- Targets come from targets.toml when the file is parsed (no database then). Airflow cannot map a
  task's queue, pool or task_id, so each enabled target gets its own mapped task group ``wave_<t>``
  over the batches its claim handed out: ``build`` on Celery queue ``<target.queue>`` (the workers of
  that ABI serve it) in pool ``build_<target>`` (a slow target never takes another's slots), then
  ``record`` of that batch on the index host. Pools must exist:
  ``airflow pools set build_<target> <number of its workers> "builds for <target>"``.
- A batch is one build, or up to eight the catalog expects to be quick (``wheelwright.builds.batches``):
  a task costs Airflow about as much as pip takes for a small pure-Python sdist, so quick builds
  share one. Each build is sent to the index host as soon as it is built; a batch running long hands
  the builds it has not started back (the next sweep re-queues them).
- Builds never wait on each other: each batch is recorded as soon as it finishes (per map index), and
  announces the packages it changed (Asset builds), so a three-hour build, alone in its batch, holds
  only its own slot. Several runs may be active at once; the claim lock means no release is claimed
  twice.
- A run that reaches its timeout loses nothing: a build sends its outcome to the index host with its
  files, and the next run's ``sweep_incoming`` records what no record step took; it also removes the
  incoming folders of builds that were given up. A build whose task gave up is marked lost by its
  record step (it re-queues); one whose run was cut off is expired after ``LOST_AFTER``.
- A wave is at most ``WAVE_SIZE`` builds per target and run (well under ``max_map_length``) and
  ``WAVE_SECONDS`` of the work the catalog expects (the first build always): with ``MAX_ACTIVE_RUNS``
  runs, at most two hours of one slot's work wait in a target's pool, well inside ``LOST_AFTER``
  (a claimed build still waiting then would be given up and built twice). A run whose claim left
  builds waiting announces the backlog Asset, and the next run starts at once (Airflow holds it while
  ``MAX_ACTIVE_RUNS`` are active): a deep queue, a backfill's, keeps every worker busy. Fresh
  releases are claimed first, backfilled history (see rebuild_history) in the capacity left.
- A build that fails is an outcome, recorded like a success; the build task retries only for
  infrastructure faults (the index host unreachable, SFTP broken, a worker unfit to build), and a
  retry does not build again what an earlier try sent.
- Index-host tasks (claim, record, sweep) run on the ``default`` queue, served on the index host,
  where the catalog database and the published tree are.

All the logic is in ``wheelwright`` (each task is one call into ``wheelwright.operate.dag_tasks``);
this file only wires it.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pendulum
from airflow.sdk import (AssetOrTimeSchedule, CronTriggerTimetable, ExceptionRetryPolicy, RetryAction,
                         RetryRule, dag, task, task_group)

from wheelwright.builds.build_settings import MAX_TIMEOUT
from wheelwright.builds.targets import enabled_targets
from wheelwright.operate import dag_tasks
from wheelwright.operate.assets import BUILD_BACKLOG, BUILDS, CATALOG
from wheelwright.operate.dag_tasks import INDEX_HOST_QUEUE, NOTICES, RUN_TYPES, build_pool

WAVE_SIZE = 256                                 # builds per target and run; max_map_length is 1024
WAVE_SECONDS = 30 * 60                          # ... and seconds of expected work (of one worker slot)
MAX_ACTIVE_RUNS = 4                             # runs at once: a slow wave never blocks the next
BUILD_TIMEOUT = timedelta(hours=3)              # the builder's own wall clock for pip wheel
LOST_AFTER = BUILD_TIMEOUT + timedelta(hours=1)  # a build silent this long lost its worker
# A package's build settings may raise its timeout up to this (builds/build_settings.py): the task
# and the run allow for it; the builder enforces each build's own (and its loss comes an hour after).
LONGEST_BUILD = timedelta(seconds=MAX_TIMEOUT)

# Faults of the machinery, not of the release: retrying later (maybe on another worker) can cure them.
# Everything else fails the task at once: a failed build never raises, so an exception is a bug.
INFRASTRUCTURE_FAULTS = ExceptionRetryPolicy(
    rules=[RetryRule(
        exception=["wheelwright.builds.transfer.TransferError",     # SFTP to the index host failed
                   "wheelwright.errors.ConfigError",         # worker unfit: no interpreter, no build user
                   "wheelwright.errors.CatalogError",        # catalog database unreachable
                   "psycopg.OperationalError",               # ... or lost mid-statement
                   "paramiko.ssh_exception.SSHException",    # SSH handshake or channel broke
                   "builtins.OSError",                       # connection refused, reset, disk full
                   "builtins.EOFError"],                     # the server hung up mid-protocol
        action=RetryAction.RETRY,
        reason="infrastructure fault: retrying later")],
    default=RetryAction.FAIL)

INFRASTRUCTURE_RETRIES = {"retries": 3, "retry_delay": timedelta(minutes=5),
                          "retry_policy": INFRASTRUCTURE_FAULTS}


def wave_group(target) -> str:
    """The task group of a target's wave (group ids allow no dots; target names may have them)."""
    return "wave_" + re.sub(r"[^A-Za-z0-9_-]", "_", target.name)


@dag(
    dag_id="build_wheels",
    allowed_run_types=RUN_TYPES,   # never started from a task's token
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("*/10 * * * *", timezone="UTC"),
                                 assets=CATALOG | BUILD_BACKLOG),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=MAX_ACTIVE_RUNS,
    dagrun_timeout=LONGEST_BUILD + timedelta(hours=2),
    default_args={"queue": INDEX_HOST_QUEUE, "retries": 2, "retry_delay": timedelta(minutes=1),
                  "retry_policy": INFRASTRUCTURE_FAULTS},
    tags=["wheelwright", "builds"],
    doc_md=__doc__,
    **NOTICES,   # a DAG that keeps failing tells the operator (operate/notices.py)
)
def build_wheels():
    @task
    def mirror_targets() -> None:
        """Make the catalog's targets table say what targets.toml says (retired targets stay)."""
        dag_tasks.mirror_targets()

    @task
    def expire_lost_builds() -> int:
        """Builds whose worker never answered go back to the queue instead of waiting forever."""
        return dag_tasks.expire_lost_builds(LOST_AFTER)

    @task(outlets=[BUILDS])
    def sweep_incoming(*, outlet_events=None) -> dict:
        """Record results no record step took (a run timed out); re-queue builds handed back; remove
        folders of lost builds."""
        from airflow.sdk.exceptions import AirflowSkipException
        swept = dag_tasks.sweep_incoming()
        if not swept["recorded"]:
            raise AirflowSkipException(f"nothing left unrecorded: {swept}")
        outlet_events[BUILDS].extra = {"packages": swept["packages"]}
        return swept

    @task
    def claim(target_name: str, limit: int, seconds: float, *, ti=None) -> list[list[dict]]:
        """The head of the target's queue, as batches of small build requests (one per mapped task);
        whether builds were left waiting goes to XCom "more"."""
        batches, more = dag_tasks.claim(target_name, limit, seconds)
        ti.xcom_push(key="more", value=more)
        return batches

    @task(outlets=[BUILD_BACKLOG])
    def more_waiting(waiting: dict, *, outlet_events=None) -> list[str]:
        """A claim left builds waiting: the next run is asked for now, not at the next catalog change."""
        from airflow.sdk.exceptions import AirflowSkipException
        targets = sorted(name for name, more in waiting.items() if more)
        if not targets:
            raise AirflowSkipException("every target's queue was claimed to its end")
        outlet_events[BUILD_BACKLOG].extra = {"targets": targets}
        return targets

    @task(map_index_template=dag_tasks.RELEASE_MAP_INDEX,
          execution_timeout=LONGEST_BUILD + timedelta(minutes=30), **INFRASTRUCTURE_RETRIES)
    def build(batch: list[dict], *, ti=None) -> list[dict]:
        """pip wheel in the sandbox, then the files and the outcome over SFTP to the index host; for
        each build of the batch in turn."""
        dag_tasks.name_map_index(batch)
        return dag_tasks.build_and_send(batch, BUILD_TIMEOUT, retrying=ti.try_number > 1)

    @task(trigger_rule="all_done", outlets=[BUILDS], map_index_template=dag_tasks.RELEASE_MAP_INDEX)
    def record(batch: list[dict], *, outlet_events=None) -> list[str]:
        """Check what arrived, record each build in its own transaction (lost if nothing came);
        announce what changed."""
        dag_tasks.name_map_index(batch)
        changed = dag_tasks.record_build(batch)
        outlet_events[BUILDS].extra = {"packages": changed}
        return changed

    ready = mirror_targets() >> expire_lost_builds()
    ready >> sweep_incoming()
    def wave_of(target):
        @task_group(group_id=wave_group(target))
        def wave(batch: list[dict]):
            """A batch built on the target's workers, recorded on the index host as soon as it is done."""
            build.override(queue=target.queue, pool=build_pool(target.name))(batch) >> record(batch)
        return wave

    waiting = {}
    for target in enabled_targets():
        claimed = claim.override(task_id=f"claim_{target.name}")(target.name, WAVE_SIZE, WAVE_SECONDS)
        ready >> claimed
        wave_of(target).expand(batch=claimed)
        waiting[target.name] = claimed["more"]
    if waiting:
        more_waiting(waiting)


build_wheels()
