"""What goes on each page of the static index: pure functions from plain data to bytes.

This room owns the formats, and nothing else: the simple repository pages pip reads (PEP 503 HTML and
PEP 691 JSON, with the PEP 592 yank flags, PEP 658/714 core-metadata hints and PEP 700 versions, sizes
and upload times), the project page people read and its JSON twin, the root lists and ``packages.json``.
A project that offers no files because of its status (PEP 792: quarantined on PyPI) gets simple pages
that say so and list nothing. It never touches the catalog or the disk, so every format is tested exhaustively from literals, and a
page is a function of its data alone: publishing the same data twice gives the same bytes, which is
what lets the writer skip files that did not change.

Everything here that came from PyPI (names, summaries, versions, reasons, Requires-Python) is hostile
input and is escaped where it lands. The simple pages sit on the hot path (every package, every full
publish) and are built from strings with :func:`html.escape`, and so is the project page people read,
inside the frame of ``templates/base.html``, which the jinja2 report pages share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from html import escape
from urllib.parse import quote

import jinja2
import msgspec

from wheelwright.names import abi_order

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


@dataclass(slots=True)
class Build:
    build_id: int
    version: str
    abi: str
    status: str                    # building, success, failure, lost
    builder: str | None
    duration: float | None         # seconds
    log_path: str | None           # relative to the tree: logs/NNNN/NNNN/NNNN.txt.gz
    reason: str | None
    target: str = ""               # the name of the target (by default its ABI)
    imported_by: str | None = None  # an operator imported its wheel by hand (`wheelwright import`)
    finished_at: str | None = None  # ISO 8601 UTC, once recorded


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
    removed_reason: str | None = None   # an operator took this release off the index


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
    takedown: Takedown | None = None  # an operator took the whole project off the index

    def files_oldest_first(self) -> list[tuple[Release, WheelFile]]:
        """The files of the simple page: by release (oldest first, as PyPI lists them), then name."""
        return [(release, f) for release in reversed(self.releases)
                for f in sorted(release.files, key=lambda f: f.filename)]


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


def packages_json(rows: list[tuple[str, str, str | None]]) -> bytes:
    """The search index: ``[[canonical, display name, summary], ...]`` (summary "" when unknown)."""
    return json_bytes([[canon, display, summary or ""] for canon, display, summary in rows])


# -- project pages ------------------------------------------------------------------------------------

def project_json(project: Project, pypi_url: str = "https://pypi.org") -> bytes:
    """The project JSON API (piwheels' shape): releases newest first, files keyed by name.

    ``aliases`` and each release's ``builds`` (with their log URLs) are also what the next publish
    reads back to learn which symlinks and logs it made for this package.
    """
    releases = {}
    for r in project.releases:
        releases[r.version] = {
            "released": r.released,
            "prerelease": r.prerelease,
            "yanked": r.yanked,
            "yanked_reason": r.yanked_reason,
            "requires_python": r.requires_python,
            "skip_reason": r.skip_reason or "",
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
                    "unowned_libraries": list(f.unowned),
                } for f in sorted(r.files, key=lambda f: f.filename)
            },
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
        "aliases": list(project.aliases),
        "removed": None if project.takedown is None else {
            "reason": project.takedown.reason, "removed_at": project.takedown.removed_at},
        "releases": releases,
    })


@lru_cache(maxsize=None)
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("wheelwright.publish", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,
    )


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
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


def _release_rows(release: Release) -> list[dict]:
    """One row per target that has something to say about this release: files or builds."""
    rows: dict[str, dict] = {}
    for b in release.builds:
        rows.setdefault(b.target or b.abi, {"target": b.target or b.abi, "files": [], "builds": []})[
            "builds"].append(b)
    for f in sorted(release.files, key=lambda f: f.filename):
        rows.setdefault(f.target or f.builder_abi, {"target": f.target or f.builder_abi, "files": [],
                                                    "builds": []})["files"].append(f)
    return [rows[target] for target in sorted(rows, key=_shown_order)]


def _shown_order(name: str) -> tuple:
    """Builders (ABI tags) in the order targets are tried; anything else after them, by name."""
    key = abi_order(name)
    return (0, key, name) if key is not None else (1, (), name)


@lru_cache(maxsize=None)
def _template(name: str) -> jinja2.Template:
    return _templates().get_template(name)


@lru_cache(maxsize=None)
def _page_frame() -> tuple[str, str, str]:
    """``base.html`` cut around its title and its body, so every page shares one frame and style."""
    page = _templates().from_string(
        '{% extends "base.html" %}{% block title %}\0{% endblock %}{% block body %}\0{% endblock %}'
    ).render()
    head, middle, tail = page.split("\0")
    return head, middle, tail


def project_html(project: Project, pypi_url: str = "https://pypi.org") -> bytes:
    """The page people read. Built from strings, not a template: it is written for every package on
    every full publish, and a jinja2 render cost five times the other three pages together."""
    head, middle, tail = _page_frame()
    name = escape(project.display_name)
    package = escape(project.package)
    out = [head, name, middle, f"<h1>{name}</h1>\n"]
    if project.summary:
        out.append(f'<p class="summary">{escape(project.summary)}</p>\n')
    out.append(f'<pre class="install">pip install {name}</pre>\n'
               f'<p class="muted">\n'
               f'  <a href="{escape(pypi_url)}/project/{package}/">on PyPI</a> ·\n'
               f'  <a href="../../simple/{package}/">simple index</a> ·\n'
               f'  <a href="json/">JSON</a> ·\n'
               f'  <a href="feed.atom" type="application/atom+xml">failed builds (Atom)</a>\n'
               f'</p>\n')
    if project.takedown is not None:
        out.append(f'<p class="takedown"><span class="badge removed">removed</span> taken off this index on '
                   f'{escape(project.takedown.removed_at[:10])}: {escape(project.takedown.reason)}. '
                   f'pip finds it on PyPI only.</p>\n')
    if project.skip_reason:
        out.append(f'<p><span class="badge skipped">not built</span> {escape(project.skip_reason)}</p>\n')
    if not project.releases:
        out.append('<p class="muted">No releases.</p>\n')
    for release in project.releases:
        _release_html(out, package, release, project.skip_reason)
    out.append(tail)
    return "".join(out).encode()


def _release_html(out: list[str], package: str, release: Release, project_skipped: str | None) -> None:
    version = escape(release.version)
    out.append(f'<div class="release" id="v{version}">\n  <h2>{version}')
    if release.yanked:
        out.append(f' <span class="badge yanked" title="{escape(release.yanked_reason or "")}">yanked</span>')
    if release.prerelease:
        out.append(' <span class="badge prerelease">pre-release</span>')
    if release.skip_reason:
        out.append(' <span class="badge skipped">skipped</span>')
    if release.removed_reason:
        out.append(' <span class="badge removed">removed</span>')
    out.append(f'</h2>\n  <p class="muted">released {escape(release.released[:10])}')
    if release.requires_python:
        out.append(f" · Requires-Python {escape(release.requires_python)}")
    if release.yanked and release.yanked_reason:
        out.append(f" · yanked: {escape(release.yanked_reason)}")
    if release.skip_reason:
        out.append(f" · not built: {escape(release.skip_reason)}")
    if release.removed_reason:
        out.append(f" · removed from this index: {escape(release.removed_reason)}")
    out.append("</p>\n")
    rows = _release_rows(release)
    if rows:
        out.append("  <table>\n    <tr><th>target</th><th>file</th><th>size</th><th>Requires-Python</th>"
                   "<th>apt dependencies</th><th>build</th></tr>\n")
        for row in rows:
            target = escape(row["target"])
            for f in row["files"]:
                deps = escape(" ".join(f.apt_dependencies))
                if f.unowned:
                    deps += f' <span class="muted">(unowned: {escape(" ".join(f.unowned))})</span>'
                logs = "".join(f'<a href="../../{escape(b.log_path)}">log</a>' for b in row["builds"]
                               if b.build_id == f.build_id and b.log_path)
                logs += "".join(f' <span class="muted">imported by {escape(b.imported_by)}</span>'
                                for b in row["builds"] if b.build_id == f.build_id and b.imported_by)
                out.append(f"    <tr>\n      <td>{target}</td>\n"
                           f'      <td><a href="../../simple/{package}/{escape(quote(f.filename))}">'
                           f"{escape(f.filename)}</a></td>\n"
                           f"      <td>{human_size(f.size)}</td>\n"
                           f"      <td>{escape(f.requires_python or '')}</td>\n"
                           f"      <td>{deps}</td>\n"
                           f"      <td>{logs}</td>\n    </tr>\n")
            for b in row["builds"]:
                if b.status == "success":
                    continue
                status = escape(b.status)
                reason = f": {escape(b.reason)}" if b.reason else ""
                log_link = f'<a href="../../{escape(b.log_path)}">log</a> ' if b.log_path else ""
                out.append(f"    <tr>\n      <td>{target}</td>\n"
                           f'      <td colspan="4" class="{status}">{status}{reason}</td>\n'
                           f'      <td>{log_link}<span class="muted">{human_duration(b.duration)}</span></td>\n'
                           f"    </tr>\n")
        out.append("  </table>\n")
    elif not release.skip_reason and not project_skipped and not release.removed_reason:
        out.append('  <p class="muted">Not built yet.</p>\n')
    out.append("</div>\n")


def reports_html(apt_counts: dict[str, list[tuple[str, int]]], missing: list[dict],
                 generated: str) -> bytes:
    return _template("reports.html").render(
        apt_counts=apt_counts, missing=missing, generated=generated,
    ).encode()
