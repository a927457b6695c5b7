"""The corpus benchmark: real Pi packages built for the Pi targets, the way a worker builds them.

    .venv/bin/python bench/bench_corpus.py                                  # all of data/corpus.toml, both targets
    .venv/bin/python bench/bench_corpus.py --targets cp311-armv7l --only spidev pyyaml
    .venv/bin/python bench/bench_corpus.py --family hardware --timeout 1800 --output /var/tmp/corpus-run

Each release of data/corpus.toml (its sdist from the corpus cache, bench/corpus_fetch.py) is served by the
PyPI double, synced into a scratch catalog with the product's own sync and enrichment (so the claim pins
the sdist's sha256), and built by ``wheelwright build``'s path (builds/local_build.py): the claim, the
worker's builder in its sandbox with the target's image as its root (built on first use in
$WHEELWRIGHT_IMAGES, a store outside the tests'), its install test, the hand-over, and the index host's
checks, install test and recording. Build dependencies come from PyPI through a relay on the host
(wheelwright.testing.corpus.PyPIRelay: the images cannot verify the TLS of this network's way out). The published tree of the run
(--output) holds the wheels, the logs and reports/corpus/: index.md, index.html and corpus.json, one row
per build (status, the failure's cause, seconds setting up the build environment and compiling, wheel
size, glibc floor, where it was tested, apt dependencies), and each target's built/failed count beside
the ARM wheels PyPI itself offers (piwheels.org is not reachable from here).

The time split comes from pip's own output, observed as it streams: the build environment is everything
until pip starts "Building wheel for ..." (fetching the sdist, the isolated environment with its build
dependencies, the metadata hooks), compiling the rest (the build backend, until pip is done). The
install tests (builder, then index host) and the hand-over are the remainder of the wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from html import escape
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from scratch import scratch_database, scratch_server  # noqa: E402
from wheelwright.builds import builder  # noqa: E402
from wheelwright.builds.local_build import build_release  # noqa: E402
from wheelwright.builds.targets import load_targets, target_named  # noqa: E402
from wheelwright.catalog import db  # noqa: E402
from wheelwright.publish.reports import classify_failure, read_log  # noqa: E402
from wheelwright.testing import corpus  # noqa: E402
from wheelwright.testing.pypi_double import PyPIDouble  # noqa: E402

MARK_COMPILE = b"Building wheel for "


class Observed:
    """``builder.build`` as the worker runs it, watched: when pip started compiling, and the outcome."""

    def __init__(self):
        self.compile_started: float | None = None
        self.last_output = 0.0  # pip's last words: the end of the build itself (the install test is after)
        self.started = self.ended = 0.0
        self.duration = 0.0

    def __call__(self, request, **options):
        original = builder.CappedLog.write
        seen = self

        def write(log, chunk: bytes) -> None:
            now = time.monotonic()
            if seen.compile_started is None and MARK_COMPILE in (log.tail[-200:] + chunk):
                seen.compile_started = now
            seen.last_output = now
            original(log, chunk)
        builder.CappedLog.write = write
        self.started = time.monotonic()
        try:
            outcome = builder.build(request, **options)
        finally:
            builder.CappedLog.write = original
        self.ended = time.monotonic()
        self.duration = outcome.duration
        return outcome

    def split(self) -> tuple[float | None, float | None]:
        """Seconds of (build environment, compiling) of the pip wheel run; None when pip never compiled."""
        if self.compile_started is None:
            return None, None
        return self.compile_started - self.started, self.last_output - self.compile_started


def build_all(conn, releases, targets, *, index_url, relay, work: Path, output: Path, timeout: float,
              progress) -> list[dict]:
    rows = []
    total = len(releases) * len(targets)
    done = 0
    for target in targets:
        for release in releases:
            done += 1
            watch = Observed()
            started = time.monotonic()
            result = build_release(conn, release.name, release.version, target=target.name, index_url=index_url,
                                   workdir=work / "builds", incoming=work / "incoming", output=output,
                                   build=watch, timeout=timeout, extra_index_url=relay.simple_url)
            wall = time.monotonic() - started
            rows.append(row_of(conn, release, target, result, watch, wall, output))
            r = rows[-1]
            progress(f"[{done}/{total}] {target.name} {release.name} {release.version}: {r['status']}"
                     + (f" ({r['cause']}: {r['detail']})" if r["status"] != "success" else
                        f" {r['wheel']} {r['tested'] or ''}") + f" [{wall:.0f} s]")
    return rows


def row_of(conn, release, target, result, watch: Observed, wall: float, output: Path) -> dict:
    environment, compiling = watch.split()
    build_seconds = watch.ended - watch.started  # pip, the wheel's analysis, the builder's install test
    row = {"package": release.package, "name": release.name, "version": release.version,
           "family": release.family, "target": target.name, "status": result.status,
           "pypi_arm": release.pypi_arm, "wall_seconds": round(wall, 1),
           "build_seconds": round(build_seconds, 1),
           "environment_seconds": round(environment, 1) if environment is not None else None,
           "compile_seconds": round(compiling, 1) if compiling is not None else None,
           "cause": None, "detail": None, "wheel": None, "size": None, "glibc_floor": None,
           "tested": None, "apt": [], "log": result.log_path}
    if result.accepted:
        for filename, size, floor, tested_on, test_result in conn.execute(
                "SELECT filename, size, glibc_floor, tested_on, test_result FROM wheels WHERE build_id = %s",
                (result.build_id,)):
            from wheelwright.publish.pages import tested_sentence
            row.update(wheel=filename, size=size, glibc_floor=floor, tested=tested_sentence(test_result, tested_on))
        row["apt"] = [dep for (dep,) in conn.execute(
            "SELECT DISTINCT d.dependency FROM wheel_dependencies d JOIN wheels w USING (filename) "
            "WHERE w.build_id = %s AND d.tool = 'apt' ORDER BY 1", (result.build_id,))]
    else:
        text = (read_log(output / result.log_path) or "") if result.log_path else ""
        row["cause"], row["detail"] = classify_failure(result.reason, text)
        row["reason"] = result.reason
    return row


def machine_of(target) -> str:
    return target.platform.split("_", 1)[1]


def summary(rows: list[dict], targets) -> str:
    lines = ["| target | built | failed | of which PyPI has an ARM wheel | median env s | median compile s | "
             "median wall s |", "|---|---|---|---|---|---|---|"]
    for target in targets:
        mine = [r for r in rows if r["target"] == target.name]
        built = [r for r in mine if r["status"] == "success"]
        failed = [r for r in mine if r["status"] != "success"]
        gap = [r for r in failed if machine_of(target) in corpus.Release(
            r["name"], r["version"], r["family"], "", "", "0" * 64, 1, r["pypi_arm"], False, "").pypi_builds_for]
        med = lambda key: (f"{statistics.median(v):.0f}" if (v := [r[key] for r in built if r[key] is not None])
                           else "-")
        lines.append(f"| {target.name} | {len(built)} | {len(failed)} | {len(gap)}"
                     f"{' (' + ', '.join(r['name'] for r in gap) + ')' if gap else ''} | "
                     f"{med('environment_seconds')} | {med('compile_seconds')} | {med('wall_seconds')} |")
    causes = Counter((r["target"], r["cause"]) for r in rows if r["status"] != "success")
    if causes:
        lines += ["", "| target | cause of failure | builds |", "|---|---|---|"]
        lines += [f"| {t} | {c} | {n} |" for (t, c), n in sorted(causes.items())]
    lines += ["", "| target | package | version | family | status | cause / wheel | env s | compile s | "
              "wall s | size | glibc | tested | apt |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        what = (f"{r['cause']}: {r['detail']}" if r["status"] != "success" else r["wheel"]).replace("|", "\\|")
        lines.append(f"| {r['target']} | {r['name']} | {r['version']} | {r['family']} | {r['status']} | {what} | "
                     f"{r['environment_seconds'] if r['environment_seconds'] is not None else '-'} | "
                     f"{r['compile_seconds'] if r['compile_seconds'] is not None else '-'} | {r['wall_seconds']} | "
                     f"{(r['size'] or 0) // 1024 if r['size'] else '-'}{' KiB' if r['size'] else ''} | "
                     f"{r['glibc_floor'] or '-'} | {r['tested'] or '-'} | {' '.join(r['apt']) or '-'} |")
    return "\n".join(lines) + "\n"


def write_report(output: Path, rows: list[dict], targets, seconds: float, argv: list[str]) -> Path:
    folder = output / "reports" / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    table = summary(rows, targets)
    head = (f"# The corpus, built\n\n`bench/bench_corpus.py {' '.join(argv)}`: {len(rows)} builds in "
            f"{seconds / 60:.0f} min. Every failure has its cause and its log (`log`).\n\n")
    (folder / "index.md").write_text(head + table)
    (folder / "corpus.json").write_text(json.dumps({"seconds": round(seconds), "builds": rows}, indent=1))
    cells = "".join(
        f"<tr><td>{escape(r['target'])}</td><td>{escape(r['name'])} {escape(r['version'])}</td>"
        f"<td>{escape(r['family'])}</td><td>{escape(r['status'])}</td>"
        f"<td>{escape(r['cause'] + ': ' + (r['detail'] or '') if r['cause'] else r['wheel'] or '')}</td>"
        f"<td>{r['environment_seconds'] if r['environment_seconds'] is not None else '-'}</td>"
        f"<td>{r['compile_seconds'] if r['compile_seconds'] is not None else '-'}</td>"
        f"<td>{r['wall_seconds']}</td><td>{escape(r['glibc_floor'] or '-')}</td>"
        f"<td>{escape(r['tested'] or '-')}</td><td>{escape(' '.join(r['apt']))}</td>"
        f"<td>{'<a href=../../' + escape(r['log']) + '>log</a>' if r['log'] else ''}</td></tr>\n" for r in rows)
    (folder / "index.html").write_text(
        "<!DOCTYPE html><html><head><meta charset=utf-8><title>The corpus, built</title></head><body>"
        f"<h1>The corpus, built</h1><p>{len(rows)} builds in {seconds / 60:.0f} min</p>"
        "<table border=1 cellpadding=3><tr><th>target</th><th>release</th><th>family</th><th>status</th>"
        "<th>cause / wheel</th><th>env s</th><th>compile s</th><th>wall s</th><th>glibc</th><th>tested</th>"
        f"<th>apt</th><th>log</th></tr>\n{cells}</table></body></html>\n")
    return folder


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default="cp311-armv7l,cp313-aarch64", help="targets of targets.toml")
    parser.add_argument("--only", nargs="*", help="these releases (names) only")
    parser.add_argument("--family", help="one family only")
    parser.add_argument("--ci", action="store_true", help="the test suite's slice only")
    parser.add_argument("--timeout", type=float, default=2400, help="seconds per build (default 2400)")
    parser.add_argument("--output", type=Path, help="the run's published tree (default: a new folder in /var/tmp)")
    parser.add_argument("--dsn", help="a PostgreSQL server to make the scratch catalog on (default: embedded)")
    args = parser.parse_args(argv)
    releases = [r for r in corpus.load_corpus()
                if (not args.only or r.name in args.only or r.package in args.only)
                and (not args.family or r.family == args.family) and (r.ci or not args.ci)]
    all_targets = load_targets()
    targets = [target_named(all_targets, name) for name in args.targets.split(",")]
    cache = corpus.default_cache()
    corpus.fetch(releases, cache, progress=lambda line: print(line, file=sys.stderr))
    work = Path(tempfile.mkdtemp(prefix="wheelwright-corpus-run-", dir="/var/tmp"))
    work.chmod(0o755)
    output = args.output or work / "www"
    progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    started = time.monotonic()
    with scratch_server(args.dsn, work) as server, scratch_database(server, "wheelwright_corpus") as dsn:
        import psycopg
        with psycopg.connect(dsn, autocommit=True) as conn:
            db.init_schema(conn)
            with PyPIDouble(corpus.changelog(releases), files_dir=cache) as pypi, \
                    corpus.PyPIRelay(cache / "pypi-relay") as relay:
                corpus.load_catalog(conn, pypi, releases)
                rows = build_all(conn, releases, targets, index_url=pypi.simple_url, relay=relay, work=work,
                                 output=output, timeout=args.timeout, progress=progress)
                # written before the scratch catalog goes: a failing teardown loses no figures
                seconds = time.monotonic() - started
                folder = write_report(output, rows, targets, seconds, argv)
    print(summary(rows, targets).split("\n\n| target | package")[0])
    print(f"{len(rows)} builds in {seconds / 60:.1f} min; the whole table: {folder}/index.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
