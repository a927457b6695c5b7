"""Takedowns (`wheelwright remove` / `restore`): off the index, out of the queue, kept so by the sync.

The world: one target, the package ``gizmo`` with two releases built and published (wheels in the tree,
pages served by a real nginx, or the static server where nginx is missing), and ``other``, which
nothing happens to. The commands run as operators run them (the `wheelwright` command, in its own
process); the assertions are about the published tree, what a server answers, the build queue and what
pip does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support.index_world import World
from support.serving import serve
from wheelwright.builds.queue import claim_wave, queue_head
from wheelwright.operate import takedowns
from wheelwright.operate.admin import UnknownRelease
from wheelwright.publish import cdn
from wheelwright.publish.writer import publish

TARGET = "cp311"


@pytest.fixture
def world(catalog, settings):
    w = World(catalog, settings.output)
    w.target()
    w.package("Gizmo", summary="does gizmo things")
    w.release("gizmo", "1.0")
    w.release("gizmo", "2.0")
    w.wheel("gizmo", "1.0")
    w.wheel("gizmo", "2.0")
    w.package("other")
    w.release("other", "1.0")
    w.wheel("other", "1.0")
    publish(catalog, settings.output)
    return w


def wheelwright(settings, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHEELWRIGHT")}
    env.update(WHEELWRIGHT_HOME=str(settings.home), WHEELWRIGHT_DSN=settings.dsn,
               WHEELWRIGHT_OUTPUT=str(settings.output))
    return subprocess.run([sys.executable, "-m", "wheelwright", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def files_of(www, package) -> list[str]:
    folder = www / "simple" / package
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_removed_project_leaves_the_index_and_its_page_says_why(world, catalog, settings, tmp_path):
    www = settings.output
    assert any(name.endswith(".whl") for name in files_of(www, "gizmo"))
    done = wheelwright(settings, "remove", "Gizmo", "--reason", "its wheels brick a Pi 3", "--by", "ops")
    assert done.returncode == 0, done.stderr
    assert "removed gizmo: 2 builds and 2 wheels forgotten" in done.stdout

    result = publish(catalog, www)
    assert files_of(www, "gizmo") == [], "pages, wheels and .metadata all left the tree"
    assert {"project/gizmo", cdn.ROOT, cdn.SEARCH} <= set(result.purge_keys()), \
        "the CDN is told to forget the project, the root lists and the search index"
    root = json.loads((www / "simple" / "index.json").read_bytes())
    assert [p["name"] for p in root["projects"]] == ["other"]
    assert [row[0] for row in json.loads((www / "packages.json").read_bytes())] == ["other"]
    page = (www / "project" / "gizmo" / "index.html").read_text()
    assert "removed" in page and "its wheels brick a Pi 3" in page and "ops" not in page, \
        "the page gives the reason, not the operator's name"
    data = json.loads((www / "project" / "gizmo" / "json" / "index.json").read_bytes())
    assert data["removed"]["reason"] == "its wheels brick a Pi 3"
    assert all(not r["files"] and not r["builds"] for r in data["releases"].values())
    assert files_of(www, "other"), "other projects are untouched"

    served = serve(www, tmp_path / "server")
    try:
        assert served.get("/simple/gizmo/", accept="application/vnd.pypi.simple.v1+json")[0] == 404
        assert served.get("/simple/gizmo/")[0] == 404, "a 404, like a project this index never had"
        assert served.get("/project/gizmo/")[0] == 200
        assert served.get("/simple/other/")[0] == 200
    finally:
        served.stop()


def test_a_removed_project_is_never_claimed_again(world, catalog):
    catalog.execute("DELETE FROM builds WHERE package = 'other'")
    catalog.commit()
    takedowns.remove(catalog, "gizmo", reason="licence forbids binaries", by="ops")
    assert queue_head(catalog, TARGET) == [("other", "1.0")], "its builds were forgotten, not re-queued"
    assert [r["package"] for r in claim_wave(catalog, TARGET, 10)] == ["other"]


def test_a_build_in_flight_when_the_project_is_removed_is_not_published(world, catalog, settings, tmp_path):
    from support.received import send, wheel_of
    from wheelwright.builds import intake
    catalog.execute("DELETE FROM builds WHERE package = 'gizmo' AND version = '2.0'")
    catalog.commit()
    [request] = claim_wave(catalog, TARGET, 10)
    assert (request["package"], request["version"]) == ("gizmo", "2.0")
    takedowns.remove(catalog, "gizmo", reason="licence", by="ops")
    incoming = tmp_path / "incoming"
    folder = incoming / str(request["build_id"])
    folder.mkdir(parents=True)
    wheel = wheel_of(folder, "gizmo-2.0-py3-none-any.whl", "gizmo", "2.0")
    outcome = send(incoming, {**request, "abi": "cp311"}, [wheel])
    assert intake.receive(catalog, request, outcome, incoming, settings.output) == []
    assert catalog.execute("SELECT count(*) FROM wheels WHERE package = 'gizmo'").fetchone()[0] == 0
    publish(catalog, settings.output)
    assert files_of(settings.output, "gizmo") == []


def test_removing_one_release_drops_its_files_at_once_and_keeps_the_rest(world, catalog, settings):
    www = settings.output
    done = wheelwright(settings, "remove", "gizmo", "1.0", "--reason", "segfaults on import")
    assert done.returncode == 0, done.stderr
    publish(catalog, www)
    files = files_of(www, "gizmo")
    assert not [f for f in files if "-1.0-" in f], "the release's files go now, however young they are"
    assert "gizmo-2.0-py3-none-any.whl" in files and "index.json" in files
    simple = json.loads((www / "simple" / "gizmo" / "index.json").read_bytes())
    assert [f["filename"] for f in simple["files"]] == ["gizmo-2.0-py3-none-any.whl"]
    data = json.loads((www / "project" / "gizmo" / "json" / "index.json").read_bytes())
    assert data["releases"]["1.0"]["removed_reason"] == "segfaults on import"
    assert data["releases"]["2.0"]["removed_reason"] is None and data["removed"] is None
    assert "removed from this index: segfaults on import" in (www / "project/gizmo/index.html").read_text()
    assert ("gizmo", "1.0") not in queue_head(catalog, TARGET)


def test_restore_lists_the_project_again_and_queues_its_releases(world, catalog, settings):
    www = settings.output
    takedowns.remove(catalog, "gizmo", reason="mistake", by="ops")
    publish(catalog, www)
    done = wheelwright(settings, "restore", "gizmo")
    assert done.returncode == 0, done.stderr
    assert sorted(queue_head(catalog, TARGET)) == [("gizmo", "1.0"), ("gizmo", "2.0")], \
        "restored releases are built again"
    publish(catalog, www)
    assert "index.json" in files_of(www, "gizmo"), "its simple pages are back (listing what gets built)"
    root = json.loads((www / "simple" / "index.json").read_bytes())
    assert sorted(p["name"] for p in root["projects"]) == ["Gizmo", "other"]
    assert json.loads((www / "project/gizmo/json/index.json").read_bytes())["removed"] is None
    again = wheelwright(settings, "restore", "gizmo")
    assert again.returncode == 5 and "not taken down" in again.stderr


def test_takedowns_need_a_reason_and_a_known_name(world, catalog, settings):
    with pytest.raises(UnknownRelease):
        takedowns.remove(catalog, "no-such-project", reason="x", by="ops")
    with pytest.raises(UnknownRelease):
        takedowns.remove(catalog, "gizmo", "9.9", reason="x", by="ops")
    assert wheelwright(settings, "remove", "gizmo", "--reason", "  ").returncode == 1
    listed = wheelwright(settings, "takedowns")
    assert listed.returncode == 0 and "nothing is taken down" in listed.stdout


def test_the_sync_does_not_bring_a_removed_project_back(catalog, settings):
    """PyPI knows nothing of a takedown: new releases, and the project deleted and created again,
    re-derive the package from its journal; it stays off the index and out of the queue."""
    from wheelwright.catalog import sync
    from wheelwright.pypi.client import PyPI
    from wheelwright.testing.pypi_double import PyPIDouble

    World(catalog, settings.output).target()
    rows = [["Gizmo", None, 1_700_000_000, "create", 1],
            ["Gizmo", "1.0", 1_700_000_001, "new release", 2],
            ["Gizmo", "1.0", 1_700_000_002, "add source file Gizmo-1.0.tar.gz", 3]]
    with PyPIDouble(rows) as double:
        sync.sync_once(catalog, PyPI(double.xmlrpc_url))
        assert queue_head(catalog, TARGET) == [("gizmo", "1.0")]
        takedowns.remove(catalog, "gizmo", reason="maintainer asked", by="ops")
        double.append([["Gizmo", "1.1", 1_700_000_100, "new release", 4],
                       ["Gizmo", "1.1", 1_700_000_101, "add source file Gizmo-1.1.tar.gz", 5],
                       ["Gizmo", None, 1_700_000_200, "remove project", 6],
                       ["Gizmo", None, 1_700_000_300, "create", 7],
                       ["Gizmo", "2.0", 1_700_000_301, "new release", 8],
                       ["Gizmo", "2.0", 1_700_000_302, "add source file Gizmo-2.0.tar.gz", 9]])
        sync.sync_once(catalog, PyPI(double.xmlrpc_url))
    assert catalog.execute("SELECT present FROM packages WHERE package = 'gizmo'").fetchone() == (True,)
    assert queue_head(catalog, TARGET) == [], "nothing of a removed project is queued, old or new"
    publish(catalog, settings.output)
    assert not (settings.output / "simple" / "gizmo").exists()
    assert "gizmo" not in (settings.output / "simple" / "index.html").read_text()


def test_pip_installs_a_removed_project_from_the_next_index(world, catalog, settings, tmp_path):
    """Raspberry Pi OS names the Pi index in extra-index-url: after a takedown, pip finds the project
    on the other index as if this one never had it."""
    from wheelwright.testing.pypi_double import PyPIDouble
    takedowns.remove(catalog, "gizmo", reason="broken wheels", by="ops")
    publish(catalog, settings.output)
    rows = [["Gizmo", None, 1_700_000_000, "create", 1],
            ["Gizmo", "2.0", 1_700_000_001, "new release", 2],
            ["Gizmo", "2.0", 1_700_000_002, "add py3 file gizmo-2.0-py3-none-any.whl", 3]]
    served = serve(settings.output, tmp_path / "server")
    try:
        with PyPIDouble(rows) as pypi:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "--only-binary", ":all:",
                 "--dest", str(tmp_path / "got"), "--index-url", pypi.simple_url,
                 "--extra-index-url", f"{served.url}/simple/", "gizmo==2.0"],
                capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (tmp_path / "got" / "gizmo-2.0-py3-none-any.whl").is_file()
        assert ("/simple/gizmo/", 404) in [(path, status) for path, status, _ in served.requests()]
    finally:
        served.stop()
