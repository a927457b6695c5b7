"""A catalog with a day of activity, the world the dashboard tests look at.

Two targets (a Pi's cp311 and an aarch64 cp313), releases, builds finished over the last hours by
named builders (successes, failures with reasons and logs whose findings say what was missing), journal
events of the last hours, a publish mark, two registered builders (one held: too hot), downloads and
searches ingested from a real access log, and a dashboard sample. ``EXPECTED`` says what the dashboard
must show for it, counted here by hand from the rows below.
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from support.build_world import add_release, use_targets

TARGETS = """
[[target]]
name = "cp311-armv7l"
abi = "cp311"
platform = "linux_armv7l"
distro = "bookworm"

[[target]]
name = "cp313-aarch64"
abi = "cp313"
platform = "linux_aarch64"
distro = "trixie"
"""
PI, ARM64 = "cp311-armv7l", "cp313-aarch64"

# (package, version, target, builder, status, minutes ago it finished, reason)
BUILDS = [
    ("numpy", "2.1.0", PI, "pi-1", "success", 10, None),
    ("numpy", "2.1.0", ARM64, "arm-1", "success", 20, None),
    ("requests", "2.32.0", PI, "pi-1", "success", 30, None),
    ("lxml", "5.3.0", PI, "pi-1", "failure", 40, "pip wheel exited with 1: libxml/parser.h not found"),
    ("cffi", "1.17.1", PI, "pi-2", "failure", 90, "pip wheel exited with 1: ffi.h not found"),
    ("pillow", "11.0.0", PI, "pi-2", "success", 120, None),
    ("cryptography", "44.0.0", PI, "pi-2", "failure", 180, "pip wheel exited with 1: ffi.h not found"),
    ("old", "1.0", PI, "pi-1", "success", 60 * 30, None),   # more than a day ago: not in "last day"
]
QUEUED = [("fresh-pkg", "0.1", timedelta(minutes=5)), ("backlog", "1.0", timedelta(days=100)),
          ("backlog", "1.1", timedelta(days=50))]
PYPI_SERIAL = 1_000_120
OUR_SERIAL = 1_000_100

EXPECTED = {
    "serial": OUR_SERIAL, "lag": PYPI_SERIAL - OUR_SERIAL, "events_last_hour": 7,
    "builds_last_hour": 4, "builds_last_day": 7,
    "success_day": 4, "failure_day": 3,
    # cp311: fresh-pkg and backlog twice; cp313: what cp311 finished without a pure wheel, but numpy
    "queue": {PI: 3, ARM64: 6},
    "wheels": 5,
    "top_missing": ("header", "ffi.h", 2, "libffi-dev"),
    "downloads": {"numpy": 3, "requests": 1},
    "wanted": {"not-built-here": 2},
}


def log_file(output: Path, build_id: int, text: str) -> str:
    rel = f"logs/{build_id // 10**8:04d}/{build_id // 10**4 % 10**4:04d}/{build_id % 10**4:04d}.txt.gz"
    path = output / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()))
    return rel


def build_world(conn, output: Path, access_log: Path) -> dict:
    from wheelwright.operate import access_logs, dashboard
    from wheelwright.publish import reports

    use_targets(conn, TARGETS)
    now = conn.execute("SELECT now()").fetchone()[0]
    for package, version, *_ in BUILDS:
        if not conn.execute("SELECT 1 FROM versions WHERE package = %s AND version = %s",
                            (package, version)).fetchone():
            add_release(conn, package, version, age=timedelta(days=3))
    for package, version, age in QUEUED:
        add_release(conn, package, version, age=age)
    ids = {}
    for package, version, target, builder, status, minutes, reason in BUILDS:
        finished = now - timedelta(minutes=minutes)
        abi = target.split("-")[0]
        build_id = conn.execute(
            "INSERT INTO builds (package, version, abi, target, status, builder, started_at, finished_at,"
            " duration, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, interval '3 minutes', %s)"
            " RETURNING build_id",
            (package, version, abi, target, status, builder, finished - timedelta(minutes=3), finished,
             reason)).fetchone()[0]
        ids[package, target] = build_id
        if status == "failure":
            missing = "libxml/parser.h" if package == "lxml" else "ffi.h"
            rel = log_file(output, build_id, f"building {package}\nx.c:1:10: fatal error: {missing}: "
                                             "No such file or directory\n")
            conn.execute("UPDATE builds SET log_path = %s WHERE build_id = %s", (rel, build_id))
        else:
            tags = "cp313-cp313-linux_aarch64" if target == ARM64 else "cp311-cp311-linux_armv7l"
            conn.execute("INSERT INTO wheels (filename, build_id, package, version, size, sha256, python_tag,"
                         " abi_tag, platform_tag) VALUES (%s, %s, %s, %s, 1048576, 'x', %s, %s, %s)",
                         (f"{package}-{version}-{tags}.whl", build_id, package, version, *tags.split("-")))
    reports.scan_failed_logs(conn, output, None)
    # a PyPI day: 7 events in the last hour, 5 earlier
    for i in range(12):
        ts = now - (timedelta(minutes=5 * i) if i < 7 else timedelta(hours=3, minutes=i))
        conn.execute("INSERT INTO journal (serial, name, package, version, ts, action, kind) "
                     "VALUES (%s, 'numpy', 'numpy', '2.1.0', %s, 'new release', 'new_release')",
                     (OUR_SERIAL - i, int(ts.timestamp())))
    conn.execute("UPDATE sync_state SET last_serial = %s, derived_serial = %s", (OUR_SERIAL, OUR_SERIAL))
    conn.execute("INSERT INTO consumer_marks (consumer, mark) SELECT 'publish_index', max(change_seq) "
                 "FROM packages")
    conn.execute("INSERT INTO builders (name, target, ssh_conn_id, build_dir) VALUES "
                 "('pi-1', %s, 'builder_pi_1', '/srv/build'), ('pi-2', %s, 'builder_pi_2', '/srv/build'),"
                 " ('arm-1', %s, 'builder_arm_1', '/srv/build')", (PI, PI, ARM64))
    conn.execute("""INSERT INTO builder_health (builder, checked_at, reachable, temp_c, load1, load5, load15,
                        mem_total, mem_available, disk_free, disk_total, images_newest, held, held_reason,
                        held_since) VALUES
        ('pi-1', now(), true, 54.2, 1.5, 1.2, 1.0, 4294967296, 2147483648, 20000000000, 60000000000,
         now() - interval '2 days', false, NULL, NULL),
        ('pi-2', now(), true, 86.5, 3.9, 3.5, 3.0, 4294967296, 1073741824, 15000000000, 60000000000,
         now() - interval '9 days', true, 'too hot: 86.5 °C (limit 80 °C)', now() - interval '10 minutes'),
        ('arm-1', now(), true, NULL, 0.4, 0.3, 0.2, 8589934592, 6442450944, 90000000000, 120000000000,
         now() - interval '1 day', false, NULL, NULL)""")
    # a day of health checks every 30 minutes: pi-2 heating up until it is held
    conn.execute("""INSERT INTO builder_health_samples (builder, checked_at, reachable, temp_c, load1, disk_free, held)
        SELECT 'pi-1', now() - i * interval '30 minutes', true, 52 + (i % 5), 1.5, 20000000000, false
        FROM generate_series(0, 47) i
        UNION ALL
        SELECT 'pi-2', now() - i * interval '30 minutes', true, 86.5 - i * 0.6, 3.5, 15000000000, i = 0
        FROM generate_series(0, 47) i""")
    # downloads and searches, from a real log in the origin's format
    agent = "pip/24.0 " + json.dumps({"python": "3.11.2", "installer": {"name": "pip", "version": "24.0"}})
    when = datetime.now(timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")
    lines = []
    for path, status in [("/simple/numpy/numpy-2.1.0-cp311-cp311-linux_armv7l.whl", 200)] * 2 + [
            ("/simple/numpy/numpy-2.1.0-cp313-cp313-linux_aarch64.whl", 200),
            ("/simple/requests/requests-2.32.0-cp311-cp311-linux_armv7l.whl", 200),
            ("/simple/not-built-here/", 404), ("/simple/Not_Built_Here/", 404)]:
        lines.append(f'192.0.2.1 [{when}] "GET {path} HTTP/1.1" {status} 10 format=json accept="*/*" '
                     f'ua="{agent.replace(chr(34), chr(92) + "x22")}" rt=0.001')
    lines.append("a line nobody could read")
    access_log.write_text("\n".join(lines) + "\n")
    access_logs.ingest(conn, "origin", access_log)
    dashboard.take_samples(conn, PYPI_SERIAL)
    return ids
