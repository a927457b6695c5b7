"""The index writer against a real catalog and a real tree: what it writes, rewrites and removes.

Each test builds its world with plain catalog rows (index_world.World) and publishes it with
``wheelwright.publish.writer.publish``; assertions are about the files in the tree.
"""

from __future__ import annotations

import gzip
import json
import os
import time

import pytest

from support.index_world import World, make_wheel
from wheelwright.publish import site
from wheelwright.publish import writer as index
from wheelwright.names import safe_alias
from wheelwright.publish.writer import CONSUMER, GRACE_SECONDS, build_id_for_log, log_path_for, publish


@pytest.fixture
def world(catalog, settings):
    w = World(catalog, settings.output)
    w.target()
    return w


@pytest.fixture
def www(settings):
    return settings.output


def page(www, path) -> str:
    return (www / path).read_text()


def mark(catalog) -> int:
    row = catalog.execute("SELECT mark FROM consumer_marks WHERE consumer = %s", (CONSUMER,)).fetchone()
    catalog.commit()
    return row[0]


# -- the layout ---------------------------------------------------------------------------------------

def test_log_paths_split_the_build_id_in_three_folders():
    assert log_path_for(12345) == "logs/0000/0001/2345.txt.gz"
    assert log_path_for(1) == "logs/0000/0000/0001.txt.gz"
    assert log_path_for(999_999_999_999) == "logs/9999/9999/9999.txt.gz"
    assert build_id_for_log("logs/0000/0001/2345.txt.gz") == 12345
    assert build_id_for_log("logs/../etc/passwd") is None
    with pytest.raises(ValueError):
        log_path_for(10**12)


@pytest.mark.parametrize("alias, ok", [
    ("RPi.GPIO", True), ("rpi_gpio", True), ("rpi-gpio", False), ("../etc", False), ("a/b", False),
    (".hidden", False), ("", False), ("x" * 300, False), ("name\n", False), ("trailing.", False),
])
def test_only_safe_alias_spellings_get_symlinks(alias, ok):
    assert safe_alias(alias, "rpi-gpio") is ok


def test_a_package_gets_its_four_pages_and_alias_links(world, catalog, www):
    p = world.package("RPi.GPIO", aliases=("rpi.gpio", "../../etc"))
    world.release(p, "0.7.1")
    world.wheel(p, "0.7.1")
    result = publish(catalog, www)
    assert result.changed == ["rpi-gpio"]
    for path in ("simple/rpi-gpio/index.html", "simple/rpi-gpio/index.json",
                 "project/rpi-gpio/index.html", "project/rpi-gpio/json/index.json"):
        assert (www / path).is_file(), path
    assert os.readlink(www / "project" / "RPi.GPIO") == "rpi-gpio"
    assert os.readlink(www / "project" / "rpi.gpio") == "rpi-gpio"
    assert sorted(p.name for p in (www / "project").iterdir()) == ["RPi.GPIO", "rpi-gpio", "rpi.gpio"]
    assert sorted(p.name for p in (www / "simple").iterdir()) == ["index.html", "index.json", "rpi-gpio"]
    assert not (www / "etc").exists()


def test_releases_without_builds_are_listed(world, catalog, www):
    p = world.package("unbuilt", summary="nothing built yet")
    world.release(p, "1.0")
    world.release(p, "2.0b1")
    publish(catalog, www)
    data = json.loads(page(www, "project/unbuilt/json/index.json"))
    assert list(data["releases"]) == ["2.0b1", "1.0"]
    assert data["releases"]["2.0b1"]["prerelease"] is True
    assert data["releases"]["1.0"]["files"] == {}
    assert json.loads(page(www, "simple/unbuilt/index.json"))["versions"] == ["1.0", "2.0b1"]
    assert [(t["target"], t["state"]) for t in data["releases"]["1.0"]["targets"]] == [("cp311", "queued")]
    assert '<tr data-queue="cp311">' in page(www, "project/unbuilt/index.html"), "a row says it is queued"


def test_unsafe_canonical_names_are_never_published(world, catalog, www):
    catalog.execute("INSERT INTO packages (package, display_name, present, change_seq)"
                    " VALUES ('-/-/etc', '../../etc', true, nextval('change_seq'))")
    catalog.commit()
    result = publish(catalog, www)
    assert result.skipped == ["-/-/etc"]
    assert not (www / "simple" / "-").exists()
    assert "etc" not in page(www, "simple/index.html")


# -- incremental publishing ---------------------------------------------------------------------------

def test_only_changed_packages_are_rewritten(world, catalog, www):
    a, b = world.package("alpha"), world.package("beta")
    world.release(a, "1.0")
    world.release(b, "1.0")
    publish(catalog, www)
    # every write is a rename of a new file, so an unchanged inode means "not rewritten"
    paths = ("simple/alpha/index.json", "simple/beta/index.json", "simple/index.html", "packages.json")
    before = {p: (www / p).stat().st_ino for p in paths}
    first_mark = mark(catalog)
    world.release(b, "2.0")
    result = publish(catalog, www)
    assert result.packages == 1 and result.changed == ["beta"]
    assert not result.root_written, "a new release does not change the set of packages"
    after = {p: (www / p).stat().st_ino for p in paths}
    assert [p for p in paths if after[p] != before[p]] == ["simple/beta/index.json"]
    assert mark(catalog) > first_mark


def test_a_change_that_renders_the_same_bytes_writes_nothing(world, catalog, www):
    p = world.package("same")
    world.release(p, "1.0")
    publish(catalog, www)
    world.changed(p)
    result = publish(catalog, www)
    assert result.packages == 1
    site_files = len(site.STATIC_PAGES) + len(site.ASSETS) + 1   # checked on every run (+ the targets seen)
    assert result.changed == [] and result.files_written == 0 and result.files_unchanged == 5 + site_files  # + feed.atom


def test_nothing_changed_means_nothing_looked_at(world, catalog, www):
    world.release(world.package("quiet"), "1.0")
    publish(catalog, www)
    result = publish(catalog, www)
    assert (result.packages, result.files_written, result.root_written) == (0, 0, False)


def test_the_root_is_rewritten_when_the_package_set_changes(world, catalog, www):
    world.release(world.package("first"), "1.0")
    publish(catalog, www)
    world.release(world.package("Second", summary="the <second> one"), "1.0")
    result = publish(catalog, www)
    assert result.root_written
    assert '<a href="second/">Second</a>' in page(www, "simple/index.html")
    assert json.loads(page(www, "packages.json")) == [["first", 0, 0, "first", ""],
                                                      ["second", 0, 0, "Second", "the <second> one"]]
    assert json.loads(page(www, "simple/index.json"))["projects"] == [{"name": "first"}, {"name": "Second"}]


def test_a_new_summary_refreshes_the_search_index(world, catalog, www):
    p = world.package("sum")
    world.release(p, "1.0")
    publish(catalog, www)
    world.set(p, summary="now with a summary")
    assert publish(catalog, www).root_written
    assert json.loads(page(www, "packages.json")) == [["sum", 0, 0, "sum", "now with a summary"]]


# -- removal ------------------------------------------------------------------------------------------

def test_deleting_a_version_removes_its_files(world, catalog, www):
    p = world.package("shrinking")
    world.release(p, "1.0")
    world.release(p, "2.0")
    old = world.wheel(p, "1.0")
    new = world.wheel(p, "2.0")
    publish(catalog, www)
    world.delete_version(p, "1.0")
    result = publish(catalog, www)
    assert result.changed == ["shrinking"]
    folder = www / "simple" / "shrinking"
    assert sorted(f.name for f in folder.iterdir()) == sorted(
        ["index.html", "index.json", new.filename, new.filename + ".metadata"])
    assert old.filename not in page(www, "simple/shrinking/index.html")
    assert not (www / log_path_for(1)).exists(), "the deleted build's log goes with it"
    assert (www / log_path_for(2)).exists()


def test_deleting_a_package_removes_pages_files_and_links(world, catalog, www):
    p = world.package("Doomed", aliases=("DOOMED",))
    world.release(p, "1.0")
    world.wheel(p, "1.0")
    keep = world.package("keeper")
    world.release(keep, "1.0")
    publish(catalog, www)
    world.delete_package(p)
    result = publish(catalog, www)
    assert result.removed == 1 and result.root_written
    assert not (www / "simple" / "doomed").exists()
    assert not (www / "project" / "doomed").exists()
    assert not os.path.lexists(www / "project" / "Doomed")
    assert not os.path.lexists(www / "project" / "DOOMED")
    assert not (www / log_path_for(1)).exists()
    assert "doomed" not in page(www, "simple/index.html")
    assert (www / "simple" / "keeper" / "index.html").exists()


def test_a_recreated_package_is_published_cleanly(world, catalog, www):
    p = world.package("phoenix")
    world.release(p, "1.0")
    world.wheel(p, "1.0")
    publish(catalog, www)
    world.delete_package(p)
    publish(catalog, www)
    world.package("phoenix")
    world.release(p, "2.0")
    world.wheel(p, "2.0")
    publish(catalog, www)
    assert sorted(f.name for f in (www / "simple" / "phoenix").iterdir()) == [
        "index.html", "index.json", "phoenix-2.0-py3-none-any.whl", "phoenix-2.0-py3-none-any.whl.metadata"]
    assert '<a href="phoenix/">phoenix</a>' in page(www, "simple/index.html")


def test_quarantine_hides_pages_and_holds_back_files_the_catalog_lists(world, catalog, www):
    p = world.package("suspect", aliases=("Suspect",))
    world.release(p, "1.0")
    wheel = world.wheel(p, "1.0")
    publish(catalog, www)
    world.set(p, quarantined=True)
    publish(catalog, www)
    assert wheel.filename not in page(www, "simple/suspect/index.html"), "its status page lists nothing"
    assert not (www / "project" / "suspect").exists()
    assert not os.path.lexists(www / "project" / "Suspect")
    assert not (www / "simple" / "suspect" / wheel.filename).exists(), "held back (see test_quarantine)"
    world.set(p, quarantined=False)
    publish(catalog, www)
    assert wheel.filename in page(www, "simple/suspect/index.html")


def test_a_quarantined_release_is_not_listed(world, catalog, www):
    p = world.package("mixed")
    world.release(p, "1.0")
    world.release(p, "2.0", quarantined=True)
    world.wheel(p, "1.0")
    bad = world.wheel(p, "2.0")
    publish(catalog, www)
    assert bad.filename not in page(www, "simple/mixed/index.html")
    assert "2.0" not in json.loads(page(www, "project/mixed/json/index.json"))["releases"]
    assert not (www / "simple" / "mixed" / bad.filename).exists(), "held back (see test_quarantine)"


def test_an_alias_that_disappears_loses_its_link(world, catalog, www):
    p = world.package("Renamed", aliases=("OldName.Spelling",))
    world.release(p, "1.0")
    publish(catalog, www)
    assert os.path.islink(www / "project" / "OldName.Spelling")
    catalog.execute("DELETE FROM aliases WHERE alias = 'OldName.Spelling'")
    world.changed(p)
    publish(catalog, www)
    assert not os.path.lexists(www / "project" / "OldName.Spelling")
    assert os.path.islink(www / "project" / "Renamed")


def test_an_unlisted_file_of_a_live_release_waits_for_the_grace_period(world, catalog, www):
    p = world.package("racy")
    world.release(p, "1.0")
    publish(catalog, www)
    # the build side has moved a wheel into place and not yet recorded it
    arriving = www / "simple" / "racy" / "racy-1.0-py3-none-any.whl"
    arriving.write_bytes(make_wheel("racy", "1.0").data)
    world.changed(p)
    publish(catalog, www)
    assert arriving.exists(), "a file on its way into the catalog must not be deleted"
    old = time.time() - GRACE_SECONDS - 60
    os.utime(arriving, (old, old))
    world.changed(p)
    publish(catalog, www)
    assert not arriving.exists(), "after the grace period an unlisted file is a stray"


def test_full_publish_rewrites_everything_and_sweeps_strays(world, catalog, www):
    p = world.package("solid")
    world.release(p, "1.0")
    world.wheel(p, "1.0")
    publish(catalog, www)
    (www / "simple" / "ghost").mkdir()
    (www / "simple" / "ghost" / "index.html").write_text("stale")
    (www / "project" / "ghost" / "json").mkdir(parents=True)
    (www / "project" / "Ghost").symlink_to("ghost")
    (www / "simple" / "solid" / ".ww-tmp.index.html").write_text("half")
    stray_log = www / log_path_for(77)
    stray_log.write_bytes(gzip.compress(b"old"))
    old = time.time() - GRACE_SECONDS - 60
    os.utime(stray_log, (old, old))
    (www / "simple" / "solid" / "index.html").write_text("damaged")
    fresh = world.package("fresh")  # a killed run was building its folders
    world.release(fresh, "1.0")
    for tree in ("simple", "project"):
        (www / tree / ".ww-tmp.fresh").mkdir()
        (www / tree / ".ww-tmp.fresh" / "index.html").write_text("half")
        (www / tree / ".ww-tmp.fresh" / "junk").write_text("half")
    result = publish(catalog, www, full=True)
    assert result.full and result.packages == 2
    assert "1.0" in page(www, "project/fresh/index.html")
    assert json.loads(page(www, "simple/fresh/index.json"))["versions"] == ["1.0"]
    assert sorted(os.listdir(www / "simple" / "fresh")) == ["index.html", "index.json"]
    assert sorted(os.listdir(www / "project" / "fresh")) == ["feed.atom", "index.html", "json"]
    assert not [n for _f, dirs, files in os.walk(www) for n in dirs + files if n.startswith(".ww-tmp.")]
    assert not (www / "simple" / "ghost").exists()
    assert not (www / "project" / "ghost").exists()
    assert not os.path.lexists(www / "project" / "Ghost")
    assert not (www / "simple" / "solid" / ".ww-tmp.index.html").exists()
    assert not stray_log.exists()
    assert (www / log_path_for(1)).exists()
    assert "solid-1.0-py3-none-any.whl" in page(www, "simple/solid/index.html")


def test_a_full_publish_finds_a_folder_made_after_it_listed_simple(world, catalog, www, monkeypatch):
    """A full publish looks on disk only for names simple/ held when it began; the build side may have
    made simple/<p>/ for a first wheel since."""
    p = world.package("late")
    world.release(p, "1.0")
    wheel = world.wheel(p, "1.0")  # already moved into simple/late/
    listed = index._names_in
    monkeypatch.setattr(index, "_names_in",
                        lambda folder: frozenset() if folder.endswith("simple") else listed(folder))
    result = publish(catalog, www, full=True)
    assert result.published == 1
    assert sorted(os.listdir(www / "simple" / "late")) == sorted(
        ["index.html", "index.json", wheel.filename, wheel.filename + ".metadata"])
    assert wheel.filename in page(www, "simple/late/index.html")
    assert json.loads(page(www, "project/late/json/index.json"))["name"] == "late"


def published_pages(root) -> dict[str, bytes | str]:
    """What the publisher itself wrote (pages, links, root lists): every file but wheels, logs, reports,
    and the site's files that say when they were made (the home page, queue.json, the search index's)."""
    found = {}
    for folder, _dirs, files in os.walk(root):
        for name in files + [d for d in _dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                found[rel] = os.readlink(path)
            elif name.endswith(".json") or name.endswith(".html"):
                if not rel.startswith("reports") and rel not in ("index.html", "queue.json", "search/index.json"):
                    found[rel] = open(path, "rb").read()
    return found


def test_forked_workers_publish_what_one_process_does(world, catalog, www, tmp_path, monkeypatch):
    """Big runs fork workers that hand their staged writes back to the parent to commit."""
    for i in range(12):
        p = world.package(f"Pkg.{i}", summary=f"number {i}", aliases=(f"PKG_{i}",))
        world.release(p, "1.0")
        if i % 3 == 0:
            world.wheel(p, "1.0", apt=("libxml2",))  # simple/<p>/ exists before its first publish
        if i == 4:
            world.set(p, quarantined=True)
        if i == 5:
            world.delete_package(p)
    monkeypatch.setattr(index, "_PARALLEL_FROM", 1)
    monkeypatch.setattr(index, "_BATCH", 2)
    forked = publish(catalog, www, workers=2)
    single = publish(catalog, tmp_path / "single", workers=1, full=True)
    assert published_pages(www) == published_pages(tmp_path / "single")
    assert (forked.packages, forked.published, forked.removed) == (12, 10, 2)
    assert forked.files_written == single.files_written
    assert not [n for _f, dirs, files in os.walk(www) for n in dirs + files if n.startswith(".ww-tmp.")]
    assert mark(catalog) == forked.mark_to

    world.release("pkg-3", "2.0")  # a folder that exists: its pages are staged as temporary files
    again = publish(catalog, www, workers=2)
    assert again.changed == ["pkg-3"]
    assert '"2.0"' in page(www, "simple/pkg-3/index.json")
    assert not [n for n in os.listdir(www / "simple" / "pkg-3") if n.startswith(".ww-tmp.")]


# -- apt reports --------------------------------------------------------------------------------------

def test_apt_dependencies_leave_out_what_raspios_lite_preinstalls(world, catalog, www):
    p = world.package("lxml")
    world.release(p, "5.0")
    world.wheel(p, "5.0", apt=("libc6", "libxml2", "libxslt1.1", "zlib1g"), unowned=("libfoo.so.1",))
    publish(catalog, www)
    files = json.loads(page(www, "project/lxml/json/index.json"))["releases"]["5.0"]["files"]
    (info,) = files.values()
    assert info["apt_dependencies"] == ["libxml2", "libxslt1.1"]
    assert info["unowned_libraries"] == ["libfoo.so.1"]
    assert "libxml2 libxslt1.1" in page(www, "project/lxml/index.html")


def test_the_operator_report_counts_apt_needs_and_names_missing_headers(world, catalog, www):
    for name in ("one", "two"):
        p = world.package(name)
        world.release(p, "1.0")
        world.wheel(p, "1.0", apt=("libc6", "libxml2"))
    broken = world.package("broken")
    world.release(broken, "1.0")
    world.build(broken, "1.0", status="failure", reason="pip wheel failed",
                log="src/x.c:4:10: fatal error: ffi.h: No such file or directory\n"
                    "/usr/bin/ld: cannot find -lxml2: No such file or directory\n")
    result = publish(catalog, www)
    assert result.logs_scanned == 1 and result.reports_written
    apt = json.loads(page(www, "reports/apt-dependencies.json"))
    assert apt == {"bookworm": [{"package": "libxml2", "wheels": 2}]}
    missing = json.loads(page(www, "reports/missing-dependencies.json"))
    found = {(m["kind"], m["missing"]): m["apt_package"] for m in missing}
    assert found == {("header", "ffi.h"): "libffi-dev", ("library", "xml2"): "libxml2-dev"}
    assert [b["package"] for b in missing[0]["builds"]] == ["broken"]
    assert "libffi-dev" in page(www, "reports/index.html")
    causes = json.loads(page(www, "reports/failure-causes.json"))
    assert [(c["cause"], c["builds"][0]["detail"]) for c in causes] == [("missing header", "ffi.h -> libffi-dev")]
    assert "failed builds by cause" in page(www, "reports/index.html")
