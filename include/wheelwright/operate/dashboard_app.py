"""The operator's dashboard as a web app: a FastAPI app the Airflow plugin mounts at ``/wheelwright``.

Airflow mounts a plugin's FastAPI app without any authentication (verified on 3.3.2: a plain route
answers anyone), so this room decides who asks, at its edge, on every route: Airflow's own user
dependency (``GetUserDep``: a request without a token, header or the UI's ``_token`` cookie, gets 401, a
bad token 403), then the auth manager asked about DAG ids fixed here, never taken from the request.
(Airflow's ``requires_access_dag`` reads ``dag_id`` from the query string when the route has none, so
with a per-DAG auth manager such as FAB a user allowed to edit one DAG could add ``?dag_id=<it>`` and
act.) Reading the dashboard needs read access to every DAG whose work it shows (:data:`SHOWN_DAGS`);
acting needs edit access to ``build_wheels`` (:data:`ACTS_ON`), whose builds every action changes: the
same right that pauses that DAG or clears its tasks in the UI. Actions take JSON bodies only and refuse
a browser's request sent from another origin (``Sec-Fetch-Site``), so no other page can ride on the
UI's cookie.

The page is one HTML document drawn on the server: numbers, tables and inline SVG charts, no script
needed to read it, no link to anything outside (the machine running the UI may have no internet), and a
few lines of inline script for the action buttons. Every text from outside (package names, failure
reasons, log samples) goes through jinja2's autoescaping. Names in action URLs are checked at the door
(a target must exist, a package name must be a valid project name) before anything runs.

The data comes from :mod:`wheelwright.operate.dashboard`; Airflow is imported only when the app is built,
so the rendering (``render_page``) and the charts are testable without it.
"""


import logging
import math
import re
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import jinja2
from markupsafe import Markup

from wheelwright.catalog import db
from wheelwright.config import Settings
from wheelwright.errors import WheelwrightError
from wheelwright.names import canonical_or_none
from wheelwright.operate import dashboard

log = logging.getLogger(__name__)

URL_PREFIX = "/wheelwright"
# The DAGs whose work the page shows (reading needs read access to each) and the one every action
# changes (acting needs edit access to it).
SHOWN_DAGS = ("pypi_sync", "build_wheels", "publish_index", "rebuild_history", "access_logs", "builder_health")
ACTS_ON = ("build_wheels",)
_VERSION = re.compile(r"[!-~]{1,128}\Z")
_LOG_PATH = re.compile(r"logs(?:/[0-9]{1,8})+\.txt\.gz\Z")
COLOURS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"]


# --- charts: pure functions from numbers to inline SVG --------------------------------------------

def _nice_max(value: float) -> float:
    """The top of a y axis with four gridlines at round numbers (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 4
    tick = value / 4
    exponent = 10 ** math.floor(math.log10(tick))
    for step in ((1, 2, 2.5, 5, 10) if exponent >= 10 else (1, 2, 5, 10)):  # counts keep whole ticks
        if tick <= step * exponent:
            return 4 * step * exponent
    return 40 * exponent


def _fmt(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000:
        return f"{value / 1_000:g}k"
    return f"{value:g}"


def bar_chart(labels: list[str], stacks: dict[str, list[float]], *, colours: dict[str, str] | None = None,
              width: int = 560, height: int = 180, title: str = "") -> Markup:
    """Stacked bars, one per label; ``stacks`` maps a series name to one value per label."""
    colours = colours or {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(stacks)}
    left, bottom, top = 44, 22, 10
    plot_w, plot_h = width - left - 8, height - bottom - top
    totals = [sum(values[i] for values in stacks.values()) for i in range(len(labels))]
    ymax = _nice_max(max(totals, default=0))
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">']
    parts += _axes(left, top, plot_w, plot_h, ymax)
    n = max(len(labels), 1)
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.75)
    for i, label in enumerate(labels):
        y = top + plot_h
        for name, values in stacks.items():
            h = plot_h * values[i] / ymax if values[i] else 0
            if h:
                y -= h
                parts.append(f'<rect x="{left + i * slot + (slot - bar_w) / 2:.1f}" y="{y:.1f}" '
                             f'width="{bar_w:.1f}" height="{h:.1f}" fill="{colours[name]}">'
                             f'<title>{_esc(label)}: {values[i]:g} {_esc(name)}</title></rect>')
    for i in _tick_indexes(len(labels), 6):
        parts.append(f'<text x="{left + (i + 0.5) * slot:.1f}" y="{height - 6}" class="tick" '
                     f'text-anchor="middle">{_esc(labels[i])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts) + _legend(colours))


def line_chart(series: dict[str, list[tuple[datetime, float]]], *, width: int = 560, height: int = 180,
               title: str = "") -> Markup:
    """One line per series over a shared time axis."""
    left, bottom, top = 44, 22, 10
    plot_w, plot_h = width - left - 8, height - bottom - top
    points = [p for values in series.values() for p in values]
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">']
    if not points:
        parts += _axes(left, top, plot_w, plot_h, 1)
        parts.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" class="empty" '
                     'text-anchor="middle">no samples yet</text></svg>')
        return Markup("".join(parts))
    t0 = min(t for t, _ in points).timestamp()
    t1 = max(t for t, _ in points).timestamp()
    span = max(t1 - t0, 1)
    ymax = _nice_max(max(v for _, v in points))
    parts += _axes(left, top, plot_w, plot_h, ymax)
    colours = {}
    for i, (name, values) in enumerate(series.items()):
        colour = colours[name] = COLOURS[i % len(COLOURS)]
        xy = [(left + (plot_w * (t.timestamp() - t0) / span if t1 > t0 else plot_w / 2),
               top + plot_h * (1 - v / ymax)) for t, v in values]
        if len(xy) == 1:
            x, y = xy[0]
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        else:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        last_t, last_v = values[-1]
        parts.append(f'<circle cx="{xy[-1][0]:.1f}" cy="{xy[-1][1]:.1f}" r="2.5" fill="{colour}">'
                     f'<title>{_esc(name)}: {last_v:g} at {last_t:%Y-%m-%d %H:%M}</title></circle>')
    ends = [(t0, 0), (t1, 1)] if t1 > t0 else [(t0, 0.5)]
    for when, frac in ends:
        label = datetime.fromtimestamp(when, points[0][0].tzinfo)
        anchor = {0: "start", 1: "end"}.get(frac, "middle")
        parts.append(f'<text x="{left + plot_w * frac:.1f}" y="{height - 6}" class="tick" '
                     f'text-anchor="{anchor}">{label:%d %b %H:%M}</text>')
    parts.append("</svg>")
    return Markup("".join(parts) + _legend(colours))


def _axes(left, top, plot_w, plot_h, ymax) -> list[str]:
    parts = []
    for k in range(5):
        y = top + plot_h * (1 - k / 4)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
                     f'{_fmt(ymax * k / 4)}</text>')
    return parts


def _legend(colours: dict[str, str]) -> str:
    if len(colours) < 2:
        return ""
    items = "".join(f'<span><i style="background:{c}"></i>{_esc(n)}</span>' for n, c in colours.items())
    return f'<div class="legend">{items}</div>'


def _tick_indexes(n: int, most: int) -> list[int]:
    if n <= most:
        return list(range(n))
    step = math.ceil(n / most)
    return list(range(0, n, step))


def _esc(text) -> str:
    return str(Markup.escape(text))


# --- the page ------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("wheelwright.operate", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["size"] = human_size
    env.filters["age"] = human_age
    env.filters["num"] = lambda n: "–" if n is None else f"{n:,}"
    env.filters["pct"] = lambda r: "–" if r is None else f"{r * 100:.0f}%"
    env.filters["when"] = lambda s: "–" if not s else datetime.fromisoformat(s).strftime("%Y-%m-%d %H:%M")
    return env


def human_size(n) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def human_age(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 90 * 60:
        return f"{seconds // 60} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def charts(data: dict) -> dict[str, Markup]:
    """The page's charts, drawn from a :func:`dashboard.snapshot`."""
    trends = data["trends"]
    builds = trends["builds"]
    labels = [datetime.fromisoformat(b["hour"]).strftime("%H:00") for b in builds]
    out = {
        "builds": bar_chart(labels, {"success": [b["success"] for b in builds],
                                     "failure": [b["failure"] for b in builds],
                                     "lost": [b["lost"] for b in builds]},
                            colours={"success": "#16a34a", "failure": "#dc2626", "lost": "#a3a3a3"},
                            title="builds per hour"),
        "queue": line_chart({target: [(datetime.fromisoformat(t), v) for t, v in points]
                             for target, points in trends["queue"].items()}, title="queue depth"),
        "lag": line_chart({"serials behind PyPI": [(datetime.fromisoformat(t), v) for t, v in trends["lag"]]},
                          title="lag behind PyPI"),
        "downloads": bar_chart([d[5:] for d, _ in trends["downloads"]],
                               {"downloads": [n for _, n in trends["downloads"]]}, title="downloads per day"),
        "temperature": line_chart({builder: [(datetime.fromisoformat(t), v) for t, v in points]
                                   for builder, points in trends["temperature"].items()},
                                  title="builder CPU temperature"),
        "events": bar_chart([datetime.fromisoformat(e["hour"]).strftime("%H:00") for e in trends["events"]],
                            {"events": [e["events"] for e in trends["events"]]},
                            colours={"events": "#9333ea"}, title="PyPI events per hour"),
    }
    return out


def render_page(data: dict, *, user: str, can_act: bool, base: str = URL_PREFIX) -> str:
    totals = {
        "last_hour": sum(b["last_hour"] for b in data["builds"]),
        "last_day": sum(b["last_day"] for b in data["builds"]),
        "success_day": sum(r["success_day"] for r in data["success"]),
        "failure_day": sum(r["failure_day"] for r in data["success"]),
    }
    done = totals["success_day"] + totals["failure_day"]
    totals["rate_day"] = totals["success_day"] / done if done else None
    return _templates().get_template("dashboard.html").render(
        d=data, charts=charts(data), user=user, can_act=can_act, base=base, totals=totals)


# --- the app -------------------------------------------------------------------------------------

def settings_in_api_server() -> Settings:
    """The settings as the API server knows them: the environment, with the catalog of the Connection
    ``wheelwright_db`` when one is defined (as the DAG tasks read it, ``operate/dag_tasks.py``)."""
    from psycopg.conninfo import make_conninfo

    from wheelwright.operate.dag_tasks import DB_CONN_ID

    settings = Settings.from_env()
    try:
        from airflow.exceptions import AirflowNotFoundException
        from airflow.models.connection import Connection
        conn = Connection.get_connection_from_secrets(DB_CONN_ID)
    except (ImportError, AirflowNotFoundException):
        return settings
    return settings.with_(dsn=make_conninfo(host=conn.host or "", port=conn.port or "", user=conn.login or "",
                                            password=conn.password or "", dbname=conn.schema or ""))


def default_connect():
    return db.connect(settings_in_api_server())


def default_output() -> Path:
    return Settings.from_env().output


def image_store() -> Path:
    """Where this machine keeps target images (a builder on the same machine builds them there)."""
    from wheelwright.builds.images import default_store
    return default_store(Settings.from_env())


def may(user, method: str, dag_ids: tuple[str, ...]) -> bool:
    """Whether Airflow's auth manager lets ``user`` do ``method`` ("GET" read, "PUT" edit) on each DAG of
    ``dag_ids`` (with its team, as Airflow's own checks ask)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.models.dag import DagModel

    teams = DagModel.get_dag_id_to_team_name_mapping(list(dag_ids))
    return bool(get_auth_manager().batch_is_authorized_dag(
        [{"method": method, "details": DagDetails(id=dag_id, team_name=teams.get(dag_id))} for dag_id in dag_ids],
        user=user))


def _cross_site(request) -> bool:
    """A browser's request sent from another origin (Fetch metadata, which every current browser sends;
    without it, JSON-only bodies still force a CORS preflight the API server does not grant)."""
    return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")


def create_app(connect: Callable | None = None, output: Callable[[], Path] | None = None):
    """The FastAPI app; ``connect()`` opens a catalog connection, ``output()`` names the published tree."""
    from fastapi import Body, Depends, FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from airflow.api_fastapi.core_api.security import GetUserDep

    connect = connect or default_connect
    output = output or default_output
    _templates().get_template("dashboard.html")  # compile once, at start-up, not on the first view

    def requires(method: str, dag_ids: tuple[str, ...]):
        """A dependency letting a request through only if its user may ``method`` every DAG of ``dag_ids``."""
        def check(request: Request, user: GetUserDep) -> None:
            if method != "GET" and _cross_site(request):
                raise HTTPException(403, "actions are taken from the dashboard's own page")
            if not may(user, method, dag_ids):
                raise HTTPException(403, "Forbidden")
        return check

    read = [Depends(requires("GET", SHOWN_DAGS))]
    edit = [Depends(requires("PUT", ACTS_ON))]
    app = FastAPI(title="wheelwright dashboard", docs_url=None, redoc_url=None, openapi_url=None)

    def can_edit(user) -> bool:
        return may(user, "PUT", ACTS_ON)

    def name_of(user) -> str:
        try:
            return user.get_name()
        except Exception:  # noqa: BLE001 - any auth manager's user: show something
            return "?"

    @app.get("/", response_class=HTMLResponse, dependencies=read)
    def page(request: Request, user: GetUserDep):
        with connect() as conn:
            data = dashboard.snapshot(conn, image_store=image_store())
        base = request.scope.get("root_path", "") or URL_PREFIX
        return HTMLResponse(render_page(data, user=name_of(user), can_act=can_edit(user), base=base),
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                     "script-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
                                     "frame-ancestors 'self'"})

    @app.get("/api/snapshot", dependencies=read)
    def snapshot():
        with connect() as conn:
            return JSONResponse(dashboard.snapshot(conn, image_store=image_store()),
                                headers={"Cache-Control": "no-store"})

    @app.get("/logs/{path:path}", dependencies=read)
    def build_log(path: str):
        rel = f"logs/{path}"
        if not _LOG_PATH.match(rel):
            raise HTTPException(404, "no such log")
        root = output().resolve()
        file = (root / rel).resolve()
        if root not in file.parents or not file.is_file():
            raise HTTPException(404, "no such log")
        # A build log is the build's own text, served from the UI's origin: never sniffed, never a page.
        return Response(file.read_bytes(), media_type="text/plain; charset=utf-8",
                        headers={"Content-Encoding": "gzip", "Cache-Control": "no-store",
                                 "X-Content-Type-Options": "nosniff",
                                 "Content-Security-Policy": "default-src 'none'; sandbox"})

    def body_of(request: Request, payload) -> dict:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise HTTPException(415, "actions take a JSON body")
        if payload is None:
            return {}
        if not isinstance(payload, dict):
            raise HTTPException(422, "the body must be a JSON object")
        return payload

    def text(payload: dict, key: str, pattern=None, required=False, limit=500) -> str | None:
        value = payload.get(key)
        if value in (None, ""):
            if required:
                raise HTTPException(422, f"{key} is required")
            return None
        if not isinstance(value, str) or len(value) > limit or (pattern and not pattern.match(value)):
            raise HTTPException(422, f"{key} is not valid")
        return value

    def act(fn):
        try:
            with connect() as conn:
                return fn(conn)
        except WheelwrightError as exc:
            raise HTTPException(404 if getattr(exc, "exit_code", 1) == 5 else 422, str(exc)) from None

    @app.post("/api/targets/{target}/pause", dependencies=edit)
    def pause(target: str, request: Request, user: GetUserDep, payload=Body(None)):
        reason = text(body_of(request, payload), "reason")
        act(lambda conn: dashboard.pause(conn, target, reason=reason or "", user=name_of(user)))
        return {"target": target, "paused": True}

    @app.post("/api/targets/{target}/resume", dependencies=edit)
    def resume(target: str, request: Request, user: GetUserDep, payload=Body(None)):
        body_of(request, payload)
        act(lambda conn: dashboard.resume(conn, target, user=name_of(user)))
        return {"target": target, "paused": False}

    def package_name(package: str) -> str:
        canonical = canonical_or_none(package) if len(package) <= 256 else None
        if canonical is None:
            raise HTTPException(422, "not a valid project name")
        return canonical

    @app.post("/api/packages/{package}/skip", dependencies=edit)
    def skip(package: str, request: Request, user: GetUserDep, payload=Body(None)):
        body = body_of(request, payload)
        version, reason = text(body, "version", _VERSION), text(body, "reason", required=True)
        act(lambda conn: dashboard.skip(conn, package_name(package), version, reason=reason,
                                        user=name_of(user)))
        return {"package": package, "version": version, "skipped": True}

    @app.post("/api/packages/{package}/unskip", dependencies=edit)
    def unskip(package: str, request: Request, user: GetUserDep, payload=Body(None)):
        version = text(body_of(request, payload), "version", _VERSION)
        act(lambda conn: dashboard.unskip(conn, package_name(package), version, user=name_of(user)))
        return {"package": package, "version": version, "skipped": False}

    @app.post("/api/packages/{package}/rebuild", dependencies=edit)
    def rebuild(package: str, request: Request, user: GetUserDep, payload=Body(None)):
        body = body_of(request, payload)
        version, target = text(body, "version", _VERSION), text(body, "target", limit=63)
        n = act(lambda conn: dashboard.rebuild(conn, package_name(package), version, target, user=name_of(user)))
        return {"package": package, "version": version, "target": target, "forgotten": n}

    @app.post("/api/packages/{package}/settings", dependencies=edit)
    def settings(package: str, request: Request, user: GetUserDep, payload=Body(None)):
        """Set a package's build settings: {"apt": [...], "timeout": "6h"|null, "env": {...},
        "unset_env": [...], "clear": true}; what is not given stays."""
        from wheelwright.builds.build_settings import SettingRefused, parse_duration
        body = body_of(request, payload)
        if set(body) - {"apt", "timeout", "env", "unset_env", "clear"}:
            raise HTTPException(422, "settings take apt, timeout, env, unset_env and clear")
        changes: dict = {"clear": body.get("clear") is True}
        if "apt" in body:
            changes["apt"] = body["apt"] if isinstance(body["apt"], list) else [body["apt"]]
        if "timeout" in body:
            timeout = body["timeout"]
            try:
                changes["timeout"] = (None if timeout in (None, "", "default") else
                                      parse_duration(timeout) if isinstance(timeout, str) else timeout)
            except SettingRefused as exc:
                raise HTTPException(422, str(exc)) from None
        if "env" in body:
            if not isinstance(body["env"], dict):
                raise HTTPException(422, "env must be an object of NAME: VALUE")
            changes["set_env"] = body["env"]
        if "unset_env" in body:
            if not isinstance(body["unset_env"], list):
                raise HTTPException(422, "unset_env must be a list of names")
            changes["unset_env"] = [n for n in body["unset_env"] if isinstance(n, str)]
        new = act(lambda conn: dashboard.build_settings(conn, package_name(package), changes, user=name_of(user)))
        return {"package": package_name(package), "settings": None if new is None else new.to_request()}

    _operator_routes(app, connect=connect, output=output, read=read, edit=edit, body_of=body_of, text=text,
                     act=act, package_name=package_name, name_of=name_of)
    return app


# --- operator actions (issue 32): takedowns, imports, per-builder control ---------------------------

_TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


def _operator_routes(app, *, connect, output, read, edit, body_of, text, act, package_name, name_of) -> None:
    """Take down and restore (operate/takedowns.py), import a wheel (builds/imports.py: the upload is
    the request body, ``application/octet-stream``, which no cross-site form can send), and sleep, wake
    or stop a builder (operate/builder_control.py, through the broker). The CLI's own functions, with
    the same permission as every action: DAG edit."""
    import shutil
    import tempfile

    from fastapi import Body, HTTPException, Request
    from starlette.concurrency import run_in_threadpool
    from airflow.api_fastapi.core_api.security import GetUserDep

    from wheelwright.builds.analysis import WheelRefused, check_plain_filename
    from wheelwright.builds.imports import MAX_WHEEL, image_root_built, import_wheels
    from wheelwright.operate import builder_control, takedowns

    @app.post("/api/packages/{package}/remove", dependencies=edit)
    def remove(package: str, request: Request, user: GetUserDep, payload=Body(None)):
        body = body_of(request, payload)
        version, reason = text(body, "version", _VERSION), text(body, "reason", required=True)
        done = act(lambda conn: takedowns.remove(conn, package_name(package), version, reason=reason,
                                                 by=name_of(user)))
        return {"package": done.package, "version": version, "removed": True,
                "builds_forgotten": done.builds_forgotten, "wheels_forgotten": done.wheels_forgotten}

    @app.post("/api/packages/{package}/restore", dependencies=edit)
    def restore(package: str, request: Request, user: GetUserDep, payload=Body(None)):
        version = text(body_of(request, payload), "version", _VERSION)
        act(lambda conn: takedowns.restore(conn, package_name(package), version, by=name_of(user)))
        return {"package": package_name(package), "version": version, "removed": False}

    @app.post("/api/import", dependencies=edit)
    async def import_wheel(request: Request, user: GetUserDep, filename: str, target: str | None = None):
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/octet-stream":
            raise HTTPException(415, "the wheel is the request body, as application/octet-stream")
        try:
            check_plain_filename(filename)
        except WheelRefused:
            raise HTTPException(422, "filename is not a plain file name") from None
        if not filename.endswith(".whl"):
            raise HTTPException(422, "only wheels (.whl) are imported")
        if target is not None and not _TARGET.match(target):
            raise HTTPException(422, "target is not valid")
        scratch = Settings.from_env().home / "imports"
        scratch.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="upload-", dir=scratch))
        try:
            path, size = folder / filename, 0
            with open(path, "xb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_WHEEL:
                        raise HTTPException(413, f"a wheel of more than {MAX_WHEEL:,} bytes: import it with "
                                                 "the command line")
                    f.write(chunk)
            done = await run_in_threadpool(act, lambda conn: import_wheels(
                conn, [path], by=name_of(user), output=output(), scratch=scratch, target=target,
                root_for=image_root_built))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return {"imported": [build.as_dict() for build in done]}

    def control(fn):
        from kombu.exceptions import OperationalError
        try:
            app_ = builder_control.control_app(settings_in_api_server())
            return act(lambda conn: fn(app_, conn))
        except WheelwrightError as exc:
            raise HTTPException(422, str(exc)) from None
        except OperationalError as exc:
            raise HTTPException(503, f"the Celery broker does not answer: {exc}") from None

    @app.get("/api/workers", dependencies=read)
    def workers():
        return {"workers": control(lambda app_, conn: builder_control.workers(app_, conn, timeout=1.5))}

    @app.post("/api/workers/{worker}/sleep", dependencies=edit)
    def sleep(worker: str, request: Request, user: GetUserDep, payload=Body(None)):
        reason = text(body_of(request, payload), "reason") or ""
        queues = control(lambda app_, conn: builder_control.sleep(app_, conn, worker, by=name_of(user),
                                                                  reason=reason))
        return {"worker": worker, "asleep": True, "queues": queues}

    @app.post("/api/workers/{worker}/wake", dependencies=edit)
    def wake(worker: str, request: Request, user: GetUserDep, payload=Body(None)):
        body_of(request, payload)
        queues = control(lambda app_, conn: builder_control.wake(app_, conn, worker, by=name_of(user)))
        return {"worker": worker, "asleep": False, "queues": queues}

    @app.post("/api/workers/{worker}/stop-build", dependencies=edit)
    def stop_build(worker: str, request: Request, user: GetUserDep, payload=Body(None)):
        body_of(request, payload)
        stopped = control(lambda app_, conn: builder_control.stop_current_build(app_, conn, worker,
                                                                                by=name_of(user)))
        return {"worker": worker, "stopped": stopped}
