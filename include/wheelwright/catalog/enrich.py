"""What the changelog does not say: summaries, Requires-Python, yank reasons, file hashes, and the
newest release's Requires-Dist (PyPI's JSON describes only that one; built wheels give their own).

PyPI's changelog tells what exists; its JSON API (``/pypi/<name>/json``) tells what it looks like.
After a package changes, it is read once (``enriched_seq < change_seq`` finds the ones due) and the
facts are written beside the journal-derived rows, which derivation never overwrites. A 404 means
"no visible releases" and changes nothing: only journal events delete.

Enrichment bumps the package's change number in the same statement that records it, so publishing
sees the new facts and enrichment does not chase its own tail.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg

from wheelwright.catalog import store as catalog
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


def release_facts(document: dict) -> tuple[list[tuple], list[tuple]]:
    """(version, requires_python, yanked_reason) and (filename, sha256, size, url, upload_time) rows."""
    versions, files = [], []
    for version, entries in (document.get("releases") or {}).items():
        entries = [e for e in entries or () if isinstance(e, dict)]
        requires = next((e.get("requires_python") for e in entries if e.get("requires_python")), None)
        reason = next((e.get("yanked_reason") for e in entries if e.get("yanked") and e.get("yanked_reason")),
                      None)
        versions.append((version, requires, reason))
        for e in entries:
            if e.get("filename"):
                files.append((e["filename"], (e.get("digests") or {}).get("sha256"), e.get("size"),
                              e.get("url"), e.get("upload_time_iso_8601") or e.get("upload_time")))
    return versions, files


def newest_requirements(document: dict) -> tuple[str, list[str]] | None:
    """(version, Requires-Dist) of the release PyPI's ``info`` describes (its newest), or None.

    Lines that are not PEP 508 requirements are left out: they are the author's text, shown on pages.
    """
    info = document.get("info") or {}
    version, lines = info.get("version"), info.get("requires_dist")
    if not isinstance(version, str) or not isinstance(lines, list):
        return None
    return version, list(pip_requirements(line for line in lines if isinstance(line, str)))


def _record(conn: psycopg.Connection, package: str, seen_seq: int, document: dict) -> None:
    summary = (document.get("info") or {}).get("summary")
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
