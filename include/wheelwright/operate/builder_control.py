"""Per-builder control from the index host: sleep, wake, stop the current build (piwheels' piw-monitor).

A target's builds go to its Celery queue, and any worker consuming that queue takes them; the claim
cannot pick a builder (it hands builds to a queue, not to a machine), and a builder holds no password
of the catalog, so a hold recorded in the catalog could not stop one builder without stopping its
target. What does reach one builder, and only it, is the broker it already listens to: Celery's remote
control, addressed to its worker name (``pi-kitchen@pi-kitchen``). So, through the broker:

- **sleep**: the worker is told to stop consuming its target queues (Celery's ``cancel_consumer``). The
  build it runs finishes; it takes no other. The catalog remembers the sleep (``builder_sleeps``: the
  queues, who, why), because a worker that restarts consumes its queues again: :func:`reconcile`
  (every 5 minutes, from the ``builder_health`` DAG) puts it back to sleep. Other workers of the target
  go on building.
- **wake**: the worker consumes the remembered queues again (``add_consumer``), and the catalog
  forgets the sleep.
- **stop the current build**: the worker's own Celery process kills its running build's sandbox
  (:mod:`wheelwright.builds.worker_control`, which the worker imports through
  :mod:`wheelwright.operate.celery_config`). The catalog first records who stopped those builds
  (``builds.stopped_by``), so whatever the worker then reports, intake records a final failure
  "stopped by the operator (who)", never a transient one to retry.

A worker's replies are its own word: the build ids it says it runs are believed only for builds in
flight on the targets whose queues it serves, and only when an operator asked. The CLI (``wheelwright
builder workers|sleep|wake|stop-build``) and the dashboard's actions call these same functions.

The broker is Airflow's (``AIRFLOW__CELERY__BROKER_URL``), or under ``wheelwright run`` the one it
started (``$WHEELWRIGHT_HOME/broker``).
"""

from __future__ import annotations

import logging
import os
import re

import psycopg
from psycopg.types.json import Jsonb

from wheelwright.config import Settings
from wheelwright.errors import ConfigError, WheelwrightError

log = logging.getLogger(__name__)

TIMEOUT = 3.0                       # seconds to wait for workers' replies
WORKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,199}\Z")


class UnknownWorker(WheelwrightError):
    """No worker of that name answered, or it is not in the state the command needs."""

    exit_code = 5


def broker_url(settings: Settings, environ=None) -> str:
    """The Celery broker the workers listen to."""
    env = os.environ if environ is None else environ
    if url := env.get("AIRFLOW__CELERY__BROKER_URL"):
        return url
    conf = settings.home / "broker" / "redis.conf"   # the broker `wheelwright run` started
    try:
        text = conf.read_text()
    except OSError:
        raise ConfigError("no Celery broker is known: set AIRFLOW__CELERY__BROKER_URL (the broker the "
                          "workers use), or run this where `wheelwright run` runs") from None
    port = re.search(r"^port (\d+)$", text, re.M)
    password = re.search(r"^requirepass (\S+)$", text, re.M)
    if not port:
        raise ConfigError(f"{conf} names no port")
    return f"redis://{':' + password[1] + '@' if password else ''}127.0.0.1:{port[1]}/0"


def control_app(settings: Settings | None = None):
    """A Celery app on the workers' broker, used only to send control commands."""
    from celery import Celery
    app = Celery("wheelwright-control", broker=broker_url(settings or Settings.from_env()), set_as_current=False)
    app.conf.broker_connection_retry_on_startup = False
    return app


def check_worker(name: str) -> str:
    if not isinstance(name, str) or not WORKER_NAME.match(name):
        raise UnknownWorker(f"{str(name)[:100]!r} is not a Celery worker name (like pi-kitchen@pi-kitchen)")
    return name


# --- what the workers say --------------------------------------------------------------------------

def _replies(app, command: str, destination: list[str] | None, arguments: dict | None = None,
             timeout: float = TIMEOUT) -> dict[str, object]:
    replies = app.control.broadcast(command, arguments=arguments or {}, destination=destination, reply=True,
                                    timeout=timeout) or []
    merged = {}
    for reply in replies:
        if isinstance(reply, dict):
            merged.update({str(k): v for k, v in reply.items() if isinstance(k, str) and WORKER_NAME.match(k)})
    return merged


def _target_queues(conn: psycopg.Connection) -> set[str]:
    """The queues of the targets: the catalog's (every target ever mirrored) and targets.toml's (which
    the next build_wheels run mirrors)."""
    from wheelwright.builds.targets import load_targets
    queues = {queue for (queue,) in conn.execute("SELECT queue FROM targets")}
    try:
        queues |= {t.queue for t in load_targets()}
    except ConfigError as exc:
        log.warning("%s: only the catalog's targets count", exc)
    return queues


def _consumed(queues) -> list[dict]:
    """The queues of an ``active_queues`` reply, as small dicts (what waking a worker gives back)."""
    found = []
    for q in queues if isinstance(queues, list) else []:
        if not isinstance(q, dict) or not isinstance(q.get("name"), str):
            continue
        exchange = q.get("exchange") if isinstance(q.get("exchange"), dict) else {}
        found.append({"name": q["name"][:200], "exchange": str(exchange.get("name") or q["name"])[:200],
                      "exchange_type": str(exchange.get("type") or "direct")[:20],
                      "routing_key": str(q.get("routing_key") or q["name"])[:200]})
    return found


def workers(app, conn: psycopg.Connection, *, timeout: float = TIMEOUT) -> list[dict]:
    """Every worker that answers and serves a target queue, or that the catalog holds asleep: its
    target queues, whether it sleeps (since when, who, why), and the builds it runs now."""
    targets = _target_queues(conn)
    queues = _replies(app, "active_queues", None, timeout=timeout)
    running = _replies(app, "wheelwright_running", None, timeout=timeout)
    sleeps = {w: (q, r, b, s) for w, q, r, b, s in conn.execute(
        "SELECT worker, queues, reason, slept_by, since FROM builder_sleeps")}
    rows = []
    for name in sorted(set(queues) | set(sleeps)):
        consumed = [q["name"] for q in _consumed(queues.get(name)) if q["name"] in targets]
        if not consumed and name not in sleeps:
            continue  # the index host's own worker, or one that builds nothing
        answer = running.get(name)
        runs = answer.get("running") if isinstance(answer, dict) else None
        sleep = sleeps.get(name)
        rows.append({
            "worker": name, "answers": name in queues, "queues": consumed,
            "asleep": sleep is not None,
            "sleep_queues": [q["name"] for q in sleep[0]] if sleep else [],
            "sleep_reason": sleep[1] if sleep else None, "slept_by": sleep[2] if sleep else None,
            "asleep_since": sleep[3].isoformat() if sleep else None,
            "controllable": isinstance(runs, list),
            "running": [{"build_id": r.get("build_id"), "package": str(r.get("package")),
                         "version": str(r.get("version")), "target": str(r.get("target"))}
                        for r in (runs or []) if isinstance(r, dict)][:20],
        })
    return rows


# --- the commands ------------------------------------------------------------------------------------

def sleep(app, conn: psycopg.Connection, worker: str, *, by: str, reason: str = "") -> list[str]:
    """Put ``worker`` to sleep: it stops consuming its target queues. Returns those queues."""
    worker = check_worker(worker)
    reason = " ".join((reason or "").split())[:500] or "put to sleep by an operator"
    answer = _replies(app, "active_queues", [worker])
    if worker not in answer:
        raise UnknownWorker(f"no worker named {worker} answered (`wheelwright builder workers` lists them)")
    targets = _target_queues(conn)
    queues = [q for q in _consumed(answer[worker]) if q["name"] in targets]
    known = conn.execute("SELECT queues FROM builder_sleeps WHERE worker = %s", (worker,)).fetchone()
    if not queues and known is None:
        raise UnknownWorker(f"{worker} consumes no target's queue: it builds nothing to put to sleep")
    merged = {q["name"]: q for q in (known[0] if known else []) + queues}
    with conn.transaction():
        conn.execute("INSERT INTO builder_sleeps (worker, queues, reason, slept_by) VALUES (%s, %s, %s, %s) "
                     "ON CONFLICT (worker) DO UPDATE SET queues = EXCLUDED.queues, reason = EXCLUDED.reason, "
                     "slept_by = EXCLUDED.slept_by, since = now()",
                     (worker, Jsonb(list(merged.values())), reason, by))
    for q in queues:
        app.control.cancel_consumer(q["name"], destination=[worker], reply=True, timeout=TIMEOUT)
    log.warning("worker %s put to sleep by %s (%s): no more builds from %s", worker, by, reason,
                ", ".join(merged))
    return sorted(merged)


def wake(app, conn: psycopg.Connection, worker: str, *, by: str) -> list[str]:
    """Wake ``worker``: it consumes the queues it slept from again. Returns those queues."""
    worker = check_worker(worker)
    with conn.transaction():
        row = conn.execute("DELETE FROM builder_sleeps WHERE worker = %s RETURNING queues", (worker,)).fetchone()
    if row is None:
        raise UnknownWorker(f"{worker} is not asleep")
    queues = row[0]
    for q in queues:
        app.control.add_consumer(q["name"], exchange=q["exchange"], exchange_type=q["exchange_type"],
                                 routing_key=q["routing_key"], destination=[worker], reply=True,
                                 timeout=TIMEOUT)
    log.warning("worker %s woken by %s: it builds from %s again", worker, by, ", ".join(q["name"] for q in queues))
    return sorted(q["name"] for q in queues)


def stop_current_build(app, conn: psycopg.Connection, worker: str, *, by: str) -> list[int]:
    """Stop the build(s) ``worker`` runs now; they are recorded as stopped by ``by``. Returns their ids."""
    worker = check_worker(worker)
    by = " ".join((by or "").split())[:200] or "an operator"
    answer = _replies(app, "wheelwright_running", [worker]).get(worker)
    if answer is None:
        raise UnknownWorker(f"no worker named {worker} answered (`wheelwright builder workers` lists them)")
    if not isinstance(answer, dict) or not isinstance(answer.get("running"), list):
        raise UnknownWorker(f"{worker} does not take wheelwright's commands: start it with "
                            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=wheelwright.operate.celery_config.CELERY_CONFIG")
    said = sorted({r["build_id"] for r in answer["running"]
                   if isinstance(r, dict) and isinstance(r.get("build_id"), int)})
    queues = [q["name"] for q in _consumed(_replies(app, "active_queues", [worker]).get(worker))]
    asleep = conn.execute("SELECT queues FROM builder_sleeps WHERE worker = %s", (worker,)).fetchone()
    queues += [q["name"] for q in asleep[0]] if asleep else []
    with conn.transaction():   # before the kill: the outcome may arrive at once
        marked = [build_id for (build_id,) in conn.execute(
            "UPDATE builds b SET stopped_by = %s FROM targets t WHERE b.build_id = ANY(%s) "
            "AND b.status = 'building' AND t.name = b.target AND t.queue = ANY(%s) RETURNING b.build_id",
            (by, said, queues))]
    if not marked:
        raise UnknownWorker(f"{worker} is building nothing now")
    reply = _replies(app, "wheelwright_stop_build", [worker], {"by": by}).get(worker)
    stopped = sorted(set(reply.get("stopped") or []) & set(marked)) if isinstance(reply, dict) else []
    with conn.transaction():   # builds that ended on their own meanwhile keep their own outcome
        conn.execute("UPDATE builds SET stopped_by = NULL WHERE build_id = ANY(%s) AND status = 'building' "
                     "AND NOT build_id = ANY(%s)", (marked, stopped))
    log.warning("builds %s on %s stopped by %s", stopped, worker, by)
    return stopped


def reconcile(app, conn: psycopg.Connection) -> list[str]:
    """Put back to sleep the sleeping workers that consume their queues again (they restarted)."""
    sleeping = dict(conn.execute("SELECT worker, queues FROM builder_sleeps"))
    if not sleeping:
        return []
    answers = _replies(app, "active_queues", sorted(sleeping))
    again = []
    for worker, queues in sleeping.items():
        consumed = {q["name"] for q in _consumed(answers.get(worker))}
        for name in sorted(consumed & {q["name"] for q in queues}):
            app.control.cancel_consumer(name, destination=[worker], reply=True, timeout=TIMEOUT)
            again.append(worker)
    if again:
        log.warning("workers %s were asleep but consumed their queues again (restarted): asleep again",
                    sorted(set(again)))
    return sorted(set(again))


# --- the `wheelwright builder ...` subcommands ------------------------------------------------------

def add_commands(bsub, connect) -> None:
    """Register ``workers``, ``sleep``, ``wake`` and ``stop-build`` under ``wheelwright builder``."""
    from wheelwright.operate.admin import operator_name

    def run(action):
        def handler(settings, args):
            with connect(settings) as conn:
                action(control_app(settings), conn, args, getattr(args, "by", None) or operator_name())
            return 0
        return handler

    w = bsub.add_parser("workers", help="the Celery workers that build: queues, asleep or not, current builds")
    w.set_defaults(handler=run(lambda app, conn, args, by: _print_workers(workers(app, conn))))
    s = bsub.add_parser("sleep", help="a worker takes no new builds (its current build finishes)")
    s.add_argument("worker", help="the Celery worker's name (see `wheelwright builder workers`)")
    s.add_argument("--reason", default="", help="why (shown on the dashboard)")
    s.add_argument("--by", help="who (default: the login name)")
    s.set_defaults(handler=run(lambda app, conn, args, by: print(
        f"{args.worker} asleep: it takes no builds from {', '.join(sleep(app, conn, args.worker, by=by, reason=args.reason))}")))
    k = bsub.add_parser("wake", help="a sleeping worker takes builds again")
    k.add_argument("worker")
    k.add_argument("--by", help="who (default: the login name)")
    k.set_defaults(handler=run(lambda app, conn, args, by: print(
        f"{args.worker} awake: it builds from {', '.join(wake(app, conn, args.worker, by=by))} again")))
    t = bsub.add_parser("stop-build", help="stop the build a worker runs now (recorded as stopped, not retried)")
    t.add_argument("worker")
    t.add_argument("--by", help="who (default: the login name)")
    t.set_defaults(handler=run(lambda app, conn, args, by: print(
        "stopped build " + ", ".join(map(str, stop_current_build(app, conn, args.worker, by=by)))
        + f" on {args.worker}")))


def _print_workers(rows: list[dict]) -> None:
    if not rows:
        print("no worker serving a target's queue answered")
    for row in rows:
        state = (f"asleep since {row['asleep_since'][:16]} ({row['slept_by']}: {row['sleep_reason']})"
                 if row["asleep"] else "awake")
        if not row["answers"]:
            state += ", not answering"
        builds = ", ".join(f"{r['package']}=={r['version']} (build {r['build_id']})" for r in row["running"])
        print(f"{row['worker']}: {state}; queues {', '.join(row['queues']) or '-'}; "
              f"{'building ' + builds if builds else 'idle'}")
