"""What the sandbox costs per build: a trivial pure sdist built with and without it, in one run.

Builds the same trivial pure-Python sdist (setuptools from the PyPI double, build isolation on, as on a
worker) ``--builds`` times each way, alternating so both see the same machine load:

- ``unsafe``: ``WHEELWRIGHT_UNSAFE_NO_SANDBOX=1``, the old way (pip as ``nobody`` when root, own
  session, rlimits, no namespaces, direct network);
- ``sandbox``: bubblewrap (user, pid, network, IPC, UTS namespaces; read-only system), a cgroup for
  the whole build, and every request through the index proxy.

Prints the median, min and max wall time of ``builder.build`` for each, and the median difference.

    .venv/bin/python bench/bench_sandbox.py --builds 20
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' helpers make the sdist and fetch the backend

from support.build_world import PYPROJECT, backend_wheels, make_sdist, open_folder, setup_py  # noqa: E402
from wheelwright.builds import builder  # noqa: E402
from wheelwright.testing.pypi_double import PyPIDouble  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--builds", type=int, default=20, help="builds of each kind (default 20)")
    args = parser.parse_args()

    files = Path(tempfile.mkdtemp(prefix="bench-sandbox-files-"))
    workdir = open_folder("bench-sandbox-builds-")
    for wheel in backend_wheels().glob("*.whl"):
        shutil.copy(wheel, files)
    make_sdist(files, "trivial", "1.0", {
        "pyproject.toml": PYPROJECT, "setup.py": setup_py("trivial", "1.0", py_modules="['trivial']"),
        "trivial.py": "X = 1\n"})
    times: dict[str, list[float]] = {"unsafe": [], "sandbox": []}
    try:
        with PyPIDouble([], files_dir=files) as pypi:
            for i in range(args.builds * 2):
                kind = ("unsafe", "sandbox")[i % 2]
                request = {"build_id": i + 1, "package": "trivial", "version": "1.0",
                           "target": "cp311-x86_64", "abi": "cp311"}
                started = time.perf_counter()
                outcome = builder.build(request, index_url=pypi.simple_url, workdir_root=workdir,
                                        timeout=300, unsafe_no_sandbox=(kind == "unsafe"))
                elapsed = time.perf_counter() - started
                try:
                    if outcome.status != "success":
                        raise SystemExit(f"build {i + 1} ({kind}) failed: {outcome.reason}")
                finally:
                    outcome.cleanup()
                times[kind].append(elapsed)
                print(f"  {kind:8} build {len(times[kind]):2}: {elapsed:6.2f} s", flush=True)
    finally:
        shutil.rmtree(files, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n{args.builds} builds each of a trivial pure sdist (pip wheel with build isolation), "
          "alternating:")
    for kind, values in times.items():
        print(f"  {kind:8} median {statistics.median(values):6.2f} s   min {min(values):6.2f} s   "
              f"max {max(values):6.2f} s")
    diffs = [s - u for u, s in zip(times["unsafe"], times["sandbox"])]
    print(f"  sandbox cost per build: median {statistics.median(diffs):+.2f} s "
          f"({statistics.median(times['sandbox']) / statistics.median(times['unsafe']) - 1:+.0%})")


if __name__ == "__main__":
    main()
