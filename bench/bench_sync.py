"""Benchmark: replay a synthetic PyPI changelog into an empty catalog.

    .venv/bin/python bench/bench_sync.py ../shared/data/pypi-names.tsv.gz [--events N] [--runs N] [--dsn DSN]

Builds a changelog of realistic shape from real project names (creates, releases, sdists and wheels, role
changes, some deletions, re-creations and yanks; the first fifth shuffled in time like early PyPI), then
applies it the way `wheelwright sync` does (50,000-row pages: journal + watermark per page, then the
fold) and, for scale, a plain COPY of the same rows into a bare table of the same database. Prints
events/s and the ratio. Without --dsn it uses a throw-away embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import gzip
import os
import pickle
import random
import sys
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from scratch import scratch_database, scratch_server
from wheelwright.catalog import store as catalog
from wheelwright.catalog import db
from wheelwright.catalog import sync

PAGE = 50_000
# The replay speed asked for (events/s): PyPI's whole history, about 30M serials, in minutes on 2 cores.
GOAL = 100_000


def read_names(path: Path, limit: int) -> list[tuple[str, str]]:
    names = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if parts[0] == "name":
                continue
            names.append((parts[0], parts[1] if len(parts) > 1 else "1.0"))
            if len(names) >= limit:
                break
    return names


def spellings(name: str, rng: random.Random) -> list[str]:
    """The canonical name and the variants PyPI users really type."""
    variants = [name]
    if rng.random() < 0.3:
        variants.append(name.replace("-", "_"))
    if rng.random() < 0.2:
        variants.append("".join(p.capitalize() for p in name.split("-")) if "-" not in name
                        else "-".join(p.capitalize() for p in name.split("-")))
    return variants


def synthetic_changelog(names: list[tuple[str, str]], events: int, seed: int = 1) -> list[list]:
    rng = random.Random(seed)
    start, end = 1_100_000_000, 1_790_000_000  # 2004 .. 2026
    timed: list[tuple[float, list]] = []
    for name, _latest in names:
        if len(timed) >= events:
            break
        spell = spellings(name, rng)
        t = rng.uniform(start, end - 86400 * 30)
        step = lambda: rng.expovariate(1 / (86400 * 40))  # noqa: E731 - a release every ~40 days
        timed.append((t, [rng.choice(spell), None, int(t), "create", 0]))
        if rng.random() < 0.3:
            timed.append((t + 1, [rng.choice(spell), None, int(t + 1), "add Owner maintainer1", 0]))
        releases = min(1 + int(rng.expovariate(1 / 6)), 200)
        versions = []
        for i in range(releases):
            t += step()
            version = f"{i // 10}.{i % 10}.0" if rng.random() > 0.01 else f"build-{i}.weird"
            versions.append(version)
            who = rng.choice(spell)
            timed.append((t, [who, version, int(t), "new release", 0]))
            stem = name.replace("-", "_")
            timed.append((t + 2, [who, version, int(t + 2), f"add source file {stem}-{version}.tar.gz", 0]))
            if rng.random() < 0.5:
                timed.append((t + 3, [who, version, int(t + 3),
                                      f"add py3 file {stem}-{version}-py3-none-any.whl", 0]))
            if rng.random() < 0.1:
                for tag in ("cp311", "cp312"):
                    timed.append((t + 4, [who, version, int(t + 4),
                                          f"add {tag} file {stem}-{version}-{tag}-{tag}-manylinux_2_17_x86_64.whl", 0]))
            if rng.random() < 0.02:
                timed.append((t + 600, [who, version, int(t + 600), "yank release", 0]))
            if rng.random() < 0.01:
                timed.append((t + 700, [who, version, int(t + 700),
                                        f"remove file {stem}-{version}.tar.gz", 0]))
            if rng.random() < 0.02:
                timed.append((t + 800, [who, version, int(t + 800), "remove release", 0]))
        if rng.random() < 0.01:
            t += step()
            timed.append((t, [name, None, int(t), "remove project", 0]))
            if rng.random() < 0.3:
                t += step()
                again = rng.choice(spell)
                timed.append((t, [again, None, int(t), "create", 0]))
                timed.append((t + 1, [again, "9.0", int(t + 1), "new release", 0]))
                timed.append((t + 2, [again, "9.0", int(t + 2),
                                      f"add source file {name}-9.0.tar.gz", 0]))
    del timed[events:]
    timed.sort(key=lambda item: item[0])
    # Serials follow arrival order: the first fifth arrived far out of timestamp order (years), the
    # rest at most a few minutes late.
    early = len(timed) // 5
    arrival = [(t + (rng.uniform(0, 86400 * 700) if i < early else rng.uniform(0, 300)), row)
               for i, (t, row) in enumerate(timed)]
    arrival.sort(key=lambda item: item[0])
    rows = []
    for serial, (_, row) in enumerate(arrival, 1):
        row[4] = serial
        rows.append(row)
    return rows


class InMemoryChangelog:
    """A changelog source with PyPI's paging, minus the network: the bench measures the catalog."""

    def __init__(self, rows: list[list]):
        self.rows = rows

    def last_serial(self) -> int:
        return self.rows[-1][4]

    def changelog_pages(self, since: int, until: int | None = None):
        for start in range(0, len(self.rows), PAGE):
            yield self.rows[start:start + PAGE]


def stolen_seconds() -> float | None:
    """CPU time the hypervisor gave to others while this machine wanted it (all cores, /proc/stat's steal
    column), or None where there is no such count. On a shared VM it shows when a slow run was the
    machine's doing."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def timing_derive():
    """Wrap catalog.derive to note when it starts: everything before it is journalling."""
    started = []
    derive = catalog.derive

    def timed(*args, **kwargs):
        started.append(time.perf_counter())
        return derive(*args, **kwargs)

    catalog.derive = timed
    return started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", type=Path)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1,
                        help="replays of the same changelog, each into a new database (default 1)")
    parser.add_argument("--dsn", help="maintenance DSN of a PostgreSQL server (default: embedded)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    workdir = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    try:
        with scratch_server(args.dsn, workdir) as server:
            run(args, server)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run(args, server: str) -> None:
    t0 = time.perf_counter()
    names = read_names(args.names, limit=max(args.events // 4, 1000))
    # The rows as a client decoding PyPI's pages holds them: made one after another, in serial order.
    # The generator's sorts leave them scattered in memory, which alone made parsing them 30% slower.
    rows = pickle.loads(pickle.dumps(synthetic_changelog(names, args.events)))
    print(f"generated {len(rows):,} events over {len({r[0].lower() for r in rows}):,} spellings "
          f"in {time.perf_counter() - t0:.1f}s", flush=True)
    derive_started = timing_derive()
    rates = []
    for number in range(1, args.runs + 1):
        if args.runs > 1:
            print(f"run {number} of {args.runs}", flush=True)
        rates.append(len(rows) / replay_once(rows, server, derive_started))
    if args.runs > 1:
        rates.sort()
        print(f"events/s over {args.runs} runs: median {statistics.median(rates):,.0f}, "
              f"slowest {rates[0]:,.0f}, fastest {rates[-1]:,.0f}; "
              f"{sum(rate >= GOAL for rate in rates)} of {args.runs} at {GOAL:,} or more")


def replay_once(rows: list[list], server: str, derive_started: list[float]) -> float:
    """A plain COPY of ``rows`` and a sync of them into an empty catalog; print both. Returns the sync's
    seconds."""
    with scratch_database(server, "bench_plain_copy") as plain, psycopg.connect(plain) as conn:
        conn.execute("CREATE TABLE plain (name text, version text, ts bigint, action text, serial bigint)")
        conn.commit()
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY plain FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        copy_s = time.perf_counter() - t0
    print(f"plain COPY:        {copy_s:7.2f}s  {len(rows) / copy_s:>10,.0f} rows/s", flush=True)

    with scratch_database(server, "bench_catalog") as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        db.init_schema(conn)
        source = InMemoryChangelog(rows)
        stolen_before = stolen_seconds()
        t0 = time.perf_counter()
        result = sync.sync_once(conn, source)
        total_s = time.perf_counter() - t0
        stolen_after = stolen_seconds()
        ingest_s = derive_started[-1] - t0
        counts = conn.execute("SELECT (SELECT count(*) FROM packages WHERE present), "
                              "(SELECT count(*) FROM versions), (SELECT count(*) FROM source_files)"
                              ).fetchone()
    print(f"journal (ingest):  {ingest_s:7.2f}s  {len(rows) / ingest_s:>10,.0f} events/s", flush=True)
    print(f"fold and index:    {total_s - ingest_s:7.2f}s  {len(result.changed):,} packages changed "
          f"(bulk replay: {result.bulk})", flush=True)
    print(f"sync total:        {total_s:7.2f}s  {len(rows) / total_s:>10,.0f} events/s  "
          f"({counts[0]:,} packages, {counts[1]:,} versions, {counts[2]:,} files)")
    print(f"ratio to plain COPY: {total_s / copy_s:.1f}x the time of a plain COPY")
    if stolen_before is not None and stolen_after is not None:
        print(f"stolen by the host during the sync: {stolen_after - stolen_before:.2f}s of CPU "
              f"({os.cpu_count()} cores x {total_s:.2f}s)", flush=True)
    return total_s


if __name__ == "__main__":
    sys.exit(main())
