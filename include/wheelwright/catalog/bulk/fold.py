"""The fold of fold.py, for many packages at once: set-based, in a data frame.

A replay of PyPI's history folds millions of events, most of them for packages the catalog has never
seen. Folding them one event at a time in Python costs several times what the database takes to store
the result, so a bulk replay folds them here instead, with polars, and COPYs the rows straight into the
catalog tables (:func:`write_fresh`). fold.py stays the definition: tests check that both folds agree on
any log (tests/test_bulk_fold.py).

The rules of fold.py, restated for a package's history in ``(timestamp, serial)`` order:

* its current *life* is what follows its last ``remove project`` (or a rename away from it);
* it is *present* from the first event of that life that brings it about (create, release, file,
  rename to it); that event's serial is its ``born_serial``; each spelling seen from then on is an
  alias, last seen at its latest event, and the latest one is the display name;
* the project quarantine flag is the last quarantine event after it became present;
* a version lives from its first release or file after its last ``remove release`` (within the life);
  its yank and quarantine flags are the last such events after that birth;
* a file name's last ``add file`` keeps the file unless the name is removed later or its version is;
  the file kept is the earliest upload of the unbroken run of adds of that name to that version (an
  add to another version, a ``remove file`` or the version's removal breaks the run).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import polars as pl
import psycopg

from wheelwright.catalog import db
from wheelwright.catalog.events import MAX_TIMESTAMP
from wheelwright.catalog.fold import rank_key, version_facts
from wheelwright.catalog.bulk.work_ahead import results_in_order

c = pl.col

_BRINGS = ["add_file", "new_release", "create", "rename_from"]
_CREATES_VERSION = ["add_file", "new_release"]
_PROJECT_QUARANTINE = ["project_quarantined", "project_quarantine_cleared"]
_RELEASE_QUARANTINE = ["release_quarantined", "release_quarantine_cleared"]
_YANKS = ["yank", "unyank"]


# The event columns the fold reads (event_frames.EVENT_SCHEMA less the action, which it reads as the
# kind, file name and Python tag).
FOLD_FIELDS = ["serial", "name", "package", "version", "ts", "kind", "filename", "pyver", "other_package"]


class Folded(NamedTuple):
    """The catalog rows of the folded packages, each frame package by package in name order."""

    packages: pl.DataFrame   # package, display_name, present, born_serial, quarantined
    aliases: pl.DataFrame    # package, alias, last_ts, last_serial
    versions: pl.DataFrame   # package, version, born_serial, released, rank, valid, prerelease, yanked,
                             # quarantined, has_sdist
    files: pl.DataFrame      # package, filename, version, pyver, born_serial, uploaded


def fold_frame(events: pl.DataFrame, packages: Iterable[str] | None = None) -> Folded:
    """Fold the events of ``packages`` (all the frame's, by default): the same rows fold.py would give.

    ``events`` must hold every event of those packages (a rename's event belongs to both names).
    """
    if packages is None:
        packages = _subjects(events).get_column("subject").unique().to_list()
    return _fold(_histories(events, sorted(set(packages))))


def write_fresh(cur: psycopg.Cursor, events: pl.DataFrame, fresh: list[str], first_change: int) -> None:
    """Fold ``fresh`` (sorted) from ``events`` and COPY their rows into the catalog tables, which hold no
    rows of them; package i takes change number ``first_change + i``. Threads fold and format the next
    slices of packages while the database stores this one."""
    histories = _histories(events, fresh)
    # A slice is FOLD_SLICE packages' histories: a run of rows, found by the packages' numbers.
    starts = range(0, len(fresh), FOLD_SLICE)
    bounds = histories.get_column("sid").search_sorted(pl.Series([*starts, len(fresh)], dtype=pl.Int64),
                                                       side="left").to_list()

    def render_slice(i: int) -> dict[str, bytes]:
        rows = histories.slice(bounds[i], bounds[i + 1] - bounds[i])
        return copy_data(_fold(rows), first_change + starts[i])

    with ThreadPoolExecutor(FOLD_THREADS, thread_name_prefix="fold") as folder:
        for data in results_in_order(folder, render_slice, range(len(starts)), FOLD_THREADS):
            for table, csv in data.items():
                with cur.copy(_COPY[table], writer=db.WholeBufferWriter(cur)) as copy:
                    copy.write(csv)


# Packages per slice of a bulk fold: small enough that the database stores one slice while the next
# are folded from the start (the fold of 1M events: fold and index 6.4 s with 15,000, 5.7 s with 6,000;
# medians of 5 alternating runs).
FOLD_SLICE = 6_000
# Slices folded at once: much of a fold runs on one core, some of it under the GIL. Two beside the
# database's COPY shortened the fold of 1M events by about 6% against one (bench, median of 4); three
# took fold and index from 6.84 s to 6.28 s, and from 6.19 s to 5.56 s, against two (medians of 6
# alternating runs, two batches); four were no better than three.
FOLD_THREADS = 3


def _subjects(events: pl.DataFrame) -> pl.DataFrame:
    """Each package's history (``subject``), in no order: a rename's event appears in both names'."""
    return pl.concat([
        events.with_columns(subject=c.package),
        events.filter(c.other_package.is_not_null() & (c.other_package != c.package))
              .with_columns(subject=c.other_package),
    ])


def _histories(events: pl.DataFrame, packages: list[str]) -> pl.DataFrame:
    """The histories of ``packages`` (sorted, distinct) as _fold takes them: each package numbered
    (``sid``) in that order, and its events together in ``(timestamp, serial)`` order.

    The fold sorts and groups by the numbers, integers, instead of by the names (sorting the histories
    took twice as long by name). A number and a time make one integer (_SORT_KEY); sorting on it and the
    serial took a third less time than on the three columns."""
    if len(packages) >= _MAX_SORTED_PACKAGES:
        raise ValueError(f"{len(packages)} packages in one fold: at most {_MAX_SORTED_PACKAGES - 1}")
    # An Enum of the packages numbers each name in one lookup, and leaves the others out (null).
    numbered = c.subject.cast(pl.Enum(packages), strict=False).to_physical().cast(pl.Int64)
    return (_subjects(events).with_columns(sid=numbered).filter(c.sid.is_not_null())
            .sort(_SORT_KEY, "serial"))


# Times are below events.MAX_TIMESTAMP (2**38), so a package's number above them keeps the key below
# 2**63 for fewer than 2**25 packages; a fold takes a replay's part, at most a few million events.
_TIME_BITS = MAX_TIMESTAMP.bit_length()
_MAX_SORTED_PACKAGES = 1 << (63 - _TIME_BITS)
_SORT_KEY = c.sid * (1 << _TIME_BITS) + c.ts


def _fold(histories: pl.DataFrame) -> Folded:
    histories = histories.with_columns(pos=pl.int_range(pl.len(), dtype=pl.Int64))
    # The current life: after the last event that ended one.
    ends_life = (c.kind == "remove_project") | ((c.kind == "rename_from") & (c.package != c.subject))
    starts = histories.filter(ends_life).group_by("sid").agg(start=c.pos.max())
    life = histories.join(starts, on="sid", how="left", maintain_order="left").filter(c.start.is_null() | (c.pos > c.start))
    births = life.filter(c.kind.is_in(_BRINGS)).group_by("sid").agg(born=c.pos.min(), born_serial=c.serial.first())
    life = life.join(births, on="sid", how="left", maintain_order="left")
    present = life.filter(c.pos >= c.born)

    # Within a group, rows keep the frame's order: history order.
    aliases = present.group_by("sid", "name").agg(package=c.subject.first(), last_ts=c.ts.last(),
                                                  last_serial=c.serial.last())
    display = present.group_by("sid").agg(display_name=c.name.last())
    quarantine = (present.filter(c.kind.is_in(_PROJECT_QUARANTINE) & (c.pos > c.born))
                  .group_by("sid").agg(quarantined=c.kind.last() == "project_quarantined"))
    package_rows = (histories.group_by("sid").agg(package=c.subject.first())
                    .join(births, on="sid", how="left").join(display, on="sid", how="left")
                    .join(quarantine, on="sid", how="left")
                    .sort("sid")
                    .select("package", display_name=c.display_name.fill_null(c.package),
                            present=c.born_serial.is_not_null(), born_serial="born_serial",
                            quarantined=c.quarantined.fill_null(False)))

    versions, version_ends = _versions(life)
    files = _files(life, version_ends)
    sdists = files.filter(c.pyver == "source").select("sid", "version", has_sdist=pl.lit(True)).unique()
    versions = (versions.join(sdists, on=["sid", "version"], how="left")
                .with_columns(has_sdist=c.has_sdist.fill_null(False)))
    # Package by package, in name order (their numbers'); within a package in no order: sorting on the
    # whole key took 0.2 s of CPU per 1M events, and the keys built on the rows took no less time.
    return Folded(
        package_rows,
        aliases.sort("sid").select("package", alias="name", last_ts="last_ts", last_serial="last_serial"),
        _ranked(versions).drop("sid"),
        files.sort("sid").select("package", "filename", "version", "pyver", "born_serial", "uploaded"),
    )


def _versions(life: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each version's current life: born at its first release or file after its last removal."""
    events = (life.filter(c.version.is_not_null())
              .select("sid", "subject", "version", "pos", "kind", "serial", "ts"))
    ends = (events.filter(c.kind == "remove_release").group_by("sid", "version")
            .agg(version_end=c.pos.max()))
    events = (events.join(ends, on=["sid", "version"], how="left", maintain_order="left")
              .with_columns(version_end=c.version_end.fill_null(-1))
              .filter(c.pos > c.version_end))
    births = (events.filter(c.kind.is_in(_CREATES_VERSION)).group_by("sid", "version")
              .agg(version_born=c.pos.min()))
    events = events.join(births, on=["sid", "version"], how="inner", maintain_order="left").filter(c.pos >= c.version_born)
    yank = c.kind.filter(c.kind.is_in(_YANKS)).last() == "yank"
    quarantine = c.kind.filter(c.kind.is_in(_RELEASE_QUARANTINE)).last() == "release_quarantined"
    versions = events.group_by("sid", "version").agg(
        package=c.subject.first(), born_serial=c.serial.first(), released=c.ts.first(),
        version_born=c.version_born.first(),
        yanked=yank.fill_null(False), quarantined=quarantine.fill_null(False))
    return versions, ends


def _files(life: pl.DataFrame, version_ends: pl.DataFrame) -> pl.DataFrame:
    """The files alive at the end, each as its run's first upload (see the module's rules)."""
    events = (life.filter(c.kind.is_in(["add_file", "remove_file"]))
              .select("sid", "subject", "filename", "version", "pos", "kind", "pyver", "serial", "ts")
              .with_columns(once=(pl.len().over("sid", "filename") == 1) & (c.kind == "add_file")))
    # Most names are uploaded once and never touched again: such a file lives unless its version
    # was removed after it. The others take the general rule.
    once = (events.filter(c.once)
            .join(version_ends, on=["sid", "version"], how="left")
            .filter(c.version_end.is_null() | (c.version_end < c.pos))
            .select("sid", "filename", package="subject", version="version", pyver="pyver",
                    born_serial="serial", uploaded="ts"))
    return pl.concat([once, _files_of_runs(events.filter(~c.once), version_ends)])


def _files_of_runs(events: pl.DataFrame, version_ends: pl.DataFrame) -> pl.DataFrame:
    adds = events.filter(c.kind == "add_file")
    last_adds = adds.group_by("sid", "filename").agg(last=c.pos.last(), kept_version=c.version.last())
    removals = (events.filter(c.kind == "remove_file").group_by("sid", "filename")
                .agg(removed=c.pos.max()))
    kept = (last_adds.join(removals, on=["sid", "filename"], how="left")
            .join(version_ends.rename({"version": "kept_version"}), on=["sid", "kept_version"], how="left")
            .filter((c.removed.is_null() | (c.removed < c.last))
                    & (c.version_end.is_null() | (c.version_end < c.last))))
    moved = (adds.join(kept.select("sid", "filename", "kept_version"), on=["sid", "filename"])
             .filter(c.version != c.kept_version).group_by("sid", "filename").agg(moved=c.pos.max()))
    kept = (kept.join(moved, on=["sid", "filename"], how="left")
            .with_columns(run_after=pl.max_horizontal(c.removed.fill_null(-1), c.moved.fill_null(-1),
                                                      c.version_end.fill_null(-1))))
    return (adds.join(kept.select("sid", "filename", "kept_version", "run_after"),
                      left_on=["sid", "filename", "version"], right_on=["sid", "filename", "kept_version"],
                      maintain_order="left")
            .filter(c.pos > c.run_after)
            .group_by("sid", "filename")
            .agg(package=c.subject.first(), version=c.version.first(), pyver=c.pyver.first(),
                 born_serial=c.serial.first(), uploaded=c.ts.first()))


def _ranked(versions: pl.DataFrame) -> pl.DataFrame:
    """Rank, validity and pre-release flag, as fold.version_ranks and version_facts give them: PEP 440
    order (equal versions in the order they were born), invalid versions last, as text."""
    distinct = versions.get_column("version").unique().to_list()
    distinct.sort(key=rank_key)
    keys, valid, prerelease = [], [], []
    key, previous = 0, None
    for text in distinct:
        facts = version_facts(text)
        order = rank_key(text)
        if previous is None or order != previous:
            key += 1
            previous = order
        keys.append(key)
        valid.append(facts[0])
        prerelease.append(facts[1])
    facts = pl.DataFrame({"version": distinct, "order": keys, "valid": valid, "prerelease": prerelease},
                         schema={"version": pl.String, "order": pl.Int64, "valid": pl.Boolean,
                                 "prerelease": pl.Boolean})
    return (versions.join(facts, on="version", how="left")
            .sort("sid", "order", "version_born")
            .with_columns(rank=pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over("sid"))
            .select("sid", "package", "version", "born_serial", "released", "rank", "valid", "prerelease",
                    "yanked", "quarantined", "has_sdist"))


_COPY = {
    "packages": "COPY packages (package, display_name, present, born_serial, quarantined, change_seq) "
                "FROM STDIN (FORMAT csv)",
    "aliases": "COPY aliases (package, alias, last_ts, last_serial) FROM STDIN (FORMAT csv)",
    "versions": "COPY versions (package, version, born_serial, released, rank, valid, prerelease, yanked, "
                "quarantined, has_sdist) FROM STDIN (FORMAT csv)",
    "files": "COPY source_files (package, filename, version, pyver, born_serial, uploaded) "
             "FROM STDIN (FORMAT csv)",
}


def copy_data(folded: Folded, first_change: int) -> dict[str, bytes]:
    """The COPY data (CSV) of folded packages, by table (keys of ``_COPY``); package i (in name order)
    takes change number ``first_change + i``."""
    packages = folded.packages.with_columns(
        change_seq=pl.int_range(first_change, first_change + pl.len(), dtype=pl.Int64))
    frames = {
        "packages": packages,
        "aliases": folded.aliases,
        "versions": folded.versions.with_columns(released=pl.from_epoch("released")),
        "files": folded.files.with_columns(uploaded=pl.from_epoch("uploaded")),
    }
    # The CSV writer formats the times itself, in less time than strftime takes to make them text.
    return {table: frame.write_csv(include_header=False, datetime_format="%Y-%m-%d %H:%M:%S+00").encode()
            for table, frame in frames.items() if frame.height}
