"""Replaying a large backlog (PyPI's whole history, the first time): fold new packages in bulk.

A bulk sync keeps the events it journals in a :class:`ReplayBuffer`, as data frames. When it derives, a
package the catalog has never seen, and whose every journal row is in the buffer, needs no history read
back and has no old rows to compare with: it is folded with the others in one set-based pass
(bulk_fold.py) and its rows are COPYed straight into the catalog tables.

Past its memory bound the buffer keeps the events on disk instead, split into hash partitions of
packages of about that many events each, which are folded one at a time. It used to let go of them and
have each partition read back from the journal, a scan of all the replay's rows per partition: over 5M
events in two partitions that took 21 s of a 67 s replay, and PyPI's whole history would need eight
scans of 30M rows.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from wheelwright.catalog.bulk.fold import FOLD_FIELDS
from wheelwright.catalog.bulk.frames import events_frame

if TYPE_CHECKING:
    from wheelwright.catalog.store import IngestResult

log = logging.getLogger(__name__)

c = pl.col

# The most partitions a buffer spills into: a page's events are written in a file per partition.
MAX_PARTS = 256


class ReplayBuffer:
    """The events of a bulk replay, kept as they are journalled.

    In memory up to ``limit`` events; past that, on disk in partitions (a folder of its own, made under
    ``spill_dir`` or the system's temporary folder). ``expected`` is how many events the replay may
    bring (its backlog of serials): it sets how many partitions there are, so each has about ``limit``
    events. ``before`` is the journal's last serial when the replay began: rows up to it are not in the
    buffer; ``end`` is its last serial now. Every journalled page must be added. Use it as a context
    manager, or ``close`` it: that removes what it spilled. A process killed outright leaves its folder
    behind; the next sync does not need it (it reads the journal instead), and the next buffer to spill
    there removes it.
    """

    def __init__(self, before: int, limit: int, expected: int = 0, spill_dir: Path | None = None):
        self.before = before
        self.end = before
        self.limit = limit
        self.expected = expected
        self.count = 0
        self._frames: list[pl.DataFrame] = []
        self.tainted: set[str] = set()   # packages whose rows the journal may hold otherwise
        self._packages: set[str] = set()  # of the frames kept in memory, gathered as they come
        self._spill_dir = spill_dir
        self._spilled: Path | None = None
        self._lock: int | None = None  # held on the folder while it is in use
        self._parts = 0
        self._pages = 0

    def __enter__(self) -> ReplayBuffer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the events, and remove the ones spilled to disk."""
        self._frames = []
        self._packages.clear()
        if self._spilled is not None:
            shutil.rmtree(self._spilled, ignore_errors=True)
            self._spilled = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    @property
    def spilled(self) -> bool:
        return self._parts > 0

    def add(self, ingested: IngestResult) -> None:
        frame = ingested.frame if ingested.frame is not None else events_frame(ingested.events)
        if not frame.height:
            return
        self.end = max(self.end, frame.get_column("serial").max())
        self.count += frame.height
        if ingested.redelivered:
            # The journal kept its own row for a serial seen before, which may differ from this one.
            self.tainted.update(packages_of(frame))
        if self.spilled:
            self._spill(frame)
            return
        self._frames.append(frame)
        self._packages.update(packages_of(frame))
        if self.count > self.limit:
            self._parts = min(MAX_PARTS, max(2, -(-max(self.expected, self.count) // max(self.limit, 1))))
            log.info("bulk replay past %d events: keeping them on disk in %d partitions of packages",
                     self.limit, self._parts)
            parent = self._spill_dir or Path(tempfile.gettempdir())
            parent.mkdir(parents=True, exist_ok=True)
            remove_abandoned(parent)
            self._spilled, self._lock = _claimed_folder(parent)
            for kept in self._frames:
                self._spill(kept)
            self._frames = []
            self._packages.clear()

    def parts(self) -> Iterator[tuple[pl.DataFrame, set[str]]]:
        """The events a partition at a time: its events, and the packages whose whole history (in this
        replay) they are. Kept in memory, they are one partition. Spilled, they hold the columns the fold
        reads (bulk_fold.FOLD_FIELDS); a rename's event is in the partitions of both its names, and each
        partition's files are removed once read."""
        if not self.spilled:
            if len(self._frames) > 1:
                self._frames = [pl.concat(self._frames, rechunk=True)]
            if self._frames:
                yield self._frames[0], self._packages
            return
        for part in range(self._parts):
            files = sorted(self._spilled.glob(f"{part}-*.arrow"))
            if not files:
                continue
            frame = pl.scan_ipc(files).collect().rechunk()
            for file in files:
                file.unlink()
            log.info("bulk replay: folding partition %d of %d, %d events", part + 1, self._parts,
                     frame.height)
            names = pl.concat([frame.select(name=c.package),
                               frame.select(name=c.other_package).drop_nulls()]).unique()
            yield frame, set(names.filter(_part(c.name, self._parts) == part).get_column("name").to_list())

    def _spill(self, frame: pl.DataFrame) -> None:
        parts = self._parts
        renamed = frame.filter(c.other_package.is_not_null()
                               & (_part(c.other_package, parts) != _part(c.package, parts)))
        tagged = pl.concat([frame.with_columns(part=_part(c.package, parts)),
                            renamed.with_columns(part=_part(c.other_package, parts))])
        pieces = tagged.select(*FOLD_FIELDS, "part").partition_by("part", as_dict=True, include_key=False)
        for (part,), events in pieces.items():
            # Strings with offsets, as Arrow first had them, are read back in half the time of views.
            events.write_ipc(self._spilled / f"{part}-{self._pages}.arrow",
                             compat_level=pl.CompatLevel.oldest())
        self._pages += 1


SPILL_PREFIX = "wheelwright-replay-"


def _claimed_folder(parent: Path) -> tuple[Path, int]:
    """A new folder for a buffer's events, and the descriptor of the lock it holds on the folder while in
    use (flock: the lock goes with the process that holds it)."""
    folder = Path(tempfile.mkdtemp(prefix=SPILL_PREFIX, dir=parent))
    staged = folder / "lock.new"
    lock = os.open(staged, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    # Locked before it takes its name: no one can find the folder's lock free while it is in use.
    staged.rename(folder / "lock")
    return folder, lock


def remove_abandoned(parent: Path) -> list[Path]:
    """Remove the folders of buffers in ``parent`` whose lock no process holds (their process died
    before it could remove them); return them."""
    removed = []
    for folder in parent.glob(SPILL_PREFIX + "*"):
        if _abandoned(folder):
            log.info("removing %s, left by a bulk replay that died", folder)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _abandoned(folder: Path) -> bool:
    """Whether ``folder`` is a buffer's whose lock no process holds. A folder without a lock is one being
    made, or not a buffer's; a buffer in use holds its lock until it is done, and no buffer takes an
    existing folder, so one found free stays free."""
    try:
        lock = os.open(folder / "lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(lock)


def _part(name: pl.Expr, parts: int) -> pl.Expr:
    """The partition of a package name: stable within a process, which is all a replay needs. (A null
    name hashes too: callers leave nulls out.)"""
    return name.hash(seed=0) % parts


def packages_of(frame: pl.DataFrame) -> set[str]:
    """Every package whose history a frame's events are part of (both names of a rename)."""
    named = set(frame.get_column("package").unique().to_list())
    named.update(frame.get_column("other_package").drop_nulls().unique().to_list())
    return named
