"""Benchmark the CDN purger: how soon a PyPI event is fresh at the edge, and what purging costs.

    .venv/bin/python bench/bench_cdn.py [--dsn DSN] [--events 20] [--packages 1000]

1. From a PyPI event to the page fresh at the edge: a local PyPI double, the catalog (embedded
   PostgreSQL unless --dsn), the origin (nginx with the shipped config if installed, else the static
   server) and a real Varnish with the shipped VCL in front. The project JSON of one package is cached
   at the edge; then, --events times: a "new release" row is appended to the double's changelog, and
   we time sync (``sync_once``), publish, purge (Varnish xkey), and the edge serving the new version.
2. Purge calls per N changed packages (default 1,000) for each backend: N packages are published,
   each gets a new release, the next publish owes its keys, and those keys are delivered to Varnish
   (real), Fastly and Cloudflare (local doubles of their APIs; Cloudflare with the Free plan's rate
   limit, 5 requests a minute with a bucket of 25, slept through in virtual time); then a burst of ten
   times as many keys to Cloudflare, which meets that limit.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))   # the servers and CDN doubles the tests use

from scratch import scratch_database, scratch_server  # noqa: E402
from support.cdn_doubles import Bucket, CloudflareDouble, FastlyDouble  # noqa: E402
from support.serving import edge, serve  # noqa: E402
from wheelwright.catalog import db  # noqa: E402
from wheelwright.catalog.sync import sync_once  # noqa: E402
from wheelwright.config import Settings  # noqa: E402
from wheelwright.publish import cdn, writer  # noqa: E402
from wheelwright.pypi.client import PyPI  # noqa: E402
from wheelwright.testing.pypi_double import PyPIDouble  # noqa: E402

T0 = 1_700_000_000


def edge_versions(url: str) -> tuple[list[str], str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return list(json.loads(response.read())["releases"]), response.headers.get("X-Cache", "")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def bench_event_to_edge(dsn: str, workdir: Path, events: int) -> None:
    rows = [["Bench-Pkg", None, T0, "create", 1], ["Bench-Pkg", "1.0", T0 + 1, "new release", 2]]
    settings = Settings(home=workdir / "home", dsn=dsn, pypi_url="http://127.0.0.1:9/pypi",
                        output=workdir / "www")
    with PyPIDouble(rows) as double, db.connect(settings) as conn:
        settings = settings.with_(pypi_url=double.xmlrpc_url)
        pypi = PyPI(double.xmlrpc_url)
        sync_once(conn, pypi)
        cdn.publish_and_purge(conn, settings, None)
        origin = serve(settings.output, workdir / "origin")
        varnish = edge(origin, workdir / "edge")
        purger = cdn.VarnishPurger(url=varnish.url)
        page = f"{varnish.url}/project/bench-pkg/json/"
        try:
            edge_versions(page)
            assert edge_versions(page)[1] == "HIT", "the page should be cached at the edge"
            stages = {"sync": [], "publish": [], "purge": [], "edge": [], "total": []}
            serial = 2
            for n in range(events):
                serial += 1
                version = f"2.{n}"
                double.append([["Bench-Pkg", version, T0 + serial, "new release", serial]])
                started = time.perf_counter()
                sync_once(conn, pypi)
                synced = time.perf_counter()
                result = writer.publish(conn, settings.output, pypi_url="http://127.0.0.1", purging=True)
                published = time.perf_counter()
                delivery = cdn.deliver(conn, purger, remove=writer.remover(conn, settings.output))
                purged = time.perf_counter()
                while version not in edge_versions(page)[0]:
                    time.sleep(0.001)
                fresh = time.perf_counter()
                assert delivery.purged == ["project/bench-pkg"], delivery
                assert result.changed == ["bench-pkg"]
                stages["sync"].append(synced - started)
                stages["publish"].append(published - synced)
                stages["purge"].append(purged - published)
                stages["edge"].append(fresh - purged)
                stages["total"].append(fresh - started)
            print(f"1. PyPI event -> page fresh at the edge (Varnish in front of {origin.kind}), "
                  f"{events} events:")
            for stage, values in stages.items():
                print(f"   {stage:8s} median {statistics.median(values) * 1000:8.1f} ms   "
                      f"p95 {pct(values, 0.95) * 1000:8.1f} ms   max {max(values) * 1000:8.1f} ms")
        finally:
            varnish.stop()
            origin.stop()


def load_packages(conn: psycopg.Connection, n: int) -> list[str]:
    names = [f"pkg-{i:05d}" for i in range(n)]
    with conn.cursor() as cur:
        with cur.copy("COPY packages (package, display_name, present, change_seq, summary) FROM STDIN") as copy:
            for i, name in enumerate(names, start=1):
                copy.write_row((name, name, True, i, f"summary of {name}"))
        with cur.copy("COPY versions (package, version, born_serial, released, rank, valid, prerelease,"
                      " yanked, quarantined, has_sdist) FROM STDIN") as copy:
            for i, name in enumerate(names, start=1):
                copy.write_row((name, "1.0", i, "2024-01-01T00:00:00Z", 1, True, False, False, False, True))
    conn.execute("SELECT setval('change_seq', %s)", (n + 1,))
    conn.commit()
    return names


def bench_calls_per_changed(dsn: str, workdir: Path, n: int) -> None:
    settings = Settings(home=workdir / "home", dsn=dsn, pypi_url="https://pypi.org/pypi",
                        output=workdir / "www-calls")
    with db.connect(settings) as conn:
        names = load_packages(conn, n)
        writer.publish(conn, settings.output)
        conn.execute("INSERT INTO versions (package, version, born_serial, released, rank, valid,"
                     " prerelease, yanked, quarantined, has_sdist)"
                     " SELECT package, '2.0', 2, now(), 2, true, false, false, false, true FROM packages")
        conn.execute("UPDATE packages SET change_seq = nextval('change_seq')")
        conn.commit()
        result = writer.publish(conn, settings.output, purging=True)
        keys = result.purge_keys()
        conn.execute("DELETE FROM cdn_purges")
        conn.commit()
        print(f"2. purge calls for {len(names):,} changed packages (a new release each): the publish owes "
              f"{len(keys):,} keys (root {'included' if cdn.ROOT in keys else 'not included'})")
        origin = serve(settings.output, workdir / "origin-calls")
        varnish = edge(origin, workdir / "edge-calls")
        fastly = FastlyDouble("SU1Z0isxPaozGVKXdv0eY", "token")
        cloudflare = CloudflareDouble("023e105f4ecef8ad9ca31a8372d0c353", "token", bucket=Bucket(25, 5 / 60))
        try:
            backends = [
                ("varnish", cdn.VarnishPurger(url=varnish.url), None),
                ("fastly", cdn.purger_for(f"fastly:{fastly.account}", "token", fastly.url), fastly),
                ("cloudflare", cdn.purger_for(f"cloudflare:{cloudflare.account}", "token", cloudflare.url),
                 cloudflare),
            ]
            for name, purger, double in backends:
                with conn.transaction():
                    cdn.owe(conn, keys)
                waited = [0.0]

                def sleep(seconds, double=double, waited=waited):
                    waited[0] += seconds
                    if double is not None:
                        double.advance(seconds)

                started = time.perf_counter()
                delivery = cdn.deliver(conn, purger, sleep=sleep, deadline=3600)
                seconds = time.perf_counter() - started
                refused = double.refused if double is not None else 0
                per_1000 = delivery.calls * 1000 / len(names)
                print(f"   {name:10s} {delivery.calls:4d} calls ({per_1000:.1f} per 1,000 packages; "
                      f"{refused} refused by the rate limit), {len(delivery.purged):,} keys purged, "
                      f"{seconds * 1000:7.1f} ms wall" +
                      (f", {waited[0]:.0f} s waiting on Retry-After (virtual)" if waited[0] else ""))
            # A burst ten times that size meets Cloudflare's Free-plan limit: how long until all is purged.
            burst = [cdn.project_key(f"burst-{i:05d}") for i in range(10 * len(names))]
            with conn.transaction():
                cdn.owe(conn, burst)
            purger = cdn.purger_for(f"cloudflare:{cloudflare.account}", "token", cloudflare.url)
            refused_before, waited = cloudflare.refused, [0.0]

            def sleep(seconds):
                waited[0] += seconds
                cloudflare.advance(seconds)

            delivery = cdn.deliver(conn, purger, sleep=sleep, deadline=24 * 3600)
            print(f"   cloudflare, {len(burst):,} keys at once on the Free plan: {delivery.calls} calls, "
                  f"{cloudflare.refused - refused_before} refused (429) and retried after Retry-After, "
                  f"{len(delivery.purged):,} purged after {waited[0] / 60:.1f} min of waiting (virtual), "
                  f"{len(delivery.failed)} lost")
        finally:
            fastly.stop()
            cloudflare.stop()
            varnish.stop()
            origin.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a maintenance DSN (default: an embedded PostgreSQL)")
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--packages", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-cdn-") as tmp:
        workdir = Path(tmp)
        with scratch_server(args.dsn, workdir) as server:
            with scratch_database(server, "bench_cdn_events") as dsn:
                with psycopg.connect(dsn) as conn:
                    db.init_schema(conn)
                bench_event_to_edge(dsn, workdir, args.events)
            with scratch_database(server, "bench_cdn_calls") as dsn:
                with psycopg.connect(dsn) as conn:
                    db.init_schema(conn)
                bench_calls_per_changed(dsn, workdir, args.packages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
