"""Benchmark the build queue at PyPI's scale: how long claiming a wave takes.

    .venv/bin/python bench/bench_build_queue.py /work/shared/data/pypi-names.tsv.gz [--versions 3] [--limit N] [--dsn DSN]

Builds a synthetic catalog from the names file: every project with ``--versions`` releases (the
latest in the month the file gives, older ones a month apart each), loaded with COPY into a fresh
database (the embedded PostgreSQL, or the server of --dsn). Two enabled targets, in numeric order
cp311 then cp313. The first target has already tried two thirds of the releases: of those, half gave
a pure wheel (done for every target), a quarter a binary wheel and a quarter a failure (both move on to
cp313). A hundred releases are fresh (released in the last hour).

Then, in the order a scheduler would: ``expire_lost`` over everything, ``claim_wave`` of 256 for each
target five times (each claims new releases; the first claim of cp311 takes the fresh ones), each
wave's plan of batches (what the catalog expects of each build: every build the first target made took
2 s to 10 min), and ``queue_length`` of each target (a full count of the queue, what ``wheelwright queue`` shows).

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from scratch import scratch_database, scratch_server
from wheelwright.builds import batches
from wheelwright.catalog import db
from wheelwright.builds.queue import claim_wave, expire_lost, queue_length
from wheelwright.builds.targets import mirror_targets, parse_targets

TARGETS = """
[[target]]
name = "cp311-x86_64"
abi = "cp311"
platform = "linux_x86_64"
distro = "bookworm"
[[target]]
name = "cp313-aarch64"
abi = "cp313"
platform = "linux_aarch64"
distro = "trixie"
"""
WAVE = 256                 # what a build_wheels run claims per target at most (dags/build_wheels.py)
WAVES = 5
FRESH = 100


def read_names(path: Path, limit: int | None) -> list[tuple[str, str, str]]:
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        next(f)
        for line in f:
            name, version, month = line.rstrip("\n").split("\t")
            rows.append((name, version or "0", month or "2020-01"))
            if limit and len(rows) >= limit:
                break
    return rows


def load(conn: psycopg.Connection, rows, per_package: int) -> int:
    mirror_targets(conn, parse_targets(TARGETS))
    now = datetime.now(timezone.utc)
    versions = builds = 0
    with conn.cursor() as cur:
        with cur.copy("COPY packages (package, display_name, present, change_seq) FROM STDIN") as copy:
            for i, (name, _, _) in enumerate(rows, 1):
                copy.write_row((name, name, True, i))
        with cur.copy("COPY versions (package, version, born_serial, released, rank, valid, prerelease,"
                      " yanked, quarantined, has_sdist) FROM STDIN") as copy:
            for i, (name, version, month) in enumerate(rows):
                latest = datetime.fromisoformat(f"{month}-01T00:00:00+00:00")
                for k in range(per_package):
                    released = latest - timedelta(days=30 * k)
                    if k == 0 and i < FRESH:
                        released = now - timedelta(minutes=i)
                    copy.write_row((name, version if k == 0 else f"{version}.old{k}", 1, released,
                                    per_package - k, True, False, False, False, True))
                    versions += 1
        with cur.copy("COPY builds (build_id, package, version, abi, target, status, finished_at, duration) "
                      "FROM STDIN") as copy:
            wheel_rows = []
            for i, (name, version, _) in enumerate(rows):
                for k in range(per_package):
                    if i < FRESH or (i + k) % 3 == 0:
                        continue  # not tried yet (spread over new and old releases alike)
                    v = version if k == 0 else f"{version}.old{k}"
                    builds += 1
                    kind = (i * 5 + k) % 4
                    status = "failure" if kind == 3 else "success"
                    copy.write_row((builds, name, v, "cp311", "cp311-x86_64", status,
                                    now - timedelta(days=30 * k), timedelta(seconds=2 + (i * 7 + k) % 600)))
                    if kind in (0, 1):
                        wheel_rows.append((f"{name.replace('-', '_')}-{v}-py3-none-any.whl", builds, name, v,
                                           "py3", "none", "any"))
                    elif kind == 2:
                        wheel_rows.append((f"{name.replace('-', '_')}-{v}-cp311-cp311-linux_x86_64.whl",
                                           builds, name, v, "cp311", "cp311", "linux_x86_64"))
        with cur.copy("COPY wheels (filename, build_id, package, version, size, sha256, python_tag, abi_tag,"
                      " platform_tag) FROM STDIN") as copy:
            for filename, build_id, name, v, py, abi, plat in wheel_rows:
                copy.write_row((filename, build_id, name, v, 1000, "ab" * 32, py, abi, plat))
    conn.execute("SELECT setval('builds_build_id_seq', %s)", (builds + 1,))
    conn.commit()
    conn.execute("ANALYZE")
    conn.commit()
    return versions


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def run_at_scale(run, name: str, description: str, argv=None) -> int:
    """Parse the scale arguments, make a scratch catalog database, and ``run(args, dsn)`` on it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("names", type=Path)
    parser.add_argument("--versions", type=int, default=3, help="releases per project (default 3)")
    parser.add_argument("--limit", type=int, help="only the first N names")
    parser.add_argument("--dsn", help="a maintenance DSN of a PostgreSQL server (default: embedded)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    try:
        with scratch_server(args.dsn, workdir) as maintenance, \
                scratch_database(maintenance, f"bench_{name}_{os.getpid()}") as dsn:
            run(args, dsn)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    return run_at_scale(run, "queue", __doc__.splitlines()[0], argv)


def run(args, dsn: str) -> None:
    rows = read_names(args.names, args.limit)
    with psycopg.connect(dsn, autocommit=True) as conn:
        db.init_schema(conn)
        versions, seconds = timed(lambda: load(conn, rows, args.versions))
        print(f"catalog: {len(rows):,} packages, {versions:,} releases, loaded in {seconds:.1f} s",
              flush=True)
        _, seconds = timed(lambda: expire_lost(conn, timedelta(hours=4)))
        print(f"expire_lost: {seconds * 1000:.1f} ms", flush=True)
        for target in ("cp311-x86_64", "cp313-aarch64"):
            timings, planning, sizes, first = [], [], [], None
            for n in range(WAVES):
                wave, seconds = timed(lambda: claim_wave(conn, target, WAVE))
                timings.append(seconds)
                known, seconds = timed(lambda: batches.expected(conn, [r["build_id"] for r in wave]))
                planning.append(seconds)
                sizes += [len(b) for b in batches.plan(wave, known)]
                if first is None:
                    first = wave
            fresh = sum(1 for r in first if r["version"] == dict((n, v) for n, v, _ in rows[:FRESH])
                        .get(r["package"]))
            print(f"claim_wave({target}, {WAVE}): first wave {timings[0] * 1000:.0f} ms ({fresh} fresh "
                  f"releases of {len(first)}); later waves median {statistics.median(timings[1:]) * 1000:.0f} ms, "
                  f"max {max(timings[1:]) * 1000:.0f} ms", flush=True)
            print(f"  batches of those waves (build_expected_seconds + plan): median "
                  f"{statistics.median(planning) * 1000:.0f} ms, max {max(planning) * 1000:.0f} ms; "
                  f"{len(sizes)} tasks for {sum(sizes)} builds", flush=True)
            (waiting, fresh_waiting), seconds = timed(lambda: queue_length(conn, target))
            print(f"queue_length({target}): {waiting:,} waiting ({fresh_waiting:,} fresh) in "
                  f"{seconds * 1000:.0f} ms", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
