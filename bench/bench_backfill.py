"""A backfill of a second target's history: wall time, and where it goes.

The story of a new Debian release: the catalog holds N releases (default 1,000) spread over a year of
uploads, all tried by the installation's target (failures or binary wheels: each moves on to the next
target). A second target is added: its queue starts empty, and its history enters by backfill.
On a real stack on this machine — PostgreSQL (embedded, or ``WHEELWRIGHT_TEST_DSN``), Redis,
api-server, scheduler, dag-processor and one Celery worker for the index host's queue — it runs

    airflow backfill create --dag-id rebuild_history --from-date 2019-01-01 --to-date 2019-12-31 \\
        --dag-run-conf '{"target": "<second target>"}'

waits for every backfill run and prints: the wall time from ``backfill create`` to the last run's end,
per run (one month) the admit task's own time against the scheduling around it, the SQL time of
admitting one month, then the time to claim the whole history in waves of 256 (what build_wheels runs
do), and what building it would take at the builds/hour per slot that bench_builds.py measures
(``--builds-per-hour``, default its last figure) for ``--slots`` worker slots.

    .venv/bin/python bench/bench_backfill.py [--releases 1000] [--months 12]

Start-up of the stack (about a minute) is not measured. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))   # the tests' helpers start the same stack
sys.path.insert(0, str(REPO / "bench"))

import psycopg  # noqa: E402

from bench_builds import postgres, progress, tear_down, when  # noqa: E402
from support.airflow_processes import (AirflowStack, airflow_variables, create_database,  # noqa: E402
                                      drop_database, free_port, migrate, start_redis, wait_until)
from support.build_world import open_folder  # noqa: E402
from wheelwright.builds import batches, queue  # noqa: E402
from wheelwright.builds.targets import mirror_targets, parse_targets  # noqa: E402
from wheelwright.catalog import db  # noqa: E402
from wheelwright.config import Settings  # noqa: E402

OLD, NEW = "cp311-x86_64", "cp313-x86_64"
FIRST = f"""
[[target]]
name = "{OLD}"
abi = "cp311"
platform = "linux_x86_64"
distro = "bookworm"
"""
BOTH = FIRST + f"""
[[target]]
name = "{NEW}"
abi = "cp313"
platform = "linux_x86_64"
distro = "trixie"
"""
START = datetime(2019, 1, 1, tzinfo=timezone.utc)
WAVE, WAVE_SECONDS = 256, 30 * 60     # what a build_wheels run claims per target (dags/build_wheels.py)


def month_start(i: int) -> datetime:
    return START.replace(year=START.year + i // 12, month=1 + i % 12)


def make_history(conn, releases: int, months: int) -> None:
    """``releases`` releases spread evenly over ``months``, each failed by the first target."""
    mirror_targets(conn, parse_targets(FIRST))
    span = (month_start(months) - START).total_seconds()
    rows = [(f"pkg{i:05d}", "1.0", START + timedelta(seconds=span * (i + 0.5) / releases))
            for i in range(releases)]
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO packages (package, display_name, present, quarantined, change_seq) "
                            "VALUES (%s, %s, true, false, nextval('change_seq'))",
                            [(p, p) for p, _, _ in rows])
            cur.executemany("INSERT INTO versions (package, version, born_serial, released, rank, valid, "
                            "prerelease, yanked, quarantined, has_sdist) "
                            "VALUES (%s, %s, 1, %s, 1, true, false, false, false, true)", rows)
            cur.executemany("INSERT INTO builds (package, version, abi, target, status) "
                            "VALUES (%s, %s, 'cp311', %s, 'failure')", [(p, v, OLD) for p, v, _ in rows])
    mirror_targets(conn, parse_targets(BOTH))   # the new target: enabled now, its history not queued


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--releases", type=int, default=1000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--max-active-runs", type=int, default=4, help="of the backfill (default 4)")
    parser.add_argument("--builds-per-hour", type=float, default=1439.0,
                        help="per worker slot, as bench_builds.py measures it (default 1439, its last figure in batches)")
    parser.add_argument("--slots", type=int, default=20, help="worker slots of the new target (default 20)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs) afterwards")
    args = parser.parse_args(argv)

    workdir = open_folder("wheelwright-bench-backfill-")
    server, embedded = postgres(workdir)
    cleanup, stack = [], None
    try:
        progress(f"setting up in {workdir}: {args.releases} releases over {args.months} months")
        catalog_name, catalog_dsn = create_database(server, "wheelwright_backfill")
        cleanup.append(lambda: drop_database(server, catalog_name))
        with psycopg.connect(catalog_dsn, autocommit=True) as conn:
            db.init_schema(conn)
            make_history(conn, args.releases, args.months)
            assert queue.queue_length(conn, NEW) == (0, 0), "a new target starts without history"
        metadata_name, metadata_dsn = create_database(server, "airflow_backfill")
        cleanup.append(lambda: drop_database(server, metadata_name))
        broker, redis = start_redis(workdir)
        cleanup.append(lambda: (redis.popen.terminate(), redis.popen.wait(timeout=10)))
        dags = workdir / "dags"
        dags.mkdir()
        shutil.copy(REPO / "dags" / "rebuild_history.py", dags)
        targets = workdir / "targets.toml"
        targets.write_text(BOTH)
        home = workdir / "home"
        settings = Settings(home=home, dsn=catalog_dsn, pypi_url="http://127.0.0.1:9/pypi",
                            output=workdir / "www")
        api_port = free_port()
        env = {**airflow_variables(settings, airflow_home=workdir / "airflow", metadata_dsn=metadata_dsn,
                                   dags_folder=dags, api_port=api_port, broker_url=broker),
               "WHEELWRIGHT_HOME": str(home), "WHEELWRIGHT_DSN": catalog_dsn,
               "WHEELWRIGHT_TARGETS": str(targets), "WHEELWRIGHT_OUTPUT": str(workdir / "www"),
               "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}
        stack = AirflowStack(env=env, workdir=workdir, api_port=api_port)
        progress("migrating the Airflow metadata database")
        migrate(env, workdir)
        progress("starting api-server, scheduler, dag-processor and the index host's Celery worker")
        stack.start_core(wait=False)
        index_host = stack.start_worker("index_host", ["default"])
        stack.wait_core()
        stack.wait_worker_ready(index_host)
        stack.wait_for_dag("rebuild_history")
        stack.api("PATCH", "dags/rebuild_history", {"is_paused": False})

        last = month_start(args.months) - timedelta(days=1)
        progress(f"airflow backfill create: {START.date()} .. {last.date()} for {NEW}")
        started = time.time()
        stack.run("backfill", "create", "--dag-id", "rebuild_history", "--from-date", START.date().isoformat(),
                  "--to-date", last.date().isoformat(), "--dag-run-conf", json.dumps({"target": NEW}),
                  "--max-active-runs", str(args.max_active_runs))
        created = time.time()

        def finished():
            runs = stack.api("GET", "dags/rebuild_history/dagRuns?limit=1000")["dag_runs"]
            backfill = [r for r in runs if r["run_type"] == "backfill"]
            done = [r for r in backfill if r["state"] in ("success", "failed")]
            return backfill if backfill and len(done) == len(backfill) else None
        runs = wait_until(finished, 60 + 20 * args.months, "every backfill run to finish", interval=0.5,
                          on_timeout=stack.tails)
        ended = time.time()
        if any(r["state"] != "success" for r in runs):
            print(stack.tails(), file=sys.stderr)
            return 1
        tis = [ti for r in runs for ti in stack.task_instances("rebuild_history", r["dag_run_id"])]
        with psycopg.connect(catalog_dsn, autocommit=True) as conn:
            admitted = conn.execute("SELECT count(*) FROM build_backfill WHERE target = %s", (NEW,)).fetchone()[0]
            waiting = queue.queue_length(conn, NEW)
            # the SQL of one month, again (admits nothing now: the same work without the inserts)
            t0 = time.perf_counter()
            queue.admit_history(conn, NEW, START, month_start(1))
            admit_again = time.perf_counter() - t0
            claims = []
            while True:
                t0 = time.perf_counter()
                wave, _ = batches.claim_batches(conn, NEW, WAVE, WAVE_SECONDS)
                claims.append(time.perf_counter() - t0)
                if not wave:
                    break
            claimed = conn.execute("SELECT count(*) FROM builds WHERE target = %s", (NEW,)).fetchone()[0]
            # as if every build came back: the next run's expire step prunes the finished rows
            conn.execute("UPDATE builds SET status = 'failure' WHERE target = %s", (NEW,))
            t0 = time.perf_counter()
            pruned = queue.prune_history(conn)
            prune = time.perf_counter() - t0
        report(args, runs, tis, wall=ended - started, create=created - started, admitted=admitted,
               waiting=waiting, admit_again=admit_again, claims=claims, claimed=claimed, pruned=pruned,
               prune=prune)
        return 0 if admitted == args.releases == claimed else 1
    finally:
        tear_down(stack, cleanup, embedded, workdir, keep=args.keep)


def report(args, runs, tis, *, wall, create, admitted, waiting, admit_again, claims, claimed, pruned,
           prune) -> None:
    task_seconds = [ti["duration"] or 0 for ti in tis]
    run_seconds = [when(r["end_date"]) - when(r["start_date"]) for r in runs]
    queued = [when(ti["start_date"]) - when(r["start_date"]) for r in runs
              for ti in tis if ti["dag_run_id"] == r["dag_run_id"]]
    build_hours = args.releases / (args.builds_per_hour * args.slots)
    print(f"rebuild_history backfill of {len(runs)} monthly runs, {args.releases} releases, for a second "
          f"target (max active runs {args.max_active_runs}, one index-host worker, concurrency 1)")
    print(f"  wall time, backfill create .. last run's end  {wall:8.1f} s   "
          f"({create:.1f} s of it the `airflow backfill create` command)")
    print(f"  per run: start .. end                          mean {statistics.mean(run_seconds):5.2f} s, "
          f"max {max(run_seconds):5.2f} s")
    print(f"  per run: run start .. its task starts          mean {statistics.mean(queued):5.2f} s")
    print(f"  per run: the admit task itself                 mean {statistics.mean(task_seconds):5.2f} s "
          f"(SQL of one month: {admit_again * 1000:.0f} ms)")
    print(f"  admitted to the new target's queue             {admitted:8d}   "
          f"(queue now {waiting[0]} waiting)")
    print(f"  claiming all of it as build_wheels runs do     {sum(claims):8.2f} s   "
          f"({len(claims)} claims of up to {WAVE} builds and {WAVE_SECONDS // 60} min of expected work, "
          f"mean {statistics.mean(claims) * 1000:.0f} ms; {claimed} builds)")
    print(f"  pruning the finished backfill rows            {prune:8.2f} s   ({pruned} rows)")
    print(f"  building it at {args.builds_per_hour:.0f}/h per slot on {args.slots} slots   "
          f"{build_hours * 3600:8.0f} s   ({build_hours:.2f} h: the build itself is where the time goes)")


if __name__ == "__main__":
    sys.exit(main())
