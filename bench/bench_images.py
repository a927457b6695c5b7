"""What a Pi image costs: building it, and building the same C extension natively and emulated.

    .venv/bin/python bench/bench_images.py                 # fresh image build + 3 builds each way
    .venv/bin/python bench/bench_images.py --reuse --runs 5

1. Image build: ``mmdebstrap`` of the tests' small bookworm/armhf recipe (Python, headers, pip, venv,
   gcc, libc6-dev, libyaml-dev) from Debian's archive into a temporary store, timed end to end (the
   packages' maintainer scripts run under qemu on a non-ARM host). ``--reuse`` skips it and reports
   the build time recorded in the cached test image instead. ``--recipe full`` builds the default
   cp311-armv7l recipe (data/build-packages.txt) instead: what a fresh `make run` pays.
2. The same sdist (a small C extension, build isolation installing setuptools from a local index) built
   with ``pip wheel``: natively with this host's python3.11, and inside the armhf image under qemu.
   Median and spread of ``--runs`` each, alternating, in one run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' helpers: sdists, the PyPI double, the test images

from support.build_world import C_SOURCE, PYPROJECT, backend_wheels, make_sdist, open_folder, setup_py  # noqa: E402
from support.images import built_image, image_store, image_targets  # noqa: E402
from wheelwright.builds import images  # noqa: E402
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


def pip_wheel_native(index: str, work: Path) -> float:
    started = time.monotonic()
    subprocess.run(["python3.11", "-m", "pip", "wheel", "cext==1.0", "--no-deps", "--no-binary", "cext",
                    "--isolated", "--no-cache-dir", "--index-url", index, "--wheel-dir", str(work / "wheels")],
                   check=True, capture_output=True, env={"PATH": "/usr/bin:/bin", "HOME": str(work),
                                                         "PIP_CONFIG_FILE": "/dev/null"})
    elapsed = time.monotonic() - started
    [wheel] = (work / "wheels").glob("*.whl")
    assert wheel.name.endswith("linux_x86_64.whl") or "linux_" in wheel.name, wheel.name
    return elapsed


def pip_wheel_emulated(image, index: str, work: Path) -> float:
    started = time.monotonic()
    result = images.run_in_image(image.root, [
        "python3", "-m", "pip", "wheel", "cext==1.0", "--no-deps", "--no-binary", "cext", "--isolated",
        "--no-cache-dir", "--index-url", index, "--wheel-dir", "/srv/wheels"],
        binds=[(work, "/srv")], network=True, cwd="/srv", env={"PIP_CONFIG_FILE": "/dev/null"})
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"emulated build failed:\n{result.stdout}\n{result.stderr}")
    [wheel] = (work / "wheels").glob("*.whl")
    assert wheel.name == "cext-1.0-cp311-cp311-linux_armv7l.whl", wheel.name
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
                for label, times, build in (("native", native, lambda w: pip_wheel_native(pypi.simple_url, w)),
                                            ("emulated", emulated,
                                             lambda w: pip_wheel_emulated(image, pypi.simple_url, w))):
                    work = open_folder("wheelwright-bench-work-")
                    try:
                        times.append(build(work))
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
