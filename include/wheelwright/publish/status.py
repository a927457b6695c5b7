"""Where each release stands on each target: the rows of a project page, one per release and target.

A Pi user looking at a project page asks "is there a wheel for my Pi, and if not, why not, and when?".
piwheels answers with one icon per ABI; this room answers in words, from the catalog's own facts: built
(with its files), building, waiting to retry, not needed (a pure wheel built elsewhere serves every
target), failed (with the reason), skipped by the operator, no sdist to build from, not in the
target's queue (older than the target, and no backfill admitted it), waiting for an earlier target to
try first, or queued (the page then asks ``queue.json`` for the position, and whether an operator paused
the target: both change far more often than the page; see :mod:`wheelwright.publish.site`).

"Queued" must mean exactly what the build queue means (the ``build_queue`` SQL function of migrations
004 and 018, which hands releases out): the same rules, read the other way round, one release at a
time. A test holds the two equal over a world with every state in it. Which targets hold a release in
their scope (uploaded since the target was enabled, or admitted by a backfill) comes from the catalog
with the release, since that needs exact timestamps.

Pure functions over the page data of :mod:`wheelwright.publish.pages`: no database, no disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from wheelwright.names import abi_order
from wheelwright.publish.pages import TargetStatus

BUILT = "built"
BUILDING = "building"
RETRY = "retry"
NOT_NEEDED = "not-needed"
FAILED = "failed"
SKIPPED = "skipped"
NO_SDIST = "no-sdist"
NOT_IN_QUEUE = "not-in-queue"
WAITING = "waiting"
QUEUED = "queued"

STATES = (BUILT, BUILDING, RETRY, NOT_NEEDED, FAILED, SKIPPED, NO_SDIST, NOT_IN_QUEUE, WAITING, QUEUED)


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """A build target, as the pages need it."""

    name: str
    abi: str
    platform: str
    distro: str
    position: int
    enabled: bool = True

    @property
    def order(self) -> tuple:
        return (self.position, self.name)


def sort_targets(targets) -> list[TargetInfo]:
    """Targets in the order they are tried (the queue's: position, then name)."""
    return sorted(targets, key=lambda t: t.order)


def shown_order(name: str) -> tuple:
    """A name that is not a known target (an ABI tag of an old build) after the targets, by ABI."""
    key = abi_order(name)
    return (0, key, name) if key is not None else (1, (), name)


def target_rows(release, targets: list[TargetInfo], *, project_skip: str | None = None) -> list[TargetStatus]:
    """The rows of one release, in target order: every enabled target, and any other target that
    built or tried it. ``targets``: every known target, in the order they are tried (:func:`sort_targets`;
    the writer reads them so once per run)."""
    by_target: dict[str, list] = {}
    for b in release.builds:
        by_target.setdefault(b.target or b.abi, []).append(b)
    files_by_target: dict[str, list] = {}
    for f in sorted(release.files, key=lambda f: f.filename):
        files_by_target.setdefault(f.target or f.builder_abi, []).append(f)
    pure = next((f for f in release.files if f.abi_tag == "none" and f.platform_tag == "any"), None)
    known = {t.name for t in targets}
    names = [t for t in targets if t.enabled or t.name in by_target or t.name in files_by_target]
    strays = sorted((set(by_target) | set(files_by_target)) - known, key=shown_order)
    finished = {name for name, builds in by_target.items()
                if any(b.status in ("success", "failure") for b in builds)}
    rows = []
    for target in [*names, *strays]:
        name = target if isinstance(target, str) else target.name
        info = None if isinstance(target, str) else target
        builds = [b for b in by_target.get(name, ()) if b.status != "lost"]
        latest = builds[-1] if builds else None
        files = files_by_target.get(name, [])
        state, detail, build = _state(release, info, name, latest, files, pure, finished, targets,
                                      project_skip)
        rows.append(TargetStatus(target=name, state=state, detail=detail, build=build, files=files))
    return rows


def _state(release, target, name, latest, files, pure, finished, targets, project_skip):
    """(state, detail, build) of ``release`` on the target ``name`` (``target`` None: not a known one)."""
    if files:
        return BUILT, None, latest if latest is not None and latest.status == "success" else None
    if latest is not None and latest.status == "building":
        return BUILDING, None, latest
    if latest is not None and latest.status == "retry":
        return RETRY, latest.reason, latest
    if pure is not None:
        return NOT_NEEDED, f"the pure wheel built on {pure.target or pure.builder_abi} serves every target", None
    if latest is not None and latest.status == "failure":
        return FAILED, latest.reason, latest
    if latest is not None and latest.status == "success":
        return BUILT, "no wheel was published", latest
    if release.skip_reason or project_skip:
        return SKIPPED, release.skip_reason or project_skip, None
    if target is None or not target.enabled:
        return NOT_IN_QUEUE, "the target is retired", None
    if not release.has_sdist:
        return NO_SDIST, "no source distribution on PyPI to build from", None
    if name not in release.in_scope:
        return NOT_IN_QUEUE, "uploaded before the target was enabled (a backfill would add it)", None
    for earlier in targets:
        if earlier.order >= target.order:
            break
        if earlier.enabled and earlier.name in release.in_scope and earlier.name not in finished:
            return WAITING, earlier.name, None
    return QUEUED, None, None
