"""A publish killed halfway (kill -9) leaves a tree pip can use, and the next publish completes it.

The world: 1,200 packages, each with a wheel, published once. Then every package gets a new release
and a publish starts in a subprocess; it is killed with SIGKILL soon after it reports its first
progress. Every package must still have complete pages (old or new), no page may be a half-written
file, the high-water mark must not have moved, and the next publish must finish the job.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

from wheelwright.publish.writer import CONSUMER, publish

PACKAGES = 1200

CHILD = """
import sys
from pathlib import Path
import psycopg
from wheelwright.publish.writer import publish

def progress(done, total):
    print(f"progress {done} {total}", flush=True)

with psycopg.connect(sys.argv[1]) as conn:
    publish(conn, Path(sys.argv[2]), progress=progress, workers=1)
print("done", flush=True)
"""


def insert_releases(catalog, prefix: str) -> None:
    """PACKAGES packages named ``prefix-N``, with one release each, set-based."""
    catalog.execute("""
        INSERT INTO packages (package, display_name, present, change_seq)
        SELECT %s || '-' || n, initcap(%s) || '-' || n, true, nextval('change_seq')
        FROM generate_series(1, %s) n""", (prefix, prefix, PACKAGES))
    catalog.execute("""
        INSERT INTO versions (package, version, born_serial, released, rank, valid, prerelease, yanked,
                              quarantined, has_sdist)
        SELECT package, '1.0', 1, '2024-01-01', 1, true, false, false, false, true FROM packages
        WHERE package LIKE %s || '-%%'""", (prefix,))


def make_world(catalog, www) -> list[str]:
    """PACKAGES packages with one release and one (dummy) wheel each, set-based."""
    catalog.execute("INSERT INTO targets (name, queue, abi, platform, distro, enabled, position)"
                    " VALUES ('cp311', 'cp311', 'cp311', 'linux_armv7l', 'bookworm', true, 1)")
    insert_releases(catalog, "pkg")
    catalog.execute("""
        INSERT INTO builds (package, version, abi, target, status)
        SELECT package, '1.0', 'cp311', 'cp311', 'success' FROM packages""")
    catalog.execute("""
        INSERT INTO wheels (filename, build_id, package, version, size, sha256, python_tag, abi_tag,
                            platform_tag)
        SELECT replace(package, '-', '_') || '-1.0-py3-none-any.whl', build_id, package, version, 4,
               repeat('a', 64), 'py3', 'none', 'any'
          FROM builds""")
    catalog.commit()
    names = [row[0] for row in catalog.execute("SELECT package FROM packages ORDER BY package")]
    for name in names:
        folder = www / "simple" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name.replace('-', '_')}-1.0-py3-none-any.whl").write_bytes(b"PK..")
    catalog.commit()
    return names


def add_release_everywhere(catalog) -> None:
    catalog.execute("""
        INSERT INTO versions (package, version, born_serial, released, rank, valid, prerelease, yanked,
                              quarantined, has_sdist)
        SELECT package, '2.0', 2, '2024-02-01', 2, true, false, false, false, true FROM packages""")
    catalog.execute("UPDATE packages SET change_seq = nextval('change_seq')")
    catalog.commit()


def mark(catalog) -> int:
    value = catalog.execute("SELECT mark FROM consumer_marks WHERE consumer = %s", (CONSUMER,)).fetchone()[0]
    catalog.commit()
    return value


def assert_consistent(www, names) -> dict[str, int]:
    """Every package has complete pages; return how many of each version's pages we saw."""
    seen = {"old": 0, "new": 0}
    for name in names:
        simple = www / "simple" / name
        html = (simple / "index.html").read_text()
        assert html.endswith("</html>\n") and f"{name.replace('-', '_')}-1.0-py3-none-any.whl" in html, name
        data = json.loads((simple / "index.json").read_text())
        seen["new" if "2.0" in data["versions"] else "old"] += 1
        project = json.loads((www / "project" / name / "json" / "index.json").read_text())
        assert "1.0" in project["releases"], name
        assert (www / "project" / name / "index.html").read_text().rstrip().endswith("</html>"), name
    for folder, _dirs, files in os.walk(www):
        for file in files:
            if file.startswith("index."):
                assert not file.startswith(".ww-tmp"), f"a temporary file is visible as a page: {folder}/{file}"
    return seen


def test_a_publish_killed_halfway_leaves_a_consistent_tree(catalog, catalog_dsn, settings, tmp_path):
    www = settings.output
    names = make_world(catalog, www)
    publish(catalog, www)
    first_mark = mark(catalog)
    assert assert_consistent(www, names) == {"old": PACKAGES, "new": 0}

    add_release_everywhere(catalog)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, catalog_dsn, str(www)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    assert line.startswith("progress"), f"the publish did not report progress: {line!r} {child.stderr.read()}"
    time.sleep(random.uniform(0, 0.02))  # somewhere in the second batch
    child.send_signal(signal.SIGKILL)
    rest = child.stdout.read()
    child.wait()
    assert "done" not in rest, "the publish finished before it could be killed: make the world bigger"

    seen = assert_consistent(www, names)
    assert seen["old"] > 0, "the killed publish cannot have finished every package"
    assert mark(catalog) == first_mark, "the mark must not move before the files are durable"

    result = publish(catalog, www)
    assert result.packages == PACKAGES
    assert assert_consistent(www, names) == {"old": 0, "new": PACKAGES}
    leftovers = [f for _d, _s, files in os.walk(www / "simple") for f in files if f.startswith(".ww-tmp")]
    assert leftovers == [], "the next publish cleans up the temporary files of the killed one"
    assert mark(catalog) > first_mark


RENAME_KILLER = """
import os, signal, sys
from pathlib import Path
import psycopg
from wheelwright.publish.writer import publish

renames = 0
real_rename = os.rename

def rename_then_die(src, dst):
    global renames
    real_rename(src, dst)
    renames += 1
    if renames == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)

os.rename = rename_then_die
with psycopg.connect(sys.argv[1]) as conn:
    publish(conn, Path(sys.argv[2]), workers=1)
print("done", flush=True)
"""


def test_a_first_publish_killed_between_folder_renames_shows_only_whole_folders(catalog, catalog_dsn,
                                                                                 settings):
    """New packages' folders are built hidden and renamed into place: a kill leaves none half-made."""
    www = settings.output
    insert_releases(catalog, "new")
    catalog.commit()
    names = [row[0] for row in catalog.execute("SELECT package FROM packages")]
    catalog.commit()

    child = subprocess.run([sys.executable, "-c", RENAME_KILLER, catalog_dsn, str(www), "301"],
                           capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, f"the publish was not killed: {child.stdout} {child.stderr}"

    visible = 0
    for name in names:
        simple, project = www / "simple" / name, www / "project" / name
        if simple.exists():
            visible += 1
            assert sorted(p.name for p in simple.iterdir()) == ["index.html", "index.json"], name
            assert json.loads((simple / "index.json").read_text())["versions"] == ["1.0"], name
        if project.exists():
            assert sorted(p.name for p in project.iterdir()) == ["feed.atom", "index.html", "json"], name
            assert json.loads((project / "json" / "index.json").read_text())["package"] == name
    assert 0 < visible < PACKAGES, "the kill must land halfway through the folder renames"
    hidden = [p.name for p in (www / "simple").iterdir() if p.name.startswith(".ww-tmp")]
    assert hidden, "the killed run left folders it was still building (hidden from the web server)"

    result = publish(catalog, www)
    assert result.packages == PACKAGES
    for name in names:
        assert (www / "simple" / name / "index.html").is_file(), name
        assert (www / "project" / name / "json" / "index.json").is_file(), name
    leftovers = [p.name for folder in ("simple", "project") for p in (www / folder).iterdir()
                 if p.name.startswith(".ww-tmp")]
    assert leftovers == [], "the next publish rebuilds what the killed one left hidden"
