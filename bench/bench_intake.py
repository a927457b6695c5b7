"""Benchmark the index host's intake: what checking and recording one build costs, by wheel size.

    .venv/bin/python bench/bench_intake.py [--builds 20] [--dsn DSN]

For each wheel shape (a small pure wheel; a 5 MB wheel of 500 members; a 60 MB wheel of 3,000
members), claims ``--builds`` builds of distinct releases, places each build's files in its incoming
folder as an SFTP upload would, and times ``intake.receive`` (identity checks, sha256 and size of every
file, the wheel read again: name, tags, zip directory, METADATA; the catalog transaction; the files
renamed into the tree). Then it times a rebuild of the same releases whose wheels differ, which takes
the next build number. Prints the median and the 90th percentile per build; asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch_database, scratch_server  # noqa: E402
from wheelwright.builds.intake import receive  # noqa: E402
from wheelwright.builds.queue import claim_wave  # noqa: E402
from wheelwright.builds.targets import mirror_targets, parse_targets  # noqa: E402
from wheelwright.catalog import db  # noqa: E402
from wheelwright.operate.admin import rebuild  # noqa: E402

TARGET = """
[[target]]
name = "cp311-armv7l"
abi = "cp311"
platform = "linux_armv7l"
distro = "bookworm"
"""
SHAPES = {"small": (1, 10_000), "medium": (500, 10_000), "large": (3_000, 20_000)}  # members, bytes each


def make_wheel(path: Path, name: str, members: int, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}-1.0.dist-info/METADATA",
                    f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\nRequires-Python: >=3.9\n")
        for i in range(members):
            zf.writestr(f"{name}/m{i}.bin", rng.randbytes(size))


def entry(path: Path) -> dict:
    data = path.read_bytes()
    return {"filename": path.name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def one_round(conn, shape: str, names: list[str], incoming: Path, output: Path, seed: int) -> list[float]:
    members, size = SHAPES[shape]
    requests = {r["package"]: dict(r) for r in claim_wave(conn, "cp311-armv7l", len(names))}
    times = []
    for name in names:
        request = requests[name]
        folder = incoming / str(request["build_id"])
        folder.mkdir(parents=True)
        wheel = folder / f"{name}-1.0-cp311-cp311-linux_armv7l.whl"
        make_wheel(wheel, name, members, size, seed)
        log = folder / f"{request['build_id']}.txt.gz"
        log.write_bytes(gzip.compress(b"build output\n" * 1000))
        outcome = {**{k: request[k] for k in ("build_id", "package", "version", "target", "abi")},
                   "status": "success", "reason": None, "builder": "bench", "duration": 1.0,
                   "log": entry(log), "wheels": [{**entry(wheel), "metadata": None, "dependencies": []}]}
        os.sync()
        started = time.perf_counter()
        receive(conn, request, outcome, incoming, output)
        times.append(time.perf_counter() - started)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=20)
    parser.add_argument("--dsn", help="a maintenance DSN of a PostgreSQL server (default: embedded)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    try:
        with scratch_server(args.dsn, workdir) as maintenance, \
                scratch_database(maintenance, f"bench_intake_{os.getpid()}") as dsn:
            with psycopg.connect(dsn, autocommit=True) as conn:
                db.init_schema(conn)
                mirror_targets(conn, parse_targets(TARGET))
                print(f"{'wheel':<8} {'size':>9} {'first build':>22} {'rebuild (build number)':>26}")
                for shape in SHAPES:
                    names = [f"{shape}{i}" for i in range(args.builds)]
                    for name in names:
                        conn.execute("INSERT INTO packages (package, display_name, present, change_seq) "
                                     "VALUES (%s, %s, true, nextval('change_seq'))", (name, name))
                        conn.execute("INSERT INTO versions (package, version, born_serial, released, rank, "
                                     "valid, prerelease, yanked, quarantined, has_sdist) VALUES "
                                     "(%s, '1.0', 1, now(), 1, true, false, false, false, true)", (name,))
                    incoming, output = workdir / "incoming", workdir / "www"
                    first = one_round(conn, shape, names, incoming, output, seed=1)
                    wheel_size = next((output / "simple" / names[0]).glob("*.whl")).stat().st_size
                    for name in names:
                        rebuild(conn, name, "1.0")
                    again = one_round(conn, shape, names, incoming, output, seed=2)
                    assert all((output / "simple" / n / f"{n}-1.0-1-cp311-cp311-linux_armv7l.whl").exists()
                               for n in names)

                    def fmt(times):
                        q = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]
                        return f"median {statistics.median(times) * 1000:6.1f} ms p90 {q * 1000:6.1f} ms"

                    print(f"{shape:<8} {wheel_size / 1e6:7.2f}MB {fmt(first):>22} {fmt(again):>26}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
