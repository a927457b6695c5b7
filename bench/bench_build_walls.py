"""What the walls around a build cost the worker, apart from the build: its disk, its tree's removal,
the index proxy.

- a build's disk (``builds.workspace``): opening and closing one with the default quota (10 GiB,
  1,000,000 files), a file system of its own when run as root (sparse file, mkfs.ext4, loop mount,
  unmount, unlink) and a watched folder;
- removing a tree (``builds.cleanup.remove_tree``) 1,600 folders deep, and a wide one (200 folders of
  100 files) beside ``shutil.rmtree`` of the same;
- the index proxy (``builds.sandbox.IndexProxy``): one file of ``--mib`` MiB fetched over loopback from
  a local HTTP server, directly and through the proxy's Unix socket.

Prints the median of ``--runs`` runs of each.

    .venv/bin/python bench/bench_build_walls.py --runs 5 --mib 256
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from wheelwright.builds import workspace
from wheelwright.builds.cleanup import remove_tree
from wheelwright.builds.sandbox import IndexProxy
from wheelwright.builds.workspace import DiskQuota, OwnDisk, WatchedFolder


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def deep_tree(top: Path, depth: int) -> None:
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = below
    os.close(fd)


def wide_tree(top: Path, folders: int, files: int) -> None:
    for i in range(folders):
        (top / str(i)).mkdir(parents=True)
        for j in range(files):
            (top / str(i) / str(j)).write_bytes(b"x")


def bench_disks(root: Path, runs: int) -> None:
    print(f"a build's disk, opened and closed ({runs} runs, quota {workspace.size_text(DiskQuota().size)}, "
          f"{DiskQuota().files:,} files):")
    kinds = {"watched folder": False}
    if workspace.can_mount():
        kinds["own file system"] = True
    for kind, mount in kinds.items():
        times = []
        for i in range(runs):
            if not mount:
                original, workspace.can_mount = workspace.can_mount, lambda: False
            try:
                started = time.perf_counter()
                space = workspace.open_workspace(root, f"bench-{i}", DiskQuota())
                assert isinstance(space, OwnDisk if mount else WatchedFolder)
                space.close()
                times.append(time.perf_counter() - started)
            finally:
                if not mount:
                    workspace.can_mount = original
        print(f"  {kind:18} median {statistics.median(times) * 1000:7.1f} ms   max {max(times) * 1000:7.1f} ms")


def bench_trees(root: Path, runs: int) -> None:
    print(f"removing a tree ({runs} runs):")
    rows = []
    for name, make in (("1,600 folders deep", lambda p: deep_tree(p, 1600)),
                       ("200 folders x 100 files", lambda p: wide_tree(p, 200, 100))):
        for remover_name, remover in (("remove_tree", remove_tree), ("shutil.rmtree", shutil.rmtree)):
            if remover is shutil.rmtree and "deep" in name:
                continue  # RecursionError: the reason remove_tree exists
            times = []
            for i in range(runs):
                top = root / f"tree-{i}"
                make(top)
                times.append(timed(lambda: remover(top)))
                assert not top.exists()
            rows.append((name, remover_name, statistics.median(times)))
    for name, remover_name, median in rows:
        print(f"  {name:24} {remover_name:14} median {median * 1000:8.1f} ms")


class _Big(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        view = memoryview(self.body)
        for start in range(0, len(view), 1 << 20):
            self.wfile.write(view[start:start + (1 << 20)])

    def log_message(self, *args):
        pass


def fetch(connect, request: bytes, expected: int) -> None:
    with connect() as s:
        s.sendall(request)
        got = 0
        while chunk := s.recv(1 << 20):
            got += len(chunk)
    assert got > expected, (got, expected)


def bench_proxy(root: Path, runs: int, mib: int) -> None:
    _Big.body = os.urandom(1 << 20) * mib
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Big)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    proxy = IndexProxy(root / "proxy.sock", {("127.0.0.1", port): "http"}).start()
    size = len(_Big.body)

    def direct():
        return socket.create_connection(("127.0.0.1", port))

    def proxied():
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(proxy.path))
        return s
    try:
        print(f"one file of {mib} MiB over loopback ({runs} runs):")
        for name, connect, target in (("direct", direct, b"/f"),
                                      ("through the proxy", proxied, b"http://127.0.0.1:%d/f" % port)):
            request = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            times = [timed(lambda: fetch(connect, request, size)) for _ in range(runs)]
            median = statistics.median(times)
            print(f"  {name:18} median {median * 1000:8.1f} ms   {size / median / (1 << 20):7.0f} MiB/s")
    finally:
        proxy.close()
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each measure (default 5)")
    parser.add_argument("--mib", type=int, default=256, help="MiB fetched through the proxy (default 256)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-build-walls-", dir="/var/tmp"))
    try:
        bench_disks(root, args.runs)
        bench_trees(root, args.runs)
        bench_proxy(root, args.runs, args.mib)
    finally:
        remove_tree(root)


if __name__ == "__main__":
    main()
