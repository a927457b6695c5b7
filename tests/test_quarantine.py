"""Quarantine: on PyPI a malware response, so a quarantined project's files leave the served tree.

Its URLs answer 404 until the quarantine clears; meanwhile the files wait in a holding area beside the
tree (same names, same bytes), and the simple pages say so with PEP 792's project status and list no
files. When the quarantine clears, the files come back as they were, without a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from support.index_world import World
from support.serving import serve
from wheelwright.publish import pages
from wheelwright.publish.writer import holding_for, publish


@pytest.fixture
def world(catalog, settings):
    w = World(catalog, settings.output)
    w.target()
    return w


@pytest.fixture
def www(settings):
    return settings.output


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_quarantined_project_says_so_lists_nothing_and_its_files_leave_the_tree(world, catalog, www):
    p = world.package("suspect", aliases=("Suspect",))
    world.release(p, "1.0")
    wheel = world.wheel(p, "1.0")
    publish(catalog, www)
    served = www / "simple" / "suspect" / wheel.filename
    before = digest(served)
    world.set(p, quarantined=True)
    publish(catalog, www)

    html = (www / "simple" / "suspect" / "index.html").read_text()
    assert '<meta name="pypi:project-status" content="quarantined">' in html
    assert '<meta name="pypi:repository-version" content="1.4">' in html
    assert "<a " not in html, "no file is offered"
    data = json.loads((www / "simple" / "suspect" / "index.json").read_bytes())
    assert data == {"meta": {"api-version": "1.4"}, "name": "suspect",
                    "project-status": {"status": "quarantined"}, "versions": [], "files": []}
    assert not served.exists() and not served.with_name(wheel.filename + ".metadata").exists()
    held = holding_for(www) / "suspect" / wheel.filename
    assert digest(held) == before, "held back, not deleted"
    assert not (www / "project" / "suspect").exists() and not os.path.lexists(www / "project" / "Suspect")
    assert '"suspect/"' not in (www / "simple" / "index.html").read_text()

    world.set(p, quarantined=False)
    publish(catalog, www)
    assert digest(served) == before, "the same name and bytes come back"
    assert served.with_name(wheel.filename + ".metadata").read_bytes() == wheel.metadata
    assert wheel.filename in (www / "simple" / "suspect" / "index.html").read_text()
    assert "project-status" not in (www / "simple" / "suspect" / "index.json").read_text()
    assert not (holding_for(www) / "suspect").exists()


def test_a_quarantined_release_of_a_visible_project_is_held_back_too(world, catalog, www):
    p = world.package("mixed")
    world.release(p, "1.0")
    world.release(p, "2.0")
    good, bad = world.wheel(p, "1.0"), world.wheel(p, "2.0")
    publish(catalog, www)
    catalog.execute("UPDATE versions SET quarantined = true WHERE package = 'mixed' AND version = '2.0'")
    world.changed(p)
    publish(catalog, www)
    simple = www / "simple" / "mixed"
    assert (simple / good.filename).exists() and not (simple / bad.filename).exists()
    assert bad.filename not in (simple / "index.html").read_text()
    catalog.execute("UPDATE versions SET quarantined = false WHERE package = 'mixed'")
    world.changed(p)
    publish(catalog, www)
    assert (simple / bad.filename).read_bytes() == bad.data
    assert bad.filename in (simple / "index.html").read_text()


def test_a_project_deleted_while_quarantined_leaves_nothing_held(world, catalog, www):
    p = world.package("gone")
    world.release(p, "1.0")
    world.wheel(p, "1.0")
    publish(catalog, www)
    world.set(p, quarantined=True)
    publish(catalog, www)
    world.delete_package(p)
    catalog.execute("DELETE FROM builds WHERE package = 'gone'")
    world.changed(p)
    publish(catalog, www)
    assert not (holding_for(www) / "gone").exists() or not any((holding_for(www) / "gone").iterdir())
    assert not (www / "simple" / "gone").exists()


def test_a_quarantined_projects_file_urls_answer_404(world, catalog, www, tmp_path):
    p = world.package("suspect")
    world.release(p, "1.0")
    wheel = world.wheel(p, "1.0")
    publish(catalog, www)
    served = serve(www, tmp_path / "served")
    try:
        assert served.get(f"/simple/suspect/{wheel.filename}")[0] == 200
        world.set(p, quarantined=True)
        publish(catalog, www)
        assert served.get(f"/simple/suspect/{wheel.filename}")[0] == 404
        assert served.get(f"/simple/suspect/{wheel.filename}.metadata")[0] == 404
        status, _headers, body = served.get("/simple/suspect/", accept=pages.SIMPLE_JSON_TYPE)
        assert status == 200 and json.loads(body)["project-status"] == {"status": "quarantined"}
    finally:
        served.stop()


def test_status_pages_escape_what_they_show():
    html = pages.simple_status_html("<b>x</b>", "quarantined", reason='"malware"').decode()
    assert "<b>" not in html and 'content="&quot;malware&quot;"' in html
    assert json.loads(pages.simple_status_json("x", "quarantined", "why"))["project-status"] == {
        "status": "quarantined", "reason": "why"}
