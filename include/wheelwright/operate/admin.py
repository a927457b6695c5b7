"""Operator decisions about what gets built: skip, un-skip, rebuild (piwheels' piw-add/remove/rebuild).

Some releases must never be built (a package that mines coin in its setup.py, one whose build takes a
Pi down for a day), and some built wheels turn out wrong and must be built again. Those are decisions
of an operator, not of PyPI's journal, so they live in columns derivation keeps (``skip_reason`` of
packages and versions) and in deleting build rows. This room owns them: each takes effect for the
build queue at once (it is one query away), and marks the package changed so its pages follow.

- skip: the build queue passes the package or release by; a build in flight is not published;
  wheels already built stay published (rebuild them away if they must go).
- unskip: the release queues again (builds that were dropped for the skip count as never tried).
- rebuild: forget the finished builds of a release (for one target, or all) with their wheels: the
  release re-queues, and the next publish removes the files that are no longer listed.
- requeue-failures: forget every failure of a target (or of one package on it), and the waits of
  transient ones: those releases queue again at once (after an operator fixed the target's image).
- settings: a package's build settings (extra apt packages, timeout, build variables), checked and kept
  by :mod:`wheelwright.builds.build_settings`; builds claimed from then on carry them.
"""

from __future__ import annotations

import logging

import psycopg
from packaging.utils import canonicalize_name

from wheelwright.catalog import db
from wheelwright.catalog.store import mark_changed
from wheelwright.errors import WheelwrightError

log = logging.getLogger(__name__)


class UnknownRelease(WheelwrightError):
    """The package, version or target an operator named is not in the catalog."""

    exit_code = 5


def skip(conn: psycopg.Connection, package: str, version: str | None = None, *, reason: str) -> None:
    """Never build ``package`` (or only its ``version``), for ``reason``."""
    reason = (reason or "").strip()
    if not reason:
        raise WheelwrightError("a skip needs a reason (--reason): the project page shows it")
    _set_skip(conn, package, version, reason)
    log.info("skipped %s%s: %s", canonicalize_name(package), f"=={version}" if version else "", reason)


def unskip(conn: psycopg.Connection, package: str, version: str | None = None) -> None:
    """Build ``package`` (or its ``version``) again."""
    _set_skip(conn, package, version, None)
    log.info("unskipped %s%s", canonicalize_name(package), f"=={version}" if version else "")


def _set_skip(conn, package, version, reason) -> None:
    package = canonicalize_name(package)
    with conn.transaction():
        if version is None:
            row = conn.execute("UPDATE packages SET skip_reason = %s WHERE package = %s RETURNING package",
                               (reason, package)).fetchone()
        else:
            row = conn.execute("UPDATE versions SET skip_reason = %s WHERE package = %s AND version = %s "
                               "RETURNING package", (reason, package, version)).fetchone()
        if row is None:
            raise UnknownRelease(_unknown(package, version))
        mark_changed(conn, [package])


def rebuild(conn: psycopg.Connection, package: str, version: str | None = None,
            target: str | None = None) -> int:
    """Forget the finished builds of ``package`` (one ``version``, one ``target``) so they are redone.

    Builds in flight are left to finish. Returns how many builds were forgotten.
    """
    package = canonicalize_name(package)
    with conn.transaction():
        exists = conn.execute(
            "SELECT 1 FROM versions WHERE package = %s AND (%s::text IS NULL OR version = %s) LIMIT 1",
            (package, version, version)).fetchone()
        if exists is None:
            raise UnknownRelease(_unknown(package, version))
        if target is not None and conn.execute("SELECT 1 FROM targets WHERE name = %s",
                                               (target,)).fetchone() is None:
            raise UnknownRelease(f"there is no target named {target!r}")
        forgotten = conn.execute(
            "DELETE FROM builds WHERE package = %s AND (%s::text IS NULL OR version = %s) "
            "AND (%s::text IS NULL OR target = %s) AND status <> 'building'",
            (package, version, version, target, target)).rowcount
        mark_changed(conn, [package])
    log.info("rebuild of %s%s%s requested: %d builds forgotten", package,
             f"=={version}" if version else "", f" for {target}" if target else "", forgotten)
    return forgotten


def requeue_failures(conn: psycopg.Connection, target: str, package: str | None = None) -> int:
    """Queue again every release whose build on ``target`` failed (or waits to retry a transient
    failure), optionally only those of ``package``. Returns how many releases were re-queued."""
    package = canonicalize_name(package) if package else None
    with conn.transaction():
        if conn.execute("SELECT 1 FROM targets WHERE name = %s", (target,)).fetchone() is None:
            raise UnknownRelease(f"there is no target named {target!r}")
        if package is not None and conn.execute("SELECT 1 FROM packages WHERE package = %s",
                                                (package,)).fetchone() is None:
            raise UnknownRelease(_unknown(package, None))
        rows = conn.execute(db.query("build_requeue_failures"), {"target": target, "package": package}).fetchall()
        releases = {(p, v) for p, v, status in rows if status in ("failure", "retry")}
        mark_changed(conn, [p for p, _v in releases])
    log.info("re-queued %d failed releases for %s%s", len(releases), target, f" of {package}" if package else "")
    return len(releases)


def operator_name() -> str:
    """Who runs a command on this machine (the login name): what the catalog records as having acted."""
    import getpass
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "an operator"


def _unknown(package: str, version: str | None) -> str:
    return f"{package} {version} is not in the catalog" if version else f"{package} is not in the catalog"


# --- the `wheelwright` subcommands ---------------------------------------------------------------

def add_commands(sub, connect) -> None:
    """Register ``skip``, ``unskip``, ``rebuild``, ``requeue-failures`` and ``queue`` on the CLI's subparsers.

    ``connect(settings)`` opens a ready catalog connection; handlers take ``(settings, args)``.
    """
    p = sub.add_parser("skip", help="never build a package, or one version of it")
    p.add_argument("package")
    p.add_argument("version", nargs="?")
    p.add_argument("--reason", required=True, help="why (shown on the project page)")
    p.set_defaults(handler=lambda settings, args: _run(connect, settings, lambda conn: (
        skip(conn, args.package, args.version, reason=args.reason),
        print(f"skipped {_label(args)}: {args.reason}"))))

    p = sub.add_parser("unskip", help="build a skipped package or version again")
    p.add_argument("package")
    p.add_argument("version", nargs="?")
    p.set_defaults(handler=lambda settings, args: _run(connect, settings, lambda conn: (
        unskip(conn, args.package, args.version), print(f"unskipped {_label(args)}"))))

    p = sub.add_parser("rebuild", help="forget finished builds so they are built again")
    p.add_argument("package")
    p.add_argument("version", nargs="?")
    p.add_argument("--target", help="only this target's builds (a name from targets.toml)")
    p.set_defaults(handler=lambda settings, args: _run(connect, settings, lambda conn: print(
        f"{rebuild(conn, args.package, args.version, args.target)} builds of {_label(args)}"
        f"{' for ' + args.target if args.target else ''} forgotten; they are queued again")))

    p = sub.add_parser("requeue-failures", help="queue every failed build of a target again")
    p.add_argument("target", help="a target's name (from targets.toml)")
    p.add_argument("--package", help="only this package's failures")
    p.set_defaults(handler=lambda settings, args: _run(connect, settings, lambda conn: print(
        f"{requeue_failures(conn, args.target, args.package)} failed releases"
        f"{' of ' + canonicalize_name(args.package) if args.package else ''} queued again for {args.target}")))

    p = sub.add_parser("settings", help="a package's build settings: extra apt packages, timeout, environment")
    p.add_argument("package")
    p.add_argument("--apt", action="append", metavar="DEBIAN_PACKAGE",
                   help="build in the target's image plus these Debian packages (repeat; replaces the list)")
    p.add_argument("--no-apt", action="store_true", help="no extra Debian packages")
    p.add_argument("--timeout", metavar="DURATION", help="the build's time limit (6h, 90m, 1h30m) or 'default'")
    p.add_argument("--env", action="append", metavar="NAME=VALUE", help="set a build variable (repeat)")
    p.add_argument("--unset-env", action="append", metavar="NAME", default=[], help="remove a build variable")
    p.add_argument("--clear", action="store_true", help="forget every setting of the package")
    p.set_defaults(handler=lambda settings, args: _run(connect, settings, lambda conn: _settings(conn, args)))

    p = sub.add_parser("queue", help="what each enabled target builds next")
    p.add_argument("target", nargs="?", help="one target's name (default: every enabled target)")
    p.add_argument("--limit", type=int, default=10, help="releases to show per target (default 10)")
    p.set_defaults(handler=lambda settings, args: _run(connect, settings, lambda conn: _show_queue(
        conn, args.target, args.limit)))


def _settings(conn, args) -> None:
    """``wheelwright settings``: show a package's build settings, or change them and show the result."""
    import getpass

    from wheelwright.builds import build_settings
    changing = args.apt or args.no_apt or args.timeout or args.env or args.unset_env or args.clear
    package = canonicalize_name(args.package)
    if changing:
        timeout = ...
        if args.timeout:
            timeout = None if args.timeout == "default" else build_settings.parse_duration(args.timeout)
        new = build_settings.change(
            conn, package, by=getpass.getuser(), apt=[] if args.no_apt else args.apt, timeout=timeout,
            set_env=dict(build_settings.parse_assignment(a) for a in args.env or ()),
            unset_env=args.unset_env, clear=args.clear)
    else:
        if conn.execute("SELECT 1 FROM packages WHERE package = %s", (package,)).fetchone() is None:
            raise UnknownRelease(_unknown(package, None))
        new = build_settings.read(conn, package)
    if new is None:
        print(f"{package}: default build settings")
        return
    print(f"{package}:\n  " + "\n  ".join(new.lines()))


def _label(args) -> str:
    return f"{canonicalize_name(args.package)}{' ' + args.version if args.version else ''}"


def _run(connect, settings, action) -> int:
    with connect(settings) as conn:
        action(conn)
    return 0


def _show_queue(conn, only: str | None, limit: int) -> None:
    from wheelwright.builds.queue import queue_head, queue_length
    names = [only] if only else [name for (name,) in conn.execute(
        "SELECT name FROM targets WHERE enabled ORDER BY position, name")]
    if not names:
        print("no enabled targets in the catalog (the build_wheels DAG mirrors targets.toml)")
    for name in names:
        waiting, fresh = queue_length(conn, name)
        print(f"{name}: {waiting:,} waiting ({fresh:,} fresh)")
        for package, version in queue_head(conn, name, limit):
            print(f"  {package}=={version}")
