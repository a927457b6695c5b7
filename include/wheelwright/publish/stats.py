"""The public statistics: what people download from the index, as a page and as JSON in the published tree.

piwheels publishes its download statistics (``/stats/``, and a JSON of them) because users and
maintainers ask which packages and Python versions matter on a Pi. This room writes the same for
wheelwright from the downloads the access-log ingest counted (``operate/access_logs.py``):

    www/stats/index.json    {generated, days, total, per_day, top_packages, by_target, by_python, by_installer}
    www/stats/index.html    the same, for people, with an inline SVG chart of downloads per day

Both files are replaced atomically (a dot-named temp file, fsync, rename: the origin never serves a dot
name), so a reader sees the old page or the new one, never half of one. Nothing personal leaves the
catalog: the counts are per file, day, Python and installer, never per client.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import jinja2
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


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_ENV.filters["num"] = lambda n: f"{n:,}"
_PAGE = _ENV.from_string("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Download statistics</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 60em; margin: 1em auto; padding: 0 1em; color: #222; }
.muted { color: #777; } table { border-collapse: collapse; width: 100%; font-size: .9em; }
th, td { text-align: left; padding: .25em .5em; border-bottom: 1px solid #eee; } td.n, th.n { text-align: right; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(16em, 1fr)); gap: 1.5em; }
svg { width: 100%; height: auto; }
</style>
</head>
<body>
<h1>Download statistics</h1>
<p class="muted">{{ s.total | num }} downloads in the last {{ s.days }} days · generated {{ s.generated }} ·
<a href="index.json">as JSON</a></p>
{{ chart }}
<div class="cols">
<div><h2>By target</h2><table><tr><th>Target</th><th class="n">Downloads</th></tr>
{% for r in s.by_target %}<tr><td>{{ r.target }}</td><td class="n">{{ r.downloads | num }}</td></tr>
{% else %}<tr><td colspan="2" class="muted">none yet</td></tr>{% endfor %}</table></div>
<div><h2>By Python</h2><table><tr><th>Python</th><th class="n">Downloads</th></tr>
{% for r in s.by_python %}<tr><td>{{ r.python }}</td><td class="n">{{ r.downloads | num }}</td></tr>
{% else %}<tr><td colspan="2" class="muted">none yet</td></tr>{% endfor %}</table></div>
</div>
<h2>Top packages</h2>
<table><tr><th>#</th><th>Package</th><th class="n">Downloads</th></tr>
{% for r in s.top_packages %}<tr><td class="muted">{{ loop.index }}</td>
<td><a href="../project/{{ r.package }}/">{{ r.name }}</a></td><td class="n">{{ r.downloads | num }}</td></tr>
{% else %}<tr><td colspan="3" class="muted">none yet</td></tr>{% endfor %}</table>
</body>
</html>
""")


def render_html(stats: dict) -> str:
    from wheelwright.operate.dashboard_app import bar_chart
    chart = bar_chart([d["day"][5:] for d in stats["per_day"]],
                      {"downloads": [d["downloads"] for d in stats["per_day"]]},
                      width=720, height=200, title="downloads per day")
    return _PAGE.render(s=stats, chart=chart)


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
