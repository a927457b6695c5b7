"""A newcomer's time to the first Raspberry Pi wheel: from `make run` in a fresh clone to the first
``linux_armv7l`` wheel served by the local index.

    .venv/bin/python bench/bench_first_wheel.py            # a fresh clone of this checkout's HEAD
    .venv/bin/python bench/bench_first_wheel.py --keep     # keep the clone (its images, its catalog)

What a new machine does, in a temporary folder: `make run` creates the venv (pip's cache off, as on a new
machine), installs what the Makefile lists (already there on a machine that ran it before: this script
cannot take Debian packages away, so it says how long that step took), starts `wheelwright run` on the
PyPI double, which builds the Pi images and Airflow, and the DAGs sync, build and publish. The script
watches from outside and prints when each phase ended: the venv, Airflow's UI answering, each Pi image
built (with the image's own build time and package count), the first wheel of each target served.
Then it stops `make run` and the embedded catalog. Ports 8080, 8081 and 8700 must be free.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PORTS = {"ui": 8080, "index": 8081, "pypi double": 8700}
# the machine a wheel's platform tag ends in (linux_armv7l, or manylinux_2_17_armv7l once it qualifies)
MACHINES = ("x86_64", "armv7l", "aarch64")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def served_wheels() -> set[str]:
    """The machines of cext-demo's wheels the local index serves now."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:8081/simple/cext-demo/", timeout=5) as response:
            page = response.read().decode()
    except OSError:
        return set()
    return {machine for machine in MACHINES if f"_{machine}.whl" in page}


def clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the clone afterwards")
    parser.add_argument("--all", action="store_true", help="wait for the aarch64 wheel too")
    parser.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds")
    args = parser.parse_args(argv)
    busy = [f"{name} ({port})" for name, port in PORTS.items() if not port_free(port)]
    if busy:
        print(f"ports in use: {', '.join(busy)}: stop what holds them first", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="wheelwright-newcomer-", dir="/var/tmp"))
    clone = folder / "wheelwright"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WHEELWRIGHT_", "AIRFLOW", "VIRTUAL_ENV", "PYTHON"))}
    env["PIP_NO_CACHE_DIR"] = "1"
    log = open(folder / "make-run.log", "wb")
    print(f"make run in {clone} (log: {folder / 'make-run.log'}); load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores", flush=True)
    started = time.monotonic()
    run = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, start_new_session=True)
    seen: dict[str, float] = {}

    def mark(event: str) -> None:
        if event not in seen:
            seen[event] = time.monotonic() - started
            print(f"  [{clock(seen[event])}] {event}", flush=True)

    wanted = {"armv7l", "aarch64"} if args.all else {"armv7l"}
    store = clone / ".wheelwright" / "images"
    try:
        while time.monotonic() - started < args.timeout:
            if run.poll() is not None:
                print(f"make run ended with status {run.returncode}: see the log", file=sys.stderr)
                return 1
            if (clone / ".venv" / ".installed").exists():
                mark("venv ready (make setup)")
            if not port_free(PORTS["ui"]):
                mark("Airflow's UI answers")
            for meta in store.glob("[!.]*/image.json"):  # not a build's temporary folder
                record = json.loads(meta.read_text())
                mark(f"image {meta.parent.name} built ({record['seconds'] / 60:.1f} min, "
                     f"{record.get('packages', '?')} packages)")
            for machine in served_wheels():
                mark(f"first {machine} wheel served")
            if all(f"first {p} wheel served" in seen for p in wanted):
                break
            time.sleep(2)
        else:
            print(f"gave up after {args.timeout:.0f} s", file=sys.stderr)
            return 1
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
            try:
                run.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
        subprocess.run([str(clone / ".venv" / "bin" / "wheelwright"), "db", "stop"], cwd=clone,
                       env={**env, "WHEELWRIGHT_HOME": str(clone / ".wheelwright")}, capture_output=True)
        log.close()
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"first armv7l wheel served {clock(seen['first armv7l wheel served'])} after `make run`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
