"""The public statistics: what people download from the index, as a page and as JSON in the published tree.

piwheels publishes its download statistics (``/stats/``, and a JSON of them) because users and
maintainers ask which packages and Python versions matter on a Pi. This room writes the same for
wheelwright from the downloads the access-log ingest counted (``operate/access_logs.py``):

    www/stats/index.json    {generated, days, total, per_day, top_packages, by_target, by_python, by_installer}
    www/stats/index.html    the same, for people, with an inline SVG chart of downloads per day, in the
                            site's frame and style (``publish/templates/stats.html``, ``static/site.css``)

Both files are replaced atomically (a dot-named temp file, fsync, rename: the origin never serves a dot
name), so a reader sees the old page or the new one, never half of one. Nothing personal leaves the
catalog: the counts are per file, day, Python and installer, never per client.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from wheelwright.catalog import db

DAYS = 30
TOP = 100


def stats_data(conn: psycopg.Connection, *, days: int = DAYS, top: int = TOP) -> dict:
    """The public statistics of the last ``days`` days, as JSON-ready data."""
    params = {"days": days, "limit": top}
    q = lambda name: conn.execute(db.query(name), params).fetchall()  # noqa: E731
    per_day = [{"day": d.isoformat(), "downloads": n} for d, n in q("stats_per_day")]
    return {
        "generated": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "days": days,
        "total": sum(d["downloads"] for d in per_day),
        "per_day": per_day,
        "top_packages": [{"package": p, "name": name, "downloads": n} for p, name, n in q("stats_top_packages")],
        "by_target": [{"target": t, "downloads": n} for t, n in q("stats_by_target")],
        "by_python": [{"python": v, "downloads": n} for v, n in q("stats_by_python")],
        "by_installer": [{"installer": i, "version": v, "downloads": n} for i, v, n in q("stats_by_installer")],
    }


def render_html(stats: dict) -> str:
    """The page, in the site's frame and style (``templates/stats.html``), with the dashboard's chart."""
    from wheelwright.operate.dashboard_app import bar_chart
    from wheelwright.publish.pages import template

    chart = bar_chart([d["day"][5:] for d in stats["per_day"]],
                      {"downloads": [d["downloads"] for d in stats["per_day"]]},
                      width=720, height=200, title="downloads per day")
    return template("stats.html").render(s=stats, chart=chart, root="../", page="stats")


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_stats(conn: psycopg.Connection, output: Path, *, days: int = DAYS) -> dict:
    """Write ``stats/index.json`` and ``stats/index.html`` under the published tree; return the data."""
    stats = stats_data(conn, days=days)
    folder = Path(output) / "stats"
    folder.mkdir(parents=True, exist_ok=True)
    _replace(folder / "index.json", json.dumps(stats, indent=1).encode())
    _replace(folder / "index.html", render_html(stats).encode())
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return stats
