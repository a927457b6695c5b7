"""Benchmark what the edge's request rule and Accept negotiation cost per request, at each server.

    .venv/bin/python bench/bench_edge.py [--requests 2000]

Starts the static server, nginx with the shipped config and Varnish with the shipped VCL in front of
that nginx, over a small tree (tests/support/edge_cases.make_tree), and sends each kind of request
--requests times, one connection each, as raw bytes: a page served (the rule says "go on"), a
non-canonical name (301), a target refused for a CR (400), and a page asked with an Accept header of
7,000 spaces (the negotiation's worst case). Prints the median and 99th percentile of the time to the
whole answer, in milliseconds; Varnish's pages are cache hits after the first. ``request_paths.judge``
is timed on its own too.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))   # the servers the tests use

from support.edge_cases import make_tree, raw_get  # noqa: E402
from support.serving import edge, serve  # noqa: E402
from wheelwright.publish.request_paths import judge  # noqa: E402

KINDS = {
    "page (go on)": (b"/simple/demo/", b""),
    "redirect (301)": (b"/simple/Demo/demo-1.0-py3-none-any.whl", b""),
    "refused (400)": (b"/simple/Demo/%0dSet-Cookie:%20x=1", b""),
    "Accept of 7,000 spaces": (b"/simple/demo/",
                               b"Accept: application/vnd.pypi.simple.v1+json" + b" " * 7000 + b"x\r\n"),
}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args(argv)

    targets = [target for target, _ in KINDS.values()]
    start = time.perf_counter()
    for _ in range(args.requests):
        for target in targets:
            judge(target)
    per_call = (time.perf_counter() - start) / (args.requests * len(targets))
    print(f"request_paths.judge: {per_call * 1e6:.1f} µs a target")

    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        tmp = Path(tmp)
        tree = make_tree(tmp / "www")
        servers = {"static server": serve(tree, tmp / "python", "python")}
        try:
            servers["nginx"] = serve(tree, tmp / "nginx", "nginx")
            servers["varnish (hits)"] = edge(servers["nginx"], tmp / "varnish")
            print(f"{'':24}" + "".join(f"{name:>26}" for name in servers))
            for kind, (target, headers) in KINDS.items():
                cells = []
                for served in servers.values():
                    times, statuses = [], set()
                    for _ in range(args.requests):
                        t = time.perf_counter()
                        statuses.add(raw_get(served.port, target, headers).status)
                        times.append((time.perf_counter() - t) * 1000)
                    cells.append(f"{pct(times, 0.5):6.2f} / {pct(times, 0.99):6.2f} ms {'/'.join(map(str, sorted(statuses)))}")
                print(f"{kind:24}" + "".join(f"{cell:>26}" for cell in cells))
            print("(median / 99th percentile of the time to the whole answer, one connection a request; "
                  "then the status seen)")
        finally:
            for served in reversed(list(servers.values())):
                served.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
