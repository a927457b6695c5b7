"""The sdist of a build, fetched by the worker, and what its ``pyproject.toml`` asks to be built with.

A prepared build environment (:mod:`wheelwright.builds.buildenvs`) must be chosen before the sandbox
starts, so the worker has to know the sdist's build requirements first. pip cannot tell it: even
``pip download`` of an sdist runs the sdist's build backend to read its metadata. So the worker fetches
the sdist itself, as plain bytes, and reads one member of the archive:

- the file comes from the index's simple page of the project (PEP 691 JSON, or PEP 503 HTML), only
  from the hosts the build itself may reach (:func:`wheelwright.builds.sandbox.allowed_destinations`),
  capped in size, checked against the sha256 the catalog knows (else the one the index gives);
- an index that cannot be reached, or answers 5xx, or does not list the sdist yet, is a
  :class:`FetchFailed` marked ``transient`` (the build is tried again later, as when pip met it);
  a file whose sha256 is not the one known is final;
- from the archive only ``<top>/pyproject.toml`` is read, capped, never unpacked to disk; nothing of the
  sdist runs here. What it says is parsed into :class:`BuildSystem` (PEP 517/518, with the legacy
  setuptools default of an sdist that says nothing); one that cannot be read is ``None``, and the
  build then goes the way pip goes (its isolated build environment).
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import re
import socket
import tarfile
import tomllib
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidSdistFilename, canonicalize_name, parse_sdist_filename
from packaging.version import InvalidVersion, Version

from wheelwright.config import USER_AGENT
from wheelwright.errors import WheelwrightError

MAX_SDIST = 1 << 30            # bytes of an sdist we fetch (PyPI's own limit is lower for nearly all)
MAX_PAGE = 64 << 20            # bytes of a simple page
MAX_PYPROJECT = 1 << 20        # bytes of pyproject.toml we read
MAX_SCANNED = 512 << 20        # uncompressed bytes of a tar we read looking for pyproject.toml
MAX_REQUIREMENTS = 64          # build requirements one sdist may name
TIMEOUT = 30.0
JSON_V1 = "application/vnd.pypi.simple.v1+json"
# PEP 517's fallback for an sdist without [build-system] (pip's own, since it stopped adding wheel)
LEGACY_REQUIRES = ("setuptools>=40.8.0",)
LEGACY_BACKEND = "setuptools.build_meta:__legacy__"
_BACKEND = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_.]*)?\Z")


class FetchFailed(WheelwrightError):
    """The sdist could not be had; ``transient`` when the index, not the release, is to blame."""

    def __init__(self, reason: str, transient: bool):
        super().__init__(reason)
        self.reason, self.transient = reason, transient


@dataclass(frozen=True)
class BuildSystem:
    """An sdist's ``[build-system]``: its requirements (checked PEP 508 strings), backend, backend-path."""

    requires: tuple[str, ...]
    backend: str
    backend_path: tuple[str, ...] = ()


# --- pure: choosing the file, reading pyproject -------------------------------------------------------

def pick_sdist(files: list[tuple[str, str, str | None]], package: str, version: str,
               sha256: str | None) -> tuple[str, str, str | None] | None:
    """The ``(filename, url, sha256)`` of the release's sdist among a simple page's files, or None.

    With ``sha256`` known, only the file of that hash (under any sdist name of the release) will do.
    """
    wanted = canonicalize_name(package)
    try:
        wanted_version: Version | str = Version(version)
    except InvalidVersion:
        wanted_version = version
    found = []
    for filename, url, digest in files:
        try:
            name, file_version = parse_sdist_filename(filename)
        except (InvalidSdistFilename, InvalidVersion):
            continue
        if name != wanted or file_version != wanted_version:
            continue
        if sha256 is not None and digest is not None and digest != sha256:
            found.append((filename, url, digest))  # kept last: its bytes will be checked and refused
            continue
        found.insert(0, (filename, url, digest))
    return found[0] if found else None


def parse_build_system(text: str) -> BuildSystem | None:
    """The build system a ``pyproject.toml`` declares; the legacy setuptools one when it declares none;
    None when it cannot be read or declares something we do not take (pip then decides)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
    table = data.get("build-system")
    if table is None:
        return BuildSystem(LEGACY_REQUIRES, LEGACY_BACKEND)
    if not isinstance(table, dict) or not isinstance(table.get("requires"), list):
        return None
    requires = table["requires"]
    if len(requires) > MAX_REQUIREMENTS or not all(isinstance(r, str) for r in requires):
        return None
    try:
        checked = tuple(sorted({str(Requirement(r)) for r in requires}))
    except InvalidRequirement:
        return None
    backend = table.get("build-backend", LEGACY_BACKEND)
    if not isinstance(backend, str) or not _BACKEND.match(backend):
        return None
    backend_path = table.get("backend-path", [])
    if not isinstance(backend_path, list) or not all(
            isinstance(p, str) and p and not p.startswith("/") and ".." not in Path(p).parts
            for p in backend_path):
        return None
    return BuildSystem(checked, backend, tuple(backend_path))


def read_pyproject(archive: Path) -> str | None:
    """The text of the sdist's top-level ``pyproject.toml``; None when it has none (or it is unreadable)."""
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    parts = info.filename.split("/")
                    if len(parts) == 2 and parts[1] == "pyproject.toml":
                        if info.file_size > MAX_PYPROJECT:
                            return None
                        return zf.read(info).decode("utf-8")
            return None
        scanned = 0
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                scanned += member.size
                parts = member.name.lstrip("./").split("/")
                if len(parts) == 2 and parts[1] == "pyproject.toml" and member.isfile():
                    if member.size > MAX_PYPROJECT:
                        return None
                    return tar.extractfile(member).read(MAX_PYPROJECT).decode("utf-8")
                if scanned > MAX_SCANNED:
                    return None
        return None
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, UnicodeDecodeError, ValueError):
        return None


def build_system_of(archive: Path) -> BuildSystem | None:
    text = read_pyproject(archive)
    return parse_build_system(text if text is not None else "")


# --- the edge: the index ------------------------------------------------------------------------------

class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), ""

    def handle_data(self, data):
        if self._href is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.links.append((self._text.strip(), self._href))
            self._href = None


def page_files(body: bytes, content_type: str, page_url: str) -> list[tuple[str, str, str | None]]:
    """``(filename, absolute url, sha256 or None)`` of every file a simple page lists."""
    files = []
    if content_type.split(";")[0].strip() == JSON_V1:
        for entry in json.loads(body).get("files", []):
            if isinstance(entry, dict) and isinstance(entry.get("filename"), str) and \
                    isinstance(entry.get("url"), str):
                digest = (entry.get("hashes") or {}).get("sha256")
                files.append((entry["filename"], urljoin(page_url, entry["url"]),
                              digest.lower() if isinstance(digest, str) else None))
        return files
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    for text, href in parser.links:
        url, _, fragment = urljoin(page_url, href).partition("#")
        digest = fragment[len("sha256="):].lower() if fragment.startswith("sha256=") else None
        files.append((text or url.rsplit("/", 1)[-1], url, digest))
    return files


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _get(url: str, allowed, accept: str | None = None):
    parts = urlsplit(url)
    where = (str(parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80))
    if parts.scheme not in ("http", "https") or where not in allowed:
        raise FetchFailed(f"refused: the index links the sdist at {url[:200]}, a host builds may not reach",
                          transient=False)
    headers = {"User-Agent": USER_AGENT}
    if accept:
        headers["Accept"] = accept
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise FetchFailed(f"could not fetch the sdist or its build dependencies: the index at "
                              f"{_where(url)} answered HTTP {exc.code}", transient=True) from None
        raise
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        text = getattr(why, "strerror", None) or str(why)
        raise FetchFailed(f"could not fetch the sdist or its build dependencies: the index at "
                          f"{_where(url)} could not be reached ({text})", transient=True) from None


def fetch_sdist(index_url: str, package: str, version: str, sha256: str | None, into: Path,
                allowed) -> Path:
    """Download the release's sdist from ``index_url`` into the folder ``into``; its path there."""
    page_url = index_url.rstrip("/") + f"/{canonicalize_name(package)}/"
    not_yet = FetchFailed(f"the index does not offer the sdist of {package} yet "
                          "(PyPI's CDN may lag behind an upload)", transient=True)
    try:
        with _get(page_url, allowed, accept=f"{JSON_V1}, text/html;q=0.1") as answer:
            body = answer.read(MAX_PAGE + 1)
            files = page_files(body, answer.headers.get("Content-Type", ""), answer.geturl())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise not_yet from None
        raise FetchFailed(f"the index answered HTTP {exc.code} for {page_url}", transient=False) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise FetchFailed(f"the index's page for {package} could not be read ({exc})", transient=True) from None
    chosen = pick_sdist(files, package, version, sha256)
    if chosen is None:
        raise not_yet
    filename, url, listed = chosen
    if "/" in filename or filename.startswith("."):
        raise FetchFailed(f"refused: the index names the sdist {filename!r}", transient=False)
    expected = sha256 or listed
    target = into / filename
    digest = hashlib.sha256()
    size = 0
    try:
        with _get(url, allowed) as answer, open(target, "xb") as out:
            while chunk := answer.read(1 << 20):
                size += len(chunk)
                if size > MAX_SDIST:
                    raise FetchFailed(f"refused: the sdist is larger than {MAX_SDIST >> 20} MiB",
                                      transient=False)
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        target.unlink(missing_ok=True)
        if exc.code == 404:
            raise not_yet from None
        raise FetchFailed(f"the index answered HTTP {exc.code} for the sdist", transient=False) from None
    except FetchFailed:
        target.unlink(missing_ok=True)
        raise
    except (OSError, socket.timeout) as exc:
        target.unlink(missing_ok=True)
        raise FetchFailed(f"could not fetch the sdist or its build dependencies: the download from "
                          f"{_where(url)} broke off ({exc})", transient=True) from None
    if expected is not None and digest.hexdigest() != expected:
        target.unlink()
        if sha256 is not None:
            raise FetchFailed("refused: the sdist the index served is not the one whose sha256 the "
                              "catalog knows", transient=False)
        raise FetchFailed("the sdist's bytes do not match the sha256 its index lists", transient=True)
    return target
