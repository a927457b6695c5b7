"""The native cross compiler inside an emulated image: same wheels, compiled at native speed.

A C extension linking a Debian library (libyaml) is built by the worker's builder in each Pi test
image (bookworm armhf, trixie arm64) twice: with the image's own compiler under qemu (``WHEELWRIGHT_CROSS=off``) and with the native
cross compiler of :mod:`wheelwright.builds.cross`. The two shared objects must be the same ABI —
machine, EABI and float ABI flags, the ARM attributes (architecture, FPU, hard-float calling
convention), the glibc symbol versions they need and the libraries they link — and both must import
on the emulated Pi. A rebuild of the package is served from its own compiler cache, which no other
package's build can see.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from support.build_world import PYPROJECT, backend_wheels, make_sdist, open_folder, setup_py
from support.images import built_image
from wheelwright.builds import cross, images
from wheelwright.builds.builder import build
from wheelwright.testing.pypi_double import PyPIDouble

pytestmark = [pytest.mark.timeout(2400),
              pytest.mark.skipif(cross.toolchain_recipe("bookworm", "armhf") is None,
                                 reason="armhf runs natively here: its compiler is native already")]

YAMLEXT_C = """
    #include <Python.h>
    #include <yaml.h>
    static PyObject *version(PyObject *self, PyObject *args) {
        return PyUnicode_FromString(yaml_get_version_string());
    }
    static PyMethodDef methods[] = {{"version", version, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
    static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "yamlext", NULL, -1, methods};
    PyMODINIT_FUNC PyInit_yamlext(void) { return PyModule_Create(&module); }
"""


TARGETS = {"cp311-armv7l": ("bookworm", "armhf", "arm-linux-gnueabihf", "cp311"),
           "cp313-aarch64": ("trixie", "arm64", "aarch64-linux-gnu", "cp313")}


@pytest.fixture(scope="module")
def image():
    return built_image("cp311-armv7l")


@pytest.fixture(scope="module")
def index():
    files = open_folder("wheelwright-cross-sdists-")
    for wheel in backend_wheels().glob("*.whl"):
        shutil.copy(wheel, files)
    for name in ("yamlext", "otherext"):
        make_sdist(files, name, "1.0", {
            "pyproject.toml": PYPROJECT,
            "setup.py": setup_py(name, "1.0", body="from setuptools import Extension",
                                 ext_modules=f"[Extension('yamlext', ['yamlext.c'], libraries=['yaml'])]"),
            "yamlext.c": YAMLEXT_C})
    with PyPIDouble([], files_dir=files) as pypi:
        yield pypi.simple_url
    shutil.rmtree(files)


@pytest.fixture(scope="module")
def home():
    path = open_folder("wheelwright-cross-home-")
    yield path
    shutil.rmtree(path)


def build_in(image, index, home, package, *, native: bool, build_id: int, monkeypatch,
             target: str = "cp311-armv7l"):
    monkeypatch.setenv("WHEELWRIGHT_HOME", str(home))
    monkeypatch.setenv("WHEELWRIGHT_CROSS", "on" if native else "off")
    work = open_folder("wheelwright-cross-work-")
    abi = TARGETS[target][3]
    request = {"build_id": build_id, "package": package, "version": "1.0", "target": target, "abi": abi}
    outcome = build(request, index_url=index, workdir_root=work, root=image.root, timeout=1800,
                    extra_index_url="")
    log = gzip.decompress((outcome.files_dir / outcome.log.filename).read_bytes()).decode()
    assert outcome.status == "success", log[-4000:]
    [wheel] = outcome.wheels
    assert wheel.filename == f"{package}-1.0-{abi}-{abi}-linux_{target.split('-')[1]}.whl"
    with zipfile.ZipFile(outcome.files_dir / wheel.filename) as zf:
        [so] = [n for n in zf.namelist() if n.endswith(".so")]
        (work / "yamlext.so").write_bytes(zf.read(so))
    outcome.cleanup()
    return work, log


def in_tree(toolchain, program: str, *args, env=None) -> str:
    """A program of the toolchain's tree run here natively, by the tree's own loader and libraries
    (its distro's glibc may be newer than this worker's)."""
    tree = toolchain.root
    libs = f"{tree}/lib/x86_64-linux-gnu:{tree}/usr/lib/x86_64-linux-gnu"
    return subprocess.run([str(toolchain.loader), "--library-path", libs, str(tree / "usr/bin" / program), *args],
                          capture_output=True, text=True, check=True, env=env or {}).stdout


def readelf(image, *args) -> str:
    """binutils' readelf for ARM objects: the toolchain tree's own."""
    toolchain = cross.toolchain_for(image.recipe.distro, image.recipe.arch, image.root.parent.parent)
    return in_tree(toolchain, f"{cross.TRIPLETS[image.recipe.arch]}-readelf", "--wide", *args)


def abi_of(image, so: Path) -> dict:
    header = readelf(image, "-h", str(so))
    attributes = readelf(image, "-A", str(so))
    versions = readelf(image, "-V", str(so))
    dynamic = readelf(image, "-d", str(so))
    return {
        "class": re.search(r"Class:\s+(\S+)", header)[1],
        "machine": re.search(r"Machine:\s+(.+)", header)[1].strip(),
        "flags": re.search(r"Flags:\s+(.+)", header)[1].strip(),
        "attributes": sorted(line.strip() for line in attributes.splitlines()
                             if line.strip().startswith("Tag_") and "Tag_CPU_name" not in line),
        "glibc": sorted(set(re.findall(r"GLIBC_[0-9.]+", versions))),
        "needed": sorted(re.findall(r"\(NEEDED\)\s+Shared library: \[([^]]+)\]", dynamic)),
    }


def imports_on_the_emulated_pi(image, work: Path) -> str:
    result = images.run_in_image(image.root, ["python3", "-c", "import platform, yamlext; "
                                              "print(platform.machine(), yamlext.version())"],
                                 binds=[(work, "/srv")], cwd="/srv")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("target", TARGETS)
def test_the_native_cross_compiler_makes_the_same_abi_as_the_image_s_own(target, index, home, monkeypatch):
    image = built_image(target)
    triplet = TARGETS[target][2]
    emulated, emulated_log = build_in(image, index, home, "yamlext", native=False, build_id=301,
                                      monkeypatch=monkeypatch, target=target)
    native, native_log = build_in(image, index, home, "yamlext", native=True, build_id=302,
                                  monkeypatch=monkeypatch, target=target)
    try:
        assert f"compiling with the native {triplet} compiler" in native_log
        assert "compiling with the native" not in emulated_log
        assert f"{triplet}-gcc " in native_log, "setuptools calls the compiler its sysconfig names"
        ours, theirs = abi_of(image, native / "yamlext.so"), abi_of(image, emulated / "yamlext.so")
        assert ours == theirs
        if target == "cp311-armv7l":
            assert ours["class"] == "ELF32" and ours["machine"] == "ARM"
            assert "hard-float ABI" in ours["flags"] and "Version5 EABI" in ours["flags"]
            assert "Tag_ABI_VFP_args: VFP registers" in ours["attributes"]
            assert "Tag_CPU_arch: v7" in ours["attributes"]
        else:
            assert ours["class"] == "ELF64" and ours["machine"] == "AArch64"
        assert ours["needed"] == ["libyaml-0.so.2"]
        for work in (native, emulated):
            machine, version = imports_on_the_emulated_pi(image, work).split()
            assert machine == target.split("-")[1] and version.startswith("0.2.")
    finally:
        shutil.rmtree(native)
        shutil.rmtree(emulated)


def ccache_stats(cache: Path, image) -> dict[str, int]:
    toolchain = cross.toolchain_for("bookworm", "armhf", image.root.parent.parent)
    stdout = in_tree(toolchain, "ccache", "--print-stats", env={"CCACHE_DIR": str(cache), "PATH": "/usr/bin:/bin"})
    return {k: int(v) for k, v in (line.split("\t") for line in stdout.splitlines()) if v.isdigit()}


def test_a_rebuild_compiles_from_the_package_s_own_cache_which_no_other_package_sees(
        image, index, home, monkeypatch):
    first, _ = build_in(image, index, home, "otherext", native=True, build_id=303, monkeypatch=monkeypatch)
    again, log = build_in(image, index, home, "otherext", native=True, build_id=304, monkeypatch=monkeypatch)
    assert "through otherext's own compiler cache" in log
    try:
        cache = home / "ccache" / image.root.parent.name / "otherext"
        stats = ccache_stats(cache, image)
        assert stats.get("direct_cache_hit", 0) + stats.get("preprocessed_cache_hit", 0) >= 1, stats
        assert (first / "yamlext.so").read_bytes() == (again / "yamlext.so").read_bytes()
        assert [p.name for p in cache.parent.iterdir() if p.name.startswith("other")] == ["otherext"], \
            "the cache is the package's own folder: no other package's build is given it"
    finally:
        shutil.rmtree(first)
        shutil.rmtree(again)


def test_the_cross_toolchain_is_made_only_where_the_compiler_would_be_emulated():
    assert cross.toolchain_recipe("bookworm", "armhf", "aarch64") is None
    assert cross.toolchain_recipe("bookworm", "amd64", "x86_64") is None
    recipe = cross.toolchain_recipe("trixie", "arm64", "x86_64")
    assert recipe.packages == ("gcc-aarch64-linux-gnu", "g++-aarch64-linux-gnu", "ccache")
    assert recipe.folder_name.startswith("trixie-amd64-cross-arm64-")
    wrapper = cross.wrapper_text(recipe, "aarch64-linux-gnu-gcc-14", "x86_64-linux-gnu", include=True)
    assert "-isystem /usr/include/aarch64-linux-gnu" in wrapper and "${CCACHE_DIR:+" in wrapper
