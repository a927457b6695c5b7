"""A real Varnish (the shipped VCL, Debian's xkey vmod) in front of the origin (nginx with the shipped
config where installed, else the static server), purged by the publisher after each publish.

The world: one package, ``demo``, published with release 1.0 (a wheel and its .metadata); the edge
has cached its pages. Each test then changes the catalog, publishes through
``cdn.publish_and_purge`` and looks at what the edge serves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from support.index_world import World
from support.tools import require
from support.serving import NEGOTIATION, PIP_ACCEPT, VARNISHD, edge, serve
from wheelwright.publish import cdn
from wheelwright.publish.negotiation import negotiate



@pytest.fixture(autouse=True)
def _varnish_is_installed():
    require("varnishd")

HTML = "text/html"


@pytest.fixture
def world(catalog, settings):
    world = World(catalog, settings.output)
    world.target()
    world.package("demo", summary="a demo")
    world.release("demo", "1.0")
    world.wheel("demo", "1.0")
    return world


@pytest.fixture
def origin(settings, tmp_path, world):
    cdn.publish_and_purge(world.conn, settings, None)
    served = serve(settings.output, tmp_path / "origin")
    yield served
    served.stop()


@pytest.fixture
def varnish(origin, tmp_path):
    served = edge(origin, tmp_path / "edge")
    yield served
    served.stop()


@pytest.fixture
def purger(varnish):
    return cdn.VarnishPurger(url=varnish.url)


def versions_at(served, path="/simple/demo/"):
    """(versions listed in the JSON page, file names in the HTML page, X-Cache of each)."""
    status, headers, body = served.get(path, PIP_ACCEPT)
    assert status == 200, f"{path} (JSON) through {served.kind}: {status}"
    listed = json.loads(body)["versions"]
    status, html_headers, html = served.get(path, HTML)
    assert status == 200
    files = sorted(a.split(">")[1].split("<")[0] for a in html.decode().split("<a ")[1:])
    return listed, files, (headers["X-Cache"], html_headers["X-Cache"])


def test_a_page_cached_at_the_edge_is_fresh_right_after_a_publish_changes_it(world, settings, varnish, purger):
    assert versions_at(varnish)[:2] == (["1.0"], ["demo-1.0-py3-none-any.whl"])
    assert versions_at(varnish)[2] == ("HIT", "HIT"), "the edge should cache both representations"

    world.release("demo", "2.0")
    world.wheel("demo", "2.0")
    result, delivery = cdn.publish_and_purge(world.conn, settings, purger)

    assert result.purge_keys() == ["project/demo"], "only the changed package is purged, not the root"
    assert delivery.purged == ["project/demo"] and not delivery.failed
    listed, files, cache = versions_at(varnish)
    assert listed == ["1.0", "2.0"], "the JSON page at the edge is stale after the purge"
    assert files == ["demo-1.0-py3-none-any.whl", "demo-2.0-py3-none-any.whl"], "the HTML page is stale"
    assert cache == ("MISS", "MISS")


def test_accept_is_normalised_at_the_edge_two_entries_per_page(varnish):
    assert varnish.get("/simple/demo/", PIP_ACCEPT)[1]["X-Cache"] == "MISS"
    for spelling in ("application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.latest+json",
                     "text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.55"):
        status, headers, _ = varnish.get("/simple/demo/", spelling)
        assert (status, headers["X-Cache"]) == (200, "HIT"), f"{spelling!r} should share the JSON entry"
    assert varnish.get("/simple/demo/", "*/*")[1]["X-Cache"] == "MISS"
    assert varnish.get("/simple/demo/", None)[1]["X-Cache"] == "HIT", "every HTML spelling shares one"


@pytest.mark.parametrize("accept, expected", NEGOTIATION)
def test_the_edge_negotiates_as_the_origin_and_the_python_rule_do(varnish, accept, expected):
    assert negotiate(accept) == expected
    status, headers, _ = varnish.get("/simple/", accept)
    if expected is None:
        assert status == 406, f"Accept {accept!r}"
        return
    assert status == 200, f"Accept {accept!r}: {status}"
    kind = "json" if headers["Content-Type"] == "application/vnd.pypi.simple.v1+json" else "html"
    assert kind == expected, f"Accept {accept!r}"


def test_a_wheel_is_served_from_the_edge_cache(varnish):
    path = "/simple/demo/demo-1.0-py3-none-any.whl"
    first = varnish.get(path)
    second = varnish.get(path)
    assert first[0] == second[0] == 200 and first[2] == second[2]
    assert (first[1]["X-Cache"], second[1]["X-Cache"]) == ("MISS", "HIT")
    assert second[1]["Cache-Control"] == cdn.IMMUTABLE
    assert [p for p, _status, _f in varnish.requests() if p == path] == [path], \
        "the origin should have seen the wheel once"


def test_a_name_that_is_not_canonical_is_redirected_at_the_edge(varnish):
    status, headers, _ = varnish.get("/simple/DeMo/", PIP_ACCEPT)
    assert (status, headers["Location"]) == (301, "/simple/demo/")
    status, headers, _ = varnish.get("/project/DEMO")
    assert (status, headers["Location"]) == (301, "/project/demo/")


def test_a_deleted_release_disappears_from_the_edge(world, settings, varnish, purger):
    world.release("demo", "2.0")
    world.wheel("demo", "2.0")
    cdn.publish_and_purge(world.conn, settings, purger)
    wheel = "/simple/demo/demo-2.0-py3-none-any.whl"
    assert varnish.get(wheel)[0] == 200 and varnish.get(wheel)[1]["X-Cache"] == "HIT"
    assert versions_at(varnish)[0] == ["1.0", "2.0"]

    world.delete_version("demo", "2.0")
    result, delivery = cdn.publish_and_purge(world.conn, settings, purger)

    removals = sorted(result.removals["demo"])
    assert [p for p in removals if p.startswith("simple/")] == [wheel[1:], wheel[1:] + ".metadata"]
    assert delivery.removed == len(removals) == 3 and not delivery.failed   # with 2.0's build log
    assert versions_at(varnish)[:2] == (["1.0"], ["demo-1.0-py3-none-any.whl"])
    assert varnish.get(wheel)[0] == 404, "the edge still serves the deleted wheel"
    assert not (settings.output / wheel[1:]).exists()
    assert world.conn.execute("SELECT count(*) FROM cdn_purges").fetchone()[0] == 0


def test_the_cdn_down_during_a_publish_publishes_anyway_and_purges_once_back(world, settings, varnish,
                                                                            origin, purger):
    versions_at(varnish)
    world.delete_version("demo", "1.0")
    world.release("demo", "2.0")
    world.wheel("demo", "2.0")
    down = cdn.VarnishPurger(url="http://127.0.0.1:9", timeout=2)

    result, delivery = cdn.publish_and_purge(world.conn, settings, down, deadline=1)

    assert delivery.failed == ["project/demo"], "the purge should have failed"
    assert versions_at(origin)[0] == ["2.0"], "the origin must be published whatever the CDN does"
    assert versions_at(varnish)[0] == ["1.0"], "the edge keeps its (stale) page until purged"
    old_wheel = settings.output / "simple/demo/demo-1.0-py3-none-any.whl"
    assert old_wheel.exists(), "a file the edge's cached page lists must stay until the purge"
    owed = cdn.lag(world.conn)
    assert owed[0] == 1 and owed[2] == 1

    # Nothing new is tried before the back-off has passed ...
    assert cdn.publish_and_purge(world.conn, settings, purger)[1].purged == []
    world.conn.execute("UPDATE cdn_purges SET next_try = now()")   # ... and then it has
    world.conn.commit()
    # The CDN is back: the next delivery (the next publish, or `wheelwright purge`) settles the debt.
    result, delivery = cdn.publish_and_purge(world.conn, settings, purger)
    assert result.changed == [] and "project/demo" in delivery.purged
    assert versions_at(varnish)[0] == ["2.0"]
    assert not old_wheel.exists()
    assert cdn.lag(world.conn)[0] == 0


def test_pip_installs_through_varnish(varnish, tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    command = [sys.executable, "-m", "pip", "install", "--isolated", "--disable-pip-version-check",
               "--no-cache-dir", "--retries", "0", "--timeout", "10", "--index-url",
               f"{varnish.url}/simple/", "--target", str(tmp_path / "site"), "Demo==1.0"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert (tmp_path / "site" / "demo_mod.py").exists()
    paths = [p for p, _s, _f in varnish.requests()]
    assert "/simple/demo/" in paths and any(p.endswith(".whl.metadata") for p in paths)


def test_only_addresses_in_the_acl_may_purge(origin, tmp_path):
    guarded = edge(origin, tmp_path / "guarded", purgers=("192.0.2.1",))
    try:
        guarded.get("/simple/demo/", PIP_ACCEPT)
        with pytest.raises(cdn.PurgeError, match="403"):
            cdn.VarnishPurger(url=guarded.url).purge(["project/demo"])
        assert guarded.get("/simple/demo/", PIP_ACCEPT)[1]["X-Cache"] == "HIT", "nothing was purged"
    finally:
        guarded.stop()


def test_the_edge_serves_a_stale_page_while_the_origin_is_down(varnish, origin):
    assert versions_at(varnish)[0] == ["1.0"]
    request = urllib.request.Request(varnish.url + "/", method="PURGE",
                                     headers={"xkey-softpurge": "project/demo"})
    urllib.request.urlopen(request, timeout=10).close()   # expired, as after its s-maxage
    origin.stop()
    status, headers, body = varnish.get("/simple/demo/", PIP_ACCEPT)
    assert status == 200 and json.loads(body)["versions"] == ["1.0"], "stale-if-error: serve what we had"
    assert varnish.get("/simple/other/", PIP_ACCEPT)[0] == 503, "nothing stale to serve"
    origin.start()
