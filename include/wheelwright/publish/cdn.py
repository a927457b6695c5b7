"""The CDN purger: after each publish, tell the edge to forget exactly what changed, and never lose it.

The origin (nginx with ``nginx/wheelwright.conf``, or the static server) tags every response with
surrogate keys, in the three spellings the edges read: ``Surrogate-Key`` (Fastly), ``Cache-Tag``
(Cloudflare) and ``xkey`` (Varnish's xkey vmod). :func:`keys_for_path` says which: everything of one
package (its simple pages in HTML and JSON, its files, its project page and project JSON) carries
``project/<canonical name>``; the root pages carry ``root``; ``packages.json`` and the search shards
``search``; the site's own pages (home, search page, FAQ, JSON API, 404, sitemaps, ``static/``) ``site``;
``queue.json`` ``queue``; the reports ``reports``; the build logs ``logs``; the index's failure feed
(``feeds/``) ``feeds``; and every response ``all``. A purge is then one key per changed
package, whatever URLs it has (PyPI does the same at Fastly).

After each publish the publisher owes the keys of the packages whose files changed, the root only when
the root pages' bytes changed; never ``all`` in normal operation. What is owed is kept in the catalog
(table ``cdn_purges``, written in the transaction that moves the publisher's mark), with the files the
publisher may delete once the edge no longer holds a page that lists them: a release deleted at PyPI
loses its page first, the page is purged, then its wheels are unlinked and the key purged again, so pip
never follows a cached link to a 404. :func:`deliver` sends what is owed in batches, retries with
back-off (honouring a vendor's ``Retry-After``), and forgets a key only once the CDN confirmed it; a
crash or an outage of the vendor's API leaves the debt in the catalog for the next publish or for
``wheelwright purge``. Publishing never waits for the CDN beyond a bounded delivery attempt.

Three backends behind one interface (:class:`Purger`): Varnish (HTTP ``PURGE`` with an
``xkey-purge`` header, accepted from an ACL in ``varnish/wheelwright.vcl``), Fastly (``POST
{api}/service/{id}/purge`` with up to 256 keys in ``Surrogate-Key``, ``Fastly-Key``, soft purge) and
Cloudflare (``POST {api}/zones/{id}/purge_cache`` with ``{"tags": [...]}``, at most 100 a call).
Configuration: ``WHEELWRIGHT_CDN`` = ``varnish:http://HOST:PORT`` | ``fastly:SERVICE_ID`` |
``cloudflare:ZONE_ID``, the secret in ``WHEELWRIGHT_CDN_TOKEN``, the vendor's API base in
``WHEELWRIGHT_CDN_API``, from the index host's own environment (in Airflow too: a Connection would
hand the token to every task, a builder's included).

What it must not do: decide what changed (the publisher says so), or delete anything the catalog or a
published page still lists.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import psycopg
from wheelwright.catalog import db
from wheelwright.config import USER_AGENT
from wheelwright.errors import ConfigError, WheelwrightError
from wheelwright.names import is_canonical

log = logging.getLogger(__name__)

ALL = "all"
ROOT = "root"
SEARCH = "search"
REPORTS = "reports"
LOGS = "logs"
SITE = "site"       # the site's pages: home, search page, FAQ, JSON API, 404, sitemaps, static/
QUEUE = "queue"     # queue.json: where queued releases stand
FEEDS = "feeds"     # feeds/: the index's failure feed
PROJECT = "project/"
# Above this many keys owed at once (a first publish of a whole index), one purge of everything is
# cheaper than thousands of calls; nothing of the kind happens in normal operation.
PURGE_ALL_ABOVE = 20_000

_SEGMENT = re.compile(r"/(simple|project)/([^/]+)(/.*)?\Z")
_SITE_PAGES = frozenset({"/", "/index.html", "/packages.html", "/faq.html", "/json.html", "/404.html"})
_SITEMAP = re.compile(r"/sitemap[0-9]*\.xml\Z")


class PurgeError(WheelwrightError):
    """The CDN refused or did not answer a purge (it stays owed)."""

    exit_code = 7

    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


# -- keys: which responses a purge reaches ------------------------------------------------------------

def project_key(package: str) -> str:
    return PROJECT + package


def keys_for_path(path: str) -> tuple[str, ...]:
    """The surrogate keys the origin sends with the response for URL ``path`` (see the docstring).
    ``path`` comes from outside: only a canonical project name becomes a key (anything else is
    redirected or refused, and a header value never carries what a client wrote)."""
    if path in ("/simple/", "/simple/index.html", "/simple/index.json"):
        return (ROOT, ALL)
    if m := _SEGMENT.match(path):
        return (project_key(m[2]), ALL) if is_canonical(m[2]) else (ALL,)
    if path == "/packages.json" or path.startswith("/search/"):
        return (SEARCH, ALL)
    if path in _SITE_PAGES or path.startswith("/static/") or _SITEMAP.match(path):
        return (SITE, ALL)
    if path == "/queue.json":
        return (QUEUE, ALL)
    if path.startswith("/reports/"):
        return (REPORTS, ALL)
    if path.startswith("/logs/"):
        return (LOGS, ALL)
    if path.startswith("/feeds/"):
        return (FEEDS, ALL)
    return (ALL,)


def key_headers(keys: Sequence[str]) -> dict[str, str]:
    """The three spellings of the same keys: Fastly's, Cloudflare's and Varnish xkey's."""
    return {"Surrogate-Key": " ".join(keys), "Cache-Tag": ",".join(keys), "xkey": " ".join(keys)}


# -- backends -----------------------------------------------------------------------------------------

@dataclass
class Purger:
    """One CDN's purge API. ``purge(keys)`` is one call of at most ``batch`` keys; it raises
    :class:`PurgeError` (with ``retry_after`` when the vendor said when) if the CDN did not confirm."""

    name = "cdn"
    batch = 100
    timeout: float = 10.0
    calls: int = field(default=0, init=False)   # API calls made (for the bench and the tests)

    def purge(self, keys: Sequence[str]) -> None:
        raise NotImplementedError

    def purge_all(self) -> None:
        self.purge([ALL])

    def _request(self, method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> bytes:
        self.calls += 1
        request = urllib.request.Request(url, data=body, method=method,
                                         headers={"User-Agent": USER_AGENT, **headers})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace").strip()
            retry_after = _retry_after(exc.headers.get("Retry-After"))
            permanent = exc.code in (400, 401, 403, 404, 405)
            raise PurgeError(f"{self.name} answered {exc.code} to {method} {_safe_url(url)}: {detail}",
                             retry_after=retry_after, permanent=permanent) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise PurgeError(f"{self.name} unreachable at {_safe_url(url)}: {exc}") from exc


@dataclass
class VarnishPurger(Purger):
    """``PURGE /`` with ``xkey-purge: k1 k2 ...`` (hard purge: the next request is fresh)."""

    url: str = ""
    name = "varnish"
    batch = 64     # keys in one header line, well inside Varnish's http_req_hdr_len

    def purge(self, keys: Sequence[str]) -> None:
        self._request("PURGE", self.url.rstrip("/") + "/", {"xkey-purge": " ".join(keys)})


@dataclass
class FastlyPurger(Purger):
    """``POST {api}/service/{id}/purge`` with the keys in ``Surrogate-Key`` (up to 256), soft."""

    service: str = ""
    token: str = ""
    api: str = "https://api.fastly.com"
    soft: bool = True
    name = "fastly"
    batch = 256

    def purge(self, keys: Sequence[str]) -> None:
        headers = {"Fastly-Key": self.token, "Surrogate-Key": " ".join(keys), "Accept": "application/json"}
        if self.soft:
            headers["Fastly-Soft-Purge"] = "1"
        body = self._request("POST", f"{self.api.rstrip('/')}/service/{quote(self.service, safe='')}/purge",
                             headers, b"")
        try:
            answered = json.loads(body)
        except ValueError as exc:
            raise PurgeError(f"fastly answered something that is not JSON: {body[:100]!r}") from exc
        missing = [k for k in keys if k not in answered] if isinstance(answered, dict) else list(keys)
        if missing:
            raise PurgeError(f"fastly did not confirm {len(missing)} keys (first {missing[0]!r})")

    def purge_all(self) -> None:   # purge_all cannot be soft: purge the key every response carries
        self.purge([ALL])


@dataclass
class CloudflarePurger(Purger):
    """``POST {api}/zones/{id}/purge_cache`` with ``{"tags": [...]}`` (at most 100 a call)."""

    zone: str = ""
    token: str = ""
    api: str = "https://api.cloudflare.com/client/v4"
    name = "cloudflare"
    batch = 100

    def purge(self, keys: Sequence[str]) -> None:
        body = self._request(
            "POST", f"{self.api.rstrip('/')}/zones/{quote(self.zone, safe='')}/purge_cache",
            {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            json.dumps({"tags": list(keys)}).encode())
        try:
            answered = json.loads(body)
        except ValueError as exc:
            raise PurgeError(f"cloudflare answered something that is not JSON: {body[:100]!r}") from exc
        if not (isinstance(answered, dict) and answered.get("success") is True):
            errors = answered.get("errors") if isinstance(answered, dict) else answered
            raise PurgeError(f"cloudflare refused the purge: {errors!r}")


def purger_for(spec: str | None, token: str | None = None, api: str | None = None) -> Purger | None:
    """The purger ``WHEELWRIGHT_CDN`` names (None when unset); refuses a spec it cannot use."""
    if not spec:
        return None
    kind, _, target = spec.partition(":")
    kind = kind.strip().lower()
    if not target:
        raise ConfigError(f"WHEELWRIGHT_CDN must be varnish:URL, fastly:SERVICE_ID or cloudflare:ZONE_ID, "
                          f"got {spec!r}")
    if kind == "varnish":
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"WHEELWRIGHT_CDN varnish: needs an http(s) URL, got {target!r}")
        return VarnishPurger(url=target)
    if kind in ("fastly", "cloudflare"):
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", target):
            raise ConfigError(f"WHEELWRIGHT_CDN {kind}: {target!r} is not a {kind} id")
        if not token:
            raise ConfigError(f"WHEELWRIGHT_CDN is {kind}: set WHEELWRIGHT_CDN_TOKEN to its API token")
        if api:
            parts = urlsplit(api)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"WHEELWRIGHT_CDN_API must be an http(s) URL, got {api!r}")
        if kind == "fastly":
            return FastlyPurger(service=target, token=token, **({"api": api} if api else {}))
        return CloudflarePurger(zone=target, token=token, **({"api": api} if api else {}))
    raise ConfigError(f"WHEELWRIGHT_CDN: unknown CDN {kind!r} (varnish, fastly or cloudflare)")


def purger_from_env(environ=None) -> Purger | None:
    env = os.environ if environ is None else environ
    return purger_for(env.get("WHEELWRIGHT_CDN"), env.get("WHEELWRIGHT_CDN_TOKEN"),
                      env.get("WHEELWRIGHT_CDN_API"))


# -- what is owed, and delivering it --------------------------------------------------------------------

def owe(conn: psycopg.Connection, keys: Iterable[str], removals: dict[str, list[str]] | None = None) -> int:
    """Record purges owed (inside the caller's transaction); ``removals``: key -> tree paths to unlink
    once that key is purged. Returns how many keys."""
    removals = removals or {}
    keys = sorted(set(keys) | removals.keys())
    if not keys:
        return 0
    if len(keys) > PURGE_ALL_ABOVE:
        # Everything changed (a first publish): purge everything once; removals still wait for it.
        paths = sorted({p for ps in removals.values() for p in ps})
        keys, removals = [ALL], {ALL: paths}
    conn.execute(db.query("cdn_owe"), {"keys": keys,
                                       "removals": [json.dumps(removals.get(k, [])) for k in keys]})
    return len(keys)


@dataclass
class Delivery:
    purged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    removed: int = 0
    calls: int = 0
    error: str | None = None

    def summary(self) -> str:
        text = f"purged {len(self.purged)} keys in {self.calls} calls"
        if self.removed:
            text += f", then removed {self.removed} files"
        if self.failed:
            text += f"; {len(self.failed)} keys still owed ({self.error})"
        return text


RemoveAfterPurge = Callable[[str, list[str]], int]


def deliver(conn: psycopg.Connection, purger: Purger, *, remove: RemoveAfterPurge | None = None,
            force: bool = False, deadline: float = 60.0, backoff: float = 0.5,
            sleep: Callable[[float], None] = time.sleep) -> Delivery:
    """Send the owed purges; forget each key the CDN confirmed. Retries a failing call with
    exponential back-off (or the vendor's Retry-After) while its waits add up to at most ``deadline``
    seconds, then leaves the rest owed with a back-off recorded in the catalog (``force`` ignores
    that back-off).
    ``remove(key, paths)`` unlinks what a purged key allowed, returning how many files went; the key
    is then owed once more, so the edge forgets the removed files too."""
    waited = [0.0]
    done = Delivery()
    calls_before = purger.calls
    rounds = 0
    while rounds < 3:   # at most: purge, remove, purge again
        rounds += 1
        with conn.transaction():
            rows = conn.execute(db.query("cdn_owed"), {"force": force or rounds > 1,
                                                       "limit": 1_000_000}).fetchall()
        if not rows:
            break
        again: dict[str, list[str]] = {}
        for start in range(0, len(rows), purger.batch):
            chunk = rows[start:start + purger.batch]
            keys = [r[0] for r in chunk]
            error = _send(purger, keys, waited, deadline, backoff, sleep)
            if error is not None:
                rest = [r[0] for r in rows[start:]]
                with conn.transaction():
                    conn.execute(db.query("cdn_failed"), {"keys": rest, "error": error[:500]})
                done.failed.extend(rest)
                done.error = error
                log.warning("CDN purge failed, %d keys stay owed: %s", len(rest), error)
                done.calls = purger.calls - calls_before
                return done
            # Files go before the debt is forgotten: a crash in between purges and tries them again.
            removed_under = []
            for key, _version, paths in chunk:
                if paths and remove is not None:
                    removed = remove(key, list(paths))
                    done.removed += removed
                    if removed:
                        removed_under.append(key)
            with conn.transaction():
                conn.execute(db.query("cdn_delivered"), {"keys": keys, "versions": [r[1] for r in chunk]})
                owe(conn, removed_under)   # the edge may hold the removed files: purge once more
            done.purged.extend(keys)
            again.update(dict.fromkeys(removed_under))
        if not again:
            break
    done.calls = purger.calls - calls_before
    if done.purged:
        log.info("CDN: %s", done.summary())
    return done


def _send(purger: Purger, keys: list[str], waited: list[float], deadline: float, backoff: float,
          sleep: Callable[[float], None]) -> str | None:
    """One batch, retried while the waits of this delivery stay within ``deadline`` seconds; None when
    confirmed, else the last error."""
    attempt = 0
    while True:
        try:
            purger.purge(keys)
            return None
        except PurgeError as exc:
            if exc.permanent:
                return str(exc)
            wait = exc.retry_after if exc.retry_after is not None else backoff * (2 ** attempt)
            attempt += 1
            if waited[0] + wait > deadline:
                return str(exc)
            log.info("CDN purge failed (%s); retrying in %.1fs", exc, wait)
            waited[0] += wait
            sleep(wait)


def lag(conn: psycopg.Connection) -> tuple[int, float, int]:
    """(purges owed, age of the oldest in seconds, most failed attempts of one)."""
    row = conn.execute(db.query("cdn_lag")).fetchone()
    return int(row[0]), float(row[1]), int(row[2])


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, min(float(value), 300.0))
    except ValueError:
        return None


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def publish_and_purge(conn: psycopg.Connection, settings, purger: Purger | None, *, full: bool = False,
                      progress=None, deadline: float = 60.0):
    """What ``wheelwright index`` and the publish DAG both do: publish the tree with the configured
    PyPI (one configuration, one rendering), then deliver what the CDN owes (when there is one).
    Returns (PublishResult, Delivery or None)."""
    from wheelwright.config import pypi_base
    from wheelwright.publish import writer
    result = writer.publish(conn, settings.output, full=full, pypi_url=pypi_base(settings.pypi_url),
                            progress=progress, purging=purger is not None, site_url=settings.site_url)
    if purger is None:
        return result, None
    return result, deliver(conn, purger, remove=writer.remover(conn, settings.output), deadline=deadline)


# -- cache rules: what the origin tells clients and the edge ---------------------------------------------

IMMUTABLE = "public, max-age=31536000, immutable"
PAGE = "public, max-age=60, s-maxage=600, stale-while-revalidate=60, stale-if-error=86400"
REDIRECT = "public, max-age=86400"
ERROR = "public, max-age=60, s-maxage=60"
_IMMUTABLE_PATH = re.compile(r"/simple/[^/]+/[^/]+\.whl(?:\.metadata)?\Z|/logs/.*\.txt\.gz\Z")


def cache_control(status: int, path: str) -> str:
    """The Cache-Control of a response (nginx/wheelwright.conf's map, in Python): files served under a
    name that never changes are immutable; pages a minute at the client and ten minutes at the edge
    (purged on change), stale while revalidating or when the origin fails; errors briefly."""
    if status in (200, 206, 304) and _IMMUTABLE_PATH.match(path):
        return IMMUTABLE
    if status == 301:
        return REDIRECT
    if status >= 400:
        return ERROR
    return PAGE
