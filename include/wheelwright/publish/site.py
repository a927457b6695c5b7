"""The site around the project pages: home, search, FAQ, JSON API, 404, sitemap, and their data files.

Everything here is static, rendered by the publisher into the same tree (atomically, and a file whose
bytes did not change is not written: :class:`~wheelwright.publish.tree.StagedTree`), and shares one
look with the project pages (``templates/base.html``, ``static/site.css``). What it writes, and when:

    index.html                     home: what the index serves, totals and their trends, recent builds
                                   (at most every HOME_INTERVAL, when something was published)
    packages.html, faq.html,       the search page, the FAQ, the JSON API and the 404 page, and the
    json.html, 404.html, static/   stylesheet and script they share: every run (they change with the
                                   code or the site's URL only, so nearly always unchanged)
    search/<prefix>.json           the search index, sharded: see :func:`search_shards`
    sitemap.xml, sitemap<N>.xml    every project page, 50,000 to a file (with WHEELWRIGHT_SITE_URL)
                                   — both when packages.json changed, at most every SEARCH_INTERVAL
    queue.json                     the head of every target's build queue and its pace, which project
                                   pages read for the position of a queued release (at most every
                                   QUEUE_INTERVAL: positions move with every build, pages do not)

Search without a server, fast on a million names: a browser cannot load every name on a phone at every
visit (PyPI has ~900k names, ~13 MB as a bare list). So the names are sharded by the first two letters
of each word of the name (``rpi-gpio`` is in ``search/rp.json`` and ``search/gp.json``), and a shard
holding more than SHARD_LIMIT names is split again by one more letter (``search/py.json`` then only
holds the most downloaded names of its words and says ``split``; ``pyt.json`` and so on hold the rest),
so a search fetches one or two small files and filters a few thousand names. ``bench/bench_search.py``
measures it in Chromium over PyPI's real names.

This room must not change the catalog; it reads it, in the publisher's snapshot.
"""

from __future__ import annotations

import gc
import os
from bisect import bisect_left, bisect_right
from heapq import nsmallest
from datetime import datetime, timezone
from functools import lru_cache
from html import escape
from importlib.resources import files

import psycopg

from wheelwright.catalog import db
from wheelwright.publish import pages
from wheelwright.publish.pages import json_bytes
from wheelwright.publish.tree import StagedTree, is_temp

SHARD_LIMIT = 3000        # names in a shard before it is split by one more letter
SPLIT_HEAD = 100          # what a split shard keeps: its most downloaded names (besides exact words)
MAX_PREFIX = 12           # a prefix this long is not split further (its shard keeps the most downloaded)
SITEMAP_URLS = 50_000     # the sitemaps protocol's limit per file
QUEUE_HEAD = 1000         # releases of each target's queue whose position a page can show
HOME_RECENT = 15          # recent builds on the home page
HOME_INTERVAL = 300       # seconds: the home page is rewritten at most this often
QUEUE_INTERVAL = 60       # ... queue.json
SEARCH_INTERVAL = 300     # ... the search shards and the sitemaps
STATIC_PAGES = ("packages.html", "faq.html", "json.html", "404.html")
ASSETS = ("site.css", "site.js")


# -- the search index ---------------------------------------------------------------------------------

_NEXT = "0123456789abcdefghijklmnopqrstuvwxyz"


def search_shards(rows) -> dict[str, bytes]:
    """The shards of the search index, by prefix: ``{"ab": b'{"prefix": "ab", "split": false,
    "entries": [[canonical, downloads in 30 days, display name if it differs], ...]}'}``.

    ``rows`` are (canonical name, display name, downloads in 30 days). A name is in the shard of each
    of its words' first two letters (a one-letter word: that letter). A shard of more than SHARD_LIMIT
    names is split: it keeps the names with a word equal to its prefix and its SPLIT_HEAD most
    downloaded, and says ``"split": true``; the names go on to the shards one letter longer. Entries
    are most downloaded first, then by name.
    """
    # Names ranked once (most downloaded first); then every (word, rank) pair sorted by word, so the
    # names of any prefix are one contiguous range, found by bisection. Millions of small objects
    # that all live to the end: the cyclic garbage collector would only rescan them.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        ranked = sorted(rows, key=lambda r: (-(r[2] or 0), r[0]))
        entries = [[canon, last_30 or 0, display] if display and display != canon else [canon, last_30 or 0]
                   for canon, display, last_30 in ranked]
        pairs = sorted((word, rank) for rank, (canon, _d, _n) in enumerate(ranked)
                       for word in set(canon.split("-")) if word)
        words = [w for w, _ in pairs]
        ranks = [r for _, r in pairs]
        del pairs
    finally:
        if gc_was_on:
            gc.enable()
    out: dict[str, bytes] = {}

    def shard(prefix: str, lo: int, hi: int) -> None:
        if hi - lo <= SHARD_LIMIT or len(prefix) >= MAX_PREFIX or len(prefix) < 2:
            names = sorted(set(ranks[lo:hi]))
            out[prefix] = _shard(prefix, [entries[i] for i in names[:SHARD_LIMIT]], split=False,
                                 truncated=len(names) > SHARD_LIMIT)
            return
        exact_end = bisect_right(words, prefix, lo, hi)   # words equal to the prefix sort first
        head = set(nsmallest(2 * SPLIT_HEAD, ranks[lo:hi]))   # a name may be there twice (two words)
        kept = sorted(set(ranks[lo:exact_end][:SHARD_LIMIT]) | set(sorted(head)[:SPLIT_HEAD]))
        out[prefix] = _shard(prefix, [entries[i] for i in kept], split=True)
        start = exact_end
        for c in _NEXT:
            end = bisect_left(words, prefix + chr(ord(c) + 1), start, hi)
            if end > start:
                shard(prefix + c, start, end)
            start = end

    lo = 0
    while lo < len(words):
        key = words[lo][:2]
        hi = bisect_left(words, key + "\x7f", lo) if len(key) == 2 else bisect_right(words, key, lo)
        shard(key, lo, hi)
        lo = hi
    return out


def _shard(prefix: str, entries: list, *, split: bool, truncated: bool = False) -> bytes:
    data = {"prefix": prefix, "split": split, "entries": entries}
    if truncated:
        data["truncated"] = True
    return json_bytes(data)


def write_search(tree: StagedTree, rows) -> bool:
    """Write the search shards (and drop shards no name needs any more); whether anything changed."""
    folder = os.path.join(tree.root, "search")
    before = tree.touched
    shards = search_shards(rows)
    for prefix, data in shards.items():
        tree.write(os.path.join(folder, prefix + ".json"), data)
    tree.write(os.path.join(folder, "index.json"), json_bytes({
        "generated": _now(), "names": len(rows), "shards": len(shards)}))
    for entry in _scandir(folder):
        name = entry.name
        if name.endswith(".json") and name[:-5] not in shards and name != "index.json" and not is_temp(name):
            tree.remove(entry.path)
    return tree.touched != before


# -- the sitemap --------------------------------------------------------------------------------------

def sitemaps(site_url: str, names: list[str]) -> dict[str, bytes]:
    """``sitemap.xml`` (an index) and ``sitemap0.xml`` (the site's pages), ``sitemap1.xml``... (the
    project pages, SITEMAP_URLS to a file), with absolute URLs under ``site_url``."""
    base = escape(site_url.rstrip("/"))
    head = '<?xml version="1.0" encoding="UTF-8"?>\n'
    urlset = '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'

    def urls(paths) -> bytes:
        return (head + urlset + "".join(f"  <url><loc>{base}/{escape(p)}</loc></url>\n" for p in paths)
                + "</urlset>\n").encode()

    out = {"sitemap0.xml": urls(["", "packages.html", "faq.html", "json.html", "stats/"])}
    for i in range(0, len(names), SITEMAP_URLS):
        out[f"sitemap{i // SITEMAP_URLS + 1}.xml"] = urls(f"project/{n}/" for n in names[i:i + SITEMAP_URLS])
    index = [head, '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n']
    index += [f"  <sitemap><loc>{base}/{name}</loc></sitemap>\n" for name in sorted(out, key=_sitemap_order)]
    index.append("</sitemapindex>\n")
    out["sitemap.xml"] = "".join(index).encode()
    return out


def _sitemap_order(name: str) -> int:
    digits = name[len("sitemap"):-len(".xml")]
    return int(digits) if digits.isdigit() else -1


def write_sitemaps(tree: StagedTree, site_url: str | None, names: list[str]) -> bool:
    """Write the sitemaps (none without a site URL: a sitemap needs absolute URLs) and drop surplus
    ones; whether anything changed."""
    before = tree.touched
    wanted = sitemaps(site_url, names) if site_url else {}
    for name, data in wanted.items():
        tree.write(os.path.join(tree.root, name), data)
    for entry in _scandir(tree.root):
        if entry.name.startswith("sitemap") and entry.name.endswith(".xml") and entry.name not in wanted:
            tree.remove(entry.path)
    return tree.touched != before


# -- the build queue, for the positions on project pages ----------------------------------------------

def queue_data(conn: psycopg.Connection, *, head: int = QUEUE_HEAD) -> dict:
    """Every enabled target: the head of its queue (the releases it builds next, in order), its length
    as last sampled, and its pace (builds finished per hour over the last day)."""
    from wheelwright.builds.queue import queue_head

    targets = {}
    for name, paused, takes, length, sampled, per_hour in conn.execute(db.query("publish_queue_targets")):
        targets[name] = {
            "paused": paused,
            "takes_builds": takes,
            "length": length,
            "length_sampled": _iso(sampled),
            "per_hour": round(per_hour, 2),
            "head": [list(pair) for pair in queue_head(conn, name, head)],
        }
    return {"generated": _now(), "targets": targets}


# -- the home page ------------------------------------------------------------------------------------

def home_data(conn: psycopg.Connection) -> dict:
    """What the home page shows: the totals, their trends, the recent builds, the targets."""
    (packages, releases, wheels, wheel_bytes, built_packages, builds_day, success_day,
     downloads_30) = conn.execute(db.query("publish_home_totals")).fetchone()
    trend = conn.execute(db.query("publish_home_trends")).fetchall()
    recent = conn.execute(db.query("publish_home_recent"), {"limit": HOME_RECENT}).fetchall()
    targets = conn.execute(db.query("publish_home_targets")).fetchall()
    return {
        "generated": _now(),
        "totals": {"packages": packages, "releases": releases, "wheels": wheels, "wheel_bytes": wheel_bytes,
                   "built_packages": built_packages, "builds_day": builds_day, "success_day": success_day,
                   "downloads_30": downloads_30},
        "trend": [{"day": day.isoformat(), "built": built, "failed": failed, "wheels": total,
                   "downloads": downloads} for day, built, failed, total, downloads in trend],
        "recent": [{"package": p, "name": name, "version": v, "target": t, "finished": _iso(when),
                    "files": files} for p, name, v, t, when, files in recent],
        "targets": [{"name": n, "abi": abi, "platform": platform, "distro": distro, "paused": paused}
                    for n, abi, platform, distro, paused in targets],
    }


def home_html(data: dict, index_url: str | None) -> bytes:
    from wheelwright.operate.dashboard_app import bar_chart, line_chart

    trend = data["trend"]
    labels = [d["day"][5:] for d in trend]
    charts = {
        "builds": bar_chart(labels, {"built": [d["built"] for d in trend], "failed": [d["failed"] for d in trend]},
                            colours={"built": "#16a34a", "failed": "#dc2626"}, width=560, height=180,
                            title="builds per day"),
        "wheels": line_chart({"wheels": [(datetime.fromisoformat(d["day"]), d["wheels"]) for d in trend]},
                             width=560, height=180, title="wheels served"),
        "downloads": bar_chart(labels, {"downloads": [d["downloads"] for d in trend]}, width=560, height=180,
                               title="downloads per day"),
    }
    return pages.template("home.html").render(
        d=data, charts=charts, root="", page="home", index_url=index_url, lines=_lines(index_url)).encode()


def _lines(index_url: str | None) -> dict:
    """The commands the home page and the FAQ show, with the site's index or a placeholder the page
    replaces with its own origin (``fill``)."""
    url = index_url or pages.SITE_PLACEHOLDER + "/simple/"
    return {"pip": f"pip3 install PACKAGE --extra-index-url {url}",
            "uv": f"uv pip install PACKAGE --extra-index-url {url}",
            "conf": f"[global]\nextra-index-url={url.rstrip('/')}",
            "base": url[:-len("/simple/")],
            "fill": not index_url}


# -- the static pages and assets ----------------------------------------------------------------------

def static_pages(index_url: str | None, targets: list[dict]) -> dict[str, bytes]:
    """The pages and assets that change only with the code, the targets or the site's URL (rendered
    once per process for each of those: every publishing run asks)."""
    return dict(_static_pages(index_url, tuple(tuple(sorted(t.items())) for t in targets)))


@lru_cache(maxsize=4)
def _static_pages(index_url: str | None, target_items: tuple) -> tuple[tuple[str, bytes], ...]:
    targets = [dict(items) for items in target_items]
    out = {}
    # 404.html answers for any missing URL, at any depth: its links start at the site's root.
    for name, page, root in (("packages.html", "search", ""), ("faq.html", "faq", ""),
                             ("json.html", "json", ""), ("404.html", "notfound", "/")):
        out[name] = pages.template(name).render(root=root, page=page, lines=_lines(index_url),
                                                targets=targets).encode()
    static = files("wheelwright.publish").joinpath("templates", "static")
    for name in ASSETS:
        out["static/" + name] = static.joinpath(name).read_bytes()
    return tuple(out.items())


def write_static(tree: StagedTree, index_url: str | None, targets: list[dict]) -> bool:
    before = tree.touched
    for name, data in static_pages(index_url, targets).items():
        tree.write(os.path.join(tree.root, name), data)
    return tree.touched != before


# -- helpers ------------------------------------------------------------------------------------------

def due(path: str, interval: float, now: float) -> bool:
    """Whether a file rewritten at most every ``interval`` seconds may be rewritten now."""
    try:
        return now - os.stat(path).st_mtime >= interval
    except FileNotFoundError:
        return True


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso(when) -> str | None:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


def _scandir(path: str) -> list[os.DirEntry]:
    try:
        return list(os.scandir(path))
    except FileNotFoundError:
        return []
