"""Benchmark the index writer: a full publish of every PyPI project name, beside dumb-pypi.

    .venv/bin/python bench/bench_publish.py /work/shared/data/pypi-names.tsv.gz [--dsn DSN] [--limit N]

Builds a synthetic catalog from the names file (columns name, version, month): one release per name
(names without a version get none), and for every tenth one a successful build with one wheel (with
two apt dependencies). It is loaded with COPY into a fresh database on the embedded PostgreSQL (or the
server of --dsn), then:

1. a full publish of every package into an empty tree (projects/s);
2. the first 100,000 of the same names, back to back (so both see the same machine load): our full
   publish of a catalog of just those, then dumb-pypi (``dumb-pypi --package-list-json``) over them,
   one file each (the wheel where the catalog has one, else the sdist: dumb-pypi cannot list a project
   without files); projects/s of each and the ratio (goal >= 3x);
3. incremental publishes of one changed package (a new release) in the big tree, 20 times
   (goal < 50 ms).

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from scratch import scratch_database, scratch_server
from wheelwright.catalog import db
from wheelwright.publish.writer import publish

DUMB_PYPI_PROJECTS = 100_000
INCREMENTAL_RUNS = 20


def read_names(path: Path, limit: int | None) -> list[tuple[str, str, str]]:
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        next(f)  # header
        for line in f:
            name, version, month = line.rstrip("\n").split("\t")
            rows.append((name, version, month))
            if limit and len(rows) >= limit:
                break
    return rows


def wheel_name(name: str, version: str) -> str:
    return f"{name.replace('-', '_')}-{version}-py3-none-any.whl"


def has_wheel(i: int, version: str) -> bool:
    return i % 10 == 0 and version != ""


def load_catalog(conn: psycopg.Connection, rows) -> None:
    conn.execute("INSERT INTO targets (name, queue, abi, platform, distro, enabled, position)"
                 " VALUES ('cp311', 'cp311', 'cp311', 'linux_armv7l', 'bookworm', true, 1)")
    with conn.cursor() as cur:
        with cur.copy("COPY packages (package, display_name, present, change_seq, summary)"
                      " FROM STDIN") as copy:
            for i, (name, _version, _month) in enumerate(rows, start=1):
                copy.write_row((name, name, True, i, None))
        with cur.copy("COPY aliases (package, alias, last_ts, last_serial) FROM STDIN") as copy:
            for i, (name, _version, _month) in enumerate(rows, start=1):
                copy.write_row((name, name, i, i))
        with cur.copy("COPY versions (package, version, born_serial, released, rank, valid, prerelease,"
                      " yanked, quarantined, has_sdist) FROM STDIN") as copy:
            for i, (name, version, month) in enumerate(rows, start=1):
                if version:
                    copy.write_row((name, version, i, f"{month}-01T00:00:00Z", 1, True, False, False,
                                    False, True))
        with cur.copy("COPY builds (build_id, package, version, abi, target, status, builder, duration,"
                      " log_path) FROM STDIN") as copy:
            for i, (name, version, _month) in enumerate(rows):
                if has_wheel(i, version):
                    copy.write_row((i + 1, name, version, "cp311", "cp311", "success", "pi-1", "00:01:00",
                                    None))
        with cur.copy("COPY wheels (filename, build_id, package, version, size, sha256, python_tag,"
                      " abi_tag, platform_tag, requires_python, metadata_sha256) FROM STDIN") as copy:
            for i, (name, version, _month) in enumerate(rows):
                if has_wheel(i, version):
                    copy.write_row((wheel_name(name, version), i + 1, name, version, 12345, "ab" * 32,
                                    "py3", "none", "any", ">=3.8", "cd" * 32))
        with cur.copy("COPY wheel_dependencies (filename, tool, dependency) FROM STDIN") as copy:
            for i, (name, version, _month) in enumerate(rows):
                if has_wheel(i, version):
                    copy.write_row((wheel_name(name, version), "apt", "libc6"))
                    copy.write_row((wheel_name(name, version), "apt", "libxml2"))
    conn.execute("SELECT setval('change_seq', %s)", (len(rows) + 1,))
    conn.execute("SELECT setval('builds_build_id_seq', %s)", (len(rows) + 1,))
    conn.commit()
    conn.execute("ANALYZE")
    conn.commit()


def run_dumb_pypi(rows, workdir: Path) -> float:
    listing = workdir / "dumb-pypi.jsonl"
    with open(listing, "w") as f:
        for i, (name, version, month) in enumerate(rows[:DUMB_PYPI_PROJECTS]):
            version = version or "0"
            filename = wheel_name(name, version) if has_wheel(i, version) else \
                f"{name.replace('-', '_')}-{version}.tar.gz"
            f.write(json.dumps({"filename": filename, "hash": "sha256=" + "ab" * 32,
                                "requires_python": ">=3.8", "upload_timestamp": 1700000000}) + "\n")
    output = workdir / "dumb-pypi-out"
    command = [str(Path(sys.executable).with_name("dumb-pypi")), "--package-list-json", str(listing),
               "--output-dir", str(output), "--packages-url", "../../packages/"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def bench_incremental(conn: psycopg.Connection, output: Path, rows) -> list[float]:
    timings = []
    name = rows[len(rows) // 2][0]
    for n in range(INCREMENTAL_RUNS):
        conn.execute("INSERT INTO versions (package, version, born_serial, released, rank, valid,"
                     " prerelease, yanked, quarantined, has_sdist)"
                     " VALUES (%s, %s, 1, now(), 100 + %s, true, false, false, false, true)",
                     (name, f"9999.{n}", n))
        conn.execute("UPDATE packages SET change_seq = nextval('change_seq') WHERE package = %s", (name,))
        conn.commit()
        started = time.perf_counter()
        result = publish(conn, output)
        timings.append(time.perf_counter() - started)
        assert result.changed == [name], result
    return timings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", type=Path, help="pypi-names.tsv.gz")
    parser.add_argument("--dsn", help="a maintenance DSN of a PostgreSQL server (default: embedded)")
    parser.add_argument("--limit", type=int, help="only the first N names")
    parser.add_argument("--workdir", type=Path, help="where to write the trees (default: a temp dir)")
    parser.add_argument("--skip-dumb-pypi", action="store_true")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="bench-publish-", dir=args.workdir))
    try:
        with scratch_server(args.dsn, workdir) as maintenance, \
                scratch_database(maintenance, f"bench_publish_{os.getpid()}") as dsn:
            run(args, workdir, maintenance, dsn)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def inode_usage(path: Path) -> str:
    """How full the file system's inode tables are: creating files slows down a lot as they fill."""
    fs = os.statvfs(path)
    if not fs.f_files:
        return "no inode table"
    return f"{(fs.f_files - fs.f_ffree) / fs.f_files:.0%} of {fs.f_files:,} inodes in use"


def run(args, workdir: Path, maintenance: str, dsn: str) -> None:
    rows = read_names(args.names, args.limit)
    print(f"output file system: {inode_usage(workdir)}", flush=True)
    with psycopg.connect(dsn) as conn:
        db.init_schema(conn)
        started = time.perf_counter()
        load_catalog(conn, rows)
        wheels = sum(1 for i, r in enumerate(rows) if has_wheel(i, r[1]))
        print(f"catalog: {len(rows):,} packages, {wheels:,} wheels, loaded with COPY in "
              f"{time.perf_counter() - started:.1f} s", flush=True)

        output = workdir / "www"
        result = publish(conn, output, full=True)
        full_rate = result.packages / result.seconds
        print(f"wheelwright full publish: {result.packages:,} projects in {result.seconds:.1f} s = "
              f"{full_rate:,.0f} projects/s ({result.files_written:,} files)", flush=True)

        timings = bench_incremental(conn, output, rows)
        print(f"incremental publish of one changed package: median "
              f"{statistics.median(timings) * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms over "
              f"{len(timings)} runs (goal < 50 ms)", flush=True)

    if not args.skip_dumb_pypi:
        head = rows[:DUMB_PYPI_PROJECTS]
        with scratch_database(maintenance, f"bench_publish_{os.getpid()}_head") as small:
            with psycopg.connect(small) as conn:
                db.init_schema(conn)
                load_catalog(conn, head)
                result = publish(conn, workdir / "www-head", full=True)
            ours = len(head) / result.seconds
            print(f"wheelwright full publish, first {len(head):,}: {result.seconds:.1f} s = "
                  f"{ours:,.0f} projects/s", flush=True)
            dumb_seconds = run_dumb_pypi(head, workdir)
            dumb_rate = len(head) / dumb_seconds
            print(f"dumb-pypi 1.15.0, first {len(head):,}: {dumb_seconds:.1f} s = "
                  f"{dumb_rate:,.0f} projects/s", flush=True)
            print(f"ratio on the same {len(head):,} projects: wheelwright is {ours / dumb_rate:.2f}x "
                  f"dumb-pypi per project (goal >= 3x); full-catalog rate vs dumb-pypi: "
                  f"{full_rate / dumb_rate:.2f}x", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
