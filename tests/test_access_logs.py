"""Downloads and searches from access logs: strict parsing, and every line counted exactly once.

The lines are written the way nginx writes them with the ``wheelwright`` format of nginx/wheelwright.conf
(quotes inside variables escaped as \\x22) and the ``combined`` format of the edge; the ingest reads real
files that are appended to, rotated (renamed away, a new file at the path) and truncated in place.
"""

from __future__ import annotations

import json
import os
from datetime import date

import pytest

from wheelwright.operate import access_logs
from wheelwright.operate.access_logs import Download, Refusal, Search, ingest, parse_line

DAY = date(2026, 12, 3)
WHEEL = "numpy-2.1.0-cp311-cp311-linux_armv7l.whl"
PIP_JSON = {"installer": {"name": "pip", "version": "24.0"}, "python": "3.11.2",
            "implementation": {"name": "CPython", "version": "3.11.2"}, "cpu": "armv7l"}


def pip_agent(version="24.0", data=PIP_JSON) -> str:
    return f"pip/{version} " + json.dumps(data, separators=(",", ":"))


def origin_line(path, status=200, agent=None, method="GET", when="03/Dec/2026:05:58:30 +0000") -> str:
    """A line as nginx writes it with `log_format wheelwright`: quotes in variables become \\x22."""
    agent = pip_agent() if agent is None else agent
    ua = agent.replace('"', "\\x22")
    return (f'192.0.2.7 [{when}] "{method} {path} HTTP/1.1" {status} 5123 format=json '
            f'accept="application/vnd.pypi.simple.v1+json" ua="{ua}" rt=0.003')


def edge_line(path, status=200, agent=None) -> str:
    agent = pip_agent() if agent is None else agent
    return (f'2001:db8::1 - - [03/Dec/2026:06:01:00 +0000] "GET {path} HTTP/1.1" {status} 100 "-" '
            f'"{agent.replace(chr(34), chr(92) + chr(34))}"')


def test_a_wheel_fetched_by_pip_is_a_download_by_package_target_python_and_pip_version():
    hit = parse_line(origin_line(f"/simple/numpy/{WHEEL}"))
    assert hit == Download(DAY, WHEEL, "numpy", "2.1.0", "cp311", "linux_armv7l", "3.11", "pip", "24.0")


def test_the_edge_combined_format_is_read_too():
    hit = parse_line(edge_line(f"/simple/numpy/{WHEEL}"))
    assert isinstance(hit, Download) and hit.python == "3.11" and hit.installer == "pip"


def test_a_browser_download_counts_without_python_or_installer():
    hit = parse_line(origin_line(f"/simple/numpy/{WHEEL}", agent="Mozilla/5.0 (X11; Linux)"))
    assert isinstance(hit, Download) and (hit.python, hit.installer) == ("", "")


def test_a_404_on_a_project_page_is_a_search_under_the_canonical_name():
    assert parse_line(origin_line("/simple/Some_Package/", status=404)) == Search(DAY, "some-package")
    assert parse_line(origin_line("/simple/some.package", status=404)) == Search(DAY, "some-package")


def test_pages_metadata_head_requests_and_not_modified_are_neither_downloads_nor_searches():
    for line in [origin_line("/simple/numpy/"), origin_line("/simple/"),
                 origin_line(f"/simple/numpy/{WHEEL}.metadata"), origin_line(f"/simple/numpy/{WHEEL}", 304),
                 origin_line(f"/simple/numpy/{WHEEL}", method="HEAD"), origin_line("/project/numpy/", 404),
                 origin_line(f"/simple/numpy/{WHEEL}", status=206)]:
        assert parse_line(line) is None, line


@pytest.mark.parametrize("line, reason", [
    ("garbage", "not an access-log line"),
    ('1.2.3.4 [03/Dec/2026:05:58:30 +0000] "GET /simple/x/ HTTP/1.1" 404 0 format=html accept="" '
     'ua="x" rt=0.001 trailing', "not an access-log line"),
    (origin_line("/simple/numpy/numpy-1.0-cp311-linux_armv7l.whl"), "wheel file name"),
    (origin_line(f"/simple/scipy/{WHEEL}"), "another project"),
    (origin_line("/simple/-bad-/", 404), "not a valid name"),
    (origin_line(f"/simple/numpy/{WHEEL}", agent="pip/24.0 {not json"), "JSON does not parse"),
    (origin_line(f"/simple/numpy/{WHEEL}", agent='pip/24.0 {"python": "three"}'), "Python version"),
    (origin_line(f"/simple/numpy/{WHEEL}", when="33/Dec/2026:05:58:30 +0000"), "not a date"),
    ('1.2.3.4 [03/Dec/2026:05:58:30 +0000] "\\x16\\x03\\x01" 400 0 format= accept="" ua="" rt=0.000',
     "request line"),
])
def test_a_line_that_does_not_parse_is_refused_with_a_reason(line, reason):
    refused = parse_line(line)
    assert isinstance(refused, Refusal) and reason in refused.reason, refused


def totals(conn):
    downloads = dict(conn.execute("SELECT filename, sum(count)::int FROM downloads GROUP BY 1").fetchall())
    searches = dict(conn.execute("SELECT package, sum(count)::int FROM searches GROUP BY 1").fetchall())
    refused = conn.execute("SELECT coalesce(sum(count), 0)::int FROM access_log_refusals").fetchone()[0]
    return downloads, searches, refused


def append(path, *lines, end="\n"):
    with open(path, "a") as f:
        f.write("\n".join(lines) + end)


def test_ingest_is_incremental_and_never_counts_a_line_twice(catalog, tmp_path):
    log = tmp_path / "access.log"
    append(log, origin_line(f"/simple/numpy/{WHEEL}"), origin_line("/simple/wanted/", 404), "junk")
    first = ingest(catalog, "origin", log)
    assert (first.lines, first.downloads, first.searches, first.refused) == (3, 1, 1, 1)
    assert ingest(catalog, "origin", log).lines == 0, "a second run with nothing new reads nothing"
    append(log, origin_line(f"/simple/numpy/{WHEEL}"))
    append(log, origin_line("/simple/wanted/", 404), end="")   # nginx has not finished this line yet
    assert ingest(catalog, "origin", log).lines == 1, "the unfinished line waits"
    append(log, "")
    assert ingest(catalog, "origin", log).lines == 1
    assert totals(catalog) == ({WHEEL: 2}, {"wanted": 2}, 1)


def test_a_rotated_log_is_finished_before_the_new_file_is_read(catalog, tmp_path):
    log = tmp_path / "access.log"
    append(log, origin_line(f"/simple/numpy/{WHEEL}"))
    ingest(catalog, "origin", log)
    append(log, origin_line(f"/simple/numpy/{WHEEL}"))        # written after our last read...
    os.rename(log, tmp_path / "access.log.1")                 # ...then logrotate moves the file away
    append(log, origin_line("/simple/wanted/", 404))          # and nginx reopens a new one
    result = ingest(catalog, "origin", log)
    assert result.rotated and result.lines == 2
    assert ingest(catalog, "origin", log).lines == 0
    append(log, origin_line("/simple/wanted/", 404))
    assert ingest(catalog, "origin", log).lines == 1
    assert totals(catalog) == ({WHEEL: 2}, {"wanted": 2}, 0)


def test_a_log_truncated_in_place_is_read_from_its_start(catalog, tmp_path):
    log = tmp_path / "access.log"
    append(log, origin_line(f"/simple/numpy/{WHEEL}"), origin_line(f"/simple/numpy/{WHEEL}"))
    ingest(catalog, "origin", log)
    log.write_text(origin_line("/simple/wanted/", 404) + "\n")   # copytruncate, then one new line
    assert ingest(catalog, "origin", log).lines == 1
    assert totals(catalog) == ({WHEEL: 2}, {"wanted": 1}, 0)


def test_sources_keep_their_own_positions_and_refusals(catalog, tmp_path):
    origin, edge = tmp_path / "origin.log", tmp_path / "edge.log"
    append(origin, origin_line(f"/simple/numpy/{WHEEL}"))
    append(edge, edge_line(f"/simple/numpy/{WHEEL}"), "\x00binary")
    ingest(catalog, "origin", origin)
    ingest(catalog, "edge", edge)
    assert totals(catalog) == ({WHEEL: 2}, {}, 1)
    assert catalog.execute("SELECT source, reason FROM access_log_refusals").fetchall() == [
        ("edge", "not an access-log line in the wheelwright or combined format")]


def test_a_commit_covers_exactly_the_lines_it_counted(catalog, tmp_path):
    """Small chunks: each commit moves the position with its own lines, so a crash between two
    commits (simulated by a failing third) leaves the first ones counted once and the rest to do."""
    log = tmp_path / "access.log"
    lines = [origin_line(f"/simple/numpy/{WHEEL}") for _ in range(5)]
    append(log, *lines)
    calls = {"n": 0}
    real = access_logs._commit

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("power cut")
        return real(*args, **kwargs)

    access_logs._commit = crash_on_third
    try:
        with pytest.raises(RuntimeError):
            ingest(catalog, "origin", log, chunk=len(lines[0]) + 1)
    finally:
        access_logs._commit = real
    assert totals(catalog)[0] == {WHEEL: 2}
    ingest(catalog, "origin", log)
    assert totals(catalog)[0] == {WHEEL: 5}


# --- the public stats -------------------------------------------------------------------------------

def test_the_public_stats_count_by_package_target_and_python(catalog, tmp_path):
    from support.build_world import use_targets
    from wheelwright.publish.stats import write_stats
    use_targets(catalog, """
[[target]]
name = "pi-bookworm"
abi = "cp311"
platform = "linux_armv7l"
distro = "bookworm"
""")
    log = tmp_path / "access.log"
    py312 = dict(PIP_JSON, python="3.12.1")
    append(log, origin_line(f"/simple/numpy/{WHEEL}"), origin_line(f"/simple/numpy/{WHEEL}"),
           origin_line("/simple/six/six-1.16.0-py2.py3-none-any.whl", agent=pip_agent(data=py312)),
           origin_line("/simple/wanted/", 404))
    ingest(catalog, "origin", log)
    output = tmp_path / "www"
    stats = write_stats(catalog, output)
    assert stats["total"] == 3
    assert [(p["package"], p["downloads"]) for p in stats["top_packages"]] == [("numpy", 2), ("six", 1)]
    assert {r["target"]: r["downloads"] for r in stats["by_target"]} == {"pi-bookworm": 2, "pure": 1}
    assert {r["python"]: r["downloads"] for r in stats["by_python"]} == {"3.11": 2, "3.12": 1}
    assert json.loads((output / "stats" / "index.json").read_text()) == stats
    html = (output / "stats" / "index.html").read_text()
    assert "numpy" in html and "<svg" in html and "//" not in html.replace("</", "")
    assert sorted(p.name for p in (output / "stats").iterdir()) == ["index.html", "index.json"], \
        "no temp file is left behind"


# --- the figures on the pages --------------------------------------------------------------------------

def test_download_figures_cover_whole_days_and_move_only_the_pages_they_change(catalog, tmp_path):
    from datetime import timedelta
    from support.index_world import World
    from wheelwright.operate.access_logs import refresh_download_counts
    world = World(catalog, tmp_path / "www")
    numpy, quiet = world.package("numpy"), world.package("quiet")
    world.release(numpy, "2.1.0")
    world.release(quiet, "1.0")
    catalog.execute("UPDATE packages SET enriched_seq = change_seq")  # PyPI's JSON read and current
    log = tmp_path / "access.log"
    today = date(2026, 12, 10)
    stamp = lambda d: d.strftime("%d/%b/%Y:12:00:00 +0000")  # noqa: E731
    append(log, *[origin_line(f"/simple/numpy/{WHEEL}", when=stamp(today - timedelta(days=n)))
                  for n in (0, 1, 1, 5, 40)])
    ingest(catalog, "origin", log)
    seqs = dict(catalog.execute("SELECT package, change_seq FROM packages"))

    done = refresh_download_counts(catalog, today=today)
    assert (done.through, done.rows, done.packages) == (today - timedelta(days=1), 1, 1)
    assert catalog.execute("SELECT package, version, last_30, total FROM download_counts").fetchall() == [
        ("numpy", "2.1.0", 3, 4)], "today is not a whole day yet; 40 days ago counts in all time only"
    after = dict(catalog.execute("SELECT package, change_seq FROM packages"))
    assert after["numpy"] > seqs["numpy"] and after["quiet"] == seqs["quiet"], "only numpy's pages move"
    assert catalog.execute("SELECT count(*) FROM packages WHERE enriched_seq < change_seq").fetchone()[0] == 0, \
        "new figures are no reason to read PyPI's JSON again"

    assert refresh_download_counts(catalog, today=today).through is None, "once a day"
    done = refresh_download_counts(catalog, today=today + timedelta(days=1))
    assert (done.rows, done.packages) == (1, 1), "yesterday's download is counted the next day"
    assert catalog.execute("SELECT last_30, total FROM download_counts").fetchone() == (4, 5)
    done = refresh_download_counts(catalog, today=today + timedelta(days=2))
    assert (done.rows, done.packages) == (0, 0), "figures that did not move publish nothing"


def test_the_access_logs_dag_ingests_and_writes_the_stats(airflow_env, settings, tmp_path):
    import subprocess
    import sys
    from support.catalog import REPO
    log = tmp_path / "access.log"
    append(log, origin_line(f"/simple/numpy/{WHEEL}"), origin_line("/simple/wanted/", 404))
    script = ("import json, sys\nfrom airflow.dag_processing.dagbag import DagBag\n"
              "bag = DagBag(dag_folder=sys.argv[1])\nassert not bag.import_errors, bag.import_errors\n"
              "run = bag.get_dag('access_logs').test()\nprint(json.dumps({'state': str(run.state)}))\n")
    env = dict(airflow_env, WHEELWRIGHT_DSN=settings.dsn, WHEELWRIGHT_OUTPUT=str(settings.output),
               WHEELWRIGHT_ACCESS_LOGS=json.dumps({"origin": str(log)}))
    result = subprocess.run([sys.executable, "-c", script, str(REPO / "dags")], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["state"] == "success"
    assert json.loads((settings.output / "stats" / "index.json").read_text())["total"] == 1
