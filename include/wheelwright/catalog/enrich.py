"""What the changelog does not say: summaries, Requires-Python, yank reasons, file hashes, and the
newest release's Requires-Dist (PyPI's JSON describes only that one; built wheels give their own).

PyPI's changelog tells what exists; its JSON API (``/pypi/<name>/json``) tells what it looks like.
After a package changes, it is read once (``enriched_seq < change_seq`` finds the ones due) and the
facts are written beside the journal-derived rows, which derivation never overwrites. A 404 means
"no visible releases" and changes nothing: only journal events delete.

Enrichment bumps the package's change number in the same statement that records it, so publishing
sees the new facts and enrichment does not chase its own tail.

The document is read at the door into our own types (:func:`release_facts`): a summary, a
Requires-Python, a yank reason are strings of bounded length without control characters (a newline
allowed in a yank reason), a hash is 64 hex digits, a size a non-negative integer, a URL an http(s)
URL, a time an ISO 8601 one, a file name one the journal would accept. A fact that is not one of those
is left unknown; a document that is not a JSON object fails that package alone (the PyPI client
refuses it). So
whatever a mirror or a proxy sends, it can neither stop enrichment for everyone (the package first in
line would be due again at every run) nor put a NUL or a terminal escape into the catalog.
"""

from __future__ import annotations

import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg

from datetime import datetime

from wheelwright.catalog import store as catalog
from wheelwright.catalog.events import MAX_TEXT, is_filename
from wheelwright.errors import PyPIError
from wheelwright.names import pip_requirements

log = logging.getLogger(__name__)


@dataclass
class EnrichResult:
    enriched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)   # 404: nothing visible on PyPI (yet)
    failed: list[str] = field(default_factory=list)


def due(conn: psycopg.Connection, limit: int) -> list[tuple[str, int]]:
    return conn.execute(
        "SELECT package, change_seq FROM packages WHERE present AND enriched_seq < change_seq "
        "ORDER BY change_seq LIMIT %s", (limit,)).fetchall()


def enrich(conn: psycopg.Connection, make_client, *, limit: int = 200, workers: int = 4) -> EnrichResult:
    """Read the JSON API for up to ``limit`` packages due; ``make_client()`` gives a PyPI client."""
    result = EnrichResult()
    todo = due(conn, limit)
    if not todo:
        return result
    local = threading.local()

    def fetch(package: str):
        if not hasattr(local, "client"):
            local.client = make_client()
        try:
            return local.client.project_json(package)
        except PyPIError as exc:
            log.warning("enrich %s: %s", package, exc)
            return exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        documents = list(pool.map(fetch, [package for package, _ in todo]))
    for (package, seen_seq), document in zip(todo, documents):
        if isinstance(document, Exception):
            result.failed.append(package)
        elif document is None:
            _record_missing(conn, package, seen_seq)
            result.missing.append(package)
        else:
            _record(conn, package, seen_seq, document)
            result.enriched.append(package)
    log.info("enriched %d packages (%d without visible releases, %d failed)",
             len(result.enriched), len(result.missing), len(result.failed))
    return result


def _record_missing(conn: psycopg.Connection, package: str, seen_seq: int) -> None:
    conn.execute("UPDATE packages SET enriched_seq = change_seq WHERE package = %s AND change_seq = %s",
                 (package, seen_seq))


MAX_SUMMARY = 512          # PyPI's own limit on a summary
MAX_URL = 2048
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_URL = re.compile(r"https?://[!-~]+\Z")


def _text(value, limit: int, *, lines: bool = False) -> str | None:
    """``value`` if it is a string we keep: at most ``limit`` characters, no control characters (tab, CR
    and LF allowed with ``lines``), not blank."""
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        return None
    return None if (_CONTROL_BUT_LINES if lines else _CONTROL).search(value) else value


def _size(value) -> int | None:
    return value if type(value) is int and 0 <= value < 2**63 else None


def _time(value) -> str | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return datetime.fromisoformat(value).isoformat()
    except ValueError:
        return None


def release_facts(document: dict) -> tuple[list[tuple], list[tuple]]:
    """(version, requires_python, yanked_reason) and (filename, sha256, size, url, upload_time) rows, each
    fact parsed into our types (None when it is not one of them)."""
    versions, files = [], []
    releases = document.get("releases")
    for version, entries in (releases.items() if isinstance(releases, dict) else ()):
        if _text(version, MAX_TEXT) is None:
            log.warning("enrich: skipping a release named %r", version[:100] if isinstance(version, str) else version)
            continue
        entries = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
        requires = next((r for e in entries if (r := _text(e.get("requires_python"), MAX_TEXT))), None)
        reason = next((r for e in entries if e.get("yanked") is True
                       and (r := _text(e.get("yanked_reason"), MAX_TEXT, lines=True))), None)
        versions.append((version, requires, reason))
        for e in entries:
            filename = e.get("filename")
            if not isinstance(filename, str) or not is_filename(filename):
                continue
            digests = e.get("digests")
            sha256 = digests.get("sha256") if isinstance(digests, dict) else None
            url = e.get("url")
            files.append((filename,
                          sha256 if isinstance(sha256, str) and _SHA256.match(sha256) else None,
                          _size(e.get("size")),
                          url if isinstance(url, str) and len(url) <= MAX_URL and _URL.match(url) else None,
                          _time(e.get("upload_time_iso_8601")) or _time(e.get("upload_time"))))
    return versions, files


def summary_of(document: dict) -> str | None:
    info = document.get("info")
    return _text(info.get("summary"), MAX_SUMMARY) if isinstance(info, dict) else None


def newest_requirements(document: dict) -> tuple[str, list[str]] | None:
    """(version, Requires-Dist) of the release PyPI's ``info`` describes (its newest), or None.

    Lines that are not PEP 508 requirements are left out: they are the author's text, shown on pages.
    """
    info = document.get("info")
    if not isinstance(info, dict):
        return None
    version, lines = info.get("version"), info.get("requires_dist")
    if not isinstance(version, str) or not isinstance(lines, list) or len(version) > MAX_TEXT:
        return None
    return version, list(pip_requirements(line for line in lines if isinstance(line, str)))


def _record(conn: psycopg.Connection, package: str, seen_seq: int, document: dict) -> None:
    summary = summary_of(document)
    versions, files = release_facts(document)
    newest = newest_requirements(document)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (catalog.CHANGE_LOCK,))
        updated = conn.execute(
            "WITH s AS (SELECT nextval('change_seq') AS seq) "
            "UPDATE packages SET summary = %s, change_seq = s.seq, enriched_seq = s.seq, changed_at = now() "
            "FROM s WHERE package = %s AND change_seq = %s", (summary, package, seen_seq)).rowcount
        if not updated:
            return  # changed again meanwhile: it is due again and will be read afresh
        with conn.cursor() as cur:
            cur.executemany("UPDATE versions SET requires_python = %s, yanked_reason = %s "
                            "WHERE package = %s AND version = %s",
                            [(requires, reason, package, version) for version, requires, reason in versions])
            if newest is not None:
                cur.execute("UPDATE versions SET requires_dist = %s WHERE package = %s AND version = %s",
                            (newest[1], package, newest[0]))
            cur.executemany("UPDATE source_files SET sha256 = %s, size = %s, url = %s, "
                            "upload_time = %s::timestamptz WHERE package = %s AND filename = %s",
                            [(sha, size, url, uploaded, package, filename)
                             for filename, sha, size, url, uploaded in files])
