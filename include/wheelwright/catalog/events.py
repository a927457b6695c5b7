"""What one row of PyPI's changelog says.

PyPI's XML-RPC ``changelog_since_serial`` hands out rows ``[name, version|None, unix_ts, action, serial]``.
The action is free text with a small grammar that has grown over twenty years (see DESIGN.md). This
module turns a raw row into a validated :class:`Event` and its action into a :class:`Kind` with its
argument (a file name, a Python tag, an old project name). It is pure: no database, no network, so the
whole grammar is tested exhaustively, and the journal can store the kind beside the raw row.

Two rules matter more than the rest:

* a role change (``remove Owner bob``) is never mistaken for a deletion; piwheels once deleted whole
  projects on it;
* anything we do not recognise is an ``UNKNOWN`` event: kept, counted, and without effect.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple


from wheelwright.names import canonical_or_none
from wheelwright.errors import MalformedEvent


class Kind(enum.StrEnum):
    CREATE = "create"
    NEW_RELEASE = "new_release"
    ADD_FILE = "add_file"
    REMOVE_FILE = "remove_file"
    REMOVE_RELEASE = "remove_release"
    REMOVE_PROJECT = "remove_project"
    YANK = "yank"
    UNYANK = "unyank"
    PROJECT_QUARANTINED = "project_quarantined"
    PROJECT_QUARANTINE_CLEARED = "project_quarantine_cleared"
    RELEASE_QUARANTINED = "release_quarantined"
    RELEASE_QUARANTINE_CLEARED = "release_quarantine_cleared"
    RENAME_FROM = "rename_from"
    ROLE = "role"
    METADATA = "metadata"
    UNKNOWN = "unknown"


# Kinds that only make sense about a particular release; without a version they are malformed.
NEEDS_VERSION = frozenset({
    Kind.NEW_RELEASE, Kind.ADD_FILE, Kind.REMOVE_RELEASE, Kind.YANK, Kind.UNYANK,
    Kind.RELEASE_QUARANTINED, Kind.RELEASE_QUARANTINE_CLEARED,
})

EXACT_ACTIONS = {
    "create": Kind.CREATE,
    "new release": Kind.NEW_RELEASE,
    "remove release": Kind.REMOVE_RELEASE,
    "remove project": Kind.REMOVE_PROJECT,
    "yank release": Kind.YANK,
    "unyank release": Kind.UNYANK,
    "project quarantined": Kind.PROJECT_QUARANTINED,
    "project quarantine cleared": Kind.PROJECT_QUARANTINE_CLEARED,
    "release quarantined": Kind.RELEASE_QUARANTINED,
    "release quarantine cleared": Kind.RELEASE_QUARANTINE_CLEARED,
    "docupdate": Kind.METADATA,
}
_RENAME = re.compile(r"rename from (\S.*)\Z", re.S)
# Role and invitation bookkeeping: "add Owner bob", "remove Maintainer bob", "change Owner bob to
# Maintainer", "invite Owner bob", "revoke_invite Owner bob", "accepted Owner bob".
_ROLE = re.compile(
    r"(?:(?:add|remove|invite|revoke_invite|accepted) \S+ \S+"
    r"|change \S+ \S+ to \S+"
    r"|(?:invite|revoke_invite|accepted) .+)\Z",
    re.S,
)
_UPDATE = re.compile(r"update .*\Z", re.S)

# A canonical project name: what every directory and URL of ours is keyed by, so it must never hold a
# path separator or anything else a file system or a shell would read.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_TEXT = 1024


@dataclass(frozen=True, slots=True)
class Action:
    kind: Kind
    filename: str | None = None   # ADD_FILE, REMOVE_FILE
    pyver: str | None = None      # ADD_FILE: "source" for an sdist, else a Python tag like "py3"
    old_name: str | None = None   # RENAME_FROM: the name as PyPI spelled it


def parse_action(action: str) -> Action:
    """Classify an action string; never raises: what we do not know is ``UNKNOWN``."""
    kind = EXACT_ACTIONS.get(action)
    if kind is not None:
        return Action(kind)
    if action == "remove":
        # Bare "remove" from old history; the version decides release vs project (see parse_row).
        return Action(Kind.REMOVE_RELEASE)
    # File events are most of PyPI's history: split them by hand, regexes cost more.
    if action.startswith("add "):
        parts = action.split(" ", 3)
        if len(parts) == 4 and parts[2] == "file" and parts[1] and parts[3].strip():
            return Action(Kind.ADD_FILE, filename=parts[3], pyver=parts[1])
    elif action.startswith("remove file ") and action[12:].strip():
        return Action(Kind.REMOVE_FILE, filename=action[12:])
    if m := _RENAME.match(action):
        return Action(Kind.RENAME_FROM, old_name=m[1].strip())
    if _ROLE.match(action):
        return Action(Kind.ROLE)
    if _UPDATE.match(action):
        return Action(Kind.METADATA)
    return Action(Kind.UNKNOWN)


@lru_cache(maxsize=1 << 18)
def canonical(name: str) -> str:
    """The canonical form of a project name, or MalformedEvent if it cannot be one of ours."""
    canon = canonical_or_none(name)
    if canon is None:
        raise MalformedEvent(f"project name {name!r} has no usable canonical form")
    return canon


def _usable_text(text: str) -> bool:
    return bool(text.strip()) and len(text) <= MAX_TEXT and not _CONTROL.search(text)


class _Memo(dict):
    """A bounded memo for the parser's hot path: names and versions repeat across a package's history,
    so each spelling is checked once. A plain dict lookup costs a fraction of an lru_cache call, which
    shows at millions of rows; when full it simply starts over."""

    __slots__ = ("compute", "limit")

    def __init__(self, compute, limit: int = 1 << 18):
        super().__init__()
        self.compute, self.limit = compute, limit

    def __missing__(self, key):
        if len(self) >= self.limit:
            self.clear()
        value = self[key] = self.compute(key)
        return value


_USABLE = _Memo(_usable_text)


_CANONICAL_OF = _Memo(canonical_or_none)


def is_filename(name: str) -> bool:
    """A file name we store: one path component, no control characters, at most 255 characters."""
    return ("/" not in name and "\\" not in name and name not in (".", "..")
            and not _CONTROL.search(name) and len(name) <= 255)


class Event(NamedTuple):
    """One validated changelog row. ``package`` is the canonical name, ``name`` as PyPI spelled it.

    A named tuple rather than a dataclass: a full history replay makes tens of millions of these.
    """

    serial: int
    name: str
    package: str
    version: str | None
    timestamp: int
    action: str
    kind: Kind
    filename: str | None = None
    pyver: str | None = None
    other_package: str | None = None   # RENAME_FROM: canonical old name

    @property
    def order(self) -> tuple[int, int]:
        """Where this event sits in a package's history: timestamps first, serials break ties."""
        return (self.timestamp, self.serial)


def packages_touched(event: tuple) -> tuple[str, ...]:
    """Every package whose history an event is part of (two for a rename)."""
    package, other = event[2], event[9]
    return (package,) if other is None or other == package else (package, other)


_new_event = tuple.__new__  # Event(...) goes through a Python-level __new__: too slow for a replay
KIND_BY_TEXT = {kind.value: kind for kind in Kind}  # Kind(text) is a slow call on a hot path


MAX_TIMESTAMP = 253_402_300_800  # year 10000: past it no calendar of ours (nor Python's) goes
MAX_SERIAL = 2**63 - 1  # the journal's bigint


def parse_row(row) -> Event:
    """Validate one raw changelog row; raise MalformedEvent with the reason if it is not usable."""
    if not isinstance(row, (list, tuple)) or len(row) != 5:
        raise MalformedEvent(f"expected [name, version, timestamp, action, serial], got {row!r:.200}")
    name, version, timestamp, action, serial = row
    # type() rather than isinstance(): True is an int to isinstance, and not a serial.
    if type(serial) is not int or not 0 < serial <= MAX_SERIAL:
        raise MalformedEvent(f"serial must be a positive 64-bit integer, got {serial!r:.50}")
    if type(name) is not str or not _USABLE[name]:
        raise MalformedEvent(f"serial {serial}: bad project name {name!r:.100}")
    if version is not None and (type(version) is not str or not _USABLE[version]):
        raise MalformedEvent(f"serial {serial}: bad version {version!r:.100}")
    if type(timestamp) is not int:
        if type(timestamp) is float and timestamp.is_integer():
            timestamp = int(timestamp)
        else:
            raise MalformedEvent(f"serial {serial}: bad timestamp {timestamp!r:.50}")
    if not 0 <= timestamp < MAX_TIMESTAMP:
        raise MalformedEvent(f"serial {serial}: bad timestamp {timestamp!r:.50}")
    if type(action) is not str or len(action) > 4 * MAX_TEXT or "\x00" in action:
        raise MalformedEvent(f"serial {serial}: bad action {action!r:.100}")
    package = _CANONICAL_OF[name]
    if package is None:
        canonical(name)  # raises with the reason
    kind = EXACT_ACTIONS.get(action)
    if kind is not None:
        if version is None and kind in NEEDS_VERSION:
            raise MalformedEvent(f"serial {serial}: {action!r} on {name} names no version")
        return _new_event(Event, (serial, name, package, version, timestamp, action, kind, None, None, None))
    if action.startswith("add "):
        # Most of PyPI's history is file uploads: the same split as parse_action, without its object.
        parts = action.split(" ", 3)
        if len(parts) == 4 and parts[2] == "file" and parts[1] and parts[3].strip():
            if version is None:
                raise MalformedEvent(f"serial {serial}: {action!r} on {name} names no version")
            filename = parts[3]
            if not is_filename(filename):
                raise MalformedEvent(f"serial {serial}: unsafe file name {filename!r:.100}")
            return _new_event(Event, (serial, name, package, version, timestamp, action, Kind.ADD_FILE,
                                      filename, parts[1], None))
    parsed = parse_action(action)
    kind = parsed.kind
    if action == "remove" and version is None:
        kind = Kind.REMOVE_PROJECT
    if kind in NEEDS_VERSION and version is None:
        raise MalformedEvent(f"serial {serial}: {action!r} on {name} names no version")
    if parsed.filename is not None and not is_filename(parsed.filename):
        raise MalformedEvent(f"serial {serial}: unsafe file name {parsed.filename!r:.100}")
    other = canonical(parsed.old_name) if parsed.old_name is not None else None
    return _new_event(Event, (serial, name, package, version, timestamp, action, kind,
                              parsed.filename, parsed.pyver, other))
