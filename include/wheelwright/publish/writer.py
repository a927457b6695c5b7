"""The index writer: turns the catalog into the static tree that pip and people read.

The catalog changes all the time (every minute from PyPI, every few seconds from the builders), and
each change bumps its package's ``change_seq``. This room keeps a high-water mark in
``consumer_marks('publish_index')`` and, on each run, rewrites exactly the packages whose ``change_seq``
passed it: a visible package gets its four pages (simple HTML and JSON, project page and project JSON)
and its alias symlinks; a deleted or quarantined one loses them, along with the files the catalog no
longer lists. The root lists and ``packages.json`` are rewritten only when the set of visible packages
(or a name or summary on them) changed. The mark advances only after every file is durable, so a run
that dies halfway is simply redone by the next one; rewriting is idempotent, and a file whose bytes did
not change is not touched at all.

What it must never do: leave a package with files without its page, even for a moment (pages are
replaced by rename, never deleted and re-written; see :mod:`wheelwright.publish.tree`), or delete a file
the catalog still lists. Files that others put in the tree (wheels, ``.metadata``, build logs) are
removed only when the catalog has forgotten them, and those of a still-existing version only after a
grace period, because the build side moves a file into place a moment before it records it. And they
go only after the page that listed them was replaced (and, with a CDN in front, purged at the edge):
a cached page must never send pip to a 404, so a run returns them in ``removals`` and unlinks them at
its end, or leaves them to the purger (see :mod:`wheelwright.publish.cdn`). A
quarantined package (a malware response on PyPI) loses its project page and links, its simple pages
say so (PEP 792 ``pypi:project-status`` / ``project-status``, listing no files), and its files leave the
served tree, so their URLs answer 404: they wait in a holding area beside the tree (:func:`holding_for`,
under ``WHEELWRIGHT_HOME`` in the default layout), and come back with the same names and bytes when the
quarantine clears, without rebuilding anything. The files of a quarantined release of a visible
package wait there the same way.

Everything a run reads comes from one REPEATABLE READ snapshot, and only one publisher runs at a time
(an advisory lock), whoever started it. Big runs (a full publish) render and write in forked worker
processes that never wait for the disk: each hands back the batch it staged, and this process makes it
durable and renames it into place while they go on with the next.

A package's pages also change without its change number moving when the build targets do (each page
has a row per target): the publisher remembers the targets it showed (``TARGETS_SEEN``) and publishes
every package again when they differ. Around the packages it keeps the rest of the site up to date
(:mod:`wheelwright.publish.site`: home, search, FAQ, 404, sitemaps, ``queue.json``), each part when
its data changed and at most so often.

A project an operator took down (``takedowns``, :mod:`wheelwright.operate.takedowns`) keeps its project
page, which says so, but loses its simple pages (they answer 404), its place in the root lists and
its files at once, without the grace period; a release taken down loses its files the same way. Every
published project also gets its Atom feed of failed builds (``project/<pkg>/feed.atom``), and a run
that touched builds rewrites the index's (``feeds/failures.atom``) when its bytes change.

The formats live in :mod:`wheelwright.publish.pages`, the feeds in :mod:`wheelwright.publish.feeds`, the apt
reports in :mod:`wheelwright.publish.reports`.
``publish(conn, output, full=...)`` is the one entry point; the CLI's ``wheelwright index`` and the
``publish_index`` DAG both reach it through :func:`wheelwright.publish.cdn.publish_and_purge` (one
configuration, one rendering, then the CDN's purges). ``wheelwright index --full`` re-renders everything and also sweeps
strays (directories, symlinks and logs nothing in the catalog accounts for).
"""

from __future__ import annotations

import json
import logging
import errno
import multiprocessing
import os
import re
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import psycopg
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version
from psycopg.types.string import TextLoader

from wheelwright.catalog import db
from wheelwright.catalog.store import consumer_mark, set_consumer_mark
from wheelwright.publish import feeds, pages
from wheelwright.publish import reports
from wheelwright.publish import site
from wheelwright.publish import status
from wheelwright.errors import CatalogError, WheelwrightError
from wheelwright.names import CANONICAL_PATTERN, is_canonical, safe_alias
from wheelwright.publish.pages import Build, Downloads, Project, Release, WheelFile, json_bytes
from wheelwright.publish.tree import Staged, StagedTree, is_temp, read_bytes

log = logging.getLogger(__name__)

CONSUMER = "publish_index"
# Any constant would do; it only has to be the same in every process that publishes.
_PUBLISH_LOCK = 0x70756269  # "pubi"
# The build side renames a wheel into place, then records it: an unlisted file this young may be on
# its way into the catalog, so it is left for a later run.
GRACE_SECONDS = 3600
# Operator reports aggregate over every wheel; an incremental run refreshes them at most this often.
REPORT_INTERVAL_SECONDS = 300
_FETCH = 2000
_BATCH = 500
# Below this many packages a run stays in one process (forking costs more than it saves).
_PARALLEL_FROM = 20_000
_FORKED: "Publisher | None" = None   # the publisher whose state forked workers inherit

_LOG_PATH = re.compile(r"logs/(\d{4})/(\d{4})/(\d{4})\.txt\.gz\Z")
# The targets the last publish showed: the publisher's memory in the tree, under a dot-name the web
# servers never serve (nginx/wheelwright.conf, the static server).
TARGETS_SEEN = ".wheelwright-targets.json"
_PAGES = ("index.html", "index.json")
_decode_json = msgspec.json.decode


class PublishError(WheelwrightError):
    """The published tree cannot be written (for example the output folder is unusable)."""

    exit_code = 6


def holding_for(output: str | os.PathLike) -> Path:
    """Where the files of quarantined projects and releases wait, outside the served tree: beside it,
    on its file system (``$WHEELWRIGHT_HOME/www`` -> ``$WHEELWRIGHT_HOME/www-quarantine``)."""
    output = Path(output)
    return output.with_name(output.name + "-quarantine")


def log_path_for(build_id: int) -> str:
    """Where the log of ``build_id`` lives in the tree: build 12345 -> ``logs/0000/0001/2345.txt.gz``."""
    if not 0 <= build_id < 10**12:
        raise ValueError(f"build id out of range for the log tree: {build_id}")
    digits = f"{build_id:012d}"
    return f"logs/{digits[0:4]}/{digits[4:8]}/{digits[8:12]}.txt.gz"


def build_id_for_log(path: str) -> int | None:
    """The build id a ``logs/NNNN/NNNN/NNNN.txt.gz`` path names, or None for anything else."""
    m = _LOG_PATH.match(path)
    return int(m[1] + m[2] + m[3]) if m else None


@dataclass
class PublishResult:
    full: bool
    mark_from: int                 # the high-water mark before this run
    mark_to: int                   # ... and after it
    packages: int = 0              # packages looked at (changed since the mark, or all of them)
    published: int = 0             # visible packages rendered
    removed: int = 0               # packages that lost their pages
    changed: list[str] = field(default_factory=list)  # packages whose published files changed
    skipped: list[str] = field(default_factory=list)  # names unsafe as paths, never published
    root_written: bool = False
    root_changed: bool = False     # the bytes of the root pages (simple/index.*) changed
    search_changed: bool = False   # ... of packages.json or the search shards
    site_changed: bool = False     # ... of the site's pages (home, FAQ, search page, sitemaps, static/)
    queue_changed: bool = False    # ... of queue.json
    feeds_changed: bool = False    # ... of feeds/failures.atom
    reports_written: bool = False
    # Files the catalog forgot, by package: unlinked only after the page that listed them was replaced
    # (and, with a CDN, purged at the edge); tree paths relative to the output folder.
    removals: dict[str, list[str]] = field(default_factory=dict)
    logs_scanned: int = 0
    files_written: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    seconds: float = 0.0

    def purge_keys(self) -> list[str]:
        """The surrogate keys whose responses this run changed (see :mod:`wheelwright.publish.cdn`)."""
        from wheelwright.publish import cdn
        keys = [cdn.project_key(p) for p in self.changed]
        if self.root_changed:
            keys.append(cdn.ROOT)
        if self.search_changed:
            keys.append(cdn.SEARCH)
        if self.site_changed:
            keys.append(cdn.SITE)
        if self.queue_changed:
            keys.append(cdn.QUEUE)
        if self.reports_written:
            keys.append(cdn.REPORTS)
        if self.feeds_changed:
            keys.append(cdn.FEEDS)
        return keys

    def summary(self) -> str:
        kind = "full publish" if self.full else "publish"
        return (f"{kind}: {self.packages} packages looked at, {self.published} published, "
                f"{self.removed} removed, {len(self.changed)} changed; files {self.files_written} "
                f"written, {self.files_unchanged} unchanged, {self.files_removed} removed; "
                f"root {'rewritten' if self.root_written else 'kept'}; mark {self.mark_from} -> "
                f"{self.mark_to}; {self.seconds:.2f}s")


@dataclass(slots=True)
class _Published:
    """What the previous run published for a package, read back from its project JSON."""

    name: str | None = None
    summary: str | None = None
    aliases: tuple[str, ...] = ()
    logs: tuple[str, ...] = ()
    downloads: tuple[int, int] | None = None   # (last 30 days, all time), as packages.json has them
    removed: bool = False          # the project was taken down (off the root lists)

    @classmethod
    def read(cls, path: str) -> "_Published | None":
        raw = read_bytes(path)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            figures = data.get("downloads") or {}
            return cls(name=data.get("name"), summary=data.get("summary") or None,
                       aliases=tuple(data.get("aliases", ())), removed=bool(data.get("removed")),
                       downloads=(figures.get("last_30_days"), figures.get("total")) if figures else None,
                       logs=tuple(b["log_url"].lstrip("/")
                                  for r in data.get("releases", {}).values()
                                  for b in r.get("builds", ()) if b.get("log_url")))
        except (ValueError, TypeError, AttributeError, KeyError):
            log.warning("unreadable project JSON %s: treating the package as unpublished", path)
            return cls()


@dataclass
class _Batch:
    """What publishing a batch of packages did (sent back from a worker process when forked)."""

    packages: int = 0
    published: int = 0
    removed: int = 0
    changed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    looked_at: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    seen_visible: set[str] = field(default_factory=set)
    links: set[str] = field(default_factory=set)
    removals: dict[str, list[str]] = field(default_factory=dict)
    root_dirty: bool = False
    search_dirty: bool = False
    touched_builds: bool = False
    files: tuple[int, int, int] | None = None   # written, unchanged, removed (workers only)
    staged: Staged | None = None                # what a worker wrote, for the parent to commit


@dataclass(slots=True)
class _CatalogPackage:
    """One row of the publish_projects query, shaped for the writer."""

    package: str
    visible: bool
    present: bool
    project: Project
    listed: set[str]               # every file name the catalog lists in simple/<package>/
    versions: set[str]             # the catalog's releases (quarantined ones too), as spelled there
    logs: set[str]                 # log paths of the package's builds
    has_builds: bool
    hidden: set[str] = field(default_factory=set)  # listed files of quarantined releases: held back
    # taken down by an operator: the whole project, and releases (normalised versions) whose files go
    removed: bool = False
    removed_versions: set[str] = field(default_factory=set)


class Publisher:
    """One publishing run over one tree; :func:`publish` is the way to use it."""

    def __init__(self, conn: psycopg.Connection, output: Path, *, full: bool, pypi_url: str,
                 progress: Callable[[int, int], None] | None = None, workers: int | None = None,
                 holding: Path | None = None, purging: bool = False, site_url: str | None = None):
        self.conn = conn
        # Where people reach the published tree (WHEELWRIGHT_SITE_URL): absolute URLs in the commands
        # a Pi user copies, the project JSON and the sitemaps. Unset, pages fill in their own origin.
        self.site_url = site_url.rstrip("/") if site_url else None
        self.index_url = f"{self.site_url}/simple/" if self.site_url else None
        self.base_url = f"{self.site_url}/" if self.site_url else None  # what the Atom feeds resolve against
        self.holding = str(holding if holding is not None else holding_for(output))
        self.purging = purging
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.output = output
        self.full = full
        self.pypi_url = pypi_url.rstrip("/")
        self.progress = progress
        self.tree = StagedTree(output)
        self.root = str(output)
        self.simple = os.path.join(self.root, "simple")
        self.projects = os.path.join(self.root, "project")
        self.target_list: list[status.TargetInfo] = []   # every target, known or retired
        self.targets: dict[str, status.TargetInfo] = {}
        self.downloads_through: str | None = None
        self.targets_changed = False           # since the last publish (see TARGETS_SEEN)
        self.root_dirty = full
        self.search_dirty = full
        self.touched_builds = False
        self.seen: set[str] = set()            # full mode: every catalog package
        self.seen_visible: set[str] = set()    # full mode: ... and the visible ones
        self.looked_at: list[str] = []         # every package this run handled
        self.links: set[str] = set()           # full mode: every alias symlink that should exist
        self.removals: dict[str, list[str]] = {}  # package -> tree paths to unlink after its page
        # Full mode: the names simple/ and project/ held when the run began, so that a name in neither
        # costs no look at the disk (a first publish asks about a million names that do not exist).
        # Only the publisher makes entries in project/; a folder the build side makes in simple/
        # meanwhile is found when the staged one is renamed into place (see index_tree).
        self.existing: tuple[frozenset[str], frozenset[str]] | None = None
        self._rows: list | None = None         # publish_root's rows, when this run read them
        self.now = time.time()

    # -- the run -------------------------------------------------------------------------------------

    def run(self) -> PublishResult:
        started = time.perf_counter()
        try:
            self.output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PublishError(f"cannot create the output folder {self.output}: {exc}") from exc
        self.conn.commit()  # start from a clean transaction state: the snapshot below must be first
        with _publish_lock(self.conn):
            with self.conn.transaction():
                self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                mark = self._mark()
                upto = self.conn.execute("SELECT coalesce(max(change_seq), 0) FROM packages").fetchone()[0]
                result = PublishResult(full=self.full, mark_from=mark, mark_to=max(mark, upto))
                try:
                    if self.full:
                        self.existing = (_names_in(self.simple), _names_in(self.projects))
                    self._read_targets()
                    # Every project page has a row per target: a target enabled, retired or moved in
                    # the order changes them all (the first publish of this layout too).
                    every = self.full or self.targets_changed
                    if self.targets_changed and not self.full:
                        log.info("the build targets changed since the last publish: every package is "
                                 "published again")
                    self._publish_packages(-1 if every else mark, upto, result)
                    self.tree.commit()  # no staged folder may look like a stray to the sweep
                    if self.full:
                        self._sweep_strays()
                    self._write_root(result)
                    if self.full or self.touched_builds or not os.path.exists(
                            os.path.join(self.root, feeds.SITE_FEED)):
                        result.feeds_changed = self._write_site_feed()
                    self.tree.commit()
                    self._write_site(result)
                    self.tree.write(os.path.join(self.root, TARGETS_SEEN), self._targets_fingerprint())
                    self.tree.commit()
                except BaseException:
                    self.tree.abandon()
                    raise
            result.logs_scanned = self._scan_logs(result)
            if self._reports_due(result):
                with self.conn.transaction():
                    reports.write_reports(self.conn, self.tree)
                result.reports_written = True
            self.tree.finish()  # every file and rename is durable before the mark moves
            result.removals = self.removals
            with self.conn.transaction():
                set_consumer_mark(self.conn, CONSUMER, result.mark_to)
                if self.purging:  # the CDN's debt moves with the mark: a crash cannot lose it
                    from wheelwright.publish import cdn
                    cdn.owe(self.conn, result.purge_keys(),
                            {cdn.project_key(p): paths for p, paths in self.removals.items()})
            if not self.purging and self.removals:
                # No edge to wait for: the pages that listed these files are durable, now they go.
                for package, paths in self.removals.items():
                    remove_unlisted(self.tree, self.root, paths)
                self.tree.finish()
        result.files_written = self.tree.written
        result.files_unchanged = self.tree.unchanged
        result.files_removed = self.tree.removed
        result.seconds = time.perf_counter() - started
        log.info("%s", result.summary())
        return result

    def _mark(self) -> int:
        return consumer_mark(self.conn, CONSUMER)

    def _read_targets(self) -> None:
        """The targets as the pages show them, and whether they changed since the last publish."""
        self.target_list = status.sort_targets(
            status.TargetInfo(*row) for row in self.conn.execute(db.query("publish_targets")))
        self.targets = {t.name: t for t in self.target_list}
        self.targets_changed = read_bytes(os.path.join(self.root, TARGETS_SEEN)) != self._targets_fingerprint()
        through = self.conn.execute("SELECT through FROM download_counts_state").fetchone()
        self.downloads_through = through[0].isoformat() if through else None

    def _targets_fingerprint(self) -> bytes:
        """What of the targets the project pages show (pausing one changes no page: queue.json says it)."""
        return json_bytes([[t.name, t.abi, t.platform, t.distro, t.position, t.enabled] for t in self.target_list])

    def _publish_packages(self, after: int, upto: int, result: PublishResult) -> None:
        total = self.conn.execute("SELECT count(*) FROM packages WHERE change_seq > %s AND change_seq <= %s",
                                  (after, upto)).fetchone()[0]
        if total > 1000:
            log.info("publishing %d packages", total)
        workers = self.workers if total >= _PARALLEL_FROM else 1
        with self.conn.cursor(name="publish_projects") as cur:
            cur.itersize = _FETCH
            # The nested rows arrive as JSON text and are parsed where the package is rendered (in a
            # worker, when forked): this process only streams, and it shares the CPUs with them.
            cur.adapters.register_loader("json", TextLoader)
            cur.execute(db.query("publish_projects"), {"after": after, "upto": upto})
            if workers > 1:
                # Rendering and writing are per package and independent: share them out to forked
                # workers (each with its own staging), while this process streams rows from the catalog.
                global _FORKED
                _FORKED = self
                # Workers never wait for the disk: each hands its staged batch back, and this process
                # makes it durable and renames it into place while they render the next ones.
                self.tree.many_writers = True
                with multiprocessing.get_context("fork").Pool(workers) as pool:
                    for batch in pool.imap_unordered(_publish_batch_in_worker, _batches(cur)):
                        self._merge(batch, result, total)
                        self.tree.adopt(batch.staged)
                        self.tree.commit_if_full()
                _FORKED = None
            else:
                for rows in _batches(cur):
                    self._merge(self._publish_batch(rows), result, total)

    def _publish_batch(self, rows) -> "_Batch":
        """Publish some packages; a worker process only stages them, for the parent to commit."""
        tree = self.tree
        in_worker = _FORKED is self
        counters = (tree.written, tree.unchanged, tree.removed)
        batch = _Batch()
        for row in rows:
            batch.packages += 1
            package = self._catalog_package(row)
            if package is None:
                batch.skipped.append(row[0])
                continue
            if self._publish_one(package):
                batch.changed.append(package.package)
            if not in_worker:
                tree.commit_if_full()
            if package.visible:
                batch.published += 1
            else:
                batch.removed += 1
        batch.root_dirty, batch.touched_builds = self.root_dirty, self.touched_builds
        batch.search_dirty = self.search_dirty
        batch.looked_at, self.looked_at = self.looked_at, []
        batch.seen, self.seen = self.seen, set()
        batch.seen_visible, self.seen_visible = self.seen_visible, set()
        batch.links, self.links = self.links, set()
        batch.removals, self.removals = self.removals, {}
        if in_worker:
            batch.staged = tree.hand_over()
            batch.files = (tree.written - counters[0], tree.unchanged - counters[1], tree.removed - counters[2])
        return batch

    def _merge(self, batch: "_Batch", result: PublishResult, total: int) -> None:
        before = result.packages
        result.packages += batch.packages
        result.published += batch.published
        result.removed += batch.removed
        result.changed.extend(batch.changed)
        result.skipped.extend(batch.skipped)
        self.root_dirty |= batch.root_dirty
        self.search_dirty |= batch.search_dirty
        self.touched_builds |= batch.touched_builds
        self.looked_at.extend(batch.looked_at)
        self.seen |= batch.seen
        self.seen_visible |= batch.seen_visible
        self.links |= batch.links
        for package, paths in batch.removals.items():
            self.removals.setdefault(package, []).extend(paths)
        if batch.files:
            self.tree.written += batch.files[0]
            self.tree.unchanged += batch.files[1]
            self.tree.removed += batch.files[2]
        if result.packages // 10000 != before // 10000:
            log.info("published %d of %d packages", result.packages, total)
        if self.progress:
            self.progress(result.packages, total)

    def _catalog_package(self, row) -> _CatalogPackage | None:
        (package, display, visible, present, summary, skip_reason, aliases, release_rows, build_rows,
         wheel_rows, downloads, build_settings, takedown) = row
        if not is_canonical(package):
            log.warning("package name %r is not a safe canonical name: not published", package)
            return None
        release_rows, build_rows, wheel_rows, downloads = (
            _decode_json(rows) if rows else None for rows in (release_rows, build_rows, wheel_rows, downloads))
        builds_by_version: dict[str, list[Build]] = defaultdict(list)
        build_of: dict[int, Build] = {}
        logs = set()
        for b in build_rows or ():
            build = Build(build_id=b[0], version=b[1], abi=b[2], status=b[3], builder=b[4],
                          duration=b[5], log_path=b[6], reason=b[7], target=b[8], imported_by=b[9],
                          finished_at=b[10])
            builds_by_version[build.version].append(build)
            build_of[build.build_id] = build
            if build.log_path:
                logs.add(build.log_path)
        files_by_version: dict[str, list[WheelFile]] = defaultdict(list)
        listed = set()
        for w in wheel_rows or ():
            filename = w[0]
            listed.add(filename)
            listed.add(filename + ".metadata")
            build = build_of.get(w[1])
            deps = w[10] or ()
            target = self.targets.get(build.target) if build else None
            distro = target.distro if target else ""
            files_by_version[w[2]].append(WheelFile(
                filename=filename, build_id=w[1], version=w[2], size=w[3], sha256=w[4],
                builder_abi=build.abi if build else "", target=build.target if build else "",
                abi_tag=w[5], platform_tag=w[6], requires_python=w[7],
                metadata_sha256=w[8], uploaded=w[9],
                apt_dependencies=reports.needed_apt((d for tool, d in deps if tool == "apt"), distro),
                unowned=tuple(d for tool, d in deps if tool == "unowned"),
                requires_dist=tuple(w[11]) if w[11] is not None else None, distro=distro,
                glibc_floor=w[12], tested=pages.tested_sentence(w[14], w[13]), test_detail=w[15]))
        releases = []
        for r in release_rows or ():
            release = Release(
                version=r[0], released=r[1], prerelease=r[2], yanked=r[3], yanked_reason=r[4],
                requires_python=r[5], skip_reason=r[6], files=files_by_version.get(r[0], []),
                builds=builds_by_version.get(r[0], []), has_sdist=r[7],
                requires_dist=tuple(r[8]) if r[8] is not None else None, in_scope=tuple(r[9] or ()),
                downloads=Downloads(r[10] or 0, r[11] or 0), removed_reason=r[12])
            release.targets = status.target_rows(release, self.target_list, project_skip=skip_reason)
            releases.append(release)
        # Files of quarantined releases are listed by the catalog but not shown: they wait out of the tree.
        shown = {r[0] for r in release_rows or ()}
        hidden = {name for version, files in files_by_version.items() if version not in shown
                  for f in files for name in (f.filename, f.filename + ".metadata")}
        versions = shown | files_by_version.keys() | builds_by_version.keys()
        takedown = _decode_json(takedown) if takedown else None
        project = Project(package=package, display_name=display, summary=summary,
                          skip_reason=skip_reason,
                          build_settings=_decode_json(build_settings) if build_settings else None,
                          aliases=tuple(a for a in aliases if safe_alias(a, package)),
                          releases=releases,
                          downloads=Downloads(*(int(n or 0) for n in downloads)) if downloads else Downloads(),
                          downloads_through=self.downloads_through,
                          takedown=pages.Takedown(*takedown) if takedown else None)
        return _CatalogPackage(package=package, visible=visible, present=present, project=project,
                               listed=listed, versions=versions, logs=logs,
                               has_builds=bool(build_rows), hidden=hidden, removed=takedown is not None,
                               removed_versions={_normal_version(r.version) for r in releases
                                                 if r.removed_reason})

    # -- one package ---------------------------------------------------------------------------------

    def _publish_one(self, pkg: _CatalogPackage) -> bool:
        """Bring one package's part of the tree in line with the catalog; True if anything changed."""
        name = pkg.package
        self.looked_at.append(name)
        if self.full:
            self.seen.add(name)
            if pkg.visible:
                self.seen_visible.add(name)
        before = self.tree.touched
        join = os.path.join
        simple_dir = self.simple + "/" + name
        project_dir = self.projects + "/" + name
        in_simple = in_project = True
        if self.existing is not None:
            in_simple, in_project = name in self.existing[0], name in self.existing[1]
        old = _Published.read(project_dir + "/json/index.json") if in_project else None
        if pkg.has_builds or (old and old.logs):
            self.touched_builds = True

        if in_simple:
            self._clean_simple_dir(pkg)
        quarantined = pkg.present and not pkg.visible
        self._hold_back(pkg, pkg.listed if quarantined else pkg.hidden)
        if pkg.visible:
            p = pkg.project
            if (old is None or old.name != p.display_name or old.summary != (p.summary or None)
                    or old.removed != pkg.removed):
                self.root_dirty = True
            elif old.downloads != (p.downloads.last_30, p.downloads.total):
                self.search_dirty = True   # packages.json carries the figures; the simple root does not
            # A folder that does not exist yet is built whole under a hidden name and renamed into
            # place at the next commit (see index_tree): all of its pages are written right here.
            write = self.tree.write_in
            if pkg.removed:  # taken down: its simple pages answer 404, as for a project we never had
                if in_simple:
                    for page in _PAGES:
                        self.tree.remove(join(simple_dir, page))
                    self.tree.remove_empty_dir(simple_dir)
            else:
                simple_folder = self.tree.stage_dir(simple_dir, new=not in_simple)
                write(simple_folder, "index.html", pages.simple_project_html(p))
                write(simple_folder, "index.json", pages.simple_project_json(p))
            project_folder = self.tree.stage_dir(project_dir, new=not in_project)
            write(project_folder, "index.html", pages.project_html(p, self.pypi_url, self.index_url))
            write(project_folder, "feed.atom", self._project_feed(p))
            write(project_folder + "/json", "index.json", pages.project_json(p, self.pypi_url, self.site_url))
            for alias in p.aliases:
                self.tree.symlink(join(self.projects, alias), name)
                if self.full:
                    self.links.add(alias)
            for alias in set(old.aliases if old else ()) - set(p.aliases):
                self._remove_link(alias, name)
        else:
            if old is not None:
                self.root_dirty = True
            for alias in set(old.aliases if old else ()) | set(pkg.project.aliases):
                self._remove_link(alias, name)
            if quarantined:  # PEP 792: its simple pages say so and list nothing
                simple_folder = self.tree.stage_dir(simple_dir, new=not in_simple)
                self.tree.write_in(simple_folder, "index.html",
                                   pages.simple_status_html(pkg.project.display_name, "quarantined"))
                self.tree.write_in(simple_folder, "index.json", pages.simple_status_json(name, "quarantined"))
            elif in_simple:
                for page in _PAGES:
                    self.tree.remove(join(simple_dir, page))
                self.tree.remove_empty_dir(simple_dir)
            if in_project:
                self.tree.remove_tree(project_dir)
        for path in set(old.logs if old else ()) - pkg.logs:
            if build_id_for_log(path) is not None and os.path.lexists(join(self.root, path)):
                self._remove_later(name, path)
        return self.tree.touched != before or name in self.removals

    def _hold_back(self, pkg: _CatalogPackage, hold: set[str]) -> None:
        """Move the files in ``hold`` out of simple/<package>/ into the holding area, and the held files
        that may be served again back in; forget held files the catalog no longer lists."""
        name = pkg.package
        simple_dir = os.path.join(self.simple, name)
        held_dir = os.path.join(self.holding, name)
        moved = set()
        for filename in sorted(hold):
            source = os.path.join(simple_dir, filename)
            if os.path.isfile(source) and not os.path.islink(source):
                _move(source, os.path.join(held_dir, filename))
                log.info("holding %s/%s back: its project or release is quarantined", name, filename)
                moved |= {simple_dir, held_dir}
        try:
            held = os.listdir(held_dir)
        except (FileNotFoundError, NotADirectoryError):
            held = []
        for filename in sorted(held):
            path = os.path.join(held_dir, filename)
            if filename in hold:
                continue
            if pkg.present and filename in pkg.listed and not os.path.lexists(os.path.join(simple_dir, filename)):
                self.tree.ensure_dir(simple_dir)
                _move(path, os.path.join(simple_dir, filename))
                log.info("serving %s/%s again: its quarantine cleared", name, filename)
            else:
                os.unlink(path)  # the catalog forgot it (or it is in the tree already)
            moved |= {simple_dir, held_dir}
        if held and not hold:
            try:
                os.rmdir(held_dir)
            except OSError:
                pass
        for folder in moved:  # rare: make the renames durable at once rather than track them
            try:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if moved:
            self.tree.touched += 1

    def _remove_link(self, alias: str, name: str) -> None:
        """Remove project/<alias> if it is our symlink to ``name`` (never a real page or another link)."""
        if not safe_alias(alias, name):
            return
        path = os.path.join(self.projects, alias)
        try:
            if os.readlink(path) == name:
                self.tree.remove(path)
        except OSError:
            pass

    def _clean_simple_dir(self, pkg: _CatalogPackage) -> None:
        """Remove what the catalog no longer lists from simple/<package>/ (see the module docstring)."""
        folder = os.path.join(self.simple, pkg.package)
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            name = entry.name
            if name in _PAGES or name in pkg.listed:
                continue
            if is_temp(name):
                self.tree.remove(entry.path)  # left by a killed run; we hold the publish lock
                continue
            if not entry.is_file(follow_symlinks=False) and not entry.is_symlink():
                continue
            if pkg.present and not pkg.removed and not self._forgotten(name, pkg, entry):
                continue
            log.info("removing %s/%s once no page lists it: the catalog no longer does", pkg.package, name)
            self._remove_later(pkg.package, f"simple/{pkg.package}/{name}")

    def _remove_later(self, package: str, path: str) -> None:
        """Unlink ``path`` (relative to the tree) only after the pages of ``package`` that listed it are
        replaced (and purged at the edge, when there is one): pip must never follow a link to a 404."""
        self.removals.setdefault(package, []).append(path)

    def _forgotten(self, filename: str, pkg: _CatalogPackage, entry: os.DirEntry) -> bool:
        wheel = filename.removesuffix(".metadata")
        try:
            _name, version, _build, _tags = parse_wheel_filename(wheel)
            if str(version) not in {_normal_version(v) for v in pkg.versions}:
                return True  # its release is gone
            if str(version) in pkg.removed_versions:
                return True  # an operator took its release down: no grace
        except (InvalidWheelFilename, InvalidVersion):
            pass
        try:
            return self.now - entry.stat(follow_symlinks=False).st_mtime > GRACE_SECONDS
        except FileNotFoundError:
            return False

    def _project_feed(self, p: Project) -> bytes:
        failures = sorted((feeds.Failure(b.build_id, p.package, p.display_name, r.version, b.target or b.abi,
                                         b.reason, b.finished_at, b.log_path)
                           for r in p.releases for b in r.builds if b.status == "failure" and b.finished_at),
                          key=lambda f: (f.finished_at, f.build_id), reverse=True)
        return feeds.project_feed(p.package, p.display_name, failures, base_url=self.base_url,
                                  updated=p.releases[0].released if p.releases else None)

    # -- the root, strays, reports -------------------------------------------------------------------

    def _write_site_feed(self) -> bool:
        """feeds/failures.atom, from the latest failures of every published project; whether it changed."""
        rows = self.conn.execute(db.query("publish_failures_feed"), {"limit": feeds.SITE_ENTRIES}).fetchall()
        failures = [feeds.Failure(*row) for row in rows if is_canonical(row[1])]
        return self.tree.write(os.path.join(self.root, feeds.SITE_FEED),
                               feeds.site_feed(failures, base_url=self.base_url))

    def _write_root(self, result: PublishResult) -> None:
        """The root pages when the package list changed, packages.json when it or a download figure
        did (``self._rows``: the rows they were made from, for the search shards after them)."""
        self._rows = None
        missing = not os.path.exists(os.path.join(self.simple, "index.json"))
        if not (self.root_dirty or self.search_dirty or missing):
            return
        rows = self.conn.execute(db.query("publish_root")).fetchall()
        self._rows = rows = [row for row in rows if is_canonical(row[0])]
        if self.root_dirty or missing:
            names = [(canon, display) for canon, display, *_ in rows]
            html = self.tree.write(os.path.join(self.simple, "index.html"), pages.simple_root_html(names))
            json_ = self.tree.write(os.path.join(self.simple, "index.json"), pages.simple_root_json(names))
            result.root_changed = html or json_
            result.root_written = True
        result.search_changed = self.tree.write(os.path.join(self.root, "packages.json"), pages.packages_json(rows))

    def _write_site(self, result: PublishResult) -> None:
        """The pages around the project pages (see :mod:`wheelwright.publish.site`), each when due."""
        root = self.root
        targets = [{"name": t.name, "abi": t.abi, "platform": t.platform, "distro": t.distro}
                   for t in self.target_list if t.enabled]
        result.site_changed |= site.write_static(self.tree, self.index_url, targets)
        searched = os.path.join(root, "search", "index.json")
        if self.full or self._search_due(searched):
            rows = self._rows if self._rows is not None else [
                row for row in self.conn.execute(db.query("publish_root")) if is_canonical(row[0])]
            result.search_changed |= site.write_search(self.tree, [(c, d, n) for c, d, _s, n, _t in rows])
            result.site_changed |= site.write_sitemaps(self.tree, self.site_url, [c for c, *_ in rows])
        busy = bool(self.looked_at) or self.full
        forced = self.full or self.targets_changed
        home = os.path.join(root, "index.html")
        if forced or not os.path.exists(home) or (busy and site.due(home, site.HOME_INTERVAL, self.now)):
            data = site.home_data(self.conn)
            result.site_changed |= self.tree.write(home, site.home_html(data, self.index_url))
        queue = os.path.join(root, "queue.json")
        if forced or not os.path.exists(queue) or (busy and site.due(queue, site.QUEUE_INTERVAL, self.now)):
            result.queue_changed = self.tree.write(queue, json_bytes(site.queue_data(self.conn)))

    def _search_due(self, searched: str) -> bool:
        """The search shards follow packages.json, at most every SEARCH_INTERVAL seconds."""
        try:
            shards = os.stat(searched).st_mtime
        except FileNotFoundError:
            return True
        try:
            listed = os.stat(os.path.join(self.root, "packages.json")).st_mtime
        except FileNotFoundError:
            return False
        return listed > shards and self.now - shards >= site.SEARCH_INTERVAL

    def _sweep_strays(self) -> None:
        """Full mode: remove what no catalog package accounts for."""
        for entry in _scandir(self.simple):
            if entry.name in _PAGES:
                continue
            if entry.name not in self.seen:
                if entry.is_dir(follow_symlinks=False) and is_canonical(entry.name):
                    self._clean_simple_dir(_CatalogPackage(
                        package=entry.name, visible=False, present=False, project=None, listed=set(),
                        versions=set(), logs=set(), has_builds=False))
                    for page in _PAGES:
                        self.tree.remove(os.path.join(entry.path, page))
                    self.tree.remove_empty_dir(entry.path)
                else:
                    log.info("removing stray %s", entry.path)
                    self.tree.remove(entry.path)
        for entry in _scandir(self.projects):
            if entry.is_symlink():
                if entry.name in self.links:
                    continue
            elif entry.name in self.seen_visible:
                continue
            log.info("removing stray %s", entry.path)
            self.tree.remove_tree(entry.path)
        builds = {row[0] for row in self.conn.execute("SELECT build_id FROM builds")}
        logs = os.path.join(self.root, "logs")
        for folder, _dirs, files in os.walk(logs):
            for name in files:
                path = os.path.join(folder, name)
                build_id = build_id_for_log(os.path.relpath(path, self.root))
                if build_id in builds:
                    continue
                if build_id is None or self.now - os.lstat(path).st_mtime > GRACE_SECONDS:
                    log.info("removing stray log %s", path)
                    self.tree.remove(path)
        for entry in _scandir(self.root):
            if is_temp(entry.name):
                self.tree.remove(entry.path)

    def _scan_logs(self, result: PublishResult) -> int:
        packages = None if self.full else self.looked_at
        if packages is not None and not self.touched_builds:
            return 0
        with self.conn.transaction():
            return reports.scan_failed_logs(self.conn, self.output, packages)

    def _reports_due(self, result: PublishResult) -> bool:
        if self.full:
            return True
        if not (self.touched_builds or result.logs_scanned):
            return False
        try:
            age = self.now - os.stat(os.path.join(self.root, "reports", "index.html")).st_mtime
        except FileNotFoundError:
            return True
        return age > REPORT_INTERVAL_SECONDS


_REMOVABLE = re.compile(rf"simple/({CANONICAL_PATTERN})/([^/.][^/]*)\Z")


def _listed(root: str, package: str) -> set[str]:
    """Tree paths the published pages of ``package`` link to: its simple page's files (and their
    ``.metadata``) and its project JSON's build logs."""
    listed = set()
    raw = read_bytes(os.path.join(root, "simple", package, "index.json"))
    try:
        for f in json.loads(raw).get("files", ()) if raw else ():
            listed.add(f"simple/{package}/{f['filename']}")
            listed.add(f"simple/{package}/{f['filename']}.metadata")
    except (ValueError, TypeError, AttributeError, KeyError):
        pass
    old = _Published.read(os.path.join(root, "project", package, "json", "index.json"))
    listed.update(old.logs if old else ())
    return listed


def remove_unlisted(tree: StagedTree, root: str, paths: list[str]) -> int:
    """Unlink the tree paths (files the catalog forgot) that no published page lists any more, and a
    package's simple folder once it holds nothing; returns how many files went. The caller holds the
    publish lock."""
    removed = 0
    listed: dict[str, set[str]] = {}
    folders = set()
    for path in paths:
        m = _REMOVABLE.match(path)
        if m:
            package = m[1]
            folders.add(package)
        elif build_id_for_log(path) is not None:
            package = None
        else:
            log.warning("not removing %r: not a path the publisher removes", path)
            continue
        if package is not None:
            if package not in listed:
                listed[package] = _listed(root, package)
            if path in listed[package]:
                continue
        if tree.remove(os.path.join(root, path)):
            removed += 1
    for package in folders:
        folder = os.path.join(root, "simple", package)
        if not any(os.path.exists(os.path.join(folder, page)) for page in _PAGES):
            tree.remove_empty_dir(folder)
    return removed


def remover(conn: psycopg.Connection, output: Path) -> Callable[[str, list[str]], int]:
    """For the CDN purger: unlink what a purged key allowed (under the publish lock), durably."""
    def remove(_key: str, paths: list[str]) -> int:
        tree = StagedTree(output)
        with _publish_lock(conn):
            removed = remove_unlisted(tree, str(output), paths)
            tree.finish()
        return removed
    return remove


def _batches(cursor):
    batch = []
    for row in cursor:
        batch.append(row)
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _publish_batch_in_worker(rows) -> _Batch:
    return _FORKED._publish_batch(rows)


def _names_in(folder: str) -> frozenset[str]:
    try:
        return frozenset(os.listdir(folder))
    except FileNotFoundError:
        return frozenset()


def _scandir(path: str) -> list[os.DirEntry]:
    try:
        return list(os.scandir(path))
    except FileNotFoundError:
        return []


def _move(source: str, destination: str) -> None:
    """Rename ``source`` to ``destination`` (made durable by the caller); copy across file systems."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    try:
        os.replace(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = os.path.join(os.path.dirname(destination), ".ww-move." + os.path.basename(destination))
        shutil.copyfile(source, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, destination)
        os.unlink(source)


def _normal_version(version: str) -> str:
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


@contextmanager
def _publish_lock(conn: psycopg.Connection):
    """One publisher per catalog at a time (the DAG, the CLI and a --full may overlap)."""
    with conn.transaction():
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (_PUBLISH_LOCK,)).fetchone()[0]
    if not got:
        log.info("another publisher holds the lock; waiting for it")
        with conn.transaction():
            conn.execute("SELECT pg_advisory_lock(%s)", (_PUBLISH_LOCK,))
    try:
        yield
    finally:
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_unlock(%s)", (_PUBLISH_LOCK,))
        except psycopg.Error:  # the connection died: the server released the lock with it
            pass


def publish(conn: psycopg.Connection, output: Path, *, pypi_url: str = "https://pypi.org",
            full: bool = False,
            progress: Callable[[int, int], None] | None = None,
            workers: int | None = None, holding: Path | None = None,
            purging: bool = False, site_url: str | None = None) -> PublishResult:
    """Bring the tree at ``output`` in line with the catalog (see the module docstring).

    Incremental by default: only packages changed since the last run. ``full`` re-renders every
    package and sweeps strays. The connection's open transaction, if any, is committed first.
    ``pypi_url`` is where project pages link to PyPI; the CLI and the DAG both publish through
    :func:`wheelwright.publish.cdn.publish_and_purge`, which passes the configured one, so the same
    catalog renders the same bytes whoever publishes. ``holding`` is where files of quarantined
    projects wait (default: :func:`holding_for` the output). ``purging``: a CDN is in front; the purges
    this run owes are recorded with its mark and files the catalog forgot are left for
    :func:`wheelwright.publish.cdn.deliver` to unlink once the edge forgot the pages that listed them.
    Without a CDN they go as soon as those pages are replaced. ``site_url``: where people reach the
    tree (``WHEELWRIGHT_SITE_URL``), for absolute URLs (install commands, sitemaps).
    """
    try:
        return Publisher(conn, Path(output), full=full, pypi_url=pypi_url, progress=progress,
                         workers=workers, holding=holding, purging=purging, site_url=site_url).run()
    except psycopg.Error as exc:
        raise CatalogError(f"publishing failed on the catalog: {exc}".strip()) from exc


def progress_to(stream, *, every: float = 0.05) -> Callable[[int, int], None]:
    """A progress callback for the CLI: one line per ``every`` of a run of more than 10,000 packages."""
    shown = [-1.0]

    def report(done: int, total: int) -> None:
        if total <= 10_000:
            return
        share = done / total
        if share - shown[0] >= every or done == total:
            shown[0] = share
            print(f"published {done:,} of {total:,} packages ({share:.0%})", file=stream, flush=True)

    return report
