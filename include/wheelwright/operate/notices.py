"""Telling the operator when something keeps failing: a DAG's runs, or a target's builds.

An index that falls silent is worse than one that fails loudly: piwheels' operators learnt of a dead
builder or a broken image from users. But a mail per failed build would be noise (a fifth of all
releases fail to build, for reasons of their own), so what is counted here is a *streak*: consecutive
failures of one subject, reset by the next success.

- ``dag:<dag_id>``: runs of a DAG (its Airflow callbacks, run by the DAG processor on the index host,
  call :func:`run_finished`); :data:`RUNS` failed runs in a row make a notice;
- ``target:<name>``: builds recorded for a target (the record step calls :func:`builds_recorded`); a
  final or transient failure counts, a success resets, a build the operator stopped counts for nothing;
  :data:`BUILDS` failures in a row (with a fifth of releases failing on their own, ten in a row is
  about one chance in ten million for a healthy target) make a notice.

One notice when a streak reaches its threshold, one more when the subject recovers, nothing in
between. Streaks live in the catalog (``notice_streaks``), advanced under a row lock, so concurrent
record steps count every build once. A notice is marked sent only once it was delivered: one that
could not be is tried again at the next failure.

Delivery is Airflow's business (:mod:`wheelwright.operate.dag_tasks` reads the Connection
``wheelwright_notify``: an SMTP server through Airflow's SMTP hook, or an HTTP webhook): this room
decides when and what to say, and posts to a webhook URL (:func:`post_webhook`, a JSON body whose
``text`` chat webhooks show as it is). Without a Connection a notice is only logged, and the dashboard
shows the failing streaks either way.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass

import psycopg

from wheelwright.config import USER_AGENT

log = logging.getLogger(__name__)

RUNS = 3          # failed runs of a DAG in a row before the operator is told
BUILDS = 10       # failed builds of a target in a row before the operator is told
MAX_DETAIL = 500


@dataclass(frozen=True)
class Notice:
    """What the operator is told."""

    subject: str                 # dag:<dag_id> or target:<name>
    failures: int                # the streak's length (for a recovery: how long it was)
    recovered: bool
    detail: str                  # the latest failure, in one line

    @property
    def kind(self) -> str:
        return self.subject.split(":", 1)[0]

    @property
    def name(self) -> str:
        return self.subject.split(":", 1)[1]

    @property
    def title(self) -> str:
        what = f"the DAG {self.name}" if self.kind == "dag" else f"the target {self.name}"
        if self.recovered:
            return f"wheelwright: {what} recovered after {self.failures} failures"
        unit = "runs" if self.kind == "dag" else "builds"
        return f"wheelwright: {what} keeps failing ({self.failures} {unit} in a row)"

    @property
    def text(self) -> str:
        if self.recovered:
            return f"{self.title}. It succeeded again; the last failure was: {self.detail}"
        advice = ("Its runs fail: see their task logs in the Airflow UI." if self.kind == "dag" else
                  "Every build fails: look at the target's image and workers (wheelwright doctor, the "
                  "dashboard's recent failures) before its queue fails for good.")
        return f"{self.title}. Latest: {self.detail}. {advice}"

    def as_dict(self) -> dict:
        return {**asdict(self), "kind": self.kind, "name": self.name, "title": self.title, "text": self.text,
                "source": "wheelwright"}


# --- pure: the streak -------------------------------------------------------------------------------

def advance(failures: int, notified: bool, failed: bool, threshold: int) -> tuple[int, bool, str | None]:
    """``(failures, notified, event)`` after one more outcome; ``event`` is ``"failing"`` (tell the
    operator), ``"recovered"`` (tell them it is over) or None."""
    if failed:
        failures += 1
        if failures >= threshold and not notified:
            return failures, True, "failing"
        return failures, notified, None
    return 0, False, ("recovered" if notified else None)


# --- the catalog ------------------------------------------------------------------------------------

def record(conn: psycopg.Connection, subject: str, *, failed: bool, detail: str = "",
           threshold: int) -> Notice | None:
    """Count one outcome of ``subject``; the notice it calls for, if any (sent by the caller, who then
    confirms with :func:`sent` or :func:`unsent`)."""
    detail = " ".join(str(detail).split())[:MAX_DETAIL]
    with conn.transaction():
        row = conn.execute("SELECT failures, notified, last_detail FROM notice_streaks WHERE subject = %s "
                           "FOR UPDATE", (subject,)).fetchone()
        if row is None and not failed:
            return None   # nothing was failing: no row needed
        failures, notified, last = row if row is not None else (0, False, None)
        new_failures, new_notified, event = advance(failures, notified, failed, threshold)
        conn.execute(
            "INSERT INTO notice_streaks (subject, failures, notified, last_detail, since) "
            "VALUES (%s, %s, %s, %s, CASE WHEN %s > 0 THEN now() END) "
            "ON CONFLICT (subject) DO UPDATE SET failures = EXCLUDED.failures, notified = EXCLUDED.notified, "
            "last_detail = coalesce(EXCLUDED.last_detail, notice_streaks.last_detail), "
            "since = CASE WHEN EXCLUDED.failures = 0 THEN NULL ELSE coalesce(notice_streaks.since, now()) END, "
            "updated_at = now()",
            (subject, new_failures, new_notified, detail if failed else None, new_failures))
    if event == "failing":
        return Notice(subject, new_failures, False, detail)
    if event == "recovered":
        return Notice(subject, failures, True, last or "")
    return None


def unsent(conn: psycopg.Connection, notice: Notice) -> None:
    """The notice could not be delivered: the next failure tries again."""
    if not notice.recovered:
        with conn.transaction():
            conn.execute("UPDATE notice_streaks SET notified = false WHERE subject = %s", (notice.subject,))


def failing(conn: psycopg.Connection) -> list[dict]:
    """Every subject failing now (the dashboard), longest streak first."""
    rows = conn.execute("SELECT subject, failures, notified, last_detail, since FROM notice_streaks "
                        "WHERE failures > 0 ORDER BY failures DESC, subject").fetchall()
    return [{"subject": s, "failures": f, "notified": n, "detail": d, "since": since.isoformat() if since else None}
            for s, f, n, d, since in rows]


# --- what calls for a notice ---------------------------------------------------------------------------

def run_finished(conn: psycopg.Connection, dag_id: str, run_id: str, *, failed: bool, reason: str = "",
                 send: Callable[[Notice], None] | None = None, threshold: int = RUNS) -> Notice | None:
    """A run of ``dag_id`` ended; tell the operator through ``send`` if its DAG keeps failing (or recovered)."""
    detail = f"run {run_id}: {reason}" if failed else ""
    return _deliver(conn, record(conn, f"dag:{dag_id}", failed=failed, detail=detail, threshold=threshold), send)


def builds_recorded(conn: psycopg.Connection, build_ids: list[int], *,
                    send: Callable[[Notice], None] | None = None, threshold: int = BUILDS) -> list[Notice]:
    """Count the recorded builds ``build_ids`` in their targets' streaks, in the order they finished."""
    rows = conn.execute(
        "SELECT target, package, version, status, reason, stopped_by FROM builds "
        "WHERE build_id = ANY(%s) AND status IN ('success', 'failure', 'retry') "
        "ORDER BY finished_at, build_id", (list(build_ids),)).fetchall()
    notices = []
    for target, package, version, status, reason, stopped_by in rows:
        if stopped_by is not None:
            continue   # the operator stopped it: nothing about the target
        notice = record(conn, f"target:{target}", failed=status != "success",
                        detail=f"{package} {version}: {reason or status}", threshold=threshold)
        if (notice := _deliver(conn, notice, send)) is not None:
            notices.append(notice)
    return notices


def _deliver(conn: psycopg.Connection, notice: Notice | None, send) -> Notice | None:
    if notice is None:
        return None
    log.warning("%s", notice.text)
    if send is None:
        return notice
    try:
        send(notice)
    except Exception as exc:  # noqa: BLE001 - any channel's failure: keep the notice owed, go on
        log.warning("the notice %r could not be delivered (%s); it is tried again at the next failure",
                    notice.title, exc)
        unsent(conn, notice)
    return notice


# --- delivery: a webhook ---------------------------------------------------------------------------

def post_webhook(url: str, notice: Notice, *, token: str | None = None, timeout: float = 10.0) -> None:
    """POST the notice as JSON to ``url`` (``text`` is the message); raises on anything but a 2xx."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(notice.as_dict()).encode(), headers=headers,
                                     method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if not 200 <= response.status < 300:
            raise OSError(f"the webhook answered {response.status}")


def mail_body(notice: Notice) -> str:
    """The notice as a short HTML mail body (Airflow's SMTP hook sends HTML)."""
    from html import escape
    return f"<p>{escape(notice.text)}</p>\n<p>— wheelwright</p>\n"
