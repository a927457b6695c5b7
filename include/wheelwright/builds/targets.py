"""Build targets: what wheelwright builds wheels for, declared in a small file in the repository.

A target is one (ABI tag, platform tag, distro) that a pool of workers builds for, e.g. ``cp311`` /
``linux_armv7l`` / bookworm on Raspberry Pis. The list lives in ``targets.toml`` (or the file named by
``WHEELWRIGHT_TARGETS``) because the ``build_wheels`` DAG needs it when it is parsed, when no database
may be touched: one mapped build task per enabled target, on the Celery queue of that target. Every
scheduling run then mirrors the file into the catalog's ``targets`` table, which the build queue joins.

This room owns reading and checking that file, the numeric order of targets (``cp39 < cp311 <
cp313``: the order a release is tried in), and the mirror. A target removed from the file, like one
with ``enabled = false``, is retired: it takes no more builds and keeps the wheels it built.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import psycopg

from wheelwright import names, package_data
from wheelwright.catalog import db
from wheelwright.errors import ConfigError


# A target's name is a Celery queue name and part of an Airflow task_id: keep it to their common ground.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_PLATFORM = re.compile(r"[a-z0-9_]+\Z")
_DISTRO = re.compile(r"[a-z0-9][a-z0-9.-]*\Z")
_KEYS = {"name", "abi", "platform", "distro", "enabled", "queue"}


@dataclass(frozen=True)
class Target:
    name: str        # unique; the default queue name
    abi: str         # ABI tag of the wheels it builds, e.g. cp311
    platform: str    # platform tag, e.g. linux_armv7l
    distro: str      # the OS release its workers run, e.g. bookworm
    enabled: bool
    queue: str       # the Celery queue its builds go to
    position: int    # 1-based place in numeric ABI order among all targets of the file


def abi_order(abi: str) -> tuple:
    """Sort key putting ABI tags in numeric order: ``cp39 < cp311 < cp313 < cp313t``."""
    key = names.abi_order(abi)
    if key is None:
        raise ConfigError(f"{abi!r} is not an ABI tag like cp311")
    return key


def default_targets_path() -> Path:
    given = os.environ.get("WHEELWRIGHT_TARGETS")
    return Path(given).expanduser() if given else Path(str(package_data.data("targets.toml")))


def load_targets(path: str | os.PathLike | None = None) -> list[Target]:
    """Every target of the file (enabled or not), in build order. Touches no database."""
    path = Path(path) if path is not None else default_targets_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the targets file {path}: {exc.strerror}") from exc
    return parse_targets(text, source=str(path))


def enabled_targets(path: str | os.PathLike | None = None) -> list[Target]:
    return [t for t in load_targets(path) if t.enabled]


def parse_targets(text: str, source: str = "targets.toml") -> list[Target]:
    """The targets declared by the TOML ``text``, checked, in build order."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from exc
    rows = document.get("target", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ConfigError(f"{source}: declare targets as [[target]] tables")
    declared = [_target_of(row, i, source) for i, row in enumerate(rows, 1)]
    # numeric ABI order; equal ABIs keep the order of the file
    ordered = sorted(enumerate(declared), key=lambda it: (abi_order(it[1].abi), it[0]))
    targets = [_with_position(t, pos) for pos, (_, t) in enumerate(ordered, 1)]
    _check_unique(targets, source)
    return targets


def _target_of(row: dict, index: int, source: str) -> Target:
    where = f"{source}, target #{index}"
    unknown = set(row) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("abi", "platform", "distro"):
        if not isinstance(row.get(key), str):
            raise ConfigError(f"{where}: {key} (a string) is required")
    abi, platform, distro = row["abi"], row["platform"], row["distro"]
    abi_order(abi)  # raises for a malformed ABI tag
    if not _PLATFORM.match(platform):
        raise ConfigError(f"{where}: {platform!r} is not a platform tag like linux_armv7l")
    if not _DISTRO.match(distro):
        raise ConfigError(f"{where}: {distro!r} is not a distro name like bookworm")
    name = row.get("name", f"{abi}-{platform}")
    queue = row.get("queue", name)
    for key, value in (("name", name), ("queue", queue)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise ConfigError(f"{where}: {key} {value!r} must be letters, digits, '.', '_' or '-'")
    enabled = row.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: enabled must be true or false")
    return Target(name, abi, platform, distro, enabled, queue, 0)


def _with_position(target: Target, position: int) -> Target:
    return Target(target.name, target.abi, target.platform, target.distro, target.enabled,
                  target.queue, position)


def _check_unique(targets: list[Target], source: str) -> None:
    def duplicates(key, among):
        seen, twice = set(), []
        for t in among:
            k = key(t)
            if k in seen:
                twice.append(k)
            seen.add(k)
        return twice

    if twice := duplicates(lambda t: t.name, targets):
        raise ConfigError(f"{source}: target name {twice[0]!r} is declared twice")
    if twice := duplicates(lambda t: (t.abi, t.platform), targets):
        abi, platform = twice[0]
        raise ConfigError(f"{source}: two targets build {abi}/{platform}: their wheels would have "
                          "the same file names")
    if twice := duplicates(lambda t: t.queue, [t for t in targets if t.enabled]):
        raise ConfigError(f"{source}: two enabled targets share the queue {twice[0]!r}: their "
                          "workers would build for each other")


def target_named(targets: list[Target], name: str) -> Target:
    for target in targets:
        if target.name == name:
            return target
    raise ConfigError(f"no target named {name!r} (known: {', '.join(t.name for t in targets)})")


def mirror_targets(conn: psycopg.Connection, targets: list[Target]) -> None:
    """Make the ``targets`` table say what the file says, in one transaction.

    Targets missing from the file are retired (``enabled = false``), never deleted: their builds and
    wheels stay. A name that already built wheels cannot change its ABI or platform (its wheels would
    then claim to be something else): give the new tags a new name.
    """
    columns = {
        "name": [t.name for t in targets], "abi": [t.abi for t in targets],
        "platform": [t.platform for t in targets], "distro": [t.distro for t in targets],
        "enabled": [t.enabled for t in targets], "position": [t.position for t in targets],
        "queue": [t.queue for t in targets],
    }
    with conn.transaction():
        changed = conn.execute(db.query("build_targets_retagged"), columns).fetchall()
        if changed:
            name, abi, platform = changed[0]
            raise ConfigError(f"target {name!r} has builds for {abi}/{platform}; its tags cannot "
                              "change: declare the new tags under a new name")
        conn.execute(db.query("build_targets_retire_absent"), columns)
        try:
            conn.execute(db.query("build_targets_upsert"), columns)
        except psycopg.errors.UniqueViolation as exc:
            raise ConfigError(f"the targets file clashes with a retired target in the catalog: "
                              f"{exc.diag.message_detail or exc}") from exc
