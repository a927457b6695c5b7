"""Fetch the corpus's sdists (data/corpus.toml) into its cache, each checked against its pinned sha256.

    .venv/bin/python bench/corpus_fetch.py                 # every release
    .venv/bin/python bench/corpus_fetch.py --ci            # only the test suite's slice
    .venv/bin/python bench/corpus_fetch.py --verify        # re-hash what the cache holds

The cache lives outside the clone: $WHEELWRIGHT_CORPUS_CACHE, else /var/tmp/wheelwright-corpus as root
and ~/.cache/wheelwright-corpus otherwise (wheelwright.testing.corpus). Files already there whole are
not fetched again. Prints the figures: releases, bytes, seconds.
"""

from __future__ import annotations

import argparse
import sys
import time

from wheelwright.testing.corpus import default_cache, fetch, load_corpus, verify


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ci", action="store_true", help="only the releases marked ci = true")
    parser.add_argument("--verify", action="store_true", help="re-hash the cached files, fetch nothing")
    args = parser.parse_args(argv)
    releases = [r for r in load_corpus() if r.ci or not args.ci]
    cache = default_cache()
    if args.verify:
        problems = verify(releases, cache)
        for line in problems:
            print(line, file=sys.stderr)
        print(f"{len(releases) - len(problems)} of {len(releases)} sdists in {cache} are the pinned files")
        return 1 if problems else 0
    started = time.monotonic()
    paths = fetch(releases, cache, progress=lambda line: print(line, file=sys.stderr, flush=True))
    total = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} sdists, {total / 2**20:.1f} MiB in {cache}, {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
