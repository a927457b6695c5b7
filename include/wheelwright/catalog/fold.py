"""The meaning of a package's history: fold its journal into the state PyPI shows.

The catalog is a function of the *set* of journal events, never of the order they arrived in. This is
where that holds: a package's events are sorted by ``(timestamp, serial)`` and folded from nothing into
a :class:`PackageState`. A late event with an old timestamp simply lands in its place when the package
is folded again, so no hold-back window is needed (the chai history in the seeds is the test case).

The rules, one per kind of event:

* ``create``, ``new release``, ``add file`` bring the package (and the release) into being; a release or
  file seen before its ``create`` implies it, since PyPI had it.
* ``remove project`` (or bare ``remove`` without a version) ends the package's life: versions, files,
  aliases and flags go. What comes later starts a new life with new ``born_serial`` numbers, which is how
  the catalog knows that builds of the old life must go even if version strings repeat.
* ``remove release`` ends a version's life; ``remove file`` drops one file (the version stays, and loses
  its sdist if that was the one).
* yank/unyank and quarantine flags are last-writer-wins in history order.
* ``rename from OLD`` brings the new name into being and ends OLD's life (unless OLD is the same package
  spelled differently, which is only a new alias).
* role changes, metadata updates and unknown actions change nothing. Ever.

Every spelling seen during the current life is an alias with the position it was last seen at; the
display name is the latest one.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from packaging.version import InvalidVersion, Version

from wheelwright.catalog.events import Event, Kind, packages_touched


class FileState(NamedTuple):
    """A file never changes once uploaded."""

    filename: str
    pyver: str
    born_serial: int
    uploaded: int


@dataclass(slots=True)
class VersionState:
    version: str
    born_serial: int
    released: int
    yanked: bool = False
    quarantined: bool = False
    files: dict[str, FileState] = field(default_factory=dict)

    @property
    def has_sdist(self) -> bool:
        return "source" in map(_pyver_of, self.files.values())


@dataclass(slots=True)
class PackageState:
    package: str
    present: bool = False
    born_serial: int | None = None
    quarantined: bool = False
    aliases: dict[str, tuple[int, int]] = field(default_factory=dict)
    versions: dict[str, VersionState] = field(default_factory=dict)
    # A file name belongs to one version of a package at a time (PyPI's rule, and our key).
    file_owner: dict[str, str] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        if not self.aliases:
            return self.package
        return max(self.aliases.items(), key=lambda item: item[1])[0]


_new_file = tuple.__new__  # FileState(...) goes through a Python-level __new__
_pyver_of = operator.itemgetter(1)  # FileState.pyver


def _end_life(state: PackageState) -> None:
    state.present = False
    state.born_serial = None
    state.quarantined = False
    state.aliases.clear()
    state.versions.clear()
    state.file_owner.clear()


def _ensure_present(state: PackageState, event: Event) -> None:
    if not state.present:
        state.present = True
        state.born_serial = event.serial


def _ensure_version(state: PackageState, event: Event) -> VersionState:
    if not state.present:
        state.present = True
        state.born_serial = event.serial
    version = state.versions.get(event.version)
    if version is None:
        version = state.versions[event.version] = VersionState(event.version, event.serial, event.timestamp)
    return version


# Module-level names for the kinds: this function runs once per event of PyPI's history, and a global
# lookup is cheaper than an Enum attribute.
_ADD_FILE, _NEW_RELEASE, _CREATE, _RENAME_FROM = Kind.ADD_FILE, Kind.NEW_RELEASE, Kind.CREATE, Kind.RENAME_FROM
_REMOVE_FILE, _REMOVE_RELEASE, _REMOVE_PROJECT = Kind.REMOVE_FILE, Kind.REMOVE_RELEASE, Kind.REMOVE_PROJECT
_YANK, _UNYANK = Kind.YANK, Kind.UNYANK
_PROJECT_QUARANTINED, _PROJECT_QUARANTINE_CLEARED = Kind.PROJECT_QUARANTINED, Kind.PROJECT_QUARANTINE_CLEARED
_RELEASE_QUARANTINED, _RELEASE_QUARANTINE_CLEARED = Kind.RELEASE_QUARANTINED, Kind.RELEASE_QUARANTINE_CLEARED


def apply_event(state: PackageState, event: Event) -> None:
    """Apply one event (already in its place in history) to the package's state."""
    kind = event.kind
    # File uploads and releases first: they are nine events in ten.
    if kind is _ADD_FILE:
        version = _ensure_version(state, event)
        filename = event.filename
        if filename not in version.files:
            # The same name added to another version later (never on PyPI, possible in a log)
            # moves it: the latest upload is the file of that name.
            previous = state.file_owner.get(filename)
            if previous is not None:
                del state.versions[previous].files[filename]
            version.files[filename] = _new_file(FileState, (filename, event.pyver, event.serial, event.timestamp))
            state.file_owner[filename] = event.version
    elif kind is _NEW_RELEASE:
        _ensure_version(state, event)
    elif kind is _RENAME_FROM and event.package != state.package:
        # This package is the old name of a rename: its life ends here.
        _end_life(state)
        return
    elif kind is _CREATE or kind is _RENAME_FROM:
        _ensure_present(state, event)
    elif kind is _REMOVE_FILE:
        owner = state.file_owner.pop(event.filename, None)
        if owner is not None:
            del state.versions[owner].files[event.filename]
    elif kind is _REMOVE_RELEASE:
        gone = state.versions.pop(event.version, None)
        if gone is not None:
            for filename in gone.files:
                del state.file_owner[filename]
    elif kind is _REMOVE_PROJECT:
        _end_life(state)
    elif kind is _YANK or kind is _UNYANK:
        if version := state.versions.get(event.version):
            version.yanked = kind is _YANK
    elif kind is _PROJECT_QUARANTINED or kind is _PROJECT_QUARANTINE_CLEARED:
        if state.present:
            state.quarantined = kind is _PROJECT_QUARANTINED
    elif kind is _RELEASE_QUARANTINED or kind is _RELEASE_QUARANTINE_CLEARED:
        if version := state.versions.get(event.version):
            version.quarantined = kind is _RELEASE_QUARANTINED
    # ROLE, METADATA and UNKNOWN change nothing: a role change must never delete anything.
    if state.present and event.package == state.package:
        state.aliases[event.name] = (event.timestamp, event.serial)


def fold_package(package: str, events: Iterable[Event]) -> PackageState:
    """The state of ``package`` after all of ``events`` that concern it, in history order."""
    state = PackageState(package)
    for event in sorted(events, key=_order):
        apply_event(state, event)
    return state


def _order(event: Event) -> tuple[int, int]:
    return (event.timestamp, event.serial)


def fold_log(events: Iterable[Event]) -> dict[str, PackageState]:
    """Fold a whole event log: the state of every package it mentions."""
    by_package: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        for package in packages_touched(event):
            by_package[package].append(event)
    return {package: fold_package(package, evs) for package, evs in by_package.items()}


@lru_cache(maxsize=1 << 16)
def version_facts(version: str) -> tuple[bool, bool, Version | None]:
    """(valid PEP 440, pre-release, parsed): one parse per distinct version string."""
    try:
        parsed = Version(version)
    except InvalidVersion:
        return (False, False, None)
    return (True, parsed.is_prerelease, parsed)


def is_valid_version(version: str) -> bool:
    return version_facts(version)[0]


def is_prerelease(version: str) -> bool:
    return version_facts(version)[1]


def version_ranks(versions: Collection[str]) -> dict[str, int]:
    """Position of each version in the package's order, 1 for the oldest: valid PEP 440 versions in
    PEP 440 order, then invalid ones as text, last."""
    if len(versions) == 1:  # most packages of a replay: nothing to compare
        return dict.fromkeys(versions, 1)
    ordered = sorted(versions, key=rank_key)
    return {v: i for i, v in enumerate(ordered, 1)}


def rank_key(version: str):
    """What versions sort by: PEP 440 order, equal versions equal, then invalid ones as text."""
    valid, _, parsed = version_facts(version)
    # Version objects and strings do not compare; keep the two classes apart.
    return (0, parsed) if valid else (1, version)
