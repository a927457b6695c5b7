"""The seam between Airflow and the package: what each DAG task does, in Airflow's terms.

DAG files only wire; every task calls one function here. This room owns reading Airflow's
Connections and Variables into the package's plain arguments (:func:`settings_from_airflow`, the
incoming folders, the index host's SSH connection) and the few lines that join package calls into
one task. It imports Airflow only inside its functions, so importing it costs nothing when a DAG file
is parsed; nothing else in the package reads Airflow.

In Airflow, the catalog is the Connection ``wheelwright_db`` (postgres) when it is defined, and the
Variables ``wheelwright_pypi_url`` and ``wheelwright_output`` override the environment; without
them, tasks fall back to the same environment variables as the CLI (so the embedded catalog works out
of the box). The index host is the ssh Connection ``wheelwright_index_host`` (host key pinned); the
Variables ``wheelwright_incoming`` / ``wheelwright_remote_incoming`` name its incoming folder on its
own disk and as the workers' SFTP sessions see it (they differ when SFTP is chrooted).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path

from wheelwright.config import Settings

log = logging.getLogger("wheelwright.dag_tasks")

INDEX_HOST_QUEUE = "default"                              # the index host's own Celery queue
DB_CONN_ID = "wheelwright_db"
INDEX_HOST_CONN_ID = "wheelwright_index_host"            # ssh to the index host, host key pinned
PYPI_URL_VARIABLE = "wheelwright_pypi_url"
OUTPUT_VARIABLE = "wheelwright_output"
INCOMING_VARIABLE = "wheelwright_incoming"               # the index host's incoming folder
REMOTE_INCOMING_VARIABLE = "wheelwright_remote_incoming"  # the same folder as SFTP names it
NOTIFY_CONN_ID = "wheelwright_notify"                    # where notices go: SMTP, or an HTTP webhook


def build_pool(target_name: str) -> str:
    """The Airflow pool of a target's build tasks: one per target, so a slow target takes no other's slots."""
    return f"build_{target_name}"


# --- Airflow's settings as the package's arguments ---------------------------------------------------

def settings_from_airflow() -> Settings:
    from airflow.sdk import BaseHook, Variable
    from airflow.sdk.exceptions import AirflowNotFoundException, AirflowRuntimeError

    settings = Settings.from_env()
    try:
        conn = BaseHook.get_connection(DB_CONN_ID)
    except (AirflowNotFoundException, AirflowRuntimeError):
        conn = None  # not defined: the environment (or the embedded catalog) it is
    if conn is not None:
        from psycopg.conninfo import make_conninfo
        settings = settings.with_(dsn=make_conninfo(
            host=conn.host or "", port=conn.port or "", user=conn.login or "",
            password=conn.password or "", dbname=conn.schema or ""))
    pypi_url = Variable.get(PYPI_URL_VARIABLE, default=None)
    output = Variable.get(OUTPUT_VARIABLE, default=None)
    if pypi_url:
        settings = settings.with_(pypi_url=pypi_url)
    if output:
        settings = settings.with_(output=Path(output))
    settings.check()
    return settings


def incoming_dir(settings: Settings) -> str:
    """The index host's incoming folder on its own disk."""
    from airflow.sdk import Variable
    return Variable.get(INCOMING_VARIABLE, default=str(settings.home / "incoming"))


def remote_incoming_dir(settings: Settings) -> str:
    """The same folder as the workers' SFTP sessions name it (differs when SFTP is chrooted)."""
    from airflow.sdk import Variable
    return Variable.get(REMOTE_INCOMING_VARIABLE, default=None) or incoming_dir(settings)


def catalog_connection(settings: Settings | None = None):
    """An autocommit connection: each ``conn.transaction()`` in the package is then a real transaction."""
    from wheelwright.catalog import db
    return db.connect(settings or settings_from_airflow(), autocommit=True)


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
    settings = settings_from_airflow()
    with catalog_connection(settings) as conn:
        result = incoming.sweep(conn, incoming_dir(settings), settings.output)
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

    settings = settings_from_airflow()
    remote = remote_incoming_dir(settings)
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
    settings = settings_from_airflow()
    changed: set[str] = set()
    with catalog_connection(settings) as conn:
        for request in batch:
            try:
                arrived = incoming.record_arrival(conn, request, incoming_dir(settings), settings.output)
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

def keep_workers_asleep() -> list[str] | None:
    """Put back to sleep the workers an operator put to sleep that consume their queues again (they
    restarted); None when no worker is asleep."""
    from wheelwright.operate import builder_control
    settings = settings_from_airflow()
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
