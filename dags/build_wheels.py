"""build_wheels: every buildable release, built for every enabled target, on that target's workers.

    mirror_targets ─▶ expire_lost_builds ─┬─▶ claim_<t> ─▶ build_<t> × wave ─▶ record_<t> ─┬─▶ announce
                                          │     (index)      (queue <t>)         (index)     │   (Asset builds)
                                          └─▶ ... one such chain per enabled target ... ─────┘
Triggered by the catalog Asset (pypi_sync saw changes) or, as a safety net, every ten minutes.

- Targets come from targets.toml when the file is parsed (no database then). Airflow cannot map a
  task's queue, pool or task_id, so each enabled target gets its own mapped task: task_id
  ``build_<target>``, Celery queue ``<target.queue>`` (the workers of that ABI serve it), pool
  ``build_<target>`` so a slow target never takes another's slots. Pools must exist:
  ``airflow pools set build_<target> <number of its workers> "builds for <target>"``.
- A wave is at most ``WAVE_SIZE`` builds per target and run (well under ``max_map_length``);
  ``max_active_runs=1`` and the claim lock mean no release is claimed twice.
- A build that fails is an outcome, recorded like a success; the build task retries only for
  infrastructure faults (the index host unreachable, SFTP broken, a worker unfit to build).
- Index-host tasks (claim, record, announce) run on the ``default`` queue, served on the index host,
  where the catalog database and the published tree are.

All the logic is in ``wheelwright``; this file only wires it.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import (Asset, AssetOrTimeSchedule, CronTriggerTimetable, ExceptionRetryPolicy,
                         RetryAction, RetryRule, dag, task)

from wheelwright.builds.targets import enabled_targets

CATALOG = Asset("wheelwright://catalog")
BUILDS = Asset("wheelwright://builds")

INDEX_HOST_QUEUE = "default"
INDEX_HOST_CONN_ID = "wheelwright_index_host"   # ssh connection to the index host, host key pinned
INCOMING_VARIABLE = "wheelwright_incoming"      # index host folder that receives builds over SFTP
REMOTE_INCOMING_VARIABLE = "wheelwright_remote_incoming"  # the same folder as SFTP sees it (chroot)
WAVE_SIZE = 64                                  # builds per target and run; max_map_length is 1024
BUILD_TIMEOUT = timedelta(hours=3)              # the builder's own wall clock for pip wheel
LOST_AFTER = BUILD_TIMEOUT + timedelta(hours=1)  # a build silent this long lost its worker

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


def build_pool(target) -> str:
    return f"build_{target.name}"


@dag(
    dag_id="build_wheels",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("*/10 * * * *", timezone="UTC"),
                                 assets=[CATALOG]),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=BUILD_TIMEOUT + timedelta(hours=2),
    default_args={"queue": INDEX_HOST_QUEUE, "retries": 2, "retry_delay": timedelta(minutes=1),
                  "retry_policy": INFRASTRUCTURE_FAULTS},
    tags=["wheelwright", "builds"],
    doc_md=__doc__,
)
def build_wheels():
    @task
    def mirror_targets() -> None:
        """Make the catalog's targets table say what targets.toml says (retired targets stay)."""
        from wheelwright.builds import targets
        with catalog_connection() as conn:
            targets.mirror_targets(conn, targets.load_targets())

    @task
    def expire_lost_builds() -> int:
        """Builds whose worker never answered go back to the queue instead of waiting forever."""
        from wheelwright.builds import queue as build_queue
        with catalog_connection() as conn:
            return len(build_queue.expire_lost(conn, LOST_AFTER))

    @task
    def claim(target_name: str, limit: int) -> list[dict]:
        """The head of the target's queue, as small build requests (one per mapped build)."""
        from wheelwright.builds import queue as build_queue
        with catalog_connection() as conn:
            return [dict(r) for r in build_queue.claim_wave(conn, target_name, limit)]

    @task(map_index_template="{{ task.op_kwargs['request']['package'] }}=="
                             "{{ task.op_kwargs['request']['version'] }}",
          execution_timeout=BUILD_TIMEOUT + timedelta(minutes=30),
          **INFRASTRUCTURE_RETRIES)
    def build(request: dict) -> dict:
        """pip wheel in the sandbox, then the files over SFTP to the index host's incoming folder."""
        return build_and_send(request)

    @task(trigger_rule="all_done")
    def record(wave, outcomes) -> list[str]:
        """Check what arrived, record each build in its own transaction; the packages changed."""
        return record_wave(wave or [], [o for o in (outcomes or []) if o])

    @task(trigger_rule="all_done", outlets=[BUILDS])
    def announce(changed_per_target, *, outlet_events=None) -> list[str]:
        """One Asset event listing the packages whose published files changed; none if none did."""
        from airflow.sdk.exceptions import AirflowSkipException
        changed = sorted({p for packages in changed_per_target if packages for p in packages})
        if not changed:
            raise AirflowSkipException("no published file changed")
        outlet_events[BUILDS].extra = {"packages": changed}
        return changed

    ready = mirror_targets() >> expire_lost_builds()
    recorded = []
    for target in enabled_targets():
        wave = claim.override(task_id=f"claim_{target.name}")(target.name, WAVE_SIZE)
        ready >> wave
        built = build.override(task_id=f"build_{target.name}", queue=target.queue,
                               pool=build_pool(target)).expand(request=wave)
        recorded.append(record.override(task_id=f"record_{target.name}")(wave, built))
    announce(recorded)


build_wheels()


# --- adapters: where Airflow's connections and variables meet the package's plain arguments ----------
# (run only inside tasks; nothing here executes when the file is parsed)

def incoming_dir(s) -> str:
    """The index host's incoming folder on its own disk."""
    from airflow.sdk import Variable
    return Variable.get(INCOMING_VARIABLE, default=str(s.home / "incoming"))


def remote_incoming_dir(s) -> str:
    """The same folder as the workers' SFTP sessions name it (differs when SFTP is chrooted)."""
    from airflow.sdk import Variable
    return Variable.get(REMOTE_INCOMING_VARIABLE, default=None) or incoming_dir(s)


def catalog_connection():
    """An autocommit connection: each ``conn.transaction()`` in the package is then a real transaction."""
    from wheelwright.catalog import db
    from wheelwright.operate.dag_tasks import settings_from_airflow
    return db.connect(settings_from_airflow(), autocommit=True)


def build_and_send(request: dict) -> dict:
    """Build on this worker, send the files to the index host, and return the outcome for XCom."""
    from airflow.providers.ssh.hooks.ssh import SSHHook
    from wheelwright.builds import builder
    from wheelwright.builds import transfer
    from wheelwright.config import simple_index_url
    from wheelwright.operate.dag_tasks import settings_from_airflow

    s = settings_from_airflow()
    outcome = builder.build(request, index_url=simple_index_url(s.pypi_url),
                            workdir_root=s.home / "builds", timeout=BUILD_TIMEOUT.total_seconds())
    try:
        # The hook's connection pins the index host's key; an unknown key is refused, never accepted.
        with SSHHook(ssh_conn_id=INDEX_HOST_CONN_ID).get_conn() as client, client.open_sftp() as sftp:
            return transfer.send_outcome(sftp, outcome, remote_incoming_dir(s))
    finally:
        outcome.cleanup()


def record_wave(wave: list[dict], outcomes: list[dict]) -> list[str]:
    """Record every outcome that came back; a build whose task gave up is marked lost (re-queued)."""
    import logging
    from wheelwright.builds import queue as build_queue
    from wheelwright.builds import intake as record
    from wheelwright.operate.dag_tasks import settings_from_airflow

    log = logging.getLogger("wheelwright.build_wheels")
    s = settings_from_airflow()
    incoming = incoming_dir(s)
    requests = {r["build_id"]: r for r in wave}
    answered = set()
    changed: set[str] = set()
    with catalog_connection() as conn:
        for outcome in outcomes:
            # The index host's own request is what receive checks the outcome against.
            request = requests.get(outcome.get("build_id")) if isinstance(outcome, dict) else None
            if request is None or request["build_id"] in answered:
                log.warning("an outcome that answers no build of this wave was ignored: %.200r", outcome)
                continue
            answered.add(request["build_id"])
            changed.update(record.receive(conn, request, outcome, incoming, s.output))
        for request in wave:
            if request["build_id"] not in answered and build_queue.mark_lost(
                    conn, request["build_id"], "its build task failed on every try"):
                log.warning("build %s of %s==%s is lost: its task failed; it will be built again",
                            request["build_id"], request["package"], request["version"])
    return sorted(changed)
