"""Atom feeds of failed builds: valid Atom (read back with a real XML parser and held to RFC 4287's
rules), links that resolve, written by the publisher when failures change, served with their type and
their CDN keys."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime
from urllib.parse import urljoin

import pytest

from support.index_world import World
from support.serving import serve
from wheelwright.publish import cdn, feeds
from wheelwright.publish.writer import publish

ATOM = "{http://www.w3.org/2005/Atom}"
XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})\Z")


def parse_atom(data: bytes) -> ET.Element:
    """Parse ``data`` and check what RFC 4287 requires of a feed and its entries; the feed element."""
    feed = ET.fromstring(data)
    assert feed.tag == f"{ATOM}feed"

    def one(parent, name):
        found = parent.findall(f"{ATOM}{name}")
        assert len(found) == 1, f"{parent.tag} must have exactly one atom:{name}, has {len(found)}"
        return found[0]

    for element in [feed, *feed.findall(f"{ATOM}entry")]:
        assert one(element, "id").text.startswith("urn:uuid:")
        assert one(element, "title").text
        assert RFC3339.match(one(element, "updated").text), one(element, "updated").text
        for link in element.findall(f"{ATOM}link"):
            assert link.get("href") is not None, "atom:link needs href"
    entries = feed.findall(f"{ATOM}entry")
    assert feed.findall(f"{ATOM}author") or all(e.findall(f"{ATOM}author") for e in entries), \
        "an author, on the feed or on every entry"
    for entry in entries:
        alternates = [l for l in entry.findall(f"{ATOM}link") if l.get("rel", "alternate") == "alternate"]
        assert entry.findall(f"{ATOM}content") or alternates, "an entry without content needs a link"
    assert [l.get("rel") for l in feed.findall(f"{ATOM}link")].count("self") == 1
    return feed


def resolve(feed_url: str, feed: ET.Element, href: str) -> str:
    return urljoin(urljoin(feed_url, feed.get(XML_BASE, "")), href)


def failure(n: int, *, package="gizmo", version="1.0", reason="pip wheel exited with status 1") -> feeds.Failure:
    return feeds.Failure(n, package, package.capitalize(), version, "cp311-armv7l", reason,
                         f"2026-03-{n:02d}T10:00:00Z", f"logs/0000/0000/{n:04d}.txt.gz")


def test_a_project_feed_is_valid_atom_whose_links_resolve_from_where_it_is_served():
    data = feeds.project_feed("gizmo", "Gizmo", [failure(3), failure(2, version="0.9")], base_url=None)
    feed = parse_atom(data)
    url = "http://127.0.0.1:8081/project/gizmo/feed.atom"
    [entry, older] = feed.findall(f"{ATOM}entry")
    assert entry.find(f"{ATOM}title").text == "Gizmo 1.0 failed to build for cp311-armv7l"
    assert entry.find(f"{ATOM}summary").text == "pip wheel exited with status 1"
    links = {l.get("rel"): resolve(url, feed, l.get("href")) for l in entry.findall(f"{ATOM}link")}
    assert links == {"alternate": "http://127.0.0.1:8081/project/gizmo/#v1.0",
                     "related": "http://127.0.0.1:8081/logs/0000/0000/0003.txt.gz"}
    self_link = next(l for l in feed.findall(f"{ATOM}link") if l.get("rel") == "self")
    assert resolve(url, feed, self_link.get("href")) == url
    assert feed.find(f"{ATOM}updated").text == "2026-03-03T10:00:00Z", "the newest failure's time"


def test_with_a_base_url_links_resolve_against_it_and_ids_are_its_own():
    base = "https://pi.example.org/"
    feed = parse_atom(feeds.site_feed([failure(1)], base_url=base))
    assert feed.get(XML_BASE) == base
    entry = feed.find(f"{ATOM}entry")
    log = next(l for l in entry.findall(f"{ATOM}link") if l.get("rel") == "related")
    assert resolve("https://anywhere.example/feeds/failures.atom", feed, log.get("href")) == \
        "https://pi.example.org/logs/0000/0000/0001.txt.gz"
    other = parse_atom(feeds.site_feed([failure(1)], base_url="https://other.example/"))
    assert entry.find(f"{ATOM}id").text != other.find(f"{ATOM}entry").find(f"{ATOM}id").text
    again = parse_atom(feeds.site_feed([failure(1)], base_url=base))
    assert entry.find(f"{ATOM}id").text == again.find(f"{ATOM}entry").find(f"{ATOM}id").text, \
        "a failure keeps its id across rewrites: a reader shows it once"


def test_hostile_text_is_escaped_and_characters_xml_forbids_are_dropped():
    nasty = failure(1, reason='</summary><script>alert(1)</script> & "\x01\x1b[31m\ud800')
    feed = parse_atom(feeds.project_feed("gizmo", "Gizmo <b>", [nasty], base_url=None))
    entry = feed.find(f"{ATOM}entry")
    assert entry.find(f"{ATOM}summary").text == '</summary><script>alert(1)</script> & "[31m'
    assert "Gizmo <b>" in feed.find(f"{ATOM}title").text


def test_an_empty_feed_is_valid_and_a_project_feed_keeps_its_latest_failures():
    parse_atom(feeds.project_feed("gizmo", "Gizmo", [], base_url=None, updated="2026-01-01T00:00:00Z"))
    many = [failure(n % 28 + 1) for n in range(80)]
    assert len(parse_atom(feeds.project_feed("gizmo", "Gizmo", many, base_url=None))
               .findall(f"{ATOM}entry")) == feeds.PROJECT_ENTRIES


# -- the publisher writes them --------------------------------------------------------------------------

@pytest.fixture
def world(catalog, settings):
    w = World(catalog, settings.output)
    w.target()
    w.target("cp313", abi="cp313", platform="linux_aarch64", distro="trixie", position=2)
    w.package("Gizmo")
    w.release("gizmo", "1.0")
    w.wheel("gizmo", "1.0")
    w.package("fails")
    w.release("fails", "2.0")
    w.build("fails", "2.0", status="failure", reason="fatal error: yaml.h: No such file or directory")
    w.package("quiet")
    w.release("quiet", "1.0")
    catalog.execute("UPDATE builds SET finished_at = '2026-03-01T12:00:00Z'")
    catalog.commit()
    return w


def entries(path) -> list[ET.Element]:
    return parse_atom(path.read_bytes()).findall(f"{ATOM}entry")


def test_every_project_has_a_feed_and_the_index_one_lists_its_failures(world, catalog, settings):
    result = publish(catalog, settings.output)
    www = settings.output
    for package in ("gizmo", "fails", "quiet"):
        assert (www / "project" / package / "feed.atom").is_file(), package
    [entry] = entries(www / "project/fails/feed.atom")
    assert "yaml.h" in entry.find(f"{ATOM}summary").text
    assert entries(www / "project/gizmo/feed.atom") == []
    assert [e.find(f"{ATOM}title").text for e in entries(www / "feeds/failures.atom")] == \
        ["fails 2.0 failed to build for cp311"]
    assert result.feeds_changed and cdn.FEEDS in result.purge_keys()
    assert 'href="feed.atom"' in (www / "project/fails/index.html").read_text()


def test_a_feed_is_rewritten_when_its_failures_change_and_only_then(world, catalog, settings):
    publish(catalog, settings.output)
    world.changed("gizmo", "fails")
    unchanged = publish(catalog, settings.output)
    assert not unchanged.feeds_changed and cdn.FEEDS not in unchanged.purge_keys()
    before = (settings.output / "project/gizmo/feed.atom").read_bytes()
    world.build("gizmo", "1.0", "cp313", status="failure", reason="ld: cannot find -lssl")
    catalog.execute("UPDATE builds SET finished_at = '2026-03-02T08:00:00Z' WHERE finished_at IS NULL")
    catalog.commit()
    changed = publish(catalog, settings.output)
    assert (settings.output / "project/gizmo/feed.atom").read_bytes() != before
    assert changed.feeds_changed and {cdn.FEEDS, "project/gizmo"} <= set(changed.purge_keys())
    titles = [e.find(f"{ATOM}title").text for e in entries(settings.output / "feeds/failures.atom")]
    assert titles == ["Gizmo 1.0 failed to build for cp313", "fails 2.0 failed to build for cp311"]


def test_a_taken_down_project_leaves_the_index_feed(world, catalog, settings):
    from wheelwright.operate.takedowns import remove
    publish(catalog, settings.output)
    remove(catalog, "fails", reason="licence", by="ops")
    publish(catalog, settings.output)
    assert entries(settings.output / "feeds/failures.atom") == []


def test_feeds_are_served_as_atom_with_their_cdn_keys(world, catalog, settings, tmp_path):
    publish(catalog, settings.output)
    served = serve(settings.output, tmp_path / "server")
    try:
        for path, keys in [("/feeds/failures.atom", "feeds all"), ("/project/fails/feed.atom", "project/fails all")]:
            status, headers, body = served.get(path)
            assert status == 200, path
            assert headers["Content-Type"].startswith("application/atom+xml"), (served.kind, headers["Content-Type"])
            assert headers["Surrogate-Key"] == keys and headers["xkey"] == keys
            assert headers["Cache-Control"] == cdn.cache_control(200, path)
            parse_atom(body)
    finally:
        served.stop()


def test_the_times_in_a_feed_are_the_builds_own():
    feed = parse_atom(feeds.site_feed([failure(9)], base_url=None))
    assert datetime.fromisoformat(feed.find(f"{ATOM}entry").find(f"{ATOM}updated").text) == \
        datetime.fromisoformat("2026-03-09T10:00:00+00:00")
