"""A builder's doctor report: made when its worker starts, sent to the index host, shown on the dashboard.

Builders hold no catalog credentials, so a builder cannot record its own state: it reaches the index
host only through the broker, the API server and SFTP. When a builder's worker starts
(:mod:`wheelwright.operate.worker`), it sends what its doctor found as ``doctor-<worker>.json`` into its
account's own folder on the index host (``<incoming>/<account>/``, where its builds go), over the same
SFTP Connection its builds use, written under a hidden ``.part`` name and renamed: a report is there
whole or not at all, and a later start replaces it.

On the index host, the ``builder_health`` DAG's record step (:func:`record`) reads those files as any
input from a builder: renamed out of the builders' reach first, opened without following links, a
regular file only, size-capped, parsed into known roles and statuses and bounded plain text, or
refused with the reason logged. Each report is upserted into ``builder_doctor`` (migration 030) under
``<account>/<worker>``, the account being the folder it was found in (which the SSH login decides, not
the report: no builder can speak for another's workers); a newer report wins, and its file is removed;
the dashboard reads that table. A
report is the builder's word about itself, nothing more: whether it passed is computed here from its
checks, and its time is never later than the index host's clock.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from typing import TYPE_CHECKING

from wheelwright.operate.doctor import FAIL, OK, ROLES, WARN, Finding

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

FORMAT = 1
PREFIX, SUFFIX = "doctor-", ".json"
MAX_BYTES = 64 * 1024          # a report of every check of every role is a few KiB
MAX_CHECKS = 200
MAX_TEXT = 1000                # characters of one field of one check
KEPT = timedelta(days=90)      # a builder silent this long is forgotten
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._-]{0,99}\Z")
_FILE = re.compile(re.escape(PREFIX) + r"(?P<name>.+)" + re.escape(SUFFIX) + r"\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FIELDS = ("role", "name", "what", "status", "detail", "fix")


# --- builder side ---------------------------------------------------------------------------------

def worker_name(celery_hostname: str | None, hostname: str | None = None) -> str:
    """The name Celery gives the worker: ``--celery-hostname`` (default ``celery@%h``) with ``%h`` (the
    host name), ``%n`` (its first label) and ``%d`` (the rest) expanded."""
    host = hostname or socket.gethostname()
    short, _, domain = host.partition(".")
    name = (celery_hostname or "celery@%h").replace("%h", host).replace("%n", short).replace("%d", domain)
    return name.replace("%%", "%")


def make_report(builder: str, findings: list[Finding], roles, *, now: datetime | None = None) -> dict:
    """What a worker sends: its name, when, the roles examined and every finding (plain one-line text)."""
    if not _NAME.match(builder):
        from wheelwright.errors import ConfigError
        raise ConfigError(f"the worker's name {builder!r} is not a plain name (letters, digits, @ . _ -)")

    def plain(text: str) -> str:
        return _CONTROL.sub(" ", text)[:MAX_TEXT]
    return {"format": FORMAT, "builder": builder,
            "checked_at": (now or datetime.now(timezone.utc)).isoformat(),
            "roles": [r for r in ROLES if r in roles],
            "checks": [{k: plain(v) for k, v in f.as_dict().items()} for f in findings[:MAX_CHECKS]]}


def send(sftp, remote_dir: str, report: dict) -> str:
    """Write ``report`` as ``doctor-<builder>.json`` in ``remote_dir`` on the index host, whole or not at
    all (a hidden ``.part`` renamed over the last one); the path written."""
    from wheelwright.builds.transfer import rename_over
    name = f"{PREFIX}{report['builder']}{SUFFIX}"
    part, final = posixpath.join(remote_dir, f".{name}.part"), posixpath.join(remote_dir, name)
    with sftp.open(part, "wb") as f:
        f.write(json.dumps(report, sort_keys=True).encode())
    rename_over(sftp, part, final)
    return final


# --- index host side -------------------------------------------------------------------------------

class BadReport(ValueError):
    """A file that is not a doctor report as a worker writes one."""


@dataclass(frozen=True)
class Report:
    builder: str
    checked_at: datetime
    roles: tuple[str, ...]
    checks: tuple[dict, ...]

    @property
    def ok(self) -> bool:
        return not any(c["status"] == FAIL for c in self.checks)


def parse_report(data: bytes, name: str, now: datetime) -> Report:
    """The report in ``data``, found under the worker name ``name``; :class:`BadReport` saying why not."""
    if len(data) > MAX_BYTES:
        raise BadReport(f"over {MAX_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadReport(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadReport(f"not a doctor report of format {FORMAT}")
    builder = doc.get("builder")
    if not isinstance(builder, str) or not _NAME.match(builder) or builder != name:
        raise BadReport("its builder is not the plain name its file is named for")
    try:
        checked_at = datetime.fromisoformat(doc.get("checked_at"))
    except (TypeError, ValueError):
        raise BadReport("checked_at is not an ISO 8601 time") from None
    if checked_at.tzinfo is None:
        raise BadReport("checked_at has no time zone")
    roles = doc.get("roles")
    if (not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles)
            or len(set(roles)) != len(roles)):
        raise BadReport(f"roles must be some of {', '.join(ROLES)}")
    checks = doc.get("checks")
    if not isinstance(checks, list) or not checks or len(checks) > MAX_CHECKS:
        raise BadReport(f"checks must be a list of 1 to {MAX_CHECKS}")
    for check in checks:
        if not isinstance(check, dict) or set(check) != set(_FIELDS):
            raise BadReport(f"each check has exactly {', '.join(_FIELDS)}")
        if not all(isinstance(v, str) and len(v) <= MAX_TEXT and not _CONTROL.search(v) for v in check.values()):
            raise BadReport(f"a check's fields are plain text of at most {MAX_TEXT} characters")
        if check["status"] not in (OK, WARN, FAIL) or check["role"] not in roles:
            raise BadReport(f"a check's status is not one of ok, warn, FAIL, or its role not one examined")
    return Report(builder, min(checked_at, now), tuple(roles), tuple(checks))


@dataclass
class Recorded:
    recorded: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"recorded": len(self.recorded), "refused": len(self.refused)}


def record(conn: psycopg.Connection, incoming_dir: str | os.PathLike, *, now: datetime | None = None) -> Recorded:
    """Record every report waiting in the accounts' folders of ``incoming_dir`` and remove its file;
    forget builders silent for :data:`KEPT`."""
    from wheelwright.builds.transfer import is_account
    result = Recorded()
    now = now or conn.execute("SELECT now()").fetchone()[0]
    try:
        accounts = sorted(name for name in os.listdir(incoming_dir) if is_account(name))
    except FileNotFoundError:
        accounts = []
    for account in accounts:
        try:
            folder = os.open(os.path.join(incoming_dir, account), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # not a plain folder: not an account's
        try:
            _record_account(conn, account, folder, now, result)
        finally:
            os.close(folder)
    conn.execute("DELETE FROM builder_doctor WHERE received_at < %s", (now - KEPT,))
    return result


def _record_account(conn, account: str, folder: int, now: datetime, result: Recorded) -> None:
    from psycopg.types.json import Jsonb

    from wheelwright.catalog import db
    for entry in sorted(os.listdir(folder)):
        match = _FILE.match(entry)
        if not match:
            continue
        taken = f".{entry}.recording-{os.getpid()}"   # out of the builders' names: a newer report stays
        try:
            os.rename(entry, taken, src_dir_fd=folder, dst_dir_fd=folder)
        except FileNotFoundError:
            continue
        try:
            report = parse_report(_read(folder, taken), match["name"], now)
        except BadReport as exc:
            result.refused.append(entry)
            log.warning("refused the doctor report %s: %s", entry, exc)
            continue
        finally:
            _discard(folder, taken)
        builder = f"{account}/{report.builder}"
        conn.execute(db.query("doctor_record"), {
            "builder": builder, "checked_at": report.checked_at, "ok": report.ok,
            "roles": list(report.roles), "checks": Jsonb(list(report.checks))})
        result.recorded.append(builder)
        (log.info if report.ok else log.warning)("builder %s's doctor at %s: %s", builder,
                                                 report.checked_at.isoformat(),
                                                 "ok" if report.ok else "; ".join(
                                                     c["what"] for c in report.checks if c["status"] == FAIL))


def _discard(folder: int, name: str) -> None:
    """Remove what a builder left as ``name``: a file or link, or an empty folder (else it stays, under a
    hidden name nothing reads again)."""
    try:
        os.unlink(name, dir_fd=folder)
    except IsADirectoryError:
        try:
            os.rmdir(name, dir_fd=folder)
        except OSError as exc:
            log.warning("left the folder %s in the incoming folder: %s", name, exc.strerror)
    except FileNotFoundError:
        pass


def _read(folder: int, name: str) -> bytes:
    """The bytes of the regular file ``name`` in ``folder`` (never through a link, never a fifo), capped."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    except OSError as exc:
        raise BadReport(f"cannot be opened as a plain file ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadReport("not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
