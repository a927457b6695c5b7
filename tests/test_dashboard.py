"""The dashboard's data and page, and the controls it gives the build queue (without Airflow).

The page as operators open it, through the real API server and a browser, is tests/test_dashboard_ui.py.
"""

from __future__ import annotations

import json
import re

import pytest

from support.build_world import add_release
from support.dashboard_world import ARM64, EXPECTED, PI, build_world
from wheelwright.builds.queue import claim_wave
from wheelwright.operate import dashboard
from wheelwright.operate.admin import UnknownRelease
from wheelwright.operate.dashboard_app import bar_chart, line_chart, render_page


@pytest.fixture
def world(catalog, tmp_path):
    output = tmp_path / "www"
    build_world(catalog, output, tmp_path / "access.log")
    return catalog


def test_the_snapshot_counts_what_the_catalog_holds(world):
    d = dashboard.snapshot(world)
    json.dumps(d)  # the app serves it as it is
    assert d["sync"]["serial"] == EXPECTED["serial"]
    assert d["sync"]["lag"] == EXPECTED["lag"]
    assert d["sync"]["events_last_hour"] == EXPECTED["events_last_hour"]
    assert sum(b["last_hour"] for b in d["builds"]) == EXPECTED["builds_last_hour"]
    assert sum(b["last_day"] for b in d["builds"]) == EXPECTED["builds_last_day"]
    assert sum(r["success_day"] for r in d["success"]) == EXPECTED["success_day"]
    assert sum(r["failure_day"] for r in d["success"]) == EXPECTED["failure_day"]
    assert {t["name"]: t["queue_depth"] for t in d["targets"]} == EXPECTED["queue"]
    assert d["publish"]["wheels"] == EXPECTED["wheels"]
    top = d["missing"][0]
    assert (top["kind"], top["missing"], top["builds"], top["apt_package"]) == EXPECTED["top_missing"]
    assert {p["package"]: p["downloads"] for p in d["downloads"]["top"]} == EXPECTED["downloads"]
    assert {w["package"]: w["requests"] for w in d["downloads"]["wanted"]} == EXPECTED["wanted"]
    assert [r["lines"] for r in d["downloads"]["refused"]] == [1]


def test_builds_are_counted_per_builder_and_target(world):
    rows = {(b["builder"], b["target"]): (b["last_hour"], b["last_day"], b["success"], b["failure"])
            for b in dashboard.snapshot(world)["builds"]}
    assert rows == {("pi-1", PI): (3, 3, 2, 1), ("pi-2", PI): (0, 3, 1, 2), ("arm-1", ARM64): (1, 1, 1, 0)}


def test_recent_failures_carry_their_reason_and_log(world):
    failures = dashboard.snapshot(world)["failures"]
    assert [f["package"] for f in failures] == ["lxml", "cffi", "cryptography"], "newest first"
    assert "libxml/parser.h" in failures[0]["reason"]
    assert all(re.fullmatch(r"logs/\d{4}/\d{4}/\d{4}\.txt\.gz", f["log_path"]) for f in failures)


def test_a_held_builder_shows_why(world):
    builders = {b["name"]: b for b in dashboard.snapshot(world)["builders"]}
    assert builders["pi-2"]["held"] and "too hot" in builders["pi-2"]["held_reason"]
    assert not builders["pi-1"]["held"] and builders["arm-1"]["temp_c"] is None


def test_the_page_shows_the_numbers_and_links_nothing_outside(world):
    html = render_page(dashboard.snapshot(world), user="admin", can_act=True)
    assert f'data-value="{EXPECTED["serial"]}"' in html and f'data-value="{EXPECTED["lag"]}"' in html
    assert "libffi-dev" in html and "too hot: 86.5" in html and "not-built-here" in html
    assert html.count("<svg") == 6, "builds, queue, lag, downloads, events and temperatures are charts"
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html), "the page must work offline"
    assert "Pause" in html and "Rebuild" in html


def test_a_viewer_sees_no_action_buttons(world):
    html = render_page(dashboard.snapshot(world), user="viewer", can_act=False)
    assert "<button" not in html and "read only" in html


def test_text_from_outside_is_escaped_on_the_page(world):
    world.execute("UPDATE builds SET reason = '<script>alert(1)</script>' WHERE package = 'lxml'")
    html = render_page(dashboard.snapshot(world), user="<b>x</b>", can_act=False)
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "<b>x</b>" not in html


def test_a_paused_target_claims_nothing_until_resumed(catalog):
    from support.build_world import use_targets
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    dashboard.pause(catalog, "cp39-armv7l", reason="swapping SD cards", user="admin")
    assert claim_wave(catalog, "cp39-armv7l", 10) == []
    target = next(t for t in dashboard.snapshot(catalog)["targets"] if t["name"] == "cp39-armv7l")
    assert target["paused"] and not target["takes_builds"] and target["paused_by"] == "admin"
    dashboard.resume(catalog, "cp39-armv7l", user="admin")
    assert [r["package"] for r in claim_wave(catalog, "cp39-armv7l", 10)] == ["foo"]


def test_pausing_an_unknown_target_says_so(catalog):
    with pytest.raises(dashboard.UnknownTarget):
        dashboard.pause(catalog, "cp99-nothing", reason="x", user="admin")


def test_a_target_whose_builders_are_all_held_claims_nothing(catalog):
    from support.build_world import use_targets
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    catalog.execute("INSERT INTO builders (name, target, ssh_conn_id, build_dir) VALUES "
                    "('a', 'cp39-armv7l', 'c', '/b'), ('b', 'cp39-armv7l', 'c', '/b')")
    catalog.execute("INSERT INTO builder_health (builder, checked_at, reachable, held, held_reason) VALUES "
                    "('a', now(), true, true, 'too hot'), ('b', now(), false, true, 'unreachable')")
    assert claim_wave(catalog, "cp39-armv7l", 10) == []
    catalog.execute("UPDATE builder_health SET held = false WHERE builder = 'b'")
    assert [r["package"] for r in claim_wave(catalog, "cp39-armv7l", 10)] == ["foo"]


def test_skip_unskip_and_rebuild_are_the_clis_own(world):
    dashboard.skip(world, "backlog", None, reason="takes a Pi down", user="admin")
    assert world.execute("SELECT skip_reason FROM packages WHERE package = 'backlog'").fetchone()[0] == \
        "takes a Pi down (admin)"
    dashboard.unskip(world, "backlog", None, user="admin")
    assert world.execute("SELECT skip_reason FROM packages WHERE package = 'backlog'").fetchone()[0] is None
    assert dashboard.rebuild(world, "numpy", "2.1.0", PI, user="admin") == 1
    with pytest.raises(UnknownRelease):
        dashboard.rebuild(world, "no-such-thing", None, None, user="admin")


def test_bar_chart_draws_one_bar_per_nonzero_value():
    svg = bar_chart(["a", "b", "c"], {"ok": [1, 0, 3], "bad": [2, 0, 0]})
    assert svg.count("<rect") == 3 and "<title>c: 3 ok</title>" in svg


def test_line_chart_says_when_it_has_no_samples():
    assert "no samples yet" in line_chart({})


def test_downloads_are_broken_down_by_target_and_python(world):
    downloads = dashboard.snapshot(world)["downloads"]
    assert {r["target"]: r["downloads"] for r in downloads["by_target"]} == {PI: 3, ARM64: 1}
    assert [(r["python"], r["downloads"]) for r in downloads["by_python"]] == [("3.11", 4)]
    assert [(r["installer"], r["version"], r["downloads"]) for r in downloads["by_installer"]] == [("pip", "24.0", 4)]


def test_a_sample_is_due_only_when_the_latest_is_old(world):
    assert not dashboard.sample_due(world), "build_world has just sampled"
    world.execute("UPDATE sync_samples SET taken_at = taken_at - interval '15 minutes'")
    assert dashboard.sample_due(world)


@pytest.mark.parametrize("value, top", [(0, 4), (3, 4), (5, 8), (9, 20), (86.5, 100), (1790, 2000), (886_523, 1_000_000)])
def test_chart_axes_end_on_round_numbers(value, top):
    from wheelwright.operate.dashboard_app import _nice_max
    assert _nice_max(value) == top


def test_the_page_shows_what_the_cdn_still_owes(world):
    from wheelwright.publish import cdn
    assert "CDN: nothing owed" in render_page(dashboard.snapshot(world), user="admin", can_act=True)
    with world.transaction():
        cdn.owe(world, [cdn.project_key("rpi-gpio"), "root"])
    d = dashboard.snapshot(world)
    assert d["publish"]["purges"]["owed"] == 2
    assert "CDN: 2 purges owed" in render_page(d, user="admin", can_act=True)


def test_a_target_whose_image_is_being_built_here_says_how_far_it_is(world, tmp_path):
    import fcntl
    from wheelwright.builds import images
    from wheelwright.builds.targets import load_targets, target_named
    store = tmp_path / "images"
    store.mkdir()
    recipe = images.recipe_for(target_named(load_targets(), PI))  # the repository's targets, as the page reads
    (store / f".{recipe.folder_name}.progress.json").write_text(json.dumps({"percent": 42, "seconds_left": 250}))
    with open(store / f".{recipe.folder_name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what a build holds while it runs
        data = dashboard.snapshot(world, image_store=store)
    targets = {t["name"]: t for t in data["targets"]}
    assert targets[PI]["image_build"] == {"percent": 42, "seconds_left": 250}
    assert targets[ARM64]["image_build"] is None
    row = re.search(rf'<tr data-target="{PI}">(.*?)</tr>', render_page(data, user="admin", can_act=True), re.S)[1]
    assert "image building, 42 %" in row and "about 4 min left" in row
    assert all(t["image_build"] is None for t in dashboard.snapshot(world, image_store=store)["targets"]), \
        "a progress file without its build (the lock is free) is what a killed build left"
