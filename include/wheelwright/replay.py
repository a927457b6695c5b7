"""Replaying a large backlog (PyPI's whole history, the first time): fold new packages in memory.

A bulk sync keeps the events it journals in a :class:`ReplayBuffer`, by package. When it derives, a
package the catalog has never seen, and whose every journal row is in the buffer, needs no history read
back and has no old rows to compare with: it is folded from the buffer and its rows are COPYed straight
into the catalog tables (:func:`write_fresh`), in key order, so index upkeep is an append.

That is most of the work of a replay, and it is Python's work (the fold, the fingerprint, formatting
rows): the database takes about a third of the time. So the packages are cut into slices that forked
workers fold and format into COPY data, while this process feeds the slices, in order, to one COPY per
table and slice, all in the caller's transaction. Workers only compute; they never touch the
connection they inherit.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import operator
import os
from collections import defaultdict
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import psycopg
from psycopg.copy import Copy, FileWriter

from .events import Event, event_from_plain, packages_touched
from .fold import PackageState, apply_event, version_facts, version_ranks

if TYPE_CHECKING:
    from .catalog import IngestResult

log = logging.getLogger(__name__)

SLICE = 2_000          # packages per slice of work
PARALLEL_FROM = 10_000  # fewer fresh packages than this are not worth forking for

_TABLES = (
    "COPY packages (package, display_name, present, born_serial, quarantined, state_hash, change_seq, "
    "changed_at) FROM STDIN",
    "COPY aliases (package, alias, last_ts, last_serial) FROM STDIN",
    "COPY versions (package, version, born_serial, released, rank, valid, prerelease, yanked, quarantined, "
    "has_sdist) FROM STDIN",
    "COPY source_files (package, filename, version, pyver, born_serial, uploaded) FROM STDIN",
)


class ReplayBuffer:
    """The events of a bulk replay, kept by package as they are journalled.

    Bounded: past ``limit`` events it lets go of them all, and derivation reads the journal instead.
    ``before`` is the journal's last serial when the replay began: rows up to it are not in the buffer.
    """

    def __init__(self, before: int, limit: int):
        self.before = before
        self.limit = limit
        self.count = 0
        self.histories: dict[str, list[tuple]] | None = defaultdict(list)
        self.tainted: set[str] = set()   # packages whose rows the journal may hold otherwise

    def add(self, ingested: IngestResult) -> None:
        if self.histories is None:
            return
        self.count += len(ingested.events)
        if self.count > self.limit:
            log.info("bulk replay past %d events: derivation will read the journal back", self.limit)
            self.histories = None
            return
        histories = self.histories
        for event in ingested.events:  # Events, or their plain tuples (read by position)
            histories[event[2]].append(event)
            other = event[9]
            if other is not None and other != event[2]:
                histories[other].append(event)
        if ingested.redelivered:
            # The journal kept its own row for a serial seen before, which may differ from this one.
            self.tainted.update(p for e in ingested.events for p in packages_touched(e))


def write_fresh(cur: psycopg.Cursor, histories: dict[str, list[tuple]], fresh: list[str], first_change: int,
                *, workers: int | None = None) -> None:
    """Fold ``fresh`` (sorted) from ``histories`` and COPY their rows; package i takes change number
    ``first_change + i``. The catalog must hold no rows of these packages."""
    tasks = [(fresh[i:i + SLICE], first_change + i) for i in range(0, len(fresh), SLICE)]
    workers = workers or worker_count()
    global _HISTORIES
    _HISTORIES = (histories, cur.connection)
    try:
        if workers > 1 and len(fresh) >= PARALLEL_FROM:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for payload in pool.imap(_render_slice, tasks):
                    _copy_payload(cur, payload)
        else:
            for task in tasks:
                _copy_payload(cur, _render_slice(task))
    finally:
        _HISTORIES = None


def worker_count() -> int:
    """How many processes to fork for a replay: one per CPU, or none where a process may not have
    children (a daemonic one, as in some executors' task runners)."""
    if multiprocessing.current_process().daemon:
        return 1
    return os.cpu_count() or 1


# What forked workers read: set by write_fresh just before the fork, so they inherit it for free.
_HISTORIES: tuple[dict[str, list[tuple]], psycopg.Connection] | None = None
_history_order = operator.itemgetter(4, 0)  # Event.timestamp, Event.serial


def _copy_payload(cur: psycopg.Cursor, payload: tuple[bytes, ...]) -> None:
    for statement, data in zip(_TABLES, payload):
        if data:
            with cur.copy(statement) as copy:
                copy.write(data)


def _render_slice(task: tuple[list[str], int]) -> tuple[bytes, ...]:
    """Fold one slice of packages and format their rows as COPY data, one block per table."""
    packages, first_change = task
    histories, conn = _HISTORIES
    states = []
    for package in packages:
        state = PackageState(package)
        for event in sorted(histories[package], key=_history_order):
            if type(event) is not Event:  # a plain tuple from a parsing worker: the kind is its text
                event = event_from_plain(event)
            apply_event(state, event)
        states.append(state)
    # The formatting is psycopg's own (a Copy that writes to memory); the connection only lends its
    # adapters and is never used for I/O here.
    cursor = conn.cursor()
    blocks = []
    for rows in (_package_rows(states, first_change), _alias_rows(states), _version_rows(states),
                 _file_rows(states)):
        buffer = io.BytesIO()
        with Copy(cursor, writer=FileWriter(buffer)) as copy:
            write = copy.write_row
            for row in rows:
                write(row)
        blocks.append(buffer.getvalue())
    return tuple(blocks)


def _package_rows(states: list[PackageState], first_change: int):
    now = datetime.now(timezone.utc)
    for seq, state in enumerate(states, first_change):
        yield (state.package, state.display_name, state.present, state.born_serial, state.quarantined,
               state.fingerprint(), seq, now)


def _alias_rows(states: list[PackageState]):
    for state in states:
        for alias, (ts, serial) in sorted(state.aliases.items()):
            yield (state.package, alias, ts, serial)


def _version_rows(states: list[PackageState]):
    utc, from_ts = timezone.utc, datetime.fromtimestamp
    for state in states:
        ranks = version_ranks(state.versions)
        for name in sorted(state.versions):
            v = state.versions[name]
            valid, prerelease, _ = version_facts(name)
            yield (state.package, name, v.born_serial, from_ts(v.released, utc), ranks[name], valid,
                   prerelease, v.yanked, v.quarantined, v.has_sdist)


def _file_rows(states: list[PackageState]):
    utc, from_ts = timezone.utc, datetime.fromtimestamp
    for state in states:
        owner = state.file_owner
        for filename in sorted(owner):
            version = owner[filename]
            f = state.versions[version].files[filename]
            yield (state.package, filename, version, f.pyver, f.born_serial, from_ts(f.uploaded, utc))
