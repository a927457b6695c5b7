"""Atom feeds of failed builds: what a maintainer follows to learn that their release does not build.

piwheels' users ask for failure notices (its issues): a maintainer wants to hear that a release failed
on the Pi targets without visiting a page every day. A feed reader is what they already have, so the
index publishes, as static files beside everything else:

- ``project/<pkg>/feed.atom``: the project's latest final failures (newest first), one entry per
  failed build: release, target, the reason the project page shows, and links to the page and the log;
  every visible project has one (empty until something fails), so the page can always link to it;
- ``feeds/failures.atom``: the latest failures of the whole index, for the operator and the curious.

Links are relative to the site's root, with the feed's ``xml:base`` saying where that is: the site's
base URL when one is set (``WHEELWRIGHT_SITE_URL``), else the root as seen from the feed's own place
(``../../`` from a project's feed), so a reader resolves them against wherever it fetched the feed.
Ids are ``urn:uuid`` names derived from the base URL and the build id: stable across rewrites (a
reader shows each failure once) and distinct between two indexes with base URLs of their own.

Pure functions from plain data to bytes, like :mod:`wheelwright.publish.pages`, and as cheap (a
project's feed is written on every full publish): strings with XML escaping, no tree of objects. Text
from outside (names, versions, reasons) is escaped, and characters XML 1.0 forbids are dropped. The
same data gives the same bytes, so the writer rewrites a feed (and the CDN purges it) only when its
failures change.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

PROJECT_ENTRIES = 50
SITE_ENTRIES = 100
SITE_FEED = "feeds/failures.atom"
EPOCH = "1970-01-01T00:00:00Z"       # the "updated" of a feed that has never had an entry
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed build, as a feed shows it."""

    build_id: int
    package: str              # canonical name
    display_name: str
    version: str
    target: str
    reason: str | None
    finished_at: str          # ISO 8601 UTC
    log_path: str | None      # relative to the tree


def project_feed(package: str, display_name: str, failures: list[Failure], *, base_url: str | None,
                 updated: str | None = None) -> bytes:
    """``project/<package>/feed.atom``: ``failures`` newest first (the first :data:`PROJECT_ENTRIES`).
    ``updated`` stands in for a feed without entries (say, the newest release's date)."""
    path = f"project/{package}/feed.atom"
    return _feed(path=path, title=f"{display_name}: failed builds", page=f"project/{package}/",
                 failures=failures[:PROJECT_ENTRIES], base_url=base_url, updated=updated)


def site_feed(failures: list[Failure], *, base_url: str | None) -> bytes:
    """``feeds/failures.atom``: the index's latest failures, newest first."""
    return _feed(path=SITE_FEED, title="Failed builds", page="", failures=failures[:SITE_ENTRIES],
                 base_url=base_url, updated=None)


def _feed(*, path: str, title: str, page: str, failures: list[Failure], base_url: str | None,
          updated: str | None) -> bytes:
    base = base_url or "../" * path.count("/")
    newest = failures[0].finished_at if failures else (updated or EPOCH)
    out = ['<?xml version="1.0" encoding="utf-8"?>\n',
           f'<feed xmlns="http://www.w3.org/2005/Atom" xml:base={_attr(base)}>\n',
           f"  <id>{_id(base_url, path)}</id>\n",
           f"  <title>{_text(title)}</title>\n",
           f"  <updated>{_text(newest)}</updated>\n",
           "  <author><name>wheelwright</name></author>\n",
           f'  <link rel="self" type="application/atom+xml" href={_attr(path)}/>\n',
           f'  <link rel="alternate" type="text/html" href={_attr(page or "./")}/>\n']
    for f in failures:
        entry_page = f"project/{quote(f.package)}/#v{quote(f.version)}"
        summary = f.reason or "the build failed"
        out += ["  <entry>\n",
                f"    <id>{_id(base_url, f'build/{f.build_id}')}</id>\n",
                f"    <title>{_text(f'{f.display_name} {f.version} failed to build for {f.target}')}</title>\n",
                f"    <updated>{_text(f.finished_at)}</updated>\n",
                f'    <link rel="alternate" type="text/html" href={_attr(entry_page)}/>\n']
        if f.log_path:
            out.append(f'    <link rel="related" type="text/plain" title="build log" href={_attr(f.log_path)}/>\n')
        out += [f'    <category term={_attr(f.target)}/>\n',
                f"    <summary>{_text(summary)}</summary>\n",
                "  </entry>\n"]
    out.append("</feed>\n")
    return "".join(out).encode()


def _id(base_url: str | None, name: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, (base_url or "wheelwright:") + name).urn


def _text(value: str) -> str:
    return escape(_NOT_XML.sub("", value))


def _attr(value: str) -> str:
    return quoteattr(_NOT_XML.sub("", value))
