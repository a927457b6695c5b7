"""Builder health: is each registered builder cool enough, with room enough, to take builds?

A Raspberry Pi building wheels all day runs hot (it throttles from 80 °C) and fills its SD card with
build folders; piwheels' maintainers watched both on ``piw-monitor``. The ``builder_health`` DAG reaches
every builder in the ``builders`` table over SSH (the ssh provider; the Connection named there pins
the host key) and runs one command that we fix, never the builder: :func:`health_command` reads the
thermal zone (none on a machine without one), the load average, memory, the free disk of the build
folder and the age of the newest entry of the images folder, and prints them as ``key value`` lines.

What comes back is untrusted like any other input from a builder: :func:`parse_health` accepts exactly
the lines it expects, with numbers in plausible ranges, or refuses the whole answer with a reason.
:func:`decide` then holds a builder that is too hot (until it cools below ``resume_temp_c``: a builder
at the limit must not flap), out of disk, or unreachable; :func:`record` writes the check and the
decision in one transaction. The build queue's claim respects the hold (``target_takes_builds`` of
migration 020): a target whose registered builders are all held hands out nothing until one recovers,
and the dashboard shows why.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg

log = logging.getLogger(__name__)

MAX_OUTPUT = 64 * 1024
COMMAND_TIMEOUT = 30
_SCRIPT = r"""LC_ALL=C; export LC_ALL
echo "wheelwright-health 1"
if t=$(cat /sys/class/thermal/thermal_zone0/temp 2>/dev/null); then echo "temp $t"; else echo "temp none"; fi
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
awk '/^MemTotal:/ {print "mem_total", $2} /^MemAvailable:/ {print "mem_available", $2}' /proc/meminfo
df -Pk -- {build_dir} | awk 'NR==2 {print "disk", $2, $4}'
n=$(find {images_dir} -mindepth 1 -maxdepth 1 -printf '%T@\n' 2>/dev/null | sort -n | tail -1)
echo "images ${n:-none}"
echo "end"
"""


def health_command(build_dir: str, images_dir: str | None) -> str:
    """The one command a builder runs for us: ``sh -c`` of a fixed script, its folders quoted."""
    script = (_SCRIPT.replace("{build_dir}", shlex.quote(build_dir))
              .replace("{images_dir}", shlex.quote(images_dir) if images_dir else "/nonexistent"))
    return "/bin/sh -c " + shlex.quote(script)


class BadHealth(ValueError):
    """A builder's answer that is not what the health command prints."""


@dataclass(frozen=True)
class Health:
    temp_c: float | None
    load: tuple[float, float, float]
    mem_total: int            # bytes
    mem_available: int
    disk_total: int
    disk_free: int
    images_newest: datetime | None


_NUMBER = re.compile(r"\d{1,15}(?:\.\d{1,10})?\Z")  # find -printf %T@ gives 10 decimals
_KEYS = ("temp", "load", "mem_total", "mem_available", "disk", "images")


def _num(text: str, what: str, low: float, high: float) -> float:
    if not _NUMBER.match(text):
        raise BadHealth(f"{what} is not a number: {text[:40]!r}")
    value = float(text)
    if not low <= value <= high:
        raise BadHealth(f"{what} {value} is out of range")
    return value


def parse_health(text: str) -> Health:
    """Read the health command's output strictly; raise :class:`BadHealth` saying what is wrong."""
    if len(text) > MAX_OUTPUT:
        raise BadHealth("the answer is longer than the health command ever prints")
    lines = text.strip("\n").split("\n")
    if not lines or lines[0] != "wheelwright-health 1" or lines[-1] != "end":
        raise BadHealth("the answer does not start with the health header and end with 'end'")
    fields: dict[str, list[str]] = {}
    for line in lines[1:-1]:
        key, _, rest = line.partition(" ")
        if key not in _KEYS:
            raise BadHealth(f"an unexpected line: {line[:60]!r}")
        if key in fields:
            raise BadHealth(f"{key} given twice")
        fields[key] = rest.split(" ")
    missing = [k for k in _KEYS if k not in fields]
    if missing:
        raise BadHealth(f"missing {', '.join(missing)}")

    def one(key):
        if len(fields[key]) != 1:
            raise BadHealth(f"{key} takes one value")
        return fields[key][0]

    temp = one("temp")
    temp_c = None if temp == "none" else _num(temp, "temperature", 0, 200_000) / 1000
    if len(fields["load"]) != 3:
        raise BadHealth("load takes three values")
    load = tuple(_num(v, "load", 0, 100_000) for v in fields["load"])
    mem_total = int(_num(one("mem_total"), "memory", 0, 2**50)) * 1024
    mem_available = int(_num(one("mem_available"), "memory", 0, 2**50)) * 1024
    if len(fields["disk"]) != 2:
        raise BadHealth("disk takes two values")
    disk_total, disk_free = (int(_num(v, "disk", 0, 2**50)) * 1024 for v in fields["disk"])
    images = one("images")
    images_newest = None if images == "none" else datetime.fromtimestamp(
        _num(images, "image time", 0, 2**33), timezone.utc)
    return Health(temp_c, load, mem_total, mem_available, disk_total, disk_free, images_newest)


@dataclass(frozen=True)
class Limits:
    max_temp_c: float = 80
    resume_temp_c: float = 70
    min_free_bytes: int = 2 * 1024**3


def decide(health: Health | None, limits: Limits, *, held_for_heat: bool = False,
           error: str | None = None) -> str | None:
    """Why the builder must take no builds now, in one line; None when it may build."""
    if health is None:
        if error and error.startswith("refused"):
            return error
        return f"unreachable: {error or 'no answer'}"
    reasons = []
    if health.temp_c is not None:
        if health.temp_c >= limits.max_temp_c:
            reasons.append(f"too hot: {health.temp_c:.1f} °C (limit {limits.max_temp_c:g} °C)")
        elif held_for_heat and health.temp_c > limits.resume_temp_c:
            reasons.append(f"too hot: cooling, {health.temp_c:.1f} °C (resumes below {limits.resume_temp_c:g} °C)")
    if health.disk_free < limits.min_free_bytes:
        reasons.append(f"out of disk: {health.disk_free / 1024**3:.1f} GiB free in the build folder "
                       f"(needs {limits.min_free_bytes / 1024**3:.1f} GiB)")
    return "; ".join(reasons) or None


@dataclass(frozen=True)
class Builder:
    name: str
    target: str
    ssh_conn_id: str
    build_dir: str
    images_dir: str | None
    limits: Limits


def registered(conn: psycopg.Connection) -> list[Builder]:
    rows = conn.execute("SELECT name, target, ssh_conn_id, build_dir, images_dir, max_temp_c, resume_temp_c,"
                        " min_free_bytes FROM builders ORDER BY name").fetchall()
    return [Builder(n, t, c, b, i, Limits(mx, rs, mf)) for n, t, c, b, i, mx, rs, mf in rows]


def register(conn: psycopg.Connection, name: str, target: str, ssh_conn_id: str, build_dir: str,
             images_dir: str | None = None, limits: Limits = Limits()) -> None:
    """Register (or update) a builder: how to reach it and where it builds."""
    if conn.execute("SELECT 1 FROM targets WHERE name = %s", (target,)).fetchone() is None:
        from wheelwright.operate.dashboard import UnknownTarget
        raise UnknownTarget(f"there is no target named {target!r}")
    conn.execute(
        "INSERT INTO builders (name, target, ssh_conn_id, build_dir, images_dir, max_temp_c, resume_temp_c,"
        " min_free_bytes) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
        " target = EXCLUDED.target, ssh_conn_id = EXCLUDED.ssh_conn_id, build_dir = EXCLUDED.build_dir,"
        " images_dir = EXCLUDED.images_dir, max_temp_c = EXCLUDED.max_temp_c,"
        " resume_temp_c = EXCLUDED.resume_temp_c, min_free_bytes = EXCLUDED.min_free_bytes",
        (name, target, ssh_conn_id, build_dir, images_dir, limits.max_temp_c, limits.resume_temp_c,
         limits.min_free_bytes))


def record(conn: psycopg.Connection, builder: str, health: Health | None, held_reason: str | None,
           error: str | None = None) -> None:
    """Write one check and its decision (held or not, and why) in one transaction."""
    h = health
    with conn.transaction():
        conn.execute(
            """INSERT INTO builder_health AS o (builder, checked_at, reachable, temp_c, load1, load5, load15,
                   mem_total, mem_available, disk_free, disk_total, images_newest, held, held_reason,
                   held_since, error)
               VALUES (%(b)s, now(), %(reachable)s, %(temp)s, %(l1)s, %(l5)s, %(l15)s, %(mt)s, %(ma)s, %(df)s,
                       %(dt)s, %(img)s, %(held)s, %(reason)s, CASE WHEN %(held)s THEN now() END, %(error)s)
               ON CONFLICT (builder) DO UPDATE SET
                   checked_at = now(), reachable = EXCLUDED.reachable, temp_c = EXCLUDED.temp_c,
                   load1 = EXCLUDED.load1, load5 = EXCLUDED.load5, load15 = EXCLUDED.load15,
                   mem_total = EXCLUDED.mem_total, mem_available = EXCLUDED.mem_available,
                   disk_free = EXCLUDED.disk_free, disk_total = EXCLUDED.disk_total,
                   images_newest = EXCLUDED.images_newest, held = EXCLUDED.held,
                   held_reason = EXCLUDED.held_reason,
                   held_since = CASE WHEN NOT EXCLUDED.held THEN NULL
                                     WHEN o.held THEN o.held_since ELSE now() END,
                   error = EXCLUDED.error""",
            {"b": builder, "reachable": h is not None, "temp": h and h.temp_c, "l1": h and h.load[0],
             "l5": h and h.load[1], "l15": h and h.load[2], "mt": h and h.mem_total,
             "ma": h and h.mem_available, "df": h and h.disk_free, "dt": h and h.disk_total,
             "img": h and h.images_newest, "held": held_reason is not None, "reason": held_reason,
             "error": error})
        conn.execute("INSERT INTO builder_health_samples (builder, checked_at, reachable, temp_c, load1,"
                     " disk_free, held) VALUES (%s, now(), %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                     (builder, h is not None, h and h.temp_c, h and h.load[0], h and h.disk_free,
                      held_reason is not None))


def check(conn: psycopg.Connection, builder: Builder, run: Callable[[str], str]) -> str | None:
    """Check one builder with ``run(command) -> output`` (raising OSError-like errors when it cannot
    reach it); record the result; return why it is held, or None."""
    previous = conn.execute("SELECT held_reason FROM builder_health WHERE builder = %s",
                            (builder.name,)).fetchone()
    held_for_heat = bool(previous and previous[0] and "too hot" in previous[0])
    health, error = None, None
    try:
        health = parse_health(run(health_command(builder.build_dir, builder.images_dir)))
    except BadHealth as exc:
        error = f"refused the health answer: {exc}"
    except Exception as exc:  # noqa: BLE001 - any failure to reach it is "unreachable", with its words
        error = f"{type(exc).__name__}: {exc}"[:300]
    reason = decide(health, builder.limits, held_for_heat=held_for_heat, error=error)
    record(conn, builder.name, health, reason, error)
    if reason:
        log.warning("builder %s (%s) takes no builds: %s", builder.name, builder.target, reason)
    else:
        log.info("builder %s healthy: %.1f °C, load %.2f, %.1f GiB free", builder.name,
                 health.temp_c if health.temp_c is not None else float("nan"), health.load[0],
                 health.disk_free / 1024**3)
    return reason


def ssh_runner(client) -> Callable[[str], str]:
    """``run(command)`` over an open paramiko ``SSHClient`` (the ssh provider's ``get_conn()``)."""
    def run(command: str) -> str:
        _, stdout, _ = client.exec_command(command, timeout=COMMAND_TIMEOUT)
        data = stdout.read(MAX_OUTPUT + 1)
        status = stdout.channel.recv_exit_status()
        if status != 0:
            raise OSError(f"the health command exited with {status}")
        return data.decode("utf-8", "replace")
    return run


def check_all(conn: psycopg.Connection, connect: Callable[[str], object]) -> dict[str, str | None]:
    """Check every registered builder; ``connect(ssh_conn_id)`` returns an open paramiko client."""
    results = {}
    for builder in registered(conn):
        client = None

        def run(command, builder=builder):
            nonlocal client
            client = connect(builder.ssh_conn_id)
            return ssh_runner(client)(command)
        try:
            results[builder.name] = check(conn, builder, run)
        finally:
            if client is not None:
                client.close()
    return results


# --- the `wheelwright builder ...` and `wheelwright pause|resume` subcommands --------------------------

def add_commands(sub, connect) -> None:
    """Register ``builder add|list|remove`` (and builder_control's ``workers|sleep|wake|stop-build``),
    ``pause`` and ``resume`` on the CLI's subparsers."""
    from wheelwright.operate import dashboard

    p = sub.add_parser("builder", help="register builders whose health is checked over SSH")
    bsub = p.add_subparsers(dest="builder_command", required=True)
    a = bsub.add_parser("add", help="register (or change) a builder")
    a.add_argument("name")
    a.add_argument("--target", required=True, help="the target (targets.toml name) whose queue it serves")
    a.add_argument("--ssh-conn-id", required=True, help="Airflow Connection (ssh) with its host key pinned")
    a.add_argument("--build-dir", required=True, help="where its builds run (free disk is measured there)")
    a.add_argument("--images-dir", help="its target images (freshness = newest entry)")
    a.add_argument("--max-temp", type=float, default=80, help="hold above this CPU °C (default 80)")
    a.add_argument("--resume-temp", type=float, default=70, help="release below this °C (default 70)")
    a.add_argument("--min-free-gb", type=float, default=2, help="hold below this free disk (default 2 GiB)")
    a.set_defaults(handler=lambda settings, args: _run(connect, settings, lambda conn: (
        register(conn, args.name, args.target, args.ssh_conn_id, args.build_dir, args.images_dir,
                 Limits(args.max_temp, args.resume_temp, int(args.min_free_gb * 1024**3))),
        print(f"builder {args.name} registered for {args.target}"))))
    ls = bsub.add_parser("list", help="registered builders and their last health check")
    ls.set_defaults(handler=lambda settings, args: _run(connect, settings, _list))
    rm = bsub.add_parser("remove", help="forget a builder")
    rm.add_argument("name")
    rm.set_defaults(handler=lambda settings, args: _run(connect, settings, lambda conn: print(
        f"builder {args.name} removed" if conn.execute("DELETE FROM builders WHERE name = %s",
                                                       (args.name,)).rowcount else f"no builder {args.name}")))
    from wheelwright.operate import builder_control   # sleep, wake, stop-build: through the broker
    builder_control.add_commands(bsub, connect)

    pp = sub.add_parser("pause", help="stop a target taking builds (builds in flight finish)")
    pp.add_argument("target")
    pp.add_argument("--reason", default="paused from the command line")
    pp.set_defaults(handler=lambda settings, args: _run(connect, settings, lambda conn: (
        dashboard.pause(conn, args.target, reason=args.reason, user=_user()), print(f"{args.target} paused"))))
    rp = sub.add_parser("resume", help="let a paused target take builds again")
    rp.add_argument("target")
    rp.set_defaults(handler=lambda settings, args: _run(connect, settings, lambda conn: (
        dashboard.resume(conn, args.target, user=_user()), print(f"{args.target} resumed"))))


def _user() -> str:
    import getpass
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def _run(connect, settings, action) -> int:
    with connect(settings) as conn:
        action(conn)
    return 0


def _list(conn) -> None:
    rows = conn.execute("SELECT b.name, b.target, h.checked_at, h.held_reason, h.temp_c, h.disk_free"
                        " FROM builders b LEFT JOIN builder_health h ON h.builder = b.name ORDER BY b.name")
    for name, target, checked, reason, temp, free in rows:
        state = "not checked" if checked is None else (f"held: {reason}" if reason else "healthy")
        extra = "" if checked is None else (f", {temp:.1f} °C" if temp is not None else "") + (
            f", {free / 1024**3:.1f} GiB free" if free is not None else "")
        print(f"{name} ({target}): {state}{extra}")
