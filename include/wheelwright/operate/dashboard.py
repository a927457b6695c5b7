"""What the operator's dashboard shows, as plain data read from the catalog, and the actions it offers.

piwheels' maintainers watched ``piw-monitor``: how far behind PyPI the master is, how long each queue
is, which builders work or overheat, what fails and why. This room answers those questions for the
dashboard page (``operate/dashboard_app.py`` draws them) and for the public stats (``publish/stats.py``):
each answer is one named, set-based query in ``sql/queries/dashboard_*.sql``, cheap at PyPI's scale
(index ranges over recent rows, bounded walks of the journal's tail). What cannot be cheap — counting
each target's whole queue, summing every wheel, asking PyPI for its serial — is sampled by
:func:`take_samples`, which a periodic task runs; the page reads the latest sample and draws the
history of samples as trends.

The actions (pause and resume a target; skip, unskip and rebuild a package or release) are here too,
the last three being the very functions of the CLI (``operate/admin.py``). Who may call them is decided
by the web app, at its edge; this room takes a user name only to record who paused what.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from wheelwright.builds.queue import FRESH_WINDOW
from wheelwright.catalog import db
from wheelwright.errors import WheelwrightError
from wheelwright.operate import admin
from wheelwright.publish import reports
from wheelwright.publish.stats import stats_data

log = logging.getLogger(__name__)

SAMPLES_KEPT = timedelta(days=90)
SAMPLE_EVERY = timedelta(minutes=14)   # the builder_health DAG runs every 5 minutes
PUBLISHER = "publish_index"
RANKED = 15          # rows of each ranking the page shows


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def _age(value, now: datetime) -> float | None:
    return None if value is None else max(0.0, (now - value).total_seconds())


def image_builds(store: Path) -> dict[str, dict]:
    """The targets whose image is being built on this machine now, with how far it is:
    ``{target: {"percent", "seconds_left", ...}}`` (builds/images.py keeps that beside its store)."""
    from wheelwright.builds import images
    from wheelwright.builds.targets import load_targets
    found = {}
    for row in images.image_rows(load_targets(), store):
        for target in row.targets if row.building else ():
            found[target] = row.building
    return found


def snapshot(conn: psycopg.Connection, *, failures: int = 20, top: int = RANKED,
             image_store: Path | None = None) -> dict:
    """Everything the dashboard page shows, as JSON-ready data (read-only, a few dozen ms at scale);
    with ``image_store``, each target's image being built there now, if it is."""
    q = lambda name, params=None: conn.execute(db.query(name), params).fetchall()  # noqa: E731
    now = conn.execute("SELECT now()").fetchone()[0]

    (serial, derived, synced_at, newest_event, pypi_serial, sampled_at, wheels, wheel_bytes) = \
        q("dashboard_sync")[0]
    sync = {"serial": serial, "derived_serial": derived, "synced_at": _iso(synced_at),
            "newest_event": _iso(newest_event), "newest_event_age": _age(newest_event, now),
            "pypi_serial": pypi_serial, "pypi_sampled_at": _iso(sampled_at),
            "lag": None if pypi_serial is None else max(0, pypi_serial - serial)}
    hours = q("dashboard_events_per_hour")
    events = [{"hour": _iso(h), "events": n} for h, n, _ in hours]
    sync["events_last_hour"] = sum(recent for _, _, recent in hours)

    targets = []
    for (name, abi, platform, distro, enabled, paused, reason, paused_by, paused_at, takes, depth, fresh,
         head, taken_at, building) in q("dashboard_targets"):
        targets.append({
            "name": name, "abi": abi, "platform": platform, "distro": distro, "enabled": enabled,
            "paused": paused, "paused_reason": reason, "paused_by": paused_by, "paused_at": _iso(paused_at),
            "takes_builds": takes, "queue_depth": depth, "queue_fresh": fresh,
            "head_released": _iso(head), "head_age": _age(head, now), "queue_sampled_at": _iso(taken_at),
            "building": building})
    building_images = image_builds(image_store) if image_store is not None else {}
    for target in targets:
        target["image_build"] = building_images.get(target["name"])

    builds = [{"builder": b, "target": t, "last_hour": h, "last_day": d, "success": s, "failure": f,
               "lost": lost} for b, t, h, d, s, f, lost in q("dashboard_builds_recent")]
    rates = []
    for target, s_day, f_day, s_week, f_week in q("dashboard_success_rate"):
        rates.append({"target": target, "success_day": s_day, "failure_day": f_day,
                      "rate_day": _rate(s_day, f_day), "success_week": s_week, "failure_week": f_week,
                      "rate_week": _rate(s_week, f_week)})
    over_time = [{"hour": _iso(h), "success": s, "failure": f, "lost": lost}
                 for h, s, f, lost in q("dashboard_builds_over_time")]

    recent_failures = [{"build_id": i, "package": p, "display_name": dn, "version": v, "target": t,
                        "builder": b, "finished_at": _iso(at), "reason": r, "log_path": lp}
                       for i, p, dn, v, t, b, at, r, lp in q("dashboard_failures", {"limit": failures})]
    latest = q("dashboard_rankings")
    ranked_at, ranked = latest[0] if latest else (None, {})
    missing, per_day = ranked.get("missing", []), ranked.get("downloads_per_day", [])

    marks = [{"consumer": c, "mark": m, "updated_at": _iso(at), "behind": behind}
             for c, m, at, behind in q("dashboard_publish")]
    publisher = next((m for m in marks if m["consumer"] == PUBLISHER), None)
    owed, lag, attempts = q("cdn_lag")[0]  # what the CDN still owes (publish/cdn.py)
    purges = {"owed": owed, "oldest_seconds": lag, "attempts": attempts}
    publish = {"last_publish": publisher["updated_at"] if publisher else None,
               "packages_waiting": publisher["behind"] if publisher else None,
               "purges": purges, "wheels": wheels, "wheel_bytes": wheel_bytes,
               "sized_at": _iso(sampled_at)}

    builders = []
    for (name, target, build_dir, max_temp, min_free, checked, reachable, temp, l1, l5, l15, mem_total,
         mem_avail, disk_free, disk_total, images, held, held_reason, held_since, error) in q("dashboard_builders"):
        builders.append({
            "name": name, "target": target, "build_dir": build_dir, "max_temp_c": max_temp,
            "min_free_bytes": min_free, "checked_at": _iso(checked), "reachable": reachable,
            "temp_c": temp, "load": [l1, l5, l15], "mem_total": mem_total, "mem_available": mem_avail,
            "disk_free": disk_free, "disk_total": disk_total, "images_newest": _iso(images),
            "images_age": _age(images, now), "held": held, "held_reason": held_reason,
            "held_since": _iso(held_since), "error": error})

    doctor = []   # each builder's worker at its last start (operate/doctor_reports.py)
    for builder, checked, received, ok, roles, checks in q("dashboard_doctor"):
        doctor.append({"builder": builder, "checked_at": _iso(checked), "received_at": _iso(received),
                       "ok": ok, "roles": roles, "checks": len(checks),
                       "failing": [c for c in checks if c["status"] == "FAIL"],
                       "warnings": [c for c in checks if c["status"] == "warn"]})

    queue_trend: dict[str, list] = {}
    for target, at, depth in q("dashboard_queue_trend"):
        queue_trend.setdefault(target, []).append([_iso(at), depth])
    temperature: dict[str, list] = {}
    for builder, at, temp in q("dashboard_health_trend"):
        temperature.setdefault(builder, []).append([_iso(at), temp])
    trends = {
        "temperature": temperature,
        "builds": over_time,
        "queue": queue_trend,
        "lag": [[_iso(at), lag] for at, lag in q("dashboard_lag_trend")],
        "downloads": per_day,
        "events": events,
    }
    downloads = {
        "top": ranked.get("top_downloads", [])[:top], "wanted": ranked.get("wanted", [])[:top],
        "by_target": ranked.get("by_target", []), "by_python": ranked.get("by_python", []),
        "by_installer": ranked.get("by_installer", []), "ranked_at": _iso(ranked_at),
        "refused": [{"source": s, "reason": r, "lines": n, "sample": sample}
                    for s, r, n, sample in q("dashboard_refusals")],
    }
    return {"now": _iso(now), "sync": sync, "targets": targets, "builds": builds, "success": rates,
            "failures": recent_failures, "missing": missing, "publish": publish, "builders": builders,
            "trends": trends, "downloads": downloads, "doctor": doctor, "operator": operator_state(conn)}


# --- takedowns and sleeping workers (operate/takedowns.py, operate/builder_control.py) -------------------

def operator_state(conn: psycopg.Connection, *, limit: int = 50) -> dict:
    """What operators took down, which workers they put to sleep (the live list of workers comes from
    the broker, on demand: ``/wheelwright/api/workers``), and what keeps failing (operate/notices.py)."""
    from wheelwright.operate.notices import failing
    from wheelwright.operate.takedowns import takedowns
    sleeping = [{"worker": w, "queues": [q["name"] for q in queues], "reason": r, "slept_by": b,
                 "since": _iso(since)}
                for w, queues, r, b, since in conn.execute(
                    "SELECT worker, queues, reason, slept_by, since FROM builder_sleeps ORDER BY worker")]
    return {"takedowns": takedowns(conn)[:limit], "sleeping": sleeping, "failing": failing(conn)[:limit]}


def _rate(success: int, failure: int) -> float | None:
    return None if success + failure == 0 else success / (success + failure)


def sample_due(conn: psycopg.Connection, every: timedelta = SAMPLE_EVERY) -> bool:
    """Whether the latest sample is older than ``every`` (at PyPI's scale a sample takes about a minute:
    counting each target's whole queue)."""
    return conn.execute("SELECT coalesce(max(taken_at) < now() - %s, true) FROM sync_samples",
                        (every,)).fetchone()[0]


def take_samples(conn: psycopg.Connection, pypi_serial: int | None = None, *,
                 fresh_window: timedelta = FRESH_WINDOW) -> dict:
    """Sample what is too costly per page view: each enabled target's queue, the wheels' total size,
    PyPI's serial (given by the caller, who asked PyPI), the rankings. Old samples are dropped."""
    targets = [name for (name,) in conn.execute("SELECT name FROM targets WHERE enabled ORDER BY position, name")]
    taken = {}
    with conn.transaction():
        now = conn.execute("SELECT now()").fetchone()[0]
        for name in targets:
            depth, fresh, head = conn.execute(db.query("dashboard_queue_sample"),
                                              {"target": name, "fresh": fresh_window}).fetchone()
            conn.execute("INSERT INTO dashboard_samples (taken_at, target, queue_depth, queue_fresh, head_released)"
                         " VALUES (%s, %s, %s, %s, %s)", (now, name, depth, fresh, head))
            taken[name] = depth
        wheels, size = conn.execute(db.query("dashboard_sample_sizes")).fetchone()
        serial = conn.execute("SELECT last_serial FROM sync_state").fetchone()[0]
        conn.execute("INSERT INTO sync_samples (taken_at, serial, pypi_serial, wheels, wheel_bytes)"
                     " VALUES (%s, %s, %s, %s, %s)", (now, serial, pypi_serial, wheels, size))
        conn.execute("INSERT INTO dashboard_rankings (taken_at, rankings) VALUES (%s, %s)"
                     " ON CONFLICT (singleton) DO UPDATE SET taken_at = EXCLUDED.taken_at,"
                     " rankings = EXCLUDED.rankings", (now, Jsonb(rankings(conn))))
        conn.execute("DELETE FROM dashboard_samples WHERE taken_at < %s", (now - SAMPLES_KEPT,))
        conn.execute("DELETE FROM sync_samples WHERE taken_at < %s", (now - SAMPLES_KEPT,))
        conn.execute("DELETE FROM builder_health_samples WHERE checked_at < %s", (now - SAMPLES_KEPT,))
    log.info("dashboard sample: queues %s, %d wheels (%d bytes), PyPI serial %s", taken, wheels, size,
             pypi_serial)
    return {"queues": taken, "wheels": wheels, "wheel_bytes": size, "pypi_serial": pypi_serial}


def rankings(conn: psycopg.Connection, *, limit: int = RANKED) -> dict:
    """The rankings a sample stores: each an aggregate over weeks of rows, too costly per page view."""
    q = lambda name, params=None: conn.execute(db.query(name), params).fetchall()  # noqa: E731
    stats = stats_data(conn, days=30, top=limit)
    return {
        "missing": [{"kind": k, "missing": m, "builds": n, "apt_package": reports.provider(k, m), "examples": ex}
                    for k, m, n, ex in q("dashboard_missing", {"limit": 10})],
        "top_downloads": [{"package": p, "display_name": dn, "downloads": n}
                          for p, dn, n in q("dashboard_top_downloads", {"limit": limit})],
        "wanted": [{"package": p, "requests": n, "known": present is not None, "present": bool(present),
                    "skip_reason": skip, "has_wheels": has}
                   for p, n, present, skip, has in q("dashboard_searches", {"limit": limit})],
        "downloads_per_day": [[d.isoformat(), n] for d, n in q("dashboard_downloads_trend")],
        **{key: stats[key] for key in ("by_target", "by_python", "by_installer")},
    }


# --- actions -----------------------------------------------------------------------------------------

class UnknownTarget(WheelwrightError):
    exit_code = 5


def pause(conn: psycopg.Connection, target: str, *, reason: str, user: str) -> None:
    """Stop ``target``'s claim from handing out builds (builds in flight finish)."""
    reason = (reason or "").strip()[:500] or "paused from the dashboard"
    row = conn.execute("UPDATE targets SET paused = true, paused_reason = %s, paused_by = %s, paused_at = now()"
                       " WHERE name = %s RETURNING name", (reason, user, target)).fetchone()
    if row is None:
        raise UnknownTarget(f"there is no target named {target!r}")
    log.warning("target %s paused by %s: %s", target, user, reason)


def resume(conn: psycopg.Connection, target: str, *, user: str) -> None:
    row = conn.execute("UPDATE targets SET paused = false, paused_reason = NULL, paused_by = NULL,"
                       " paused_at = NULL WHERE name = %s RETURNING name", (target,)).fetchone()
    if row is None:
        raise UnknownTarget(f"there is no target named {target!r}")
    log.warning("target %s resumed by %s", target, user)


def skip(conn, package: str, version: str | None, *, reason: str, user: str) -> None:
    admin.skip(conn, package, version, reason=f"{reason.strip()} ({user})" if reason.strip() else "")


def unskip(conn, package: str, version: str | None, *, user: str) -> None:
    admin.unskip(conn, package, version)


def rebuild(conn, package: str, version: str | None, target: str | None, *, user: str) -> int:
    return admin.rebuild(conn, package, version, target)


def build_settings(conn, package: str, changes: dict, *, user: str):
    """The dashboard's settings form: ``changes`` as ``build_settings.change`` takes them."""
    from wheelwright.builds import build_settings as settings
    return settings.change(conn, package, by=user, **changes)

