"""Target images: named by their recipe, built once, listed, updated, and run under emulation.

The recipe and store tests are plain functions over plain folders. The tests marked ``images`` use
real images (tests/support/images.py: small ones, built once per machine with mmdebstrap and kept
across runs) and run their binaries under qemu-user as a Pi would natively.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from support.images import TEST_TARGETS, image_targets
from support.tools import require
from wheelwright.builds import images
from wheelwright.builds.images import (BASE_PACKAGES, Recipe, emulation_problem, image_rows, make_recipe,
                                       mmdebstrap_command, needs_emulation, parse_binfmt_entry,
                                       read_image, recipe_for, update_images)
from wheelwright.builds.targets import load_targets, parse_targets, target_named
from wheelwright.errors import ConfigError


def pi_target(**extra) -> object:
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in extra.items())
    return parse_targets('[[target]]\nname = "pi"\nabi = "cp311"\nplatform = "linux_armv7l"\n'
                         f'distro = "bookworm"\n{lines}')[0]


# --- recipes -----------------------------------------------------------------------------------------

def test_every_recipe_holds_the_distro_s_python_with_headers_pip_and_venv():
    recipe = recipe_for(pi_target(package_lists=[], packages=["libyaml-dev"]))
    assert (recipe.distro, recipe.arch) == ("bookworm", "armhf")
    assert set(BASE_PACKAGES) | {"libyaml-dev"} == set(recipe.packages)


def test_the_same_packages_in_any_order_make_the_same_image():
    one = make_recipe("bookworm", "armhf", ["libyaml-dev", "gcc", "gcc"])
    two = make_recipe("bookworm", "armhf", ["gcc", "python3", "libyaml-dev"])
    assert one == two and one.digest == two.digest
    assert one.folder_name == f"bookworm-armhf-{one.digest}" and len(one.digest) == 16


@pytest.mark.parametrize("change", [
    dict(packages=["gcc", "libyaml-dev", "libffi-dev"]),  # one more package
    dict(distro="trixie"),
    dict(arch="arm64"),
])
def test_a_changed_recipe_is_another_image(change):
    base = dict(distro="bookworm", arch="armhf", packages=["gcc", "libyaml-dev"])
    assert make_recipe(**{**base, **change}).digest != make_recipe(**base).digest


def test_the_repository_s_pi_targets_carry_the_build_packages_list():
    targets = load_targets()
    armv7l = recipe_for(target_named(targets, "cp311-armv7l"))
    aarch64 = recipe_for(target_named(targets, "cp313-aarch64"))
    assert (armv7l.name, aarch64.name) == ("bookworm-armhf", "trixie-arm64")
    assert {"build-essential", "libffi-dev", "libssl-dev", "libyaml-dev"} <= set(armv7l.packages)
    assert set(armv7l.packages) == set(aarch64.packages)


def test_a_target_whose_abi_is_not_its_distro_s_python_has_no_image():
    target = parse_targets('[[target]]\nname = "x"\nabi = "cp313"\nplatform = "linux_armv7l"\n'
                           'distro = "bookworm"\n')[0]
    with pytest.raises(ConfigError, match="bookworm ships Python 3.11, which builds cp311 wheels, not cp313"):
        recipe_for(target)


@pytest.mark.parametrize("package", ["libfoo; rm -rf /", "--allow-unauthenticated", "Gcc", ""])
def test_only_debian_package_names_reach_mmdebstrap(package):
    with pytest.raises(ConfigError, match="not a Debian package name"):
        recipe_for(pi_target(package_lists=[], packages=[package]))


def test_a_package_list_is_a_file_of_data_or_an_absolute_path(tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("# extra\nlibgdal-dev  libgeos-dev # maps\n\nswig\n")
    recipe = recipe_for(pi_target(package_lists=[str(mine)]))
    assert {"libgdal-dev", "libgeos-dev", "swig"} <= set(recipe.packages)
    with pytest.raises(ConfigError, match="give a file of data/ by name"):
        recipe_for(pi_target(package_lists=["../secrets.txt"]))


def test_mmdebstrap_gets_an_argument_list_naming_arch_packages_and_release():
    recipe = make_recipe("bookworm", "armhf", ["gcc"])
    argv = mmdebstrap_command(recipe, Path("/store/.tmp/root"), "http://deb.debian.org/debian")
    assert argv[0] == "mmdebstrap" and "--arch=armhf" in argv and "--variant=apt" in argv
    assert f"--include={','.join(recipe.packages)}" in argv
    assert argv[-3:] == ["bookworm", "/store/.tmp/root", "http://deb.debian.org/debian"]


def test_progress_shows_phases_and_each_package_set_up_not_every_line_of_apt():
    assert images.progress_line("I: installing remaining packages inside the chroot...") == \
        "I: installing remaining packages inside the chroot..."
    assert images.progress_line("Setting up libyaml-0-2:armhf (0.2.5-1) ...") == "setting up libyaml-0-2:armhf"
    assert images.progress_line("Get:12 http://deb.debian.org/debian bookworm/main armhf gcc-12") is None


def mmdebstrap_lines(essential: list[str], rest: list[str]) -> list[str]:
    """What mmdebstrap --verbose says of a build, in the order it says it (shortened)."""
    lines = ["I: running apt-get update...", "I: downloading packages with apt...",
             f"0 upgraded, {len(essential)} newly installed, 0 to remove and 0 not upgraded.",
             "I: extracting archives...", "I: installing essential packages..."]
    lines += [f"Unpacking {p}:armhf (1.0) ..." for p in essential]
    lines += [f"Setting up {p}:armhf (1.0) ..." for p in essential]
    lines += ["I: installing remaining packages inside the chroot...",
              f"0 upgraded, {len(rest)} newly installed, 0 to remove and 0 not upgraded."]
    for p in rest:
        lines += [f"Preparing to unpack .../{p}_1.0_armhf.deb ...", f"Unpacking {p}:armhf (1.0) ..."]
    lines += [f"Setting up {p}:armhf (1.0) ..." for p in rest]
    return lines + ["I: cleaning package lists and apt cache...", "I: success in 300.1 seconds"]


def test_a_build_s_progress_is_the_share_of_packages_unpacked_and_set_up():
    essential, rest = [f"e{i}" for i in range(10)], [f"r{i}" for i in range(30)]
    meter = images.BuildMeter(expected_rest=25)
    fractions = []
    for line in mmdebstrap_lines(essential, rest):
        meter.feed(line)
        fractions.append(meter.fraction())
    assert fractions == sorted(fractions), "progress never goes back"
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    halfway = images.BuildMeter(expected_rest=25)
    for line in mmdebstrap_lines(essential, rest)[:5 + 20 + 2 + 2 * 30]:  # all unpacked, 30 to set up
        halfway.feed(line)
    assert halfway.fraction() == pytest.approx(0.03 + 0.95 * 50 / 80)
    assert halfway.seconds_left(elapsed=100) == pytest.approx(100 * (1 - halfway.fraction()) / halfway.fraction())


def test_before_apt_says_how_many_the_last_build_s_count_and_time_stand_in():
    meter = images.BuildMeter(expected_rest=190)
    for line in mmdebstrap_lines([f"e{i}" for i in range(10)], [])[:5 + 10]:
        meter.feed(line)
    assert meter.fraction() == pytest.approx(0.03 + 0.95 * 10 / 400), "10 essential of 10 + 190 unpacked"
    assert meter.seconds_left(elapsed=30, last_seconds=500) == 470, "under a tenth done, the last build's time"
    assert meter.seconds_left(elapsed=30) is None
    assert images.describe_left(470) == "about 8 min left" and images.describe_left(40) == "about a minute left"


def test_a_build_in_progress_is_seen_while_it_holds_its_lock(tmp_path):
    import fcntl
    recipe = make_recipe("bookworm", "armhf", ["gcc"])
    (tmp_path / f".{recipe.folder_name}.progress.json").write_text(json.dumps({"percent": 42}))
    assert images.build_in_progress(recipe, tmp_path) is None, "no lock file: nobody builds"
    with open(tmp_path / f".{recipe.folder_name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert images.build_in_progress(recipe, tmp_path) == {"percent": 42}
    assert images.build_in_progress(recipe, tmp_path) is None, "a free lock: what a killed build left"


def test_the_apt_cache_keeps_what_the_latest_build_of_each_package_had(tmp_path):
    cache, used = tmp_path / "cache", tmp_path / "used"
    cache.mkdir()
    used.mkdir()
    for name in ("gcc_12.1_armhf.deb", "gcc_12.1_arm64.deb", "libc6_2.36-1_armhf.deb", "zlib1g_1.2_armhf.deb"):
        (cache / name).write_text("old")
    for name in ("gcc_12.2_armhf.deb", "libc6_2.36-1_armhf.deb"):
        (used / name).write_text("new")
    images._keep_apt_cache(used, cache)
    assert sorted(p.name for p in cache.iterdir()) == [
        "gcc_12.1_arm64.deb", "gcc_12.2_armhf.deb", "libc6_2.36-1_armhf.deb", "zlib1g_1.2_armhf.deb"]
    assert (cache / "libc6_2.36-1_armhf.deb").read_text() == "new"


def test_mmdebstrap_is_told_of_the_apt_cache_and_to_write_without_fsync():
    recipe = make_recipe("bookworm", "armhf", ["gcc"])
    argv = mmdebstrap_command(recipe, Path("/store/.tmp/root"), apt_cache=Path("/store/.apt-cache/bookworm-armhf"),
                              apt_cache_out=Path("/store/.tmp/apt-archives"))
    assert "--dpkgopt=force-unsafe-io" in argv
    assert "--setup-hook=sync-in /store/.apt-cache/bookworm-armhf /var/cache/apt/archives/" in argv
    assert "--customize-hook=sync-out /var/cache/apt/archives /store/.tmp/apt-archives" in argv
    assert recipe.digest == make_recipe("bookworm", "armhf", ["gcc"]).digest
    with pytest.raises(ConfigError, match="white space"):
        mmdebstrap_command(recipe, Path("/s/root"), apt_cache=Path("/my store/c"), apt_cache_out=Path("/s/o"))


# --- the store -----------------------------------------------------------------------------------------

def fake_image(store: Path, recipe: Recipe, *, age_days: float = 0.0, complete: bool = True) -> Path:
    """An image folder as build_image leaves it (a root with a python3, image.json written last)."""
    path = store / recipe.folder_name
    (path / "root" / "usr" / "bin").mkdir(parents=True)
    (path / "root" / "usr" / "bin" / "python3.11").write_text("")
    if complete:
        (path / "image.json").write_text(json.dumps({
            "recipe": {"distro": recipe.distro, "arch": recipe.arch, "packages": list(recipe.packages)},
            "built_at": time.time() - age_days * 86400, "seconds": 300.0, "size": 350 << 20,
            "python": "3.11"}))
    return path


def test_images_are_ready_old_stale_or_missing(tmp_path):
    targets = [image_targets()[name] for name in ("cp311-armv7l", "cp313-aarch64")]
    armv7l, aarch64 = (recipe_for(t) for t in targets)
    superseded = make_recipe("bookworm", "armhf", ["gcc"])  # what cp311-armv7l was made of before
    fake_image(tmp_path, armv7l)
    fake_image(tmp_path, superseded, age_days=90)
    rows = {(row.name, row.digest): row for row in image_rows(targets, tmp_path)}
    assert {key: (row.targets, row.state) for key, row in rows.items()} == {
        ("bookworm-armhf", armv7l.digest): (("cp311-armv7l",), "ready"),
        ("bookworm-armhf", superseded.digest): ((), "stale"),
        ("trixie-arm64", aarch64.digest): (("cp313-aarch64",), "missing"),
    }
    shutil.rmtree(tmp_path / armv7l.folder_name)
    fake_image(tmp_path, armv7l, age_days=45)
    [row] = [r for r in image_rows(targets, tmp_path) if r.digest == armv7l.digest]
    assert row.state == "old" and row.as_dict()["age_days"] == pytest.approx(45, abs=0.1)


def test_an_image_whose_build_was_cut_short_is_not_an_image(tmp_path):
    recipe = make_recipe("bookworm", "armhf", [])
    path = fake_image(tmp_path, recipe, complete=False)  # killed before image.json was written
    assert read_image(path) is None and images.find_image(recipe, tmp_path) is None
    (tmp_path / f".tmp-{recipe.folder_name}-123").mkdir()  # a build in progress elsewhere
    assert images.stored_images(tmp_path) == []


def test_update_removes_stale_images_and_keeps_the_current_ones(tmp_path):
    targets = list(parse_targets(TEST_TARGETS))
    for target in targets:
        fake_image(tmp_path, recipe_for(target))
    stale = fake_image(tmp_path, make_recipe("bookworm", "armhf", ["gcc"]))
    done = update_images(targets, tmp_path)
    assert done == {"built": [], "removed": [stale.name]}
    assert not stale.exists() and len(images.stored_images(tmp_path)) == len(targets)
    assert {row.state for row in image_rows(targets, tmp_path)} == {"ready"}


def test_a_build_runs_in_its_target_s_image_or_on_the_worker_s_own_system(tmp_path, monkeypatch):
    targets_file = tmp_path / "targets.toml"
    targets_file.write_text(TEST_TARGETS + '[[target]]\nname = "here"\nabi = "cp311"\n'
                            'platform = "linux_x86_64"\ndistro = "bookworm"\n')
    monkeypatch.setenv("WHEELWRIGHT_TARGETS", str(targets_file))
    armv7l = recipe_for(target_named(load_targets(), "cp311-armv7l"))
    image = fake_image(tmp_path / "images", armv7l)
    assert images.root_for_target("cp311-armv7l", tmp_path / "images") == image / "root"
    assert images.root_for_target("here", tmp_path / "images") == Path("/")


def test_builds_find_build_dependencies_on_our_own_index_beside_pypi():
    """PyPI has no armv7l numpy: a build needing it takes the one we built instead of compiling it."""
    from wheelwright.builds.builder import pip_wheel_command
    from wheelwright.builds.sandbox import allowed_destinations
    argv = pip_wheel_command("/usr/bin/python3.11", "pandas", "2.2.0", "https://pypi.org/simple/",
                             Path("/build/wheels"), extra_index_urls=("https://wheels.example.org/simple/",))
    assert argv[argv.index("--index-url") + 1] == "https://pypi.org/simple/"
    assert argv[argv.index("--extra-index-url") + 1] == "https://wheels.example.org/simple/"
    assert ("wheels.example.org", 443) in allowed_destinations("https://pypi.org/simple/",
                                                               ("https://wheels.example.org/simple/",))


def test_image_list_shows_each_image_with_its_targets_size_age_and_state(tmp_path, monkeypatch, capsys):
    from wheelwright.operate.cli import main
    targets_file = tmp_path / "targets.toml"
    targets_file.write_text(TEST_TARGETS)
    store = tmp_path / "images"
    armv7l = recipe_for(parse_targets(TEST_TARGETS)[0])
    fake_image(store, armv7l, age_days=2)
    monkeypatch.setenv("WHEELWRIGHT_TARGETS", str(targets_file))
    monkeypatch.setenv("WHEELWRIGHT_IMAGES", str(store))
    monkeypatch.setenv("WHEELWRIGHT_HOME", str(tmp_path / "home"))
    assert main(["image", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["image", "hash", "targets", "size", "age", "state"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["bookworm-armhf"] == ["bookworm-armhf", armv7l.digest, "cp311-armv7l", "350", "MiB", "2.0", "d",
                                      "ready"]
    assert rows["trixie-arm64"][-1] == "missing"
    assert main(["image", "list", "--json"]) == 0
    built = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    armhf = next(row for row in built if row["name"] == "bookworm-armhf")
    assert (armhf["state"], armhf["size"], armhf["python"]) == ("ready", 350 << 20, "3.11")


def test_image_list_says_how_far_an_image_being_built_is(tmp_path, monkeypatch, capsys):
    import fcntl
    from wheelwright.operate.cli import main
    targets_file = tmp_path / "targets.toml"
    targets_file.write_text(TEST_TARGETS)
    store = tmp_path / "images"
    store.mkdir()
    aarch64 = recipe_for(image_targets()["cp313-aarch64"])
    (store / f".{aarch64.folder_name}.progress.json").write_text(json.dumps({"percent": 37, "seconds_left": 260}))
    monkeypatch.setenv("WHEELWRIGHT_TARGETS", str(targets_file))
    monkeypatch.setenv("WHEELWRIGHT_IMAGES", str(store))
    monkeypatch.setenv("WHEELWRIGHT_HOME", str(tmp_path / "home"))
    with open(store / f".{aarch64.folder_name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what build_image holds while it builds
        assert main(["image", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("trixie-arm64"))
    assert row.endswith("building 37%, about 4 min left")


def test_image_build_of_a_target_without_an_image_is_refused(tmp_path, monkeypatch, capsys):
    from wheelwright.operate.cli import main
    monkeypatch.setenv("WHEELWRIGHT_HOME", str(tmp_path / "home"))
    assert main(["image", "build", "cp311-x86_64"]) == 2
    assert "builds on the worker's own system" in capsys.readouterr().err


# --- emulation -----------------------------------------------------------------------------------------

def test_arm_images_run_natively_on_arm_and_under_qemu_elsewhere():
    assert needs_emulation("armhf", "x86_64") and needs_emulation("arm64", "x86_64")
    assert not needs_emulation("armhf", "aarch64") and not needs_emulation("arm64", "aarch64")
    assert not needs_emulation("armhf", "armv7l") and not needs_emulation("amd64", "x86_64")
    assert needs_emulation("arm64", "armv7l")


QEMU_ARM_ENTRY = """enabled
interpreter /usr/libexec/qemu-binfmt/arm-binfmt-P
flags: PF
offset 0
magic 7f454c4601010100000000000000000002002800
mask ffffffffffffff00fffffffffffffffffeffffff
"""


def test_a_binfmt_entry_says_whether_it_is_enabled_its_interpreter_and_flags():
    assert parse_binfmt_entry(QEMU_ARM_ENTRY) == {
        "enabled": True, "interpreter": "/usr/libexec/qemu-binfmt/arm-binfmt-P", "flags": "PF"}


@pytest.mark.skipif(not needs_emulation("armhf"), reason="this host runs armhf natively")
def test_what_is_missing_for_emulation_is_said_plainly(tmp_path):
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    assert emulation_problem("armhf", binfmt) == f"binfmt_misc is not mounted at {binfmt}"
    (binfmt / "register").write_text("")
    assert emulation_problem("armhf", binfmt) == "no binfmt_misc entry qemu-arm is registered"
    interpreter = tmp_path / "arm-binfmt-P"
    interpreter.write_text("")
    (binfmt / "qemu-arm").write_text(QEMU_ARM_ENTRY.replace("PF", "P").replace(
        "/usr/libexec/qemu-binfmt/arm-binfmt-P", str(interpreter)))
    assert "lacks the F (fix binary) flag" in emulation_problem("armhf", binfmt)
    (binfmt / "qemu-arm").write_text(QEMU_ARM_ENTRY.replace(
        "/usr/libexec/qemu-binfmt/arm-binfmt-P", str(interpreter)))
    assert emulation_problem("armhf", binfmt) is None
    advice = images.emulation_advice("armhf")
    assert "apt-get install qemu-user-static binfmt-support" in advice
    assert "update-binfmts --enable qemu-arm" in advice


# --- real images: built once per machine, their binaries run under qemu ------------------------------
# (tests/support/images.py; a fresh machine builds each small image once, in a few minutes)

from support.build_world import PYPROJECT, make_sdist, make_wheel as zip_wheel, open_folder, setup_py  # noqa: E402
from support.images import built_image  # noqa: E402
from wheelwright.builds.analysis import analyse_wheel  # noqa: E402
from wheelwright.publish.reports import needed_apt  # noqa: E402



@pytest.fixture
def image_tools():
    # mmdebstrap runs arch-test for a foreign architecture; qemu runs the image's binaries
    require("mmdebstrap", "arch-test", "bwrap", "/usr/bin/qemu-arm-static", "/usr/bin/qemu-aarch64-static")


needs_image_tools = pytest.mark.usefixtures("image_tools")
# The first test to want an image builds it (once per machine, minutes under emulation).
IMAGE_BUILD_TIMEOUT = pytest.mark.timeout(2400)

# A C extension that links a Debian library (libyaml) and says where it runs.
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
MACHINE = {"cp311-armv7l": "armv7l", "cp313-aarch64": "aarch64"}
TAGS = {"cp311-armv7l": "cp311-cp311-linux_armv7l", "cp313-aarch64": "cp313-cp313-linux_aarch64"}
LIBYAML = {"cp311-armv7l": "libyaml-0-2", "cp313-aarch64": "libyaml-0-2"}


@pytest.fixture(scope="module")
def armhf_image():
    return built_image("cp311-armv7l")


@pytest.fixture(scope="module")
def sdists():
    """The PyPI double serving the test sdists and the build backend, as a worker's index would."""
    from support.build_world import backend_wheels
    from wheelwright.testing.pypi_double import PyPIDouble
    files = open_folder("wheelwright-image-sdists-")
    for wheel in backend_wheels().glob("*.whl"):
        shutil.copy(wheel, files)
    make_sdist(files, "yamlext", "1.0", {
        "pyproject.toml": PYPROJECT,
        "setup.py": setup_py("yamlext", "1.0", body="from setuptools import Extension",
                             ext_modules="[Extension('yamlext', ['yamlext.c'], libraries=['yaml'])]"),
        "yamlext.c": YAMLEXT_C})
    make_sdist(files, "purepkg", "1.0", {
        "pyproject.toml": PYPROJECT,
        "setup.py": setup_py("purepkg", "1.0", py_modules="['purepkg']"),
        "purepkg.py": "import platform\nWHERE = platform.machine()\n"})
    with PyPIDouble([], files_dir=files) as pypi:
        yield pypi.simple_url
    shutil.rmtree(files)


def in_image(image, argv, work: Path, network=False, timeout=900):
    """Run ``argv`` in ``image`` with ``work`` as /srv; the completed process, checked."""
    result = images.run_in_image(image.root, argv, binds=[(work, "/srv")], network=network, cwd="/srv",
                                 env={"PIP_CONFIG_FILE": "/dev/null", "PIP_NO_CACHE_DIR": "1",
                                      "PIP_DISABLE_PIP_VERSION_CHECK": "1"}, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(argv)} failed in {image.name}:\n{result.stdout}\n{result.stderr}"
    return result


def pip_wheel_in_image(image, index_url: str, package: str, work: Path) -> Path:
    """pip wheel of ``package`` from ``index_url`` inside ``image``: the wheel it made."""
    in_image(image, ["python3", "-m", "pip", "wheel", f"{package}==1.0", "--no-deps", "--no-binary",
                     package, "--isolated", "--index-url", index_url, "--wheel-dir", "/srv/wheels"],
             work, network=True)
    [wheel] = (work / "wheels").glob("*.whl")
    return wheel


@needs_image_tools
@IMAGE_BUILD_TIMEOUT
def test_elf_analysis_reads_armhf_objects_of_the_image_and_its_dpkg_database(armhf_image, tmp_path):
    """ldd cannot trace a foreign object; the ELF headers and the image's own dpkg lists can."""
    [ctypes_so] = (armhf_image.root / "usr/lib/python3.11/lib-dynload").glob("_ctypes.cpython-311-*.so")
    wheel = zip_wheel(tmp_path, "ext-1.0-cp311-cp311-linux_armv7l.whl", {
        "ext/_ext.so": ctypes_so.read_bytes(),
        "ext-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: ext\nVersion: 1.0\n"})
    info = analyse_wheel(wheel, "ext", "1.0", root=armhf_image.root)
    assert info.dependencies == (("apt", "libc6"), ("apt", "libffi8"))
    assert analyse_wheel(wheel, "ext", "1.0", root=tmp_path).dependencies == (
        ("unowned", "ld-linux-armhf.so.3"), ("unowned", "libc.so.6"), ("unowned", "libffi.so.8")), \
        "an empty root has none of them: they are named, not dropped"


@needs_image_tools
@IMAGE_BUILD_TIMEOUT
@pytest.mark.parametrize("target", ["cp311-armv7l", "cp313-aarch64"])
def test_a_c_extension_built_in_the_pi_image_installs_and_imports_on_the_emulated_pi(
        target, sdists, catalog, tmp_path):
    from support.index_world import Wheel, World
    from support.serving import serve
    from wheelwright.publish.writer import publish
    from wheelwright.builds.builder import build
    image = built_image(target)
    work = open_folder("wheelwright-image-work-")
    try:
        # the worker's builder, in the sandbox whose read-only root is the target's image
        request = {"build_id": 21, "package": "yamlext", "version": "1.0", "target": target,
                   "abi": TAGS[target].split("-")[1]}
        outcome = build(request, index_url=sdists, workdir_root=work, root=image.root, timeout=1800)
        log = gzip.decompress((outcome.files_dir / outcome.log.filename).read_bytes()).decode()
        assert outcome.status == "success", log[-3000:]
        assert f"root {image.root}" in log, "built inside the image, through the sandbox"
        [info] = outcome.wheels
        assert info.filename == f"yamlext-1.0-{TAGS[target]}.whl"
        built = outcome.files_dir / info.filename
        assert info.dependencies == (("apt", LIBYAML[target]),), "libyaml's package, from the image's dpkg"
        assert needed_apt([d for tool, d in info.dependencies if tool == "apt"], image.recipe.distro) == (), \
            "Pi OS Lite has libyaml and libc: nothing for the Pi user to apt install"

        # publish it as the index host would, and serve the tree on loopback
        output = tmp_path / "www"
        world = World(catalog, output)
        abi, platform_tag = TAGS[target].split("-")[1:]
        world.target(target, abi, platform_tag, image.recipe.distro)
        world.package("yamlext")
        world.release("yamlext", "1.0")
        world.wheel("yamlext", "1.0", target, wheel=Wheel(
            built.name, built.read_bytes(), built.with_name(built.name + ".metadata").read_bytes()),
            apt=[d for tool, d in info.dependencies if tool == "apt"])
        publish(catalog, output)
        served = serve(output, tmp_path / "server")
        try:
            # the Pi user's view: the image's own Python and pip, a venv, the published index
            # (the venv gets no pip of its own: ensurepip takes minutes under emulation)
            in_image(image, ["python3", "-m", "venv", "--without-pip", "/srv/venv"], work)
            result = in_image(image, ["python3", "-m", "pip", "--python", "/srv/venv/bin/python", "install",
                                      "--isolated", "--only-binary", ":all:",
                                      "--index-url", f"{served.url}/simple/", "yamlext"],
                              work, network=True)
            assert f"Successfully installed yamlext-1.0" in result.stdout
            imported = in_image(image, ["/srv/venv/bin/python", "-c", "import platform, yamlext; "
                                        "print(platform.machine(), yamlext.version())"], work)
            machine, version = imported.stdout.split()
            assert machine == MACHINE[target] and version.startswith("0.2.")
        finally:
            served.stop()
    finally:
        shutil.rmtree(work)


@needs_image_tools
@IMAGE_BUILD_TIMEOUT
def test_a_pure_wheel_built_in_one_image_serves_every_target(sdists):
    armhf, arm64 = built_image("cp311-armv7l"), built_image("cp313-aarch64")
    work = open_folder("wheelwright-image-work-")
    try:
        built = pip_wheel_in_image(armhf, sdists, "purepkg", work)
        assert built.name == "purepkg-1.0-py3-none-any.whl"
        assert analyse_wheel(built, "purepkg", "1.0", root=armhf.root).pure
        in_image(arm64, ["python3", "-m", "venv", "--without-pip", "/srv/venv"], work)
        in_image(arm64, ["python3", "-m", "pip", "--python", "/srv/venv/bin/python", "install", "--isolated",
                         "--no-index", f"/srv/wheels/{built.name}"], work)
        result = in_image(arm64, ["/srv/venv/bin/python", "-c", "import purepkg; print(purepkg.WHERE)"], work)
        assert result.stdout.strip() == "aarch64"
    finally:
        shutil.rmtree(work)


def test_a_silent_build_still_says_it_works_and_is_stopped_at_its_deadline(tmp_path, monkeypatch):
    """dpkg under qemu can say nothing for minutes: the heartbeat and the deadline go by the clock."""
    import sys
    from wheelwright.errors import WheelwrightError
    quiet = "import time; print('I: running apt-get update...', flush=True); time.sleep(600)"
    monkeypatch.setattr(images, "mmdebstrap_command", lambda *a, **kw: [sys.executable, "-c", quiet])
    monkeypatch.setattr(images, "HEARTBEAT", 0.5)
    recipe = make_recipe("bookworm", "amd64", ["gcc"])  # native here: nothing to emulate
    said = []
    with pytest.raises(WheelwrightError, match="took more than"):
        images.build_image(recipe, tmp_path, progress=said.append, timeout=3)
    assert any(line.endswith("working") for line in said), said
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".apt-cache")] == \
        [f".{recipe.folder_name}.lock"], "no half-built image, no progress file left"


@pytest.mark.skipif(os.geteuid() != 0, reason="mmdebstrap mounts as root, and so does this test")
def test_what_mmdebstrap_mounted_in_a_failed_build_is_unmounted_before_the_tree_is_removed(tmp_path):
    import subprocess
    inside = tmp_path / "work" / "root" / "proc"
    inside.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "none", str(inside)], check=True)
    (inside / "precious").write_text("a file system of someone else's")
    images._unmount_under(tmp_path / "work")
    assert str(inside) not in Path("/proc/self/mountinfo").read_text()
    assert not (inside / "precious").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mmdebstrap mounts as root, and so does this test")
def test_what_a_build_mounts_is_never_seen_outside_it_and_a_killed_build_takes_nothing_with_it(
        tmp_path, monkeypatch):
    """mmdebstrap bind-mounts this machine's /dev/shm into the root it builds: a build killed with
    that mount in place, then removed, emptied the machine's /dev/shm. Builds mount in a namespace of
    their own now."""
    import subprocess
    import sys
    import threading
    from wheelwright.errors import WheelwrightError
    precious = tmp_path / "shm"  # stands for this machine's /dev/shm
    precious.mkdir()
    (precious / "PostgreSQL.1").write_text("a server's shared memory")
    mounted = tmp_path / "mounted"
    fake = ("import pathlib, subprocess, sys, time; root = pathlib.Path(sys.argv[1]); "
            "(root / 'dev/shm').mkdir(parents=True); "
            f"subprocess.run(['mount', '--bind', {str(precious)!r}, str(root / 'dev/shm')], check=True); "
            f"pathlib.Path({str(mounted)!r}).write_text(str(root / 'dev/shm')); time.sleep(600)")
    monkeypatch.setattr(images, "mmdebstrap_command",
                        lambda recipe, root, *a, **kw: [sys.executable, "-c", fake, str(root)])
    recipe = make_recipe("bookworm", "amd64", ["gcc"])
    store = tmp_path / "store"
    failed = []
    build = threading.Thread(target=lambda: failed.append(pytest.raises(
        WheelwrightError, images.build_image, recipe, store, timeout=20)))
    build.start()
    from support.waiting import wait_until
    point = wait_until(lambda: mounted.exists() and mounted.read_text(), 60, "the fake build to mount")
    assert point not in Path("/proc/self/mountinfo").read_text(), "the build's mount is seen outside it"
    build.join()
    assert failed, "the build ran past its deadline"
    assert (precious / "PostgreSQL.1").exists(), "removing the killed build emptied what it had mounted"
    assert not any(p.name.startswith(".tmp-") for p in store.iterdir())
