"""Replaying a large backlog (PyPI's whole history, the first time): fold new packages in bulk.

A bulk sync keeps the events it journals in a :class:`ReplayBuffer`, as data frames. When it derives, a
package the catalog has never seen, and whose every journal row is in the buffer, needs no history read
back and has no old rows to compare with: it is folded with the others in one set-based pass
(bulk_fold.py) and its rows are COPYed straight into the catalog tables.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import polars as pl

from .event_frames import events_frame

if TYPE_CHECKING:
    from .catalog import IngestResult

log = logging.getLogger(__name__)


class ReplayBuffer:
    """The events of a bulk replay, kept as they are journalled.

    Bounded: past ``limit`` events it lets go of them all, and derivation reads the journal instead.
    ``before`` is the journal's last serial when the replay began: rows up to it are not in the buffer;
    ``end`` is its last serial now (every journalled page is added, kept or not).
    """

    def __init__(self, before: int, limit: int):
        self.before = before
        self.end = before
        self.limit = limit
        self.count = 0
        self.frames: list[pl.DataFrame] | None = []
        self.tainted: set[str] = set()   # packages whose rows the journal may hold otherwise
        self._packages: set[str] = set()  # of the frames kept, gathered as they come

    def add(self, ingested: IngestResult) -> None:
        frame = ingested.frame if ingested.frame is not None else events_frame(ingested.events)
        if frame.height:
            self.end = max(self.end, frame.get_column("serial").max())
        if self.frames is None:
            return
        self.count += frame.height
        if self.count > self.limit:
            log.info("bulk replay past %d events: derivation will read the journal back", self.limit)
            self.frames = None
            self._packages.clear()
            return
        self.frames.append(frame)
        packages = packages_of(frame)
        self._packages.update(packages)
        if ingested.redelivered:
            # The journal kept its own row for a serial seen before, which may differ from this one.
            self.tainted.update(packages)

    def events(self) -> pl.DataFrame | None:
        """Every event kept, in one frame; None if the buffer let go of them."""
        if self.frames is None:
            return None
        if len(self.frames) > 1:
            self.frames = [pl.concat(self.frames, rechunk=True)]
        return self.frames[0] if self.frames else events_frame([])

    def packages(self) -> set[str] | None:
        """The packages of the events kept (packages_of); None if the buffer let go of them."""
        return None if self.frames is None else self._packages


def packages_of(frame: pl.DataFrame) -> set[str]:
    """Every package whose history a frame's events are part of (both names of a rename)."""
    named = set(frame.get_column("package").unique().to_list())
    named.update(frame.get_column("other_package").drop_nulls().unique().to_list())
    return named
