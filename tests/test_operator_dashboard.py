"""The dashboard page's operator panels, rendered from the catalog (without Airflow): takedowns, workers
put to sleep, what keeps failing; buttons only for those who may act, text from outside escaped.

(The routes behind the buttons, with logins, in a real API server: tests/test_operator_ui.py and
tests/test_builder_control.py.)"""

from __future__ import annotations

from psycopg.types.json import Jsonb

from support.build_world import add_release, use_targets
from wheelwright.operate import dashboard, notices, takedowns
from wheelwright.operate.dashboard_app import render_page


def test_the_page_shows_takedowns_sleeping_workers_and_failing_streaks(catalog):
    use_targets(catalog)
    add_release(catalog, "gizmo", "1.0")
    takedowns.remove(catalog, "gizmo", reason="<script>alert(1)</script> licence", by="ops")
    catalog.execute("INSERT INTO builder_sleeps (worker, queues, reason, slept_by) VALUES (%s, %s, %s, %s)",
                    ("pi-kitchen@pi-kitchen", Jsonb([{"name": "cp311-armv7l"}]), "new SD card", "alice"))
    for i in range(4):
        notices.run_finished(catalog, "pypi_sync", f"r{i}", failed=True, reason="task_failure")
    data = dashboard.snapshot(catalog)
    assert data["operator"]["takedowns"][0]["package"] == "gizmo"
    assert data["operator"]["sleeping"][0]["queues"] == ["cp311-armv7l"]
    assert data["operator"]["failing"][0] == {**data["operator"]["failing"][0], "subject": "dag:pypi_sync",
                                              "failures": 4, "notified": True}
    admin = render_page(data, user="admin", can_act=True)
    assert "pi-kitchen@pi-kitchen" in admin and "new SD card" in admin and "dag:pypi_sync" in admin
    assert "Take down" in admin and "Import wheel" in admin and ">Restore</button>" in admin
    assert "<script>alert(1)" not in admin and "&lt;script&gt;alert(1)" in admin
    viewer = render_page(data, user="viewer", can_act=False)
    assert "<button" not in viewer and "Import wheel" not in viewer and "gizmo" in viewer
