"""`wheelwright worker`: Airflow's Celery worker, started only on a machine that can do its work.

``airflow celery worker`` takes builds from its queues whatever the machine lacks, and each build then
fails in its own way, deep in a log. This entry point comes first: it runs the doctor's part for what the
worker serves (the builder role, for the targets whose queues it names; the index host's role when a
queue is no target's), sends the findings to the index host (:mod:`~wheelwright.operate.doctor_reports`:
the dashboard shows each builder's last result), and then *becomes* ``airflow celery worker`` with the
very same arguments (``exec``: a service manager's signals reach Celery itself, as before). When a check
fails it prints the findings and exits 1 having taken nothing from its queues; a service manager that
restarts it (systemd's ``Restart=``) has it take them once the machine is fixed.

`wheelwright run` starts its builder this way, as do the compose file's builders (``operate/stack.py``)
and the README's systemd unit for a Pi.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping

from wheelwright.config import Settings
from wheelwright.operate import doctor, doctor_reports
from wheelwright.operate.airflow_setup import AIRFLOW_BIN
from wheelwright.operate.dag_tasks import INDEX_HOST_QUEUE

log = logging.getLogger(__name__)


def celery_options(celery_args: list[str]) -> tuple[list[str], str | None]:
    """The queues (Airflow's default queue when none is named) and ``--celery-hostname`` of the
    arguments ``airflow celery worker`` will get."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-q", "--queues")
    parser.add_argument("-H", "--celery-hostname")
    known, _ = parser.parse_known_args(celery_args)
    return [q for q in (known.queues or INDEX_HOST_QUEUE).split(",") if q], known.celery_hostname


def served(queues: list[str], targets) -> tuple[list[str], list]:
    """The roles a worker on ``queues`` plays and the targets it builds for."""
    mine = [t for t in targets if t.queue in queues]
    roles = ["builder"] if mine else []
    if set(queues) - {t.queue for t in targets}:
        roles.insert(0, "index-host")
    return roles, mine


def main(settings: Settings, celery_args: list[str], *, environ: Mapping[str, str] | None = None,
         execute: Callable = os.execve) -> int:
    """Examine, report, then become ``airflow celery worker CELERY_ARGS``; 1 (and no worker) when a
    check fails."""
    from wheelwright.builds.targets import load_targets
    environ = dict(os.environ if environ is None else environ)
    queues, hostname = celery_options(celery_args)
    roles, targets = served(queues, load_targets())
    name = doctor_reports.worker_name(hostname)
    findings = doctor.examine(doctor.Machine(settings, environ), roles, targets,
                              each=lambda finding: print(finding.line(), file=sys.stderr, flush=True))
    if "builder" in roles:
        send_report(doctor_reports.make_report(name, findings, roles), settings, environ)
    if doctor.failed(findings):
        print(f"wheelwright worker: {doctor.summary(findings)}: {name} takes nothing from "
              f"{','.join(queues)} until the FAIL lines above are fixed", file=sys.stderr, flush=True)
        return 1
    print(f"wheelwright worker: {doctor.summary(findings)}; starting airflow celery worker as {name} on "
          f"{','.join(queues)}", file=sys.stderr, flush=True)
    argv = [str(AIRFLOW_BIN), "celery", "worker", *celery_args]
    execute(argv[0], argv, environ)
    return 0  # only when ``execute`` returns (tests)


def send_report(report: dict, settings: Settings, environ: Mapping[str, str]) -> str | None:
    """Send ``report`` into this builder's account folder on the index host, over the Connection builds
    use; where it went, or None. A report that cannot be sent is said and skipped: the index host keeps
    the last one it had."""
    from wheelwright.operate.dag_tasks import account_remote_folder
    if not environ.get(doctor.INDEX_HOST_CONNECTION):
        return None   # no Connection to the index host: nothing to send it over
    try:
        hook = doctor.index_host_hook()
        client = hook.get_conn()
        try:
            with client.open_sftp() as sftp:
                path = doctor_reports.send(sftp, account_remote_folder(settings, hook.username), report)
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - the report is a courtesy; the findings are printed anyway
        print(f"wheelwright worker: the doctor's report did not reach the index host: {exc}",
              file=sys.stderr, flush=True)
        return None
    print(f"wheelwright worker: the doctor's report is on the index host ({path})", file=sys.stderr, flush=True)
    return path
