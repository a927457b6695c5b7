"""The site around the project pages, as the publisher writes it: search shards, sitemaps, queue.json,
the home page, download figures; and when each is rewritten (a page is rewritten when its data changes,
not on every run).

Pure functions from literals first, then the writer over a real catalog and tree.
"""

from __future__ import annotations

import json
import os
import re
import time
import xml.etree.ElementTree as ET
from datetime import date

import pytest

from support.index_world import World, make_wheel
from wheelwright.publish import site
from wheelwright.publish.writer import publish


# -- the search shards, from literals -----------------------------------------------------------------

def shards_of(rows) -> dict[str, dict]:
    return {prefix: json.loads(data) for prefix, data in site.search_shards(rows).items()}


def test_a_name_is_found_under_each_of_its_words():
    shards = shards_of([("rpi-gpio", "RPi.GPIO", 50), ("gpiozero", "gpiozero", 70), ("x", "x", 0)])
    assert shards["rp"]["entries"] == [["rpi-gpio", 50, "RPi.GPIO"]]
    assert shards["gp"]["entries"] == [["gpiozero", 70], ["rpi-gpio", 50, "RPi.GPIO"]], "most downloaded first"
    assert shards["x"]["entries"] == [["x", 0]], "a one-letter word has a shard of its own"
    assert not any(s["split"] for s in shards.values())


def test_a_crowded_prefix_is_split_by_one_more_letter(monkeypatch):
    monkeypatch.setattr(site, "SHARD_LIMIT", 3)
    monkeypatch.setattr(site, "SPLIT_HEAD", 1)
    rows = [("py", "py", 1), ("pya", "pya", 5), ("pyb", "pyb", 9), ("pyb2", "pyb2", 0), ("pyc-py", "pyc-py", 2)]
    shards = shards_of(rows)
    top = shards["py"]
    assert top["split"] and [e[0] for e in top["entries"]] == ["pyb", "pyc-py", "py"], \
        "the most downloaded, and every name with the word itself"
    assert [e[0] for e in shards["pyb"]["entries"]] == ["pyb", "pyb2"]
    assert [e[0] for e in shards["pya"]["entries"]] == ["pya"]
    assert [e[0] for e in shards["pyc"]["entries"]] == ["pyc-py"]
    assert {p for p in shards if p.startswith("py")} == {"py", "pya", "pyb", "pyc"}


def test_a_prefix_that_cannot_be_split_keeps_its_most_downloaded(monkeypatch):
    monkeypatch.setattr(site, "SHARD_LIMIT", 2)
    monkeypatch.setattr(site, "MAX_PREFIX", 2)
    shards = shards_of([("ab-1", "ab-1", 1), ("ab-2", "ab-2", 3), ("ab-3", "ab-3", 2)])
    assert shards["ab"] == {"prefix": "ab", "split": False, "truncated": True,
                            "entries": [["ab-2", 3], ["ab-3", 2]]}


# -- the sitemaps -------------------------------------------------------------------------------------

def test_sitemaps_list_every_project_page_under_the_sites_url(monkeypatch):
    monkeypatch.setattr(site, "SITEMAP_URLS", 2)
    maps = site.sitemaps("https://pi.example.org/", ["a", "b", "c"])
    assert sorted(maps) == ["sitemap.xml", "sitemap0.xml", "sitemap1.xml", "sitemap2.xml"]
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    index = [e.text for e in ET.fromstring(maps["sitemap.xml"]).findall("s:sitemap/s:loc", ns)]
    assert index == [f"https://pi.example.org/sitemap{n}.xml" for n in range(3)]
    urls = [e.text for n in (1, 2) for e in ET.fromstring(maps[f"sitemap{n}.xml"]).findall("s:url/s:loc", ns)]
    assert urls == [f"https://pi.example.org/project/{n}/" for n in "abc"]
    assert "https://pi.example.org/faq.html" in maps["sitemap0.xml"].decode()


# -- the writer ---------------------------------------------------------------------------------------

@pytest.fixture
def world(catalog, settings):
    w = World(catalog, settings.output)
    w.target("cp311-armv7l", "cp311", "linux_armv7l", "bookworm", 1)
    w.target("cp313-aarch64", "cp313", "linux_aarch64", "trixie", 2)
    return w


def figures(catalog, rows, through=date(2026, 12, 1)):
    """Download figures as the daily refresh leaves them: (package, version, last 30 days, total)."""
    for row in rows:
        catalog.execute("INSERT INTO download_counts VALUES (%s, %s, %s, %s)", row)
    catalog.execute("INSERT INTO download_counts_state (through) VALUES (%s)", (through,))
    catalog.execute("UPDATE packages SET change_seq = nextval('change_seq') WHERE package = ANY(%s)",
                    (sorted({r[0] for r in rows}),))
    catalog.commit()


def read(www, path):
    return json.loads((www / path).read_text())


def test_the_site_is_published_with_the_index(world, catalog, settings):
    www = settings.output
    gpio = world.package("RPi.GPIO", summary="GPIO for the Pi")
    world.release(gpio, "0.7.1")
    world.wheel(gpio, "0.7.1", "cp311-armv7l", apt=("libgpiod2",))
    catalog.execute("UPDATE builds SET finished_at = now()")
    catalog.commit()
    publish(catalog, www, site_url="https://pi.example.org")
    for page in ("index.html", "packages.html", "faq.html", "json.html", "404.html", "static/site.css",
                 "static/site.js", "queue.json", "search/rp.json", "search/gp.json",
                 "sitemap.xml", "sitemap0.xml", "sitemap1.xml"):
        assert (www / page).is_file(), page
    assert read(www, "search/rp.json")["entries"] == [["rpi-gpio", 0, "RPi.GPIO"]]
    home = (www / "index.html").read_text()
    assert "pip3 install PACKAGE --extra-index-url https://pi.example.org/simple/" in home
    assert "extra-index-url=https://pi.example.org/simple" in home
    assert 'href="project/rpi-gpio/">RPi.GPIO</a>' in home, "recently built"
    assert "cp311-armv7l" in home and "cp313-aarch64" in home, "what the index serves"
    for page in ("index.html", "faq.html", "json.html", "packages.html", "404.html", "project/rpi-gpio/index.html"):
        text = (www / page).read_text()
        assert 'class="site"' in text and "static/site.css" in text, f"{page}: one look, one header"
        loaded = re.findall(r'<(?:link|script|img|iframe)[^>]*(?:href|src)="([^"]*)"', text) + \
            re.findall(r"url\(([^)]*)\)|@import", text)
        assert loaded and not [u for u in loaded if "//" in u], f"{page} loads nothing from elsewhere"
    assert 'href="/static/site.css"' in (www / "404.html").read_text(), "the 404 page answers at any depth"


def test_without_a_site_url_there_is_no_sitemap_and_pages_fill_in_their_origin(world, catalog, settings):
    world.release(world.package("demo"), "1.0")
    publish(catalog, settings.output)
    assert not list(settings.output.glob("sitemap*.xml")), "a sitemap needs absolute URLs"
    assert 'data-origin=""' in (settings.output / "index.html").read_text()
    assert read(settings.output, "project/demo/json/index.json")["url"] is None


def test_download_figures_reach_the_pages_and_packages_json(world, catalog, settings):
    www = settings.output
    gpio = world.package("RPi.GPIO")
    for version in ("0.7.0", "0.7.1"):
        world.release(gpio, version)
    world.release(world.package("quiet"), "1.0")
    publish(catalog, www)
    figures(catalog, [("rpi-gpio", "0.7.0", 2, 30), ("rpi-gpio", "0.7.1", 10, 12)])
    result = publish(catalog, www)
    assert result.changed == ["rpi-gpio"] and result.search_changed and not result.root_changed, \
        "new figures move the project's pages and the search index, not the simple root"
    data = read(www, "project/rpi-gpio/json/index.json")
    assert data["downloads"] == {"last_30_days": 12, "total": 42, "through": "2026-12-01"}
    assert data["releases"]["0.7.0"]["downloads"] == {"last_30_days": 2, "total": 30}
    assert read(www, "packages.json") == [["quiet", 0, 0, "quiet", ""], ["rpi-gpio", 12, 42, "RPi.GPIO", ""]]
    assert "<b>12</b> downloads in 30 days · <b>42</b> in all" in (www / "project/rpi-gpio/index.html").read_text()


def test_queue_json_holds_the_head_of_each_queue_and_its_pace(world, catalog, settings):
    www = settings.output
    for name in ("alpha", "beta"):
        world.release(world.package(name), "1.0")
    built = world.package("built")
    world.release(built, "1.0")
    world.wheel(built, "1.0", "cp311-armv7l", wheel=make_wheel("built", "1.0", tag="cp311-cp311-linux_armv7l"))
    catalog.execute("UPDATE builds SET finished_at = now()")
    catalog.execute("INSERT INTO dashboard_samples VALUES (now(), 'cp311-armv7l', 2, 2, now())")
    catalog.commit()
    publish(catalog, www)
    queue = read(www, "queue.json")["targets"]
    assert sorted(queue) == ["cp311-armv7l", "cp313-aarch64"]
    first = queue["cp311-armv7l"]
    assert sorted(map(tuple, first["head"])) == [("alpha", "1.0"), ("beta", "1.0")]
    assert first["length"] == 2 and first["per_hour"] == round(1 / 24, 2) and not first["paused"]
    assert queue["cp313-aarch64"]["head"] == [["built", "1.0"]], "a binary wheel moved it on"


def test_pages_with_data_that_moves_are_rewritten_only_so_often(world, catalog, settings):
    """queue.json, the home page and the search shards follow the catalog at most every so often, and
    a run with nothing to publish rewrites none of them."""
    www = settings.output
    p = world.package("demo")
    world.release(p, "1.0")
    publish(catalog, www)
    stamps = {f: os.stat(www / f).st_mtime_ns for f in ("index.html", "queue.json", "search/index.json")}
    world.release(world.package("newcomer"), "1.0")
    result = publish(catalog, www)
    assert result.published == 1 and result.search_changed, "packages.json follows at once"
    assert {f: os.stat(www / f).st_mtime_ns for f in stamps} == stamps, "the rest within their interval"
    assert not (www / "search/ne.json").exists()
    old = time.time() - site.SEARCH_INTERVAL - 1
    for f in stamps:
        os.utime(www / f, (old, old))
    world.changed(p)
    publish(catalog, www)
    assert (www / "search/ne.json").exists(), "the shards catch up once their interval passed"
    assert all(os.stat(www / f).st_mtime > old + 1 for f in stamps)
    quiet = publish(catalog, www)
    assert (quiet.packages, quiet.files_written) == (0, 0)


def test_a_change_of_targets_publishes_every_project_page_again(world, catalog, settings):
    """Every page has a row per target: enabling one (or retiring one) changes them all, though no
    package's change number moved."""
    www = settings.output
    for name in ("alpha", "beta"):
        world.release(world.package(name), "1.0")
    publish(catalog, www)
    assert publish(catalog, www).packages == 0
    world.target("cp314-aarch64", "cp314", "linux_aarch64", "forky", 3)
    again = publish(catalog, www)
    assert again.packages == 2 and sorted(again.changed) == ["alpha", "beta"]
    rows = read(www, "project/alpha/json/index.json")["releases"]["1.0"]["targets"]
    assert [r["target"] for r in rows] == ["cp311-armv7l", "cp313-aarch64", "cp314-aarch64"]
    assert "cp314-aarch64" in read(www, "queue.json")["targets"], "queue.json follows at once"
    catalog.execute("UPDATE targets SET paused = true WHERE name = 'cp311-armv7l'")
    catalog.commit()
    assert publish(catalog, www).packages == 0, "pausing a target changes no page (queue.json says it)"
    assert settings.output.joinpath(".wheelwright-targets.json").exists()
