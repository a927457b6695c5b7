"""apt-dependency reports: what users must install, and what builders are missing.

Two readers, two questions. A user on a Raspberry Pi asks "which apt packages does this wheel need that
my fresh Raspberry Pi OS Lite lacks?": wheel analysis records every apt package a wheel's libraries link
against, and this room subtracts the packages the target's distro preinstalls (lists kept as data in
``data/raspios-lite/<distro>.txt``). An operator asks "which apt packages do most wheels need, and which
builds failed only because a header or library was missing on the builders?": failed builds' logs are
read once each (remembered in ``log_scans``/``log_findings``), and the missing files are mapped to the
Debian package that would provide them (``data/missing-files.tsv``, a small hand-kept table of the
usual suspects; unknown ones are shown with "?"). Every failure is also given its cause
(:func:`classify_failure`: a missing header, library or build tool, Rust missing or too old, a
compiler too old, timed out, not for Linux, needing a Pi, not loading on its target, refused), so
reports/ explains each failed build, not only those missing a file.

Parsing a log is a pure function (:func:`missing_in_log`); the database and the tree are touched only by
:func:`scan_failed_logs` and :func:`write_reports`.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import zlib
from collections import defaultdict
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import psycopg

from wheelwright import package_data
from wheelwright.catalog import db
from wheelwright.publish.pages import json_bytes, reports_html
from wheelwright.publish.tree import StagedTree

log = logging.getLogger(__name__)

# Logs are capped by the builder; reading more than this of one would only cost time.
_LOG_READ_LIMIT = 4 * 1024 * 1024

_MISSING_PATTERNS = [
    # gcc/clang: "foo.c:3:10: fatal error: ffi.h: No such file or directory"
    ("header", re.compile(r"fatal error: ([\w./+-]+\.h(?:pp|h)?): No such file or directory")),
    ("header", re.compile(r"fatal error: '([\w./+-]+\.h(?:pp|h)?)' file not found")),
    # ld: "/usr/bin/ld: cannot find -lxml2" (newer binutils add ": No such file or directory")
    ("library", re.compile(r"cannot find -l([\w.+-]+)")),
    # pkg-config: "Package libffi was not found in the pkg-config search path."
    ("pkg-config", re.compile(r"Package '?([\w.+-]+)'?,? (?:was not found in the pkg-config search path|not found)")),
    # a -config script a setup.py runs: "No such file or directory: 'curl-config'", "pg_config: not found"
    ("tool", re.compile(r"No such file or directory: '([\w.+-]+[-_]config)'|"
                        r"\b([\w.+-]+[-_]config)(?:: command not found|: not found| executable not found)")),
]


# Why builds fail, beyond a missing file: (cause, pattern over the log); the first that matches names it.
_CAUSES = [
    ("needs a newer Rust", re.compile(r"requires rustc (\d+\.\d+(?:\.\d+)?) or newer|"
                                      r"rustc (\d+\.\d+(?:\.\d+)?) or newer is required|"
                                      r"package `[^`]+` cannot be built because it requires rustc ([\d.]+)|"
                                      r"feature `edition20\d\d` is required|"
                                      r"this version of Cargo is older than the `20\d\d` edition|"
                                      r"Rust [\d.]+ does not match extension requirement [<>=!~]+ ?[\d.]+|"
                                      r"lock file version `\d+` was found, but this version of Cargo does not "
                                      r"understand this lock file|"
                                      r"lock file version (\d+) requires `-Znext-lockfile-bump`|"
                                      r"failed to parse lock file")),
    ("needs Rust crates from crates.io", re.compile(r"failed to get `[^`]+` as a dependency|"
                                                    r"failed to (?:download|load source) .*crates\.io|"
                                                    r"failed to update registry `crates-io`|"
                                                    r"Unable to update registry `crates-io`")),
    ("needs Rust", re.compile(r"can't find Rust compiler|Rust compiler|cargo: (?:command )?not found|"
                              r"Cargo, the Rust package manager, is not installed")),
    ("needs a newer compiler", re.compile(r"unrecognized command[- ]line option '-std=c\+\+2\w'|"
                                          r"requires (?:at least )?C\+\+ ?(?:17|20|23)|"
                                          r"C\+\+(?:17|20) (?:or later )?is required|"
                                          r"(?:compiler|gcc) version .* is too old")),
    ("needs a Pi to build", re.compile(r"Could not detect if running on the Raspberry Pi|"
                                       r"only (?:be )?(?:built|installed) on a Raspberry Pi")),
    ("not for Linux", re.compile(r"(?:only|not) (?:supported|available) (?:on|for) (?:Windows|macOS|Linux)|"
                                 r"This package is only for (?:Windows|macOS)|Unsupported platform")),
]


def classify_failure(reason: str | None, log_text: str = "") -> tuple[str, str]:
    """``(cause, detail)`` of a failed build: a missing header or library (with the Debian package that
    provides it), Rust missing or too old, a compiler too old, timed out, not for Linux, needing a
    Pi, not loading on its target, refused, or "other" with the build's own reason."""
    reason = reason or ""
    if reason.startswith("timed out"):
        return "timed out", reason
    if reason.startswith("does not load on"):
        return "does not load", reason
    if reason.startswith("refused"):
        return "refused", reason
    for cause, pattern in _CAUSES:
        if m := pattern.search(log_text):
            return cause, " ".join(m[0].split())[:200]
    for kind, what in sorted(missing_in_log(log_text)):
        package = provider(kind, what)
        noun = {"header": "header", "tool": "build tool", "pkg-config": "pkg-config module"}.get(kind, "library")
        return f"missing {noun}", f"{what} -> {package or '? (not in data/missing-files.tsv)'}"
    return "other", reason


def missing_in_log(text: str) -> set[tuple[str, str]]:
    """The (kind, missing) pairs a build log complains about: headers, libraries, pkg-config modules."""
    found = set()
    for kind, pattern in _MISSING_PATTERNS:
        for match in pattern.finditer(text):
            found.add((kind, next(group for group in match.groups() if group)))
    return found


def _data_lines(path: Path) -> list[str]:
    lines = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


@lru_cache(maxsize=None)
def preinstalled(distro: str) -> frozenset[str]:
    """apt packages Raspberry Pi OS Lite of ``distro`` ships; empty (subtract nothing) if unknown."""
    path = package_data.data(f"raspios-lite/{distro}.txt")
    if not path.is_file():
        log.warning("no preinstalled package list for distro %r (%s): apt dependencies shown in full",
                    distro, path)
        return frozenset()
    return frozenset(_data_lines(path))


@lru_cache(maxsize=None)
def providers() -> dict[tuple[str, str], str]:
    """(kind, missing) -> Debian package, from ``data/missing-files.tsv``."""
    table = {}
    for line in _data_lines(package_data.data("missing-files.tsv")):
        kind, missing, package = line.split()
        table[kind, missing] = package
    return table


def provider(kind: str, missing: str) -> str | None:
    table = providers()
    if found := table.get((kind, missing)):
        return found
    if kind == "header" and "/" in missing:  # "libxml/parser.h": try the directory's entry
        return table.get((kind, missing.split("/", 1)[0] + "/"))
    return None


def needed_apt(dependencies, distro: str) -> tuple[str, ...]:
    """The apt packages a user of ``distro`` must install for a wheel that links ``dependencies``."""
    have = preinstalled(distro)
    return tuple(sorted({d for d in dependencies if d not in have}))


def read_log(path: Path) -> str | None:
    try:
        with gzip.open(path, "rb") as f:
            return f.read(_LOG_READ_LIMIT).decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except (OSError, EOFError, zlib.error) as exc:
        log.warning("unreadable build log %s: %s", path, exc)
        return ""


def scan_failed_logs(conn: psycopg.Connection, output: Path, packages: list[str] | None) -> int:
    """Read the logs of failed builds nobody has read yet (of ``packages``, or all); return how many.

    A log that is not there yet stays unscanned, to be read by a later run.
    """
    rows = conn.execute(db.query("publish_unscanned_failures"), {"packages": packages}).fetchall()
    scanned, findings = [], []
    for build_id, log_path, reason in rows:
        text = read_log(output / log_path)
        if text is None:
            continue
        scanned.append((build_id,))
        findings.extend((build_id, kind, missing) for kind, missing in sorted(missing_in_log(text)))
        cause, detail = classify_failure(reason, text)
        findings.append((build_id, "cause", f"{cause}: {detail}"[:500]))
    if scanned:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO log_scans (build_id) VALUES (%s) ON CONFLICT DO NOTHING", scanned)
            cur.executemany("INSERT INTO log_findings (build_id, kind, missing) VALUES (%s, %s, %s)"
                            " ON CONFLICT DO NOTHING", findings)
    return len(scanned)


def report_data(conn: psycopg.Connection) -> tuple[dict[str, list[tuple[str, int]]], list[dict]]:
    apt_counts: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for distro, dependency, wheels in conn.execute(db.query("publish_apt_counts")):
        if dependency not in preinstalled(distro):
            apt_counts[distro].append((dependency, wheels))
    missing: dict[tuple[str, str], dict] = {}
    causes: dict[str, dict] = {}
    for kind, what, build_id, package, version, abi, log_path, display in conn.execute(
            db.query("publish_missing_deps")):
        if kind == "cause":  # every scanned failure, by its cause
            cause, _, detail = what.partition(": ")
            item = causes.setdefault(cause, {"cause": cause, "builds": []})
            item["builds"].append({"build_id": build_id, "package": package, "display_name": display,
                                   "version": version, "abi": abi, "log_path": log_path, "detail": detail})
            continue
        item = missing.setdefault((kind, what), {
            "kind": kind, "missing": what, "apt_package": provider(kind, what), "builds": []})
        item["builds"].append({"build_id": build_id, "package": package, "display_name": display,
                               "version": version, "abi": abi, "log_path": log_path})
    ranked = sorted(missing.values(), key=lambda item: (-len(item["builds"]), item["kind"], item["missing"]))
    return dict(apt_counts), ranked, sorted(causes.values(), key=lambda c: (-len(c["builds"]), c["cause"]))


def write_reports(conn: psycopg.Connection, tree: StagedTree) -> None:
    """reports/index.html for people, and the same data as JSON for scripts."""
    apt_counts, missing, causes = report_data(conn)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    folder = os.path.join(tree.root, "reports")
    tree.write(os.path.join(folder, "apt-dependencies.json"), json_bytes(
        {distro: [{"package": name, "wheels": count} for name, count in counts]
         for distro, counts in apt_counts.items()}))
    tree.write(os.path.join(folder, "missing-dependencies.json"), json_bytes(missing))
    tree.write(os.path.join(folder, "failure-causes.json"), json_bytes(causes))
    tree.write(os.path.join(folder, "index.html"), reports_html(apt_counts, missing, generated, causes))
