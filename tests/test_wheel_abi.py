"""Where a wheel can load: its glibc floor and the manylinux policy it meets, read from its ELF files."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import subprocess
import sysconfig
import zipfile
from pathlib import Path

import pytest

from support.build_world import make_wheel
from wheelwright.builds.analysis import (ElfObject, WheelRefused, analyse_wheel, check_received_wheel,
                                         check_target_tags)
from wheelwright.builds.wheel_abi import glibc_floor, manylinux_policy, retag, tag_problem


def elf(*versions, needed=("libc.so.6",), undefined=()):
    return ElfObject("EM_ARM", 32, tuple(needed), (), tuple(("libc.so.6", v) for v in versions),
                     frozenset(undefined))


def test_the_glibc_floor_is_the_newest_glibc_version_any_object_needs():
    assert glibc_floor([elf("GLIBC_2.4", "GLIBC_2.34"), elf("GLIBC_2.17")]) == "2.34"
    assert glibc_floor([elf("GLIBC_2.3.4", "GLIBC_2.4")]) == "2.4", "2.3.4 is older than 2.4"
    assert glibc_floor([elf("GLIBC_2.4", "GLIBC_2.38", "GLIBC_ABI_DT_RELR")]) == "2.38"
    assert glibc_floor([elf()]) is None, "no versioned symbol: no floor"


def test_a_wheel_needing_only_libc_meets_the_lowest_policy_its_symbols_allow():
    assert manylinux_policy([elf("GLIBC_2.4")], frozenset(), "linux_armv7l").manylinux == "manylinux_2_17_armv7l"
    trixie = manylinux_policy([elf("GLIBC_2.17", "GLIBC_2.38")], frozenset(), "linux_aarch64")
    assert (trixie.glibc_floor, trixie.manylinux) == ("2.38", "manylinux_2_38_aarch64")


def test_a_wheel_linking_a_debian_library_keeps_its_linux_tag_and_says_why():
    abi = manylinux_policy([elf("GLIBC_2.4", needed=("libc.so.6", "libyaml-0.so.2"))], frozenset(),
                           "linux_armv7l")
    assert abi.manylinux is None and abi.glibc_floor == "2.4"
    assert "libyaml-0.so.2, outside the manylinux policy" in abi.why_not


def test_a_library_the_wheel_bundles_is_its_own_not_the_system_s():
    objects = [elf("GLIBC_2.4", needed=("libc.so.6", "libfoo-1a2b.so.1")), elf("GLIBC_2.17")]
    assert manylinux_policy(objects, frozenset({"libfoo-1a2b.so.1"}), "linux_armv7l").manylinux == \
        "manylinux_2_17_armv7l"


def test_a_forbidden_zlib_symbol_keeps_it_off_manylinux():
    from wheelwright.builds.wheel_abi import _policies
    policy = _policies("aarch64").get_policy_by_name("manylinux_2_17_aarch64")
    forbidden = sorted(policy.blacklist["libz.so.1"])[0]
    abi = manylinux_policy([ElfObject("EM_AARCH64", 64, ("libc.so.6", "libz.so.1"), (),
                                      (("libc.so.6", "GLIBC_2.17"),), frozenset({forbidden}))],
                           frozenset(), "linux_aarch64")
    assert abi.manylinux is None and f"uses {forbidden}, a symbol the manylinux policy forbids" in abi.why_not
    fine = manylinux_policy([ElfObject("EM_AARCH64", 64, ("libc.so.6", "libz.so.1"), (),
                                       (("libc.so.6", "GLIBC_2.17"),), frozenset({"inflate"}))],
                            frozenset(), "linux_aarch64")
    assert fine.manylinux == "manylinux_2_17_aarch64", "libz itself is on every policy's list"


def test_a_manylinux_claim_is_held_to_what_the_objects_need():
    needs_2_34 = manylinux_policy([elf("GLIBC_2.34")], frozenset(), "linux_armv7l")
    assert tag_problem("manylinux_2_34_armv7l", needs_2_34) is None
    assert tag_problem("manylinux_2_36_armv7l", needs_2_34) is None, "a higher claim is only narrower"
    assert "needs manylinux_2_34_armv7l (glibc 2.34)" in tag_problem("manylinux_2_17_armv7l", needs_2_34)
    linked = manylinux_policy([elf("GLIBC_2.4", needed=("libc.so.6", "libssl.so.3"))], frozenset(),
                              "linux_armv7l")
    assert "libssl.so.3, outside the manylinux policy" in tag_problem("manylinux_2_31_armv7l", linked)
    assert tag_problem("linux_armv7l", linked) is None


def test_a_target_takes_manylinux_tags_of_its_own_architecture_only():
    check_target_tags("x-1.0-cp311-cp311-manylinux_2_17_armv7l.whl", "cp311", "linux_armv7l")
    with pytest.raises(WheelRefused, match="manylinux_2_17_aarch64"):
        check_target_tags("x-1.0-cp311-cp311-manylinux_2_17_aarch64.whl", "cp311", "linux_armv7l")


def _record_ok(path: Path) -> None:
    with zipfile.ZipFile(path) as zf:
        [record] = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD")]
        for name, digest, size in csv.reader(io.StringIO(zf.read(record).decode())):
            if digest:
                data = zf.read(name)
                expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert digest == f"sha256={expected}" and int(size) == len(data), name


def _c_extension(tmp_path: Path, source: str) -> bytes:
    """A C extension compiled here (the host's gcc and Python headers)."""
    (tmp_path / "ext.c").write_text(source)
    so = tmp_path / "ext.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", f"-I{sysconfig.get_paths()['include']}",
                    str(tmp_path / "ext.c"), "-o", str(so)], check=True)
    return so.read_bytes()


EXT_C = """
#include <Python.h>
#include <stdlib.h>
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "ext", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_ext(void) { return strtol("1", NULL, 10) ? PyModule_Create(&module) : NULL; }
"""


def _wheel(tmp_path: Path, platform: str, so: bytes) -> Path:
    wheel_text = f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: cp311-cp311-{platform}\n"
    members = {"ext.cpython-311-x86_64-linux-gnu.so": so,
               "ext-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: ext\nVersion: 1.0\n",
               "ext-1.0.dist-info/WHEEL": wheel_text.encode()}
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name, data in members.items():
        writer.writerow([name, "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest())
                         .rstrip(b"=").decode(), len(data)])
    writer.writerow(["ext-1.0.dist-info/RECORD", "", ""])
    members["ext-1.0.dist-info/RECORD"] = record.getvalue().encode()
    return make_wheel(tmp_path, f"ext-1.0-cp311-cp311-{platform}.whl", members)


def test_a_real_extension_is_retagged_with_its_policy_and_the_index_host_checks_the_claim(tmp_path):
    wheel = _wheel(tmp_path, "linux_x86_64", _c_extension(tmp_path, EXT_C))
    info = analyse_wheel(wheel, "ext", "1.0")
    assert info.glibc_floor and info.manylinux and info.manylinux.startswith("manylinux_")
    retagged = retag(wheel, info.manylinux)
    assert retagged.name == f"ext-1.0-cp311-cp311-{info.manylinux}.whl" and not wheel.exists()
    with zipfile.ZipFile(retagged) as zf:
        assert f"Tag: cp311-cp311-{info.manylinux}" in zf.read("ext-1.0-dist-info/WHEEL".replace("-dist", ".dist")).decode()
    _record_ok(retagged)
    received = check_received_wheel(retagged, package="ext", version="1.0", abi="cp311", platform="linux_x86_64")
    assert received.glibc_floor == info.glibc_floor, "the index host reads the floor itself"

    claim = retag(retagged, "manylinux_2_5_x86_64")  # a builder claiming more than the objects allow
    if info.manylinux != "manylinux_2_5_x86_64":
        with pytest.raises(WheelRefused, match="claims manylinux_2_5_x86_64, but its compiled code needs"):
            check_received_wheel(claim, package="ext", version="1.0", abi="cp311", platform="linux_x86_64")


# --- pip's own tag logic, in the images: a trixie-built wheel is not installed on bookworm -------------
# trixie's glibc is 2.41, bookworm's 2.36. A C extension calling strtol built on trixie needs GLIBC_2.38
# (C23's __isoc23_strtol, which Python.h's _GNU_SOURCE selects): the builder tags it manylinux_2_38, and
# real pip in a bookworm arm64 system, asked for a Python 3.13 wheel (the interpreter a Pi user gets from
# uv or pyenv), refuses it there, while trixie's installs it. A linux_aarch64 tag would have let it in.

import shutil  # noqa: E402

from support.build_world import PYPROJECT, backend_wheels, make_sdist, open_folder, setup_py  # noqa: E402
from support.images import built_image  # noqa: E402
from wheelwright.builds import images  # noqa: E402

STRTOL_C = """
    #include <Python.h>
    #include <stdlib.h>
    static PyObject *parse(PyObject *self, PyObject *arg) {
        return PyLong_FromLong(strtol(PyUnicode_AsUTF8(arg), NULL, 10));
    }
    static PyMethodDef methods[] = {{"parse", parse, METH_O, NULL}, {NULL, NULL, 0, NULL}};
    static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "newglibc", NULL, -1, methods};
    PyMODINIT_FUNC PyInit_newglibc(void) { return PyModule_Create(&module); }
"""


def _pip(image, argv, work):
    return images.run_in_image(image.root, ["python3", "-m", "pip", *argv], binds=[(work, "/srv")], cwd="/srv",
                               env={"PIP_CONFIG_FILE": "/dev/null", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
                               timeout=900)


@pytest.mark.timeout(3600)
def test_a_trixie_built_cp313_wheel_is_not_installed_on_bookworm_by_real_pip():
    from wheelwright.builds.builder import build
    from wheelwright.testing.pypi_double import PyPIDouble
    trixie, bookworm = built_image("cp313-aarch64"), built_image("cp311-aarch64")
    files, work = open_folder("wheelwright-glibc-sdists-"), open_folder("wheelwright-glibc-work-")
    try:
        for wheel in backend_wheels().glob("*.whl"):
            shutil.copy(wheel, files)
        make_sdist(files, "newglibc", "1.0", {
            "pyproject.toml": PYPROJECT, "newglibc.c": STRTOL_C,
            "setup.py": setup_py("newglibc", "1.0", body="from setuptools import Extension",
                                 ext_modules="[Extension('newglibc', ['newglibc.c'])]")})
        with PyPIDouble([], files_dir=files) as pypi:
            outcome = build({"build_id": 31, "package": "newglibc", "version": "1.0", "target": "cp313-aarch64",
                             "abi": "cp313"}, index_url=pypi.simple_url, workdir_root=work, root=trixie.root,
                            timeout=1800)
        assert outcome.status == "success", outcome.reason
        [info] = outcome.wheels
        assert (info.glibc_floor, info.filename) == ("2.38", "newglibc-1.0-cp313-cp313-manylinux_2_38_aarch64.whl")
        wheels = work / "wheels"
        wheels.mkdir()
        shutil.copy(outcome.files_dir / info.filename, wheels)
        outcome.cleanup()
        asked = ["download", "--no-deps", "--only-binary", ":all:", "--no-index", "--find-links", "/srv/wheels",
                 "--python-version", "3.13", "--implementation", "cp", "--abi", "cp313", "-d", "/srv/got", "newglibc"]
        refused = _pip(bookworm, asked, work)
        assert refused.returncode != 0 and "No matching distribution found for newglibc" in refused.stdout + refused.stderr
        taken = _pip(trixie, asked, work)
        assert taken.returncode == 0, taken.stdout + taken.stderr
        # the same bytes under the linux_aarch64 tag: bookworm's pip would have taken them, and they fail there
        linux = retag(wheels / info.filename, "linux_aarch64")
        assert _pip(bookworm, asked, work).returncode == 0, f"{linux.name} is offered to any aarch64 glibc"
    finally:
        shutil.rmtree(files, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


# The same decision on this machine (Debian bookworm, glibc 2.36), in seconds: an extension whose
# objects need GLIBC_2.38 (its version need rewritten from 2.34 in place, as a trixie build would carry
# it) is tagged manylinux_2_38 and real pip here refuses it for a Python 3.13, while it would take the
# linux_x86_64 tag; the install test, loading it, hears the loader refuse it too.

NEEDS_2_34 = """
#include <Python.h>
#include <pthread.h>
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "newglibc", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_newglibc(void) {
    pthread_attr_t attr; size_t size = 0;
    pthread_attr_init(&attr); pthread_attr_getstacksize(&attr, &size);  /* GLIBC_2.34 */
    return PyModule_Create(&module);
}
"""


def test_a_wheel_needing_a_newer_glibc_is_refused_by_real_pip_here_and_does_not_load(tmp_path):
    import subprocess
    from wheelwright.builds import install_test
    from wheelwright.builds.sandbox import build_identity
    so = _c_extension(tmp_path, NEEDS_2_34)
    assert b"GLIBC_2.34" in so
    so = so.replace(b"GLIBC_2.34", b"GLIBC_2.38")
    work = open_folder("wheelwright-glibc-here-")
    try:
        wheel = _wheel(work, "linux_x86_64", so)
        info = analyse_wheel(wheel, "ext", "1.0")
        assert (info.glibc_floor, info.manylinux) == ("2.38", "manylinux_2_38_x86_64")
        tagged = retag(wheel, info.manylinux)
        # this machine's own Python 3.11 and pip: the two wheels differ in their platform tag only
        asked = ["/usr/bin/python3", "-m", "pip", "download", "--isolated", "--no-deps", "--only-binary", ":all:",
                 "--no-index", "--find-links", str(work), "-d", str(work / "got"), "ext"]
        refused = subprocess.run(asked, capture_output=True, text=True)
        assert refused.returncode != 0 and "No matching distribution found for ext" in refused.stdout + refused.stderr
        linux = retag(tagged, "linux_x86_64")
        taken = subprocess.run(asked, capture_output=True, text=True)
        assert taken.returncode == 0, taken.stdout + taken.stderr
        result = install_test.run_test(linux, "ext", root=Path("/"), where="bookworm amd64", workdir=work / "runs",
                                       identity=build_identity("nobody"), timeout=300)
        assert result.result == "fails" and "GLIBC_2.38" in result.detail, result.output
    finally:
        shutil.rmtree(work, ignore_errors=True)
