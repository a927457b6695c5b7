"""Benchmark the static search over every PyPI name, in a real browser (Debian's Chromium).

    .venv/bin/python bench/bench_search.py /work/shared/data/pypi-names.tsv.gz [--limit N]

Takes every name of the names file (canonicalised, ~890k), gives them download figures shaped like a
real index's (a few names very popular, most never downloaded: a Zipf law over a random order), and:

1. builds the sharded search index the publisher writes (``wheelwright.publish.site.search_shards``):
   how long, how many shards, their total and largest size, plain and gzipped (nginx compresses them);
2. serves it with the site's own search page and script from wheelwright's static server, opens the
   page in headless Chromium with the HTTP cache off, and for each query times the page's own search
   function (``window.wheelwrightSearch``: fetch the shards it needs, filter, rank) the first time
   (cold: its shards come over the network) and again (warm), with the bytes it fetched;
3. for comparison, the simplest alternative: one file of every name (``[[name, downloads], ...]``),
   fetched and parsed once, then a linear filter per query, in the same browser.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from packaging.utils import canonicalize_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.browser import Browser  # noqa: E402  (the tests' DevTools driver of /usr/bin/chromium)
from wheelwright.operate.static_server import make_server  # noqa: E402
from wheelwright.publish import site  # noqa: E402

QUERIES = ["numpy", "rpi gpio", "gpio", "opencv", "django-rest", "tensorflow", "requests", "flask",
           "py", "pyth", "python-date", "odoo14-addon", "a", "zzzz-no-such-name"]
TYPED = "numpy"   # typed a letter at a time: what each keystroke costs


def read_names(path: Path, limit: int | None) -> list[str]:
    names = set()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        next(f)
        for line in f:
            names.add(canonicalize_name(line.split("\t", 1)[0]))
            if limit and len(names) >= limit:
                break
    return sorted(n for n in names if n)


def with_downloads(names: list[str]) -> list[tuple[str, str, int]]:
    """(name, display, downloads in 30 days): Zipf over a shuffled order, 90% never downloaded."""
    rng = random.Random(7)
    order = names[:]
    rng.shuffle(order)
    popular = order[: len(order) // 10]
    figures = {name: int(2_000_000 / (rank + 1)) for rank, name in enumerate(popular)}
    for famous in ("numpy", "requests", "rpi-gpio", "opencv-python", "flask"):
        figures[famous] = 5_000_000
    return [(name, name, figures.get(name, 0)) for name in names]


def build(rows, root: Path) -> dict:
    started = time.perf_counter()
    shards = site.search_shards(rows)
    seconds = time.perf_counter() - started
    folder = root / "search"
    folder.mkdir(parents=True)
    sizes, zipped = [], []
    for prefix, data in shards.items():
        (folder / f"{prefix}.json").write_bytes(data)
        sizes.append(len(data))
        zipped.append(len(gzip.compress(data, 6)))
    for name, data in site.static_pages(None, []).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    everything = json.dumps([[name, n] for name, _d, n in rows], separators=(",", ":")).encode()
    (root / "all-names.json").write_bytes(everything)
    return {"seconds": seconds, "shards": len(shards), "bytes": sum(sizes), "gzip": sum(zipped),
            "largest": max(sizes), "largest_gzip": max(zipped), "median": statistics.median(sizes),
            "all_bytes": len(everything), "all_gzip": len(gzip.compress(everything, 6))}


SEARCH = """(async () => {
  const before = performance.getEntriesByType('resource').length;
  const t = performance.now();
  const r = await window.wheelwrightSearch(%s, 50);
  const ms = performance.now() - t;
  const fetched = performance.getEntriesByType('resource').slice(before)
    .reduce((n, e) => n + (e.transferSize || e.encodedBodySize || 0), 0);
  return [ms, r.total, r.found.length ? r.found[0][0] : null, fetched];
})()"""

BASELINE = """(async () => {
  const t = performance.now();
  const all = await (await fetch('all-names.json')).json();
  const loaded = performance.now() - t;
  const times = [];
  for (const q of %s) {
    const c = q.toLowerCase().replace(/[-_.\\s]+/g, '-');
    const s = performance.now();
    const found = all.filter(e => e[0].includes(c)).sort((a, b) => b[1] - a[1]).slice(0, 50);
    times.push(performance.now() - s);
  }
  return [loaded, times];
})()"""


def measure(url: str) -> dict:
    browser = Browser()
    try:
        browser.send("Network.setCacheDisabled", cacheDisabled=True)
        browser.send("Performance.enable")
        rows = []
        for query in QUERIES:
            browser.goto(url + "/packages.html")
            browser.wait_for("typeof window.wheelwrightSearch === 'function'", timeout=30)
            cold = browser.evaluate(SEARCH % json.dumps(query))
            warm = browser.evaluate(SEARCH % json.dumps(query))
            rows.append((query, cold, warm))
        browser.goto(url + "/packages.html")
        browser.wait_for("typeof window.wheelwrightSearch === 'function'", timeout=30)
        typed = [browser.evaluate(SEARCH % json.dumps(TYPED[:n])) for n in range(1, len(TYPED) + 1)]
        browser.goto(url + "/packages.html")
        loaded, filters = browser.evaluate(BASELINE % json.dumps(QUERIES))
        heap = browser.evaluate("performance.memory ? performance.memory.usedJSHeapSize : 0")
        return {"rows": rows, "typed": typed, "baseline": (loaded, filters, heap)}
    finally:
        browser.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", type=Path)
    parser.add_argument("--limit", type=int, help="only the first N names")
    args = parser.parse_args(argv)
    names = read_names(args.names, args.limit)
    rows = with_downloads(names)
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        root = Path(tmp)
        built = build(rows, root)
        print(f"{len(rows):,} names -> {built['shards']:,} shards in {built['seconds']:.1f} s "
              f"(one CPU, the publisher's code)")
        print(f"  shards: {built['bytes'] / 1e6:.1f} MB in all ({built['gzip'] / 1e6:.1f} MB gzipped); "
              f"largest {built['largest'] / 1e3:.0f} kB ({built['largest_gzip'] / 1e3:.0f} kB gzipped), "
              f"median {built['median'] / 1e3:.1f} kB")
        print(f"  one file of every name instead: {built['all_bytes'] / 1e6:.1f} MB "
              f"({built['all_gzip'] / 1e6:.1f} MB gzipped)")
        server = make_server(root, 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            result = measure(f"http://127.0.0.1:{server.server_address[1]}")
        finally:
            server.shutdown()
            server.server_close()
    print("\nsearch in Chromium (the page's own function; HTTP cache off; plain bytes, nginx would gzip):")
    print(f"  {'query':<20} {'cold ms':>8} {'warm ms':>8} {'fetched kB':>11} {'found':>8}  first")
    for query, cold, warm in result["rows"]:
        print(f"  {query!r:<20} {cold[0]:8.1f} {warm[0]:8.1f} {cold[3] / 1e3:11.1f} {cold[1]:8,}  {cold[2]}")
    colds = [cold[0] for _q, cold, _w in result["rows"]]
    warms = [warm[0] for _q, _c, warm in result["rows"]]
    print(f"  median: cold {statistics.median(colds):.1f} ms, warm {statistics.median(warms):.1f} ms; "
          f"slowest cold {max(colds):.1f} ms")
    print(f"  typing {TYPED!r} a letter at a time: " +
          ", ".join(f"{TYPED[:n + 1]} {t[0]:.1f} ms ({t[3] / 1e3:.0f} kB)" for n, t in enumerate(result["typed"])))
    loaded, filters, heap = result["baseline"]
    print(f"\none file of every name: fetched and parsed in {loaded:.0f} ms, then a linear filter per query: "
          f"median {statistics.median(filters):.1f} ms, slowest {max(filters):.1f} ms"
          + (f"; JS heap {heap / 1e6:.0f} MB" if heap else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
