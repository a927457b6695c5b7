"""The corpus: real PyPI releases Pi users install, the yardstick the builders are measured with.

Fixtures prove that the machinery works; they say nothing about piwheels' real question, how many of
the packages Pi users install we build. ``data/corpus.toml`` pins real releases (version, sdist, its
sha256 and size, a family and a note, what ARM wheels PyPI itself offers); this room owns reading that
list, and fetching the sdists once into a cache **outside the clone** (``$WHEELWRIGHT_CORPUS_CACHE``;
by default ``/var/tmp/wheelwright-corpus`` as root, ``~/.cache/wheelwright-corpus`` otherwise), each
download checked against its pinned size and sha256 before it is renamed into place, so the cache
never holds a file that is not what the list says. The cache is then the ``files_dir`` of a
:class:`~wheelwright.testing.pypi_double.PyPIDouble`: builds fetch the sdists from it, as a worker
fetches them from PyPI, and the corpus builds the same after PyPI changed or went away.

Used by ``bench/corpus_fetch.py``, ``bench/bench_corpus.py`` and the tests' slice; not by the product.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name, parse_sdist_filename
from packaging.version import Version

from wheelwright import package_data
from wheelwright.errors import ConfigError, WheelwrightError

FAMILIES = ("hardware", "numbers", "web", "crypto", "imaging", "parsing", "database")
PYPI_ARM = ("armv7l+aarch64", "aarch64", "armv7l", "pure", "none", "other")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_KEYS = {"name", "version", "family", "sdist", "url", "sha256", "size", "pypi_arm", "ci", "note"}
FILE_HOSTS = ("files.pythonhosted.org",)


class CorpusError(WheelwrightError):
    """A download that is not what the corpus pins (or could not be made)."""


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    family: str
    sdist: str
    url: str
    sha256: str
    size: int
    pypi_arm: str
    ci: bool
    note: str

    @property
    def package(self) -> str:
        return canonicalize_name(self.name)

    @property
    def pypi_builds_for(self) -> frozenset[str]:
        """The ARM machines PyPI serves a wheel of it for (``pure``: every one)."""
        if self.pypi_arm == "pure":
            return frozenset({"armv7l", "aarch64"})
        return frozenset(part for part in self.pypi_arm.split("+") if part in ("armv7l", "aarch64"))


def default_corpus_path() -> Path:
    return Path(str(package_data.data("corpus.toml")))


def load_corpus(path: str | os.PathLike | None = None) -> list[Release]:
    """Every release of the corpus file, checked, in the file's order."""
    path = Path(path) if path is not None else default_corpus_path()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the corpus {path}: {exc}") from exc
    releases = [_release(row, i, path) for i, row in enumerate(document.get("release", []), 1)]
    seen = set()
    for release in releases:
        if release.package in seen:
            raise ConfigError(f"{path}: {release.name} is listed twice")
        seen.add(release.package)
    return releases


def _release(row, index: int, path: Path) -> Release:
    where = f"{path}, release #{index}"
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: not a table")
    if unknown := set(row) - _KEYS:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    try:
        release = Release(name=str(row["name"]), version=str(row["version"]), family=str(row["family"]),
                          sdist=str(row["sdist"]), url=str(row["url"]), sha256=str(row["sha256"]),
                          size=int(row["size"]), pypi_arm=str(row["pypi_arm"]), ci=row.get("ci", False),
                          note=str(row.get("note", "")))
    except KeyError as exc:
        raise ConfigError(f"{where}: {exc.args[0]} is required") from None
    if release.family not in FAMILIES:
        raise ConfigError(f"{where}: family {release.family!r} is not one of {', '.join(FAMILIES)}")
    if release.pypi_arm not in PYPI_ARM:
        raise ConfigError(f"{where}: pypi_arm {release.pypi_arm!r} is not one of {', '.join(PYPI_ARM)}")
    if not _SHA256.match(release.sha256):
        raise ConfigError(f"{where}: sha256 must be 64 lower-case hex digits")
    if not isinstance(release.ci, bool) or release.size < 1:
        raise ConfigError(f"{where}: ci must be true or false and size a positive number of bytes")
    name, version = parse_sdist_filename(release.sdist)
    if name != release.package or version != Version(release.version):
        raise ConfigError(f"{where}: {release.sdist} is not the sdist of {release.name} {release.version}")
    parts = urlsplit(release.url)
    if parts.scheme != "https" or parts.hostname not in FILE_HOSTS or not parts.path.endswith("/" + release.sdist):
        raise ConfigError(f"{where}: url must be the sdist on {' or '.join(FILE_HOSTS)} over https")
    return release


def default_cache(environ=None) -> Path:
    """``$WHEELWRIGHT_CORPUS_CACHE``; else /var/tmp/wheelwright-corpus as root, ~/.cache/... otherwise."""
    environ = os.environ if environ is None else environ
    if given := environ.get("WHEELWRIGHT_CORPUS_CACHE"):
        return Path(given).expanduser().absolute()
    if os.geteuid() == 0:
        return Path("/var/tmp/wheelwright-corpus")
    return Path.home() / ".cache" / "wheelwright-corpus"


def cached(release: Release, cache: Path) -> Path | None:
    """The sdist of ``release`` in ``cache`` if it is there whole (its size; hashed when fetched)."""
    path = cache / release.sdist
    try:
        return path if path.stat().st_size == release.size else None
    except OSError:
        return None


def fetch(releases: Iterable[Release], cache: Path, *, progress: Callable[[str], None] = lambda line: None,
          opener: Callable = urllib.request.urlopen, timeout: float = 120) -> list[Path]:
    """Download every release's sdist into ``cache`` unless it is there; return their paths.

    Each download goes to a temporary file beside its place and is renamed there only once its size
    and sha256 are the pinned ones; anything else raises :class:`CorpusError` and leaves nothing.
    """
    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(0o755)  # builds run as an unprivileged user and the double serves from here
    paths = []
    releases = list(releases)
    for i, release in enumerate(releases, 1):
        if (found := cached(release, cache)) is not None:
            paths.append(found)
            continue
        progress(f"[{i}/{len(releases)}] fetching {release.sdist} ({release.size / 2**20:.1f} MiB)")
        paths.append(_download(release, cache, opener, timeout))
    return paths


def _download(release: Release, cache: Path, opener, timeout: float) -> Path:
    final = cache / release.sdist
    partial = cache / f".{release.sdist}.{os.getpid()}.part"
    digest, size = hashlib.sha256(), 0
    try:
        with opener(release.url, timeout=timeout) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                size += len(chunk)
                if size > release.size:
                    raise CorpusError(f"{release.sdist}: the download is larger than the pinned "
                                      f"{release.size:,} bytes")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != release.size or digest.hexdigest() != release.sha256:
            raise CorpusError(f"{release.sdist}: downloaded {size:,} bytes with sha256 {digest.hexdigest()}, "
                              f"not the pinned {release.size:,} bytes with sha256 {release.sha256}")
        partial.chmod(0o644)
        os.replace(partial, final)
    except OSError as exc:
        raise CorpusError(f"{release.sdist}: cannot download {release.url}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return final


def verify(releases: Iterable[Release], cache: Path) -> list[str]:
    """Sentences naming every cached sdist whose bytes are not the pinned ones (empty: all good)."""
    problems = []
    for release in releases:
        path = cache / release.sdist
        if not path.exists():
            problems.append(f"{release.sdist} is not in {cache}")
            continue
        with open(path, "rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != release.sha256:
                problems.append(f"{release.sdist} in {cache} is not the pinned file (sha256 differs)")
    return problems


# --- building the corpus through the worker's own path ---------------------------------------------

def changelog(releases: Iterable[Release], *, timestamp: int | None = None) -> list[list]:
    """PyPI changelog rows announcing ``releases`` and their sdists (for the PyPI double)."""
    import time
    ts = int(time.time()) - 3600 if timestamp is None else timestamp
    rows, serial = [], 0
    for release in releases:
        for version, action in ((None, "create"), (release.version, "new release"),
                                (release.version, f"add source file {release.sdist}")):
            serial += 1
            rows.append([release.name, version, ts, action, serial])
    return rows


def load_catalog(conn, pypi, releases: list[Release]) -> None:
    """Sync the double's changelog into the catalog and read its JSON API (the sdists' sha256), as
    the product does for PyPI."""
    from wheelwright.catalog.enrich import enrich
    from wheelwright.catalog.sync import sync_once
    from wheelwright.pypi.client import PyPI
    with PyPI(pypi.xmlrpc_url) as client:
        sync_once(conn, client)
    enrich(conn, lambda: PyPI(pypi.xmlrpc_url), limit=len(releases) + 10)
    known = {row[0] for row in conn.execute("SELECT package FROM source_files WHERE sha256 IS NOT NULL")}
    if missing := [r.name for r in releases if r.package not in known]:
        raise CorpusError(f"the catalog did not learn the sdists of {', '.join(missing[:5])}")


class PyPIRelay:
    """PyPI's simple index and files, relayed on 127.0.0.1: where the corpus's builds get their build
    dependencies (setuptools, Cython, meson-python, maturin, numpy...).

    A worker reaches PyPI itself. Here the way out inspects TLS with a certificate authority the host
    trusts and the Pi images do not, so pip inside an image cannot verify pypi.org; the relay, on the host,
    can. It serves ``/simple/<name>/`` as PyPI's HTML page with file links pointing back at itself, and
    ``/files/<path>`` from PyPI's file host, keeping every file it fetched under ``cache`` (file URLs never
    change their bytes on PyPI; pip checks each file's sha256 from the page anyway). Only names and paths
    made of plain characters are relayed.
    """

    def __init__(self, cache: Path, *, pypi: str = "https://pypi.org", files: str = "https://files.pythonhosted.org"):
        self.cache, self.pypi, self.files = Path(cache), pypi.rstrip("/"), files.rstrip("/")
        self._server = None

    def __enter__(self) -> "PyPIRelay":
        import threading
        from http.server import ThreadingHTTPServer
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="pypi-relay", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def simple_url(self) -> str:
        return f"{self.url}/simple/"

    def _handler(self):
        from http.server import BaseHTTPRequestHandler
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                try:
                    path = self.path.split("?", 1)[0]
                    if m := re.fullmatch(r"/simple/([A-Za-z0-9._-]+)/?", path):
                        body = relay._page(m[1])
                        return self._send(200, body, "text/html; charset=utf-8")
                    if re.fullmatch(r"/files/(?:[A-Za-z0-9._+-]+/)*[A-Za-z0-9._+-]+", path) and ".." not in path:
                        return self._send(200, relay._file(path[len("/files/"):]), "application/octet-stream")
                    self._send(404, b"not relayed", "text/plain")
                except urllib.error.HTTPError as exc:
                    self._send(exc.code, b"", "text/plain")
                except OSError:
                    self._send(502, b"PyPI unreachable", "text/plain")

            def _send(self, code, body, kind):
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        return Handler

    def _page(self, name: str) -> bytes:
        request = urllib.request.Request(f"{self.pypi}/simple/{canonicalize_name(name)}/",
                                         headers={"Accept": "application/vnd.pypi.simple.v1+html"})
        with urllib.request.urlopen(request, timeout=60) as response:
            page = response.read()
        return page.replace(f"{self.files}/".encode(), f"{self.url}/files/".encode())

    def _file(self, path: str) -> bytes:
        kept = self.cache / "files" / path
        if kept.is_file():
            return kept.read_bytes()
        with urllib.request.urlopen(f"{self.files}/{path}", timeout=300) as response:
            data = response.read()
        kept.parent.mkdir(parents=True, exist_ok=True)
        partial = kept.with_name(f".{kept.name}.{os.getpid()}.part")
        partial.write_bytes(data)
        os.replace(partial, kept)
        return data
