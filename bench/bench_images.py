"""What a Pi image costs: building it, and building the same C extension natively and emulated.

    .venv/bin/python bench/bench_images.py                 # fresh image build + 3 builds each way
    .venv/bin/python bench/bench_images.py --reuse --runs 5

1. Image build: ``mmdebstrap`` of the tests' small bookworm/armhf recipe (Python, headers, pip, venv,
   gcc, libc6-dev, libyaml-dev) from Debian's archive into a temporary store, timed end to end (the
   packages' maintainer scripts run under qemu on a non-ARM host). ``--reuse`` skips it and reports
   the build time recorded in the cached test image instead. ``--recipe full`` builds the default
   cp311-armv7l recipe (data/build-packages.txt) instead: what a fresh `make run` pays.
2. The same sdist (a small C extension, build isolation installing setuptools from a local index) built
   by the worker's builder, in its sandbox: natively on this host's own system (python3.11), and with
   the armhf image as the sandbox's root under qemu. Median and spread of ``--runs`` each, alternating,
   in one run.
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
sys.path.insert(0, str(REPO / "tests"))  # the tests' helpers: sdists, the PyPI double, the test images

from support.build_world import C_SOURCE, PYPROJECT, backend_wheels, make_sdist, open_folder, setup_py  # noqa: E402
from support.images import built_image, image_store, image_targets  # noqa: E402
from wheelwright.builds import images  # noqa: E402
from wheelwright.builds.builder import build  # noqa: E402
from wheelwright.builds.targets import load_targets, target_named  # noqa: E402
from wheelwright.testing.pypi_double import PyPIDouble  # noqa: E402


def time_image_build(recipe_kind: str) -> tuple[float, int]:
    target = (target_named(load_targets(), "cp311-armv7l") if recipe_kind == "full"
              else image_targets()["cp311-armv7l"])
    recipe = images.recipe_for(target)
    store = Path(tempfile.mkdtemp(prefix="wheelwright-bench-images-"))
    lines = []
    try:
        started = time.monotonic()
        image = images.build_image(recipe, store, progress=lambda line: (
            lines.append(line), print("   ", line, file=sys.stderr, flush=True)))
        return time.monotonic() - started, image.size
    finally:
        shutil.rmtree(store, ignore_errors=True)


def build_with_builder(index: str, work: Path, target: str, root: Path, machine: str) -> float:
    """One build of cext 1.0 by the worker's builder, in its sandbox whose root is ``root``."""
    request = {"build_id": 1, "package": "cext", "version": "1.0", "target": target, "abi": "cp311"}
    started = time.monotonic()
    outcome = build(request, index_url=index, workdir_root=work, root=root, timeout=3600,
                    extra_index_url="")
    elapsed = time.monotonic() - started
    # one wheel for ``machine``: linux_<machine>, or manylinux_2_X_<machine> where it qualifies
    if outcome.status != "success" or len(outcome.wheels) != 1 or \
            not outcome.wheels[0].filename.endswith(f"_{machine}.whl"):
        raise SystemExit(f"{target}: {outcome.status} {outcome.reason} {[w.filename for w in outcome.wheels]}")
    outcome.cleanup()
    return elapsed


def describe(label: str, values: list[float]) -> str:
    spread = f"{min(values):.1f}-{max(values):.1f}"
    return f"{label:<34} median {statistics.median(values):6.1f} s   (range {spread} s, n={len(values)})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="builds of the C extension each way (default 3)")
    parser.add_argument("--reuse", action="store_true",
                        help="do not build an image afresh; report the cached test image's recorded time")
    parser.add_argument("--recipe", choices=("test", "full"), default="test",
                        help="which armhf recipe the fresh image build times (default: the tests' small one)")
    args = parser.parse_args(argv)

    print(f"host: {images.platform.machine()}; armhf {'emulated (qemu-user)' if images.needs_emulation('armhf') else 'native'}")
    image = built_image("cp311-armv7l")   # the cached test image (built now if this machine has none)
    if args.reuse:
        print(f"image build (recorded)             {image.seconds:6.1f} s   "
              f"{image.size / 2**20:.0f} MiB  {image.recipe.name}, {len(image.recipe.packages)} packages "
              f"(in {image_store()})")
    else:
        seconds, size = time_image_build(args.recipe)
        print(f"image build ({args.recipe} recipe, fresh)     {seconds:6.1f} s   {size / 2**20:.0f} MiB")

    files = open_folder("wheelwright-bench-sdists-")
    for wheel in backend_wheels().glob("*.whl"):
        shutil.copy(wheel, files)
    make_sdist(files, "cext", "1.0", {
        "pyproject.toml": PYPROJECT,
        "setup.py": setup_py("cext", "1.0", body="from setuptools import Extension",
                             ext_modules="[Extension('cext', ['cext.c'])]"),
        "cext.c": C_SOURCE})
    native, emulated = [], []
    try:
        with PyPIDouble([], files_dir=files) as pypi:
            for run in range(args.runs):
                for label, times, one in (
                        ("native", native, lambda w: build_with_builder(
                            pypi.simple_url, w, "cp311-x86_64", Path("/"), "x86_64")),
                        ("emulated", emulated, lambda w: build_with_builder(
                            pypi.simple_url, w, "cp311-armv7l", image.root, "armv7l"))):
                    work = open_folder("wheelwright-bench-work-")
                    try:
                        times.append(one(work))
                    finally:
                        shutil.rmtree(work, ignore_errors=True)
                    print(f"  run {run + 1} {label:<8} {times[-1]:6.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(files, ignore_errors=True)
    print(describe("C extension, native x86_64", native))
    print(describe("C extension, emulated armv7l", emulated))
    print(f"emulation slowdown                 x{statistics.median(emulated) / statistics.median(native):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
