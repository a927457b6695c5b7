"""The seam between Airflow and the package: what each DAG task does, in Airflow's terms.

DAG files only wire; every task calls one function here. This room owns the few lines that join
package calls into one task, and the index host's SSH session. It imports Airflow only inside its
functions, so importing it costs nothing when a DAG file is parsed; nothing else in the package
reads Airflow.

A task's settings are its own process's environment (:meth:`Settings.from_env`: ``WHEELWRIGHT_DSN``,
``WHEELWRIGHT_PYPI_URL``, ``WHEELWRIGHT_OUTPUT``, ``WHEELWRIGHT_INCOMING``, ...), never Airflow
Variables or Connections: in Airflow 3 any running task can write every Variable and read every
Connection through the execution API with its own token (``has_variable_access`` and
``has_connection_access`` allow everything), and builders run anybody's ``setup.py``. An index-host
task that believed a Variable would let an escaped build point sync and every build at another index,
or the sweep at the published tree; a catalog password in a Connection would be every builder's.
The one Connection tasks use is ``wheelwright_index_host`` (ssh, host key pinned), which each builder
defines in its own environment (``AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST``): its login is the builder's
SFTP account, and the builder uploads into that account's folder (``<remote incoming>/<login>/``).
"""

from __future__ import annotations

import logging
import posixpath
import threading
from datetime import datetime, timedelta

from wheelwright.config import Settings

log = logging.getLogger("wheelwright.dag_tasks")

INDEX_HOST_QUEUE = "default"                              # the index host's own Celery queue
INDEX_HOST_CONN_ID = "wheelwright_index_host"            # ssh to the index host, host key pinned
# How a run of our DAGs may start: every way but from a task (``operator_triggered``), since any task's
# token may ask the execution API to trigger any DAG that allows it (a builder could start
# rebuild_history with a conf of its choosing, or keep every DAG busy).
RUN_TYPES = ("scheduled", "manual", "backfill", "asset_triggered", "asset_materialization")
# Names Airflow may still hold from earlier versions; nothing reads them (`wheelwright doctor` warns).
DB_CONN_ID = "wheelwright_db"
IGNORED_VARIABLES = ("wheelwright_pypi_url", "wheelwright_output", "wheelwright_incoming",
                     "wheelwright_remote_incoming", "wheelwright_access_logs")
NOTIFY_CONN_ID = "wheelwright_notify"                    # where notices go: SMTP, or an HTTP webhook


def build_pool(target_name: str) -> str:
    """The Airflow pool of a target's build tasks: one per target, so a slow target takes no other's slots."""
    return f"build_{target_name}"


# --- a task's settings ---------------------------------------------------------------------------------

def task_settings() -> Settings:
    """This worker's settings: its own environment, never anything a task can write (see above)."""
    return Settings.from_env()


def index_host_account() -> str:
    """This builder's SFTP account on the index host: the login of its ``wheelwright_index_host``
    Connection (its own environment's)."""
    from airflow.sdk import BaseHook
    return BaseHook.get_connection(INDEX_HOST_CONN_ID).login


def builder_ssh_client(conn_id: str):
    """An SSH client to a registered builder (builder_health) through its Connection ``conn_id``,
    host key pinned. A Connection that carries a private key or a password is refused: any task can
    read any Connection, so a secret in it would let every builder log in to every other builder; the
    key stays a file on the index host (the Connection's ``key_file``)."""
    from airflow.providers.ssh.hooks.ssh import SSHHook
    from airflow.sdk import BaseHook
    from wheelwright.errors import ConfigError
    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    if conn.password or extra.get("private_key") or extra.get("private_key_passphrase"):
        raise ConfigError(f"the Connection {conn_id} carries a secret (a password or private_key), which any "
                          "task can read: give key_file, a key file on the index host, instead")
    return SSHHook(ssh_conn_id=conn_id).get_conn()


def account_remote_folder(settings: Settings, account: str) -> str:
    """Where this builder uploads, as its SFTP session names it: its account's own folder."""
    return posixpath.join(settings.remote_incoming, account)


def catalog_connection(settings: Settings | None = None):
    """An autocommit connection: each ``conn.transaction()`` in the package is then a real transaction."""
    from wheelwright.catalog import db
    return db.connect(settings or task_settings(), autocommit=True)


# --- build_wheels ------------------------------------------------------------------------------------

# The grid names each mapped build and record by its batch's first release (``map_index_template``).
# Tasks in a mapped task group cannot template their own op_kwargs reliably, so each puts the name
# in its context.
RELEASE_MAP_INDEX = "{{ release }}"


def name_map_index(batch: list[dict]) -> None:
    from airflow.sdk import get_current_context
    from wheelwright.builds.batches import label
    get_current_context()["release"] = label(batch)


def mirror_targets() -> None:
    """Make the catalog's targets table say what targets.toml says (retired targets stay)."""
    from wheelwright.builds import targets
    with catalog_connection() as conn:
        targets.mirror_targets(conn, targets.load_targets())


def expire_lost_builds(lost_after: timedelta) -> int:
    """Builds silent for ``lost_after`` go back to the queue; finished backfill rows are pruned."""
    from wheelwright.builds import queue
    with catalog_connection() as conn:
        lost = queue.expire_lost(conn, lost_after)
        pruned = queue.prune_history(conn)
    if pruned:
        log.info("%d backfilled releases are finished and left the backfill table", pruned)
    return len(lost)


def sweep_incoming() -> dict:
    """Record results whose record step never ran; remove folders of builds no longer in flight."""
    from wheelwright.builds import incoming
    settings = task_settings()
    with catalog_connection(settings) as conn:
        result = incoming.sweep(conn, settings.incoming, settings.output, may_answer=settings.may_answer)
    return {**result.summary(), "packages": result.changed}


def claim(target_name: str, limit: int, seconds: float) -> tuple[list[list[dict]], bool]:
    """The head of the target's queue (fresh work, then backfilled history), up to ``limit`` builds
    and ``seconds`` of expected work, as batches of small build requests (one per mapped task); and
    whether more builds wait (see :mod:`wheelwright.builds.batches`)."""
    from wheelwright.builds import batches
    with catalog_connection() as conn:
        return batches.claim_batches(conn, target_name, limit, seconds)


class _IndexHostSession:
    """One SFTP session to the index host for a whole batch, opened when first needed and opened
    again if it died during a long build. The hook's connection pins the index host's key: an unknown
    key is refused, never accepted."""

    def __init__(self):
        self._client = self._sftp = None

    def sftp(self):
        transport = self._client.get_transport() if self._client is not None else None
        if transport is None or not transport.is_active():
            from airflow.providers.ssh.hooks.ssh import SSHHook
            self.close()
            self._client = SSHHook(ssh_conn_id=INDEX_HOST_CONN_ID).get_conn()
            self._sftp = self._client.open_sftp()
        return self._sftp

    def close(self) -> None:
        for part in (self._sftp, self._client):
            if part is not None:
                part.close()
        self._client = self._sftp = None


class _BatchWatch:
    """Once a batch has run for ``HAND_BACK_AFTER`` since its first build started, hands the builds it
    has not started back to the index host, from a thread (the build under way may run for hours), so
    they wait for no slow build (see :mod:`wheelwright.builds.batches`). A hand-back that cannot be
    sent costs only time: the record step marks what never arrived lost, which re-queues it too."""

    def __init__(self, batch: list[dict], remote: str):
        self._lock = threading.Lock()
        self._waiting = [r["build_id"] for r in batch]   # not started yet
        self._handed_back: set[int] = set()
        self._remote = remote
        self._timer = None

    def start(self, request: dict) -> bool:
        """Whether ``request`` may be built now (False: it was handed back)."""
        with self._lock:
            if request["build_id"] in self._handed_back:
                return False
            self._waiting.remove(request["build_id"])
            if self._timer is None and self._waiting:
                from wheelwright.builds.batches import HAND_BACK_AFTER
                self._timer = threading.Timer(HAND_BACK_AFTER, self._hand_back)
                self._timer.daemon = True
                self._timer.start()
            return True

    def _hand_back(self) -> None:
        from wheelwright.builds import incoming
        with self._lock:
            rest, self._waiting = self._waiting, []
            self._handed_back.update(rest)
        if not rest:
            return
        log.warning("the batch has run for over %d s: handing back %d builds not started (%s)",
                    self._timer.interval, len(rest), ", ".join(map(str, rest)))
        session = _IndexHostSession()
        try:
            for build_id in rest:
                incoming.send_hand_back(session.sftp(), self._remote, build_id)
        except Exception as exc:  # noqa: BLE001 (a thread: the record step re-queues them anyway)
            log.warning("handing back builds failed (%s); the record step will re-queue them", exc)
        finally:
            session.close()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def build_and_send(batch: list[dict], timeout: timedelta, *, retrying: bool = False) -> list[dict]:
    """Build each request of ``batch`` on this worker in turn, and send each one's files and then its
    outcome to the index host's incoming folder as soon as it is built.

    ``retrying`` (an earlier try of the task failed): builds whose outcome arrived then are not built
    again. A batch running long hands back the builds it has not started (:class:`_BatchWatch`).
    Returns a small summary per build for XCom: the record step reads what the index host received.
    """
    from wheelwright.builds import builder, incoming, transfer
    from wheelwright.config import simple_index_url

    settings = task_settings()
    remote = account_remote_folder(settings, index_host_account())
    session = _IndexHostSession()
    watch = _BatchWatch(batch, remote)
    summaries = []
    try:
        for request in batch:
            if not watch.start(request):
                summaries.append({"build_id": request["build_id"], "status": "handed back"})
                continue
            if retrying and incoming.arrived(session.sftp(), remote, request["build_id"]):
                log.info("build %s of %s==%s arrived on an earlier try; not built again",
                         request["build_id"], request["package"], request["version"])
                summaries.append({"build_id": request["build_id"], "status": "sent earlier"})
                continue
            outcome = builder.build(request, index_url=simple_index_url(settings.pypi_url),
                                    workdir_root=settings.home / "builds", timeout=timeout.total_seconds())
            try:
                sent = transfer.send_outcome(session.sftp(), outcome, remote)
                incoming.send_manifest(session.sftp(), sent, remote)
            finally:
                outcome.cleanup()
            summaries.append({"build_id": sent["build_id"], "status": sent["status"],
                              "reason": sent["reason"], "duration": sent["duration"],
                              "wheels": [w["filename"] for w in sent["wheels"]]})
    finally:
        watch.stop()
        session.close()
    return summaries


def record_build(batch: list[dict]) -> list[str]:
    """Record what arrived for each request of ``batch``; a build for which nothing did (its task gave
    up) is lost, and queued again. Each build is recorded in its own transaction.

    Returns the packages whose published files changed ([] if none).
    """
    from wheelwright.builds import incoming, queue, transfer
    from wheelwright.operate import notices
    settings = task_settings()
    changed: set[str] = set()
    with catalog_connection(settings) as conn:
        for request in batch:
            try:
                arrived = incoming.record_arrival(conn, request, settings.incoming, settings.output,
                                                  may_answer=settings.may_answer)
            except transfer.TransferError as exc:  # marked lost already: it re-queues
                log.warning("build %s of %s==%s not recorded: %s", request["build_id"],
                            request["package"], request["version"], exc)
                continue
            if arrived is not None:
                changed.update(arrived)
            elif queue.mark_lost(conn, request["build_id"], "no result arrived: its build task failed "
                                                            "on every try"):
                log.warning("build %s of %s==%s is lost: its task failed; it will be built again",
                            request["build_id"], request["package"], request["version"])
            else:
                log.info("build %s was already recorded or given up", request["build_id"])
        # a target whose every build fails (a broken image, a worker unfit) is the operator's to hear of
        notices.builds_recorded(conn, [r["build_id"] for r in batch], send=send_notice)
    return sorted(changed)


# --- builder_health ----------------------------------------------------------------------------------

def record_doctor_reports() -> dict:
    """Record the doctor reports builders' workers sent when they started (they land in the incoming
    folder: :mod:`wheelwright.operate.doctor_reports`), for the dashboard."""
    from wheelwright.operate import doctor_reports
    settings = task_settings()
    with catalog_connection(settings) as conn:
        return doctor_reports.record(conn, settings.incoming).summary()


def keep_workers_asleep() -> list[str] | None:
    """Put back to sleep the workers an operator put to sleep that consume their queues again (they
    restarted); None when no worker is asleep."""
    from wheelwright.operate import builder_control
    settings = task_settings()
    with catalog_connection(settings) as conn:
        if conn.execute("SELECT 1 FROM builder_sleeps LIMIT 1").fetchone() is None:
            return None
        return builder_control.reconcile(builder_control.control_app(settings), conn)


# --- notices: DAG callbacks and the channel ------------------------------------------------------------

def notifier():
    """How notices reach the operator: the Connection ``wheelwright_notify``, an SMTP server (Airflow's
    SMTP hook; extra ``to``, ``from_email``, ``disable_ssl``/``disable_tls`` as the hook reads them) or
    an HTTP(S) webhook (its URL: extra ``url``, else ``http(s)://host:port/schema``; the password, if
    any, as a bearer token). None when the Connection is not defined: notices are only logged."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException, AirflowRuntimeError

    from wheelwright.operate import notices
    try:
        conn = BaseHook.get_connection(NOTIFY_CONN_ID)
    except (AirflowNotFoundException, AirflowRuntimeError):
        return None
    extra = conn.extra_dejson or {}
    if conn.conn_type in ("smtp", "email"):
        recipients = extra.get("to")
        if not recipients:
            log.warning("the Connection %s names no recipients (extra \"to\"): notices are only logged",
                        NOTIFY_CONN_ID)
            return None

        def mail(notice) -> None:
            from airflow.providers.smtp.hooks.smtp import SmtpHook
            with SmtpHook(smtp_conn_id=NOTIFY_CONN_ID) as hook:
                hook.send_email_smtp(to=recipients, subject=notice.title, html_content=notices.mail_body(notice))
        return mail
    url = extra.get("url")
    if not url:
        scheme = "https" if conn.conn_type == "https" else "http"
        url = f"{scheme}://{conn.host}{':' + str(conn.port) if conn.port else ''}/{(conn.schema or '').lstrip('/')}"
    return lambda notice: notices.post_webhook(url, notice, token=conn.password or None)


def send_notice(notice) -> None:
    """Deliver ``notice`` through ``wheelwright_notify`` (looked up only when there is one to send);
    without the Connection it was logged, and that is all."""
    channel = notifier()
    if channel is not None:
        channel(notice)


def _run_finished(context, failed: bool) -> None:
    from wheelwright.operate import notices
    dag_id = context["dag"].dag_id
    try:
        with catalog_connection() as conn:
            notices.run_finished(conn, dag_id, context.get("run_id") or "?", failed=failed,
                                 reason=str(context.get("reason") or "failed"), send=send_notice)
    except Exception:  # noqa: BLE001 - a callback must never take the DAG processor down
        log.exception("counting the run of %s for notices failed", dag_id)


def dag_run_failed(context) -> None:
    """``on_failure_callback`` of every DAG: one more failed run; the operator hears of a streak."""
    _run_finished(context, True)


def dag_run_succeeded(context) -> None:
    """``on_success_callback`` of every DAG: the streak is over (the operator hears it recovered)."""
    _run_finished(context, False)


NOTICES = {"on_failure_callback": dag_run_failed, "on_success_callback": dag_run_succeeded}


# --- rebuild_history ---------------------------------------------------------------------------------

def admit_history(target_name: str | None, start: datetime, end: datetime) -> list[dict]:
    """Admit the releases first uploaded in ``[start, end)`` to the queue of ``target_name`` (every
    enabled target when None) that lacks them: one summary per target, for the grid."""
    from wheelwright.builds import queue, targets
    with catalog_connection() as conn:
        targets.mirror_targets(conn, targets.load_targets())
        enabled = [t.name for t in targets.enabled_targets()]
        if target_name is not None and target_name not in enabled:
            from wheelwright.errors import ConfigError
            raise ConfigError(f"no enabled target named {target_name!r} (enabled: {', '.join(enabled)})")
        names = [target_name] if target_name is not None else enabled
        return [queue.admit_history(conn, name, start, end).summary() for name in names]
