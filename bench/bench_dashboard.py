"""Benchmark the operator's dashboard at PyPI's scale: how long the page takes to compute and draw.

    .venv/bin/python bench/bench_dashboard.py /work/shared/data/pypi-names.tsv.gz [--versions 3] [--limit N] [--dsn DSN]

Builds the catalog of bench/bench_build_queue.py (every project of the names file with ``--versions``
releases, two targets, two thirds of the releases tried by the first target), then adds what a busy
deployment accumulates: builds finished over the last two years with a few thousand in the last two
days (failures with reasons and log findings), a journal tail of PyPI's last days (~2,000 events an
hour), a week of dashboard samples, fifty builders with their health, and 30 days of downloads and
searches. Then it times, over several rounds: the snapshot the page is made of, drawing the page, and
the periodic sample (the queue counts it moves off the page).

Prints figures; asserts nothing.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from bench_build_queue import load, read_names, run_at_scale, timed  # noqa: E402
from wheelwright.catalog import db  # noqa: E402
from wheelwright.operate import dashboard  # noqa: E402
from wheelwright.operate.dashboard_app import render_page  # noqa: E402

ROUNDS = 5


def activity(conn: psycopg.Connection, packages: list[str]) -> None:
    """Finished builds, a journal tail, samples, builders, downloads and searches (set-based SQL)."""
    conn.execute("""
        UPDATE builds SET builder = 'pi-' || (build_id % 50), duration = interval '4 minutes',
               started_at = now() - (build_id % 730) * interval '1 day' - interval '5 minutes',
               finished_at = now() - (build_id % 730) * interval '1 day'""")
    # the last two days: every 300th build finished then (a few thousand), failures with a reason
    conn.execute("""
        UPDATE builds SET finished_at = now() - (build_id % 2880) * interval '1 minute'
        WHERE build_id % 300 = 0""")
    conn.execute("UPDATE builds SET reason = 'pip wheel exited with 1' WHERE status = 'failure'"
                 " AND finished_at > now() - interval '2 days'")
    conn.execute("""
        INSERT INTO log_scans (build_id) SELECT build_id FROM builds WHERE status = 'failure'""")
    conn.execute("""
        INSERT INTO log_findings (build_id, kind, missing)
        SELECT build_id, 'header', (ARRAY['ffi.h', 'libxml/parser.h', 'openssl/ssl.h', 'Python.h'])[build_id % 4 + 1]
        FROM builds WHERE status = 'failure'""")
    last = 25_000_000
    conn.execute("""
        INSERT INTO journal (serial, name, package, version, ts, action, kind)
        SELECT %(last)s - i, 'numpy', 'numpy', '1.0',
               extract(epoch FROM now())::bigint - i * 2, 'new release', 'new_release'
        FROM generate_series(0, 300000) i""", {"last": last})
    conn.execute("UPDATE sync_state SET last_serial = %s, derived_serial = %s", (last, last))
    conn.execute("INSERT INTO consumer_marks (consumer, mark) SELECT 'publish_index', max(change_seq) - 500"
                 " FROM packages")
    conn.execute("""
        INSERT INTO dashboard_samples (taken_at, target, queue_depth, queue_fresh, head_released)
        SELECT now() - i * interval '5 minutes', t.name, 500000 + i, 10, now() - interval '1 hour'
        FROM generate_series(1, 2016) i CROSS JOIN targets t""")
    conn.execute("""
        INSERT INTO sync_samples (taken_at, serial, pypi_serial, wheels, wheel_bytes)
        SELECT now() - i * interval '5 minutes', %(last)s - i, %(last)s - i + (i %% 40), 1000000, 10 ^ 12
        FROM generate_series(1, 2016) i""", {"last": last})
    conn.execute("""
        INSERT INTO builders (name, target, ssh_conn_id, build_dir)
        SELECT 'pi-' || i, (SELECT name FROM targets ORDER BY position LIMIT 1), 'b' || i, '/srv/build'
        FROM generate_series(0, 49) i""")
    conn.execute("""
        INSERT INTO builder_health (builder, checked_at, reachable, temp_c, load1, load5, load15, mem_total,
                                    mem_available, disk_free, disk_total, held)
        SELECT name, now(), true, 60, 2, 2, 2, 4e9, 2e9, 2e10, 6e10, false FROM builders""")
    with conn.cursor() as cur:
        with cur.copy("COPY downloads (day, filename, package, version, abi_tag, platform_tag, python, installer,"
                      " installer_version, count) FROM STDIN") as copy:
            for day in range(30):
                for i, name in enumerate(packages[:2000]):
                    copy.write_row((_day(day), f"{name}-1.0-cp311-cp311-linux_armv7l.whl", name, "1.0",
                                    "cp311", "linux_armv7l", "3.11", "pip", "24.0", 1 + i % 50))
        with cur.copy("COPY searches (day, package, count) FROM STDIN") as copy:
            for day in range(30):
                for i in range(5000):
                    copy.write_row((_day(day), f"wanted-{i}", 1 + i % 7))
    conn.execute("ANALYZE")


def _day(days_ago: int):
    from datetime import date, timedelta
    return date.today() - timedelta(days=days_ago)


def main(argv=None) -> int:
    return run_at_scale(run, "dashboard", __doc__.splitlines()[0], argv)


def run(args, dsn: str) -> None:
    rows = read_names(args.names, args.limit)
    with psycopg.connect(dsn, autocommit=True) as conn:
        db.init_schema(conn)
        versions, seconds = timed(lambda: load(conn, rows, args.versions))
        _, more = timed(lambda: activity(conn, [name for name, _, _ in rows]))
        builds = conn.execute("SELECT count(*) FROM builds").fetchone()[0]
        print(f"catalog: {len(rows):,} packages, {versions:,} releases, {builds:,} builds; loaded in "
              f"{seconds:.1f} s + {more:.1f} s of activity", flush=True)
        sample, seconds = timed(lambda: dashboard.take_samples(conn, 25_000_040))
        print(f"take_samples (periodic, not per page): {seconds:.2f} s; queues {sample['queues']}", flush=True)
        render_page(dashboard.snapshot(conn), user="admin", can_act=True)  # the app compiles its template at start
        snaps, pages = [], []
        for _ in range(ROUNDS):
            data, seconds = timed(lambda: dashboard.snapshot(conn))
            snaps.append(seconds)
            _, seconds = timed(lambda: render_page(data, user="admin", can_act=True))
            pages.append(seconds)
        totals = [a + b for a, b in zip(snaps, pages)]
        print(f"snapshot: median {statistics.median(snaps) * 1000:.0f} ms, max {max(snaps) * 1000:.0f} ms "
              f"({ROUNDS} rounds)")
        print(f"render_page: median {statistics.median(pages) * 1000:.0f} ms, max {max(pages) * 1000:.0f} ms")
        print(f"page total: median {statistics.median(totals) * 1000:.0f} ms, max {max(totals) * 1000:.0f} ms "
              f"({'under' if max(totals) < 1 else 'OVER'} a second)")
        print(f"what it showed: {sum(b['last_day'] for b in data['builds']):,} builds in the last day, "
              f"{data['sync']['events_last_hour']:,} events in the last hour, "
              f"{len(data['failures'])} recent failures, {len(data['builders'])} builders", flush=True)
        with conn.cursor() as cur:   # which queries cost most, for whoever tunes them next
            for name in ("dashboard_sync", "dashboard_targets", "dashboard_builds_recent",
                         "dashboard_success_rate", "dashboard_builds_over_time", "dashboard_failures",
                         "dashboard_events_per_hour", "dashboard_publish", "dashboard_builders",
                         "dashboard_queue_trend", "dashboard_lag_trend", "dashboard_health_trend",
                         "dashboard_refusals", "dashboard_rankings",
                         # sampled, not per page:
                         "dashboard_missing", "dashboard_searches", "dashboard_top_downloads"):
                params = {"limit": 20}
                _, seconds = timed(lambda: cur.execute(db.query(name), params).fetchall())
                print(f"  {name}: {seconds * 1000:.0f} ms")


if __name__ == "__main__":
    raise SystemExit(main())
