"""What goes on each page of the static index: pure functions from plain data to bytes.

This room owns the formats, and nothing else: the simple repository pages pip reads (PEP 503 HTML and
PEP 691 JSON, with the PEP 592 yank flags, PEP 658/714 core-metadata hints and PEP 700 versions, sizes
and upload times), the project page people read and its JSON twin, the root lists and ``packages.json``.
A project that offers no files because of its status (PEP 792: quarantined on PyPI) gets simple pages
that say so and list nothing. It never touches the catalog or the disk, so every format is tested
exhaustively from literals, and a page is a function of its data alone: publishing the same data twice
gives the same bytes, which is what lets the writer skip files that did not change.

A project page is the piwheels project page and more: for each release, a row per target saying where
the release stands there (:mod:`wheelwright.publish.status` decides), with its files, apt dependencies
and logs; above them, the pip and uv lines a Pi user copies, the ``sudo apt install`` line and the pip
dependencies of the newest stable release, and the download figures. The data model below is what the
writer fills in; a page's new fact is one field of it (``Project.build_settings`` waits for the
operator's per-package settings). Things that change far more often than a page (a queued release's
position) are not on it: the page's script reads them from ``queue.json``.

Everything here that came from PyPI (names, summaries, versions, reasons, Requires-Python,
Requires-Dist) is hostile input and is escaped where it lands. The simple pages sit on the hot path
(every package, every full publish) and are built from strings with :func:`html.escape`, and so is the
project page people read, inside the frame of ``templates/base.html``, which every page of the site
shares (:mod:`wheelwright.publish.site`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from html import escape
from urllib.parse import quote

import jinja2
import msgspec


REPOSITORY_VERSION = "1.1"
STATUS_REPOSITORY_VERSION = "1.4"   # PEP 792 project status: pages that carry one say so
SIMPLE_JSON_TYPE = "application/vnd.pypi.simple.v1+json"


@dataclass(slots=True)
class WheelFile:
    """One published wheel, as the pages show it."""

    filename: str
    build_id: int
    version: str
    size: int
    sha256: str
    builder_abi: str               # the ABI of the build that made it (a pure wheel serves many)
    target: str                    # the name of the target that built it
    abi_tag: str
    platform_tag: str
    requires_python: str | None
    metadata_sha256: str | None    # PEP 658: the <wheel>.metadata beside it, when published
    uploaded: str                  # ISO 8601 UTC, "2024-05-01T12:00:00Z"
    apt_dependencies: tuple[str, ...] = ()   # what a user must install (preinstalled ones left out)
    unowned: tuple[str, ...] = ()            # libraries no apt package owns
    requires_dist: tuple[str, ...] | None = None  # its METADATA's Requires-Dist (None: not recorded)
    distro: str = ""                         # the distro of the target that built it
    glibc_floor: str | None = None           # the newest glibc its compiled code needs ("2.36")
    tested: str | None = None                # where its install test ran: "imports on bookworm armhf"
    test_detail: str | None = None           # what the import said, when it did not simply import

    @property
    def pure(self) -> bool:
        return self.abi_tag == "none" and self.platform_tag == "any"


@dataclass(slots=True)
class Build:
    build_id: int
    version: str
    abi: str
    status: str                    # building, success, failure, lost, retry
    builder: str | None
    duration: float | None         # seconds
    log_path: str | None           # relative to the tree: logs/NNNN/NNNN/NNNN.txt.gz
    reason: str | None
    target: str = ""               # the name of the target (by default its ABI)
    imported_by: str | None = None  # an operator imported its wheel by hand (`wheelwright import`)
    finished_at: str | None = None  # ISO 8601 UTC, once recorded


@dataclass(slots=True)
class Downloads:
    """Downloads from the access logs, in whole days to the date the figures were refreshed."""

    last_30: int = 0
    total: int = 0


@dataclass(slots=True)
class TargetStatus:
    """Where a release stands on one target (see :mod:`wheelwright.publish.status` for the states)."""

    target: str
    state: str
    detail: str | None = None      # the reason, or the earlier target a waiting release waits for
    build: Build | None = None     # the build the state comes from (its log, its duration)
    files: list[WheelFile] = field(default_factory=list)


@dataclass(slots=True)
class Release:
    version: str
    released: str                  # ISO 8601 UTC
    prerelease: bool
    yanked: bool
    yanked_reason: str | None
    requires_python: str | None
    skip_reason: str | None
    files: list[WheelFile] = field(default_factory=list)
    builds: list[Build] = field(default_factory=list)
    has_sdist: bool = True
    in_scope: tuple[str, ...] = () # targets whose queue may hold it (uploaded since, or backfilled)
    requires_dist: tuple[str, ...] | None = None  # PyPI's Requires-Dist (known for its newest only)
    downloads: Downloads = field(default_factory=Downloads)
    targets: list[TargetStatus] = field(default_factory=list)  # filled by status.target_rows
    removed_reason: str | None = None   # an operator took this release off the index

    def pip_dependencies(self) -> tuple[str, ...] | None:
        """What pip installs with it: its wheels' Requires-Dist (all of them, in order, once), else
        PyPI's; None when neither is known."""
        recorded = [f.requires_dist for f in sorted(self.files, key=lambda f: f.filename)
                    if f.requires_dist is not None]
        if recorded:
            return tuple(dict.fromkeys(r for rs in recorded for r in rs))
        return self.requires_dist

    def apt_by_distro(self) -> dict[str, tuple[str, ...]]:
        """The apt packages its wheels need, per distro of the target that built them."""
        out: dict[str, set[str]] = {}
        for f in self.files:
            if f.apt_dependencies:
                out.setdefault(f.distro or f.target or f.builder_abi, set()).update(f.apt_dependencies)
        return {distro: tuple(sorted(deps)) for distro, deps in sorted(out.items())}


@dataclass(slots=True, frozen=True)
class Takedown:
    """Why a project is off the index though it is on PyPI (`wheelwright remove`), and since when."""

    reason: str
    removed_at: str                # ISO 8601 UTC


@dataclass(slots=True)
class Project:
    """A visible package with its visible releases, newest first."""

    package: str                   # canonical name: the directory name
    display_name: str
    summary: str | None
    skip_reason: str | None
    aliases: tuple[str, ...] = ()  # other spellings that get a project/<alias> symlink
    releases: list[Release] = field(default_factory=list)
    downloads: Downloads = field(default_factory=Downloads)
    downloads_through: str | None = None   # "2024-05-01": the last whole day the figures cover
    build_settings: dict | None = None     # an operator's build settings for it (timeout, apt, env)
    takedown: Takedown | None = None  # an operator took the whole project off the index

    def files_oldest_first(self) -> list[tuple[Release, WheelFile]]:
        """The files of the simple page: by release (oldest first, as PyPI lists them), then name."""
        return [(release, f) for release in reversed(self.releases)
                for f in sorted(release.files, key=lambda f: f.filename)]

    def featured(self) -> Release | None:
        """The release the top of the page speaks for: the newest stable, unyanked one with files,
        else the newest with files, else the newest."""
        with_files = [r for r in self.releases if r.files]
        stable = [r for r in with_files if not r.prerelease and not r.yanked]
        return (stable or with_files or self.releases or [None])[0]


# -- simple repository API (PEP 503 / 691) ------------------------------------------------------------

_HTML_HEAD = (
    '<!DOCTYPE html>\n<html>\n  <head>\n'
    f'    <meta name="pypi:repository-version" content="{REPOSITORY_VERSION}">\n'
)


def _href(filename: str, sha256: str) -> str:
    return f"{quote(filename)}#sha256={sha256}"


def simple_project_html(project: Project) -> bytes:
    name = escape(project.display_name)
    out = [_HTML_HEAD, f"    <title>Links for {name}</title>\n  </head>\n  <body>\n",
           f"    <h1>Links for {name}</h1>\n"]
    for release, f in project.files_oldest_first():
        attrs = [f'href="{escape(_href(f.filename, f.sha256))}"']
        if f.requires_python:
            attrs.append(f'data-requires-python="{escape(f.requires_python)}"')
        if release.yanked:
            attrs.append(f'data-yanked="{escape(release.yanked_reason or "")}"')
        if f.metadata_sha256:
            attrs.append(f'data-core-metadata="sha256={f.metadata_sha256}"')
            attrs.append(f'data-dist-info-metadata="sha256={f.metadata_sha256}"')
        out.append(f'    <a {" ".join(attrs)}>{escape(f.filename)}</a><br>\n')
    out.append("  </body>\n</html>\n")
    return "".join(out).encode()


def json_bytes(data) -> bytes:
    """Compact UTF-8 JSON (msgspec: several times faster than the json module, on the hot path)."""
    return msgspec.json.encode(data)


def simple_project_json(project: Project) -> bytes:
    files = []
    for release, f in project.files_oldest_first():
        core = {"sha256": f.metadata_sha256} if f.metadata_sha256 else False
        entry = {
            "filename": f.filename,
            "url": quote(f.filename),
            "hashes": {"sha256": f.sha256},
            "size": f.size,
            "upload-time": f.uploaded,
            # PEP 691: a reason string, or true when yanked without one
            "yanked": (release.yanked_reason or True) if release.yanked else False,
            # PEP 714: only the new key in JSON. pip 22.3 to 23.1 fails hard on the old
            # "dist-info-metadata" there, and Raspberry Pi OS bookworm ships pip 23.0.1.
            "core-metadata": core,
        }
        if f.requires_python:  # optional in PEP 691, and a string where present
            entry["requires-python"] = f.requires_python
        files.append(entry)
    return json_bytes({
        "meta": {"api-version": REPOSITORY_VERSION},
        "name": project.package,
        "versions": [r.version for r in reversed(project.releases)],
        "files": files,
    })


def simple_status_html(display_name: str, status: str, reason: str | None = None) -> bytes:
    """The simple page of a project that offers no files because of its PEP 792 ``status``
    (``quarantined``): the status in a meta tag, and no links."""
    name = escape(display_name)
    out = ['<!DOCTYPE html>\n<html>\n  <head>\n',
           f'    <meta name="pypi:repository-version" content="{STATUS_REPOSITORY_VERSION}">\n',
           f'    <meta name="pypi:project-status" content="{escape(status)}">\n']
    if reason:
        out.append(f'    <meta name="pypi:project-status-reason" content="{escape(reason)}">\n')
    out.append(f"    <title>Links for {name}</title>\n  </head>\n  <body>\n"
               f"    <h1>Links for {name}</h1>\n  </body>\n</html>\n")
    return "".join(out).encode()


def simple_status_json(package: str, status: str, reason: str | None = None) -> bytes:
    """The PEP 691 twin of :func:`simple_status_html`: ``project-status``, no versions, no files."""
    project_status = {"status": status}
    if reason:
        project_status["reason"] = reason
    return json_bytes({
        "meta": {"api-version": STATUS_REPOSITORY_VERSION},
        "name": package,
        "project-status": project_status,
        "versions": [],
        "files": [],
    })


def simple_root_html(names: list[tuple[str, str]]) -> bytes:
    """The root list; ``names`` are (canonical, display name) pairs in the order to list them."""
    out = [_HTML_HEAD, "    <title>Simple index</title>\n  </head>\n  <body>\n"]
    out.extend(f'    <a href="{canon}/">{escape(display)}</a><br>\n' for canon, display in names)
    out.append("  </body>\n</html>\n")
    return "".join(out).encode()


def simple_root_json(names: list[tuple[str, str]]) -> bytes:
    return json_bytes({
        "meta": {"api-version": REPOSITORY_VERSION},
        "projects": [{"name": display} for _canon, display in names],
    })


def packages_json(rows) -> bytes:
    """The search index, in piwheels' shape so its clients work (``pkg, d_month, d_all, *_``), with
    ours after: ``[[canonical, downloads in 30 days, downloads in all, display name, summary], ...]``.
    ``rows`` are (canonical, display name, summary, last 30 days, all time); summary "" when unknown."""
    return json_bytes([[canon, last_30 or 0, total or 0, display, summary or ""]
                       for canon, display, summary, last_30, total in rows])


# -- project pages ------------------------------------------------------------------------------------

def _downloads(d: Downloads) -> dict:
    return {"last_30_days": d.last_30, "total": d.total}


def _target_json(t: TargetStatus) -> dict:
    b = t.build
    return {
        "target": t.target,
        "state": t.state,
        "reason": t.detail,
        "build_id": b.build_id if b else None,
        "log_url": f"/{b.log_path}" if b and b.log_path else None,
    }


def project_json(project: Project, pypi_url: str = "https://pypi.org", site_url: str | None = None) -> bytes:
    """The project JSON API: piwheels' fields, so its clients work, and ours beside them.

    piwheels': ``package``, ``summary``, ``pypi_url``, and per release ``released``, ``prerelease``,
    ``yanked``, ``skip_reason`` and ``files`` keyed by name (``file_url``, ``filehash``, ``filesize``,
    ``builder_abi``, ``file_abi_tag``, ``platform``, ``requires_python``, ``apt_dependencies``,
    ``pip_dependencies``). Ours: the display ``name``, ``url``, ``aliases``, ``downloads`` (and per
    release), ``build_settings``, and per release ``yanked_reason``, ``requires_python``,
    ``pip_dependencies``, ``apt_dependencies_by_distro``, ``targets`` (where it stands on each target)
    and ``builds`` (with their log URLs). ``aliases`` and the builds' log URLs are also what the next
    publish reads back to learn which symlinks and logs it made for this package.
    """
    releases = {}
    for r in project.releases:
        pip = r.pip_dependencies()
        releases[r.version] = {
            "released": r.released,
            "prerelease": r.prerelease,
            "yanked": r.yanked,
            "yanked_reason": r.yanked_reason,
            "requires_python": r.requires_python,
            "skip_reason": r.skip_reason or "",
            "pip_dependencies": list(pip) if pip is not None else None,
            "apt_dependencies_by_distro": {d: list(deps) for d, deps in r.apt_by_distro().items()},
            "downloads": _downloads(r.downloads),
            "removed_reason": r.removed_reason,
            "files": {
                f.filename: {
                    "file_url": f"/simple/{project.package}/{quote(f.filename)}",
                    "filehash": f.sha256,
                    "filesize": f.size,
                    "builder_abi": f.builder_abi,
                    "target": f.target,
                    "file_abi_tag": f.abi_tag,
                    "platform": f.platform_tag,
                    "requires_python": f.requires_python,
                    "apt_dependencies": list(f.apt_dependencies),
                    "pip_dependencies": list(f.requires_dist) if f.requires_dist is not None else None,
                    "unowned_libraries": list(f.unowned),
                    "uploaded": f.uploaded,
                    "glibc_floor": f.glibc_floor,
                    "tested": f.tested,
                    "test_detail": f.test_detail,
                } for f in sorted(r.files, key=lambda f: f.filename)
            },
            "targets": [_target_json(t) for t in r.targets],
            "builds": [
                {
                    "build_id": b.build_id,
                    "abi": b.abi,
                    "target": b.target,
                    "status": b.status,
                    "builder": b.builder,
                    "duration": b.duration,
                    "log_url": f"/{b.log_path}" if b.log_path else None,
                    "reason": b.reason,
                    "imported_by": b.imported_by,
                } for b in r.builds
            ],
        }
    return json_bytes({
        "package": project.package,
        "name": project.display_name,
        "summary": project.summary or "",
        "skip_reason": project.skip_reason or "",
        "pypi_url": f"{pypi_url}/project/{project.package}/",
        "url": f"{site_url.rstrip('/')}/project/{project.package}/" if site_url else None,
        "aliases": list(project.aliases),
        "downloads": {**_downloads(project.downloads), "through": project.downloads_through},
        "build_settings": project.build_settings,
        "removed": None if project.takedown is None else {
            "reason": project.takedown.reason, "removed_at": project.takedown.removed_at},
        "releases": releases,
    })


@lru_cache(maxsize=None)
def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("wheelwright.publish", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,
    )
    env.filters["num"] = lambda n: "–" if n is None else f"{n:,}"
    env.filters["size"] = human_size
    return env


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


@lru_cache(maxsize=None)
def template(name: str) -> jinja2.Template:
    return _templates().get_template(name)


@lru_cache(maxsize=None)
def page_frame(root: str, page: str) -> tuple[str, str, str]:
    """``base.html`` cut around its title and its body, for a page ``root`` away from the top of the
    site (``"../../"`` for a project page): every page shares one frame, one header and one style."""
    rendered = _templates().from_string(
        '{% extends "base.html" %}{% block title %}\0{% endblock %}{% block body %}\0{% endblock %}'
    ).render(root=root, page=page)
    head, middle, tail = rendered.split("\0")
    return head, middle, tail


# What a page says for each state of a release on a target (see wheelwright.publish.status).
STATE_WORDS = {
    "built": "built", "building": "building now", "retry": "will be tried again",
    "not-needed": "not needed", "failed": "failed", "skipped": "skipped", "no-sdist": "no sdist",
    "not-in-queue": "not queued", "waiting": "waiting", "queued": "queued",
}
OPEN_RELEASES = 10   # releases shown open on a project page; older ones fold away


# Where the site's own address goes when the publisher was not told it (WHEELWRIGHT_SITE_URL): the
# page's script puts its origin there (elements marked data-origin).
SITE_PLACEHOLDER = "https://this.index"


def install_lines(name: str, index_url: str | None) -> list[tuple[str, str]]:
    """(tool, command) lines a Pi user copies."""
    url = index_url or SITE_PLACEHOLDER + "/simple/"
    return [("pip", f"pip3 install {name} --extra-index-url {url}"),
            ("uv", f"uv pip install {name} --extra-index-url {url}")]


def _command(command: str, *, fill_origin: bool = False) -> str:
    """A command to copy; ``fill_origin``: the page puts its own origin for SITE_PLACEHOLDER."""
    origin = ' data-origin=""' if fill_origin else ""
    return f'<pre class="command"{origin}><code>{escape(command)}</code></pre>\n'


def project_html(project: Project, pypi_url: str = "https://pypi.org", index_url: str | None = None) -> bytes:
    """The page people read. Built from strings, not a template: it is written for every package on
    every full publish, and a jinja2 render cost five times the other three pages together.
    ``index_url``: our simple index as people reach it (``WHEELWRIGHT_SITE_URL`` + ``/simple/``)."""
    head, middle, tail = page_frame("../../", "project")
    name = escape(project.display_name)
    package = escape(project.package)
    out = [head, name, middle, f'<div class="project" data-package="{package}">\n<h1>{name}</h1>\n']
    if project.summary:
        out.append(f'<p class="summary">{escape(project.summary)}</p>\n')
    featured = project.featured()
    facts = []
    if featured is not None:
        facts.append(f'latest <a href="#v{escape(featured.version)}">{escape(featured.version)}</a>')
    d = project.downloads
    when = f' title="in whole days to {escape(project.downloads_through)}"' if project.downloads_through else ""
    facts.append(f'<span class="downloads"{when}><b>{d.last_30:,}</b> downloads in 30 days · '
                 f'<b>{d.total:,}</b> in all</span>')
    facts.append(f'<a href="{escape(pypi_url)}/project/{package}/">PyPI</a>')
    facts.append(f'<a href="../../simple/{package}/">simple index</a>')
    facts.append('<a href="json/">JSON</a>')
    facts.append('<a href="feed.atom" type="application/atom+xml">failed builds (Atom)</a>')
    out.append(f'<p class="facts">{" · ".join(facts)}</p>\n')
    if project.takedown is not None:
        out.append(f'<p class="takedown"><span class="badge removed">removed</span> taken off this index on '
                   f'{escape(project.takedown.removed_at[:10])}: {escape(project.takedown.reason)}. '
                   f'pip finds it on PyPI only.</p>\n')
    if project.skip_reason:
        out.append(f'<p class="notice"><span class="badge skipped">not built</span> '
                   f'{escape(project.skip_reason)}</p>\n')
    out.append('<section class="install">\n<h2>Install</h2>\n')
    for _tool, command in install_lines(project.display_name, index_url):
        out.append(_command(command, fill_origin=not index_url))
    out.append('<p class="muted">Or add the index once for every install: '
               '<a href="../../faq.html#pip-conf">/etc/pip.conf</a>, as Raspberry Pi OS does for piwheels.</p>\n')
    if featured is not None:
        apt = featured.apt_by_distro()
        if apt:
            out.append(f'<h3>System packages {escape(featured.version)} needs</h3>\n')
            for distro, deps in apt.items():
                label = f'<p class="muted">on {escape(distro)}:</p>\n' if len(apt) > 1 else ""
                out.append(label + _command("sudo apt install " + " ".join(deps)))
        pip = featured.pip_dependencies()
        if pip:
            out.append(f'<h3>Python packages {escape(featured.version)} needs</h3>\n<ul class="requires">\n')
            out.extend(f"  <li><code>{escape(r)}</code></li>\n" for r in pip)
            out.append("</ul>\n")
    if settings := settings_line(project.build_settings):
        out.append(f'<p class="muted settings">{escape(settings)}</p>\n')
    out.append("</section>\n<section>\n<h2>Releases</h2>\n")
    if not project.releases:
        out.append('<p class="muted">No releases.</p>\n')
    for i, release in enumerate(project.releases):
        if i == OPEN_RELEASES:
            out.append(f'<details class="older"><summary>{len(project.releases) - OPEN_RELEASES} older '
                       f'releases</summary>\n')
        _release_html(out, package, release)
    if len(project.releases) > OPEN_RELEASES:
        out.append("</details>\n")
    out.append("</section>\n</div>\n")
    out.append(tail)
    return "".join(out).encode()


TESTED = {"imports": "imports on {where}", "needs-a-pi": "built, not importable off a Pi (tested on {where})",
          "needs-dependencies": "loads on {where} up to its Python dependencies"}


def tested_sentence(result: str | None, where: str | None) -> str | None:
    """What a page says of a wheel's install test ("imports on bookworm armhf"); None: not tested."""
    return TESTED[result].format(where=where) if result in TESTED and where else None


def where_it_loads(f: WheelFile) -> list[str]:
    """The lines a page shows under a wheel: its glibc floor and its install test."""
    return [words for words in (f"glibc ≥ {f.glibc_floor}" if f.glibc_floor else None, f.tested) if words]


def settings_line(settings: dict | None) -> str | None:
    """The operator's build settings of a package, in one line; None when it has none."""
    if not settings:
        return None
    parts = []
    if settings.get("apt_packages"):
        parts.append("apt " + " ".join(settings["apt_packages"]))
    if settings.get("timeout"):
        parts.append(f"timeout {human_duration(settings['timeout'])}")
    if settings.get("environment"):
        parts.append("env " + " ".join(f"{k}={v}" for k, v in sorted(settings["environment"].items())))
    return f"build settings: {'; '.join(parts) or 'defaults'} (set by {settings.get('changed_by')})"


def _release_html(out: list[str], package: str, release: Release) -> None:
    version = escape(release.version)
    out.append(f'<div class="release" id="v{version}" data-version="{version}">\n  <h3>{version}')
    if release.yanked:
        out.append(f' <span class="badge yanked" title="{escape(release.yanked_reason or "")}">yanked</span>')
    if release.prerelease:
        out.append(' <span class="badge prerelease">pre-release</span>')
    if release.skip_reason:
        out.append(' <span class="badge skipped">skipped</span>')
    if release.removed_reason:
        out.append(' <span class="badge removed">removed</span>')
    out.append(f'</h3>\n  <p class="muted">released {escape(release.released[:10])}')
    if release.requires_python:
        out.append(f" · Requires-Python {escape(release.requires_python)}")
    if release.downloads.total:
        out.append(f" · {release.downloads.last_30:,} downloads in 30 days, {release.downloads.total:,} in all")
    if release.yanked and release.yanked_reason:
        out.append(f" · yanked: {escape(release.yanked_reason)}")
    if release.skip_reason:
        out.append(f" · not built: {escape(release.skip_reason)}")
    if release.removed_reason:
        out.append(f" · removed from this index: {escape(release.removed_reason)}")
    out.append("</p>\n")
    pip = release.pip_dependencies()
    if pip:
        out.append(f'  <p class="requires muted">requires {escape(", ".join(pip))}</p>\n')
    if release.targets:
        out.append('  <div class="scroll"><table class="targets">\n    <tr><th>target</th><th>status</th>'
                   "<th>file</th><th>size</th><th>apt dependencies</th><th>build</th></tr>\n")
        for row in release.targets:
            _target_html(out, package, release, row)
        out.append("  </table></div>\n")
    out.append("</div>\n")


def _build_cell(build: Build | None) -> str:
    if build is None:
        return ""
    log_link = f'<a href="../../{escape(build.log_path)}">log</a> ' if build.log_path else ""
    if build.imported_by:
        return f'{log_link}<span class="muted">imported by {escape(build.imported_by)}</span>'
    return f'{log_link}<span class="muted">{human_duration(build.duration)}</span>'


def _target_html(out: list[str], package: str, release: Release, row: TargetStatus) -> None:
    target = escape(row.target)
    state = row.state
    words = STATE_WORDS.get(state, state)
    if state == "waiting" and row.detail:
        detail = f"for {escape(row.detail)} to try it first"
    else:
        detail = escape(row.detail) if row.detail else ""
    queue = f' data-queue="{target}"' if state == "queued" else ""
    status = (f'<span class="state {state}">{escape(words)}</span>'
              + (f' <span class="detail">{detail}</span>' if detail else "")
              + ('<span class="position"></span>' if state == "queued" else ""))
    if not row.files:
        out.append(f'    <tr{queue}>\n      <td>{target}</td>\n      <td colspan="4">{status}</td>\n'
                   f"      <td>{_build_cell(row.build)}</td>\n    </tr>\n")
        return
    for f in row.files:
        deps = escape(" ".join(f.apt_dependencies))
        if f.unowned:
            deps += f' <span class="muted">(unowned: {escape(" ".join(f.unowned))})</span>'
        deps += "".join(f'<br><span class="muted">{escape(words)}</span>' for words in where_it_loads(f))
        out.append(f"    <tr>\n      <td>{target}</td>\n      <td>{status}</td>\n"
                   f'      <td class="file"><a href="../../simple/{package}/{escape(quote(f.filename))}">'
                   f"{escape(f.filename)}</a></td>\n"
                   f"      <td>{human_size(f.size)}</td>\n"
                   f"      <td>{deps}</td>\n"
                   f"      <td>{_build_cell(row.build)}</td>\n    </tr>\n")


def reports_html(apt_counts: dict[str, list[tuple[str, int]]], missing: list[dict],
                 generated: str, causes: list[dict] = ()) -> bytes:
    return template("reports.html").render(
        apt_counts=apt_counts, missing=missing, generated=generated, causes=causes, root="../", page="reports",
    ).encode()
