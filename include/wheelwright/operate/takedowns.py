"""Takedowns: an operator takes a project, or one release, off the index (piwheels' ``piw-remove``).

Some packages must leave the index though they are still on PyPI: a wheel that turned out to break
machines, a licence that forbids redistributing binaries, a maintainer who asks for it. That is
stronger than a skip (which only stops builds and keeps the files) and it must hold against the sync:
PyPI knows nothing of it, and re-deriving the package from its journal must not bring it back. So a
takedown is a row of its own (``takedowns``, keyed by name, outside the rows derivation rewrites), and
this room owns what follows from it, at once and in one transaction:

- every build of the release (or of the whole project) is forgotten, its wheels with it, builds in
  flight included (their results are dropped when they arrive: :mod:`wheelwright.builds.intake` finds
  no build row); the names stay in ``wheel_names``, so a later build never republishes other bytes
  under a name that was served;
- the build queue passes it by while it is down (migration 055's ``build_queue``);
- the package is marked changed, so the next publish drops its files and, for a whole project, its
  simple pages, takes it out of the root lists and ``packages.json``, and purges its keys at the CDN.

A removed project's ``/simple/<pkg>/`` answers 404, not a page listing no files: that is what pip and
uv see for a project this index never had, so both go on to the next index (Raspberry Pi OS names us
in ``extra-index-url``, PyPI stays the main index) exactly as before we ever built it. An empty 200
page would say "this index has the project": pip would still go on, but uv (its default
first-index strategy) stops at the first index that answers 200 and fails to install a package PyPI
has (astral-sh/uv#2159: an index answering 200 with no links hid sqlalchemy from PyPI, a 404 did
not). piwheels' ``piw-remove`` likewise deletes the project's simple folder. A removed release of a
project that stays only loses its files from the project's page. The project page stays and says why it is gone, for the maintainer who asks.

:func:`restore` lifts the takedown: the releases queue again (their builds were forgotten) and the
next publish lists what gets built. The CLI (``wheelwright remove`` / ``restore``) and the dashboard's
actions call these same functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from packaging.utils import canonicalize_name

from wheelwright.catalog.store import mark_changed
from wheelwright.errors import WheelwrightError
from wheelwright.operate.admin import UnknownRelease, operator_name

log = logging.getLogger(__name__)

MAX_REASON = 500


@dataclass(frozen=True)
class Removed:
    """What one takedown did."""

    package: str
    version: str | None
    builds_forgotten: int
    wheels_forgotten: int


def remove(conn: psycopg.Connection, package: str, version: str | None = None, *, reason: str,
           by: str) -> Removed:
    """Take ``package`` (or only its ``version``) off the index for ``reason``; ``by`` names the operator.

    Taking down again what is down updates the reason. Raises :class:`UnknownRelease` for a package or
    release the catalog does not know.
    """
    reason = " ".join((reason or "").split())[:MAX_REASON]
    if not reason:
        raise WheelwrightError("a takedown needs a reason (--reason): the project page shows it")
    by = " ".join((by or "").split())[:200] or "an operator"
    package = canonicalize_name(package)
    with conn.transaction():
        _must_exist(conn, package, version)
        conn.execute(
            "INSERT INTO takedowns (package, version, reason, removed_by) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (package, coalesce(version, '')) DO UPDATE SET reason = EXCLUDED.reason, "
            "removed_by = EXCLUDED.removed_by, removed_at = now()", (package, version, reason, by))
        wheels = conn.execute(
            "SELECT count(*) FROM wheels WHERE package = %s AND (%s::text IS NULL OR version = %s)",
            (package, version, version)).fetchone()[0]
        builds = conn.execute(
            "DELETE FROM builds WHERE package = %s AND (%s::text IS NULL OR version = %s)",
            (package, version, version)).rowcount
        mark_changed(conn, [package])
    log.warning("%s%s taken down by %s (%s): %d builds and %d wheels forgotten", package,
                f"=={version}" if version else "", by, reason, builds, wheels)
    return Removed(package, version, builds, wheels)


def restore(conn: psycopg.Connection, package: str, version: str | None = None, *, by: str) -> int:
    """Lift the takedown of ``package`` (all of it: the project's and its releases'), or of one
    ``version``; its releases queue again. Returns how many takedowns were lifted."""
    package = canonicalize_name(package)
    with conn.transaction():
        lifted = conn.execute(
            "DELETE FROM takedowns WHERE package = %s AND (%s::text IS NULL OR version = %s)",
            (package, version, version)).rowcount
        if not lifted:
            what = f"{package} {version}" if version else package
            raise NotTakenDown(f"{what} is not taken down (see `wheelwright takedowns`)")
        mark_changed(conn, [package])
    log.warning("%s%s restored by %s: it queues and publishes again", package,
                f"=={version}" if version else "", by)
    return lifted


class NotTakenDown(WheelwrightError):
    """A restore named something no takedown holds."""

    exit_code = 5


def takedowns(conn: psycopg.Connection) -> list[dict]:
    """Every takedown, newest first (the CLI's list and the dashboard's panel)."""
    rows = conn.execute("SELECT package, version, reason, removed_by, removed_at FROM takedowns "
                        "ORDER BY removed_at DESC, package, version").fetchall()
    return [{"package": p, "version": v, "reason": r, "removed_by": b, "removed_at": a.isoformat()}
            for p, v, r, b, a in rows]


def _must_exist(conn: psycopg.Connection, package: str, version: str | None) -> None:
    if version is None:
        found = conn.execute("SELECT 1 FROM packages WHERE package = %s", (package,)).fetchone()
    else:
        found = conn.execute("SELECT 1 FROM versions WHERE package = %s AND version = %s",
                             (package, version)).fetchone()
    if found is None:
        raise UnknownRelease(f"{package} {version} is not in the catalog" if version
                             else f"{package} is not in the catalog")


# --- the `wheelwright` subcommands ---------------------------------------------------------------

def add_commands(sub, connect) -> None:
    """Register ``remove``, ``restore`` and ``takedowns`` on the CLI's subparsers."""
    p = sub.add_parser("remove", help="take a package (or one version) off the index: files, pages, "
                                      "builds (piw-remove); the next publish drops them and purges the CDN")
    p.add_argument("package")
    p.add_argument("version", nargs="?")
    p.add_argument("--reason", required=True, help="why (shown on the project page)")
    p.add_argument("--by", help="who takes it down (default: the login name)")
    p.set_defaults(handler=lambda settings, args: _run(connect, settings, lambda conn: _print_removed(
        remove(conn, args.package, args.version, reason=args.reason, by=args.by or operator_name()))))

    p = sub.add_parser("restore", help="lift a takedown: the package (or version) queues and publishes again")
    p.add_argument("package")
    p.add_argument("version", nargs="?")
    p.add_argument("--by", help="who restores it (default: the login name)")
    p.set_defaults(handler=lambda settings, args: _run(connect, settings, lambda conn: (
        restore(conn, args.package, args.version, by=args.by or operator_name()),
        print(f"restored {canonicalize_name(args.package)}{' ' + args.version if args.version else ''}: "
              "it is queued for building and listed again at the next publish"))))

    p = sub.add_parser("takedowns", help="what is taken off the index, by whom and why")
    p.set_defaults(handler=lambda settings, args: _run(connect, settings, _print_takedowns))


def _print_removed(removed: Removed) -> None:
    what = f"{removed.package}{' ' + removed.version if removed.version else ''}"
    print(f"removed {what}: {removed.builds_forgotten} builds and {removed.wheels_forgotten} wheels "
          "forgotten; the next publish (wheelwright index, or the publish_index DAG) takes it off the "
          "index and purges the CDN")


def _print_takedowns(conn) -> None:
    rows = takedowns(conn)
    if not rows:
        print("nothing is taken down")
    for row in rows:
        print(f"{row['package']}{' ' + row['version'] if row['version'] else ''}\t{row['removed_at'][:16]}"
              f"\t{row['removed_by']}\t{row['reason']}")


def _run(connect, settings, action) -> int:
    with connect(settings) as conn:
        action(conn)
    return 0
