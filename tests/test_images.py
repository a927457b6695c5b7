"""Target images: named by their recipe, built once, listed, updated, and run under emulation.

The recipe and store tests are plain functions over plain folders. The tests marked ``images`` use
real images (tests/support/images.py: small ones, built once per machine with mmdebstrap and kept
across runs) and run their binaries under qemu-user as a Pi would natively.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from support.images import TEST_TARGETS
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
    targets = list(parse_targets(TEST_TARGETS))
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
    assert not stale.exists() and len(images.stored_images(tmp_path)) == 2
    assert {row.state for row in image_rows(targets, tmp_path)} == {"ready"}


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
    assert lines[1].split() == ["bookworm-armhf", armv7l.digest, "cp311-armv7l", "350", "MiB", "2.0", "d",
                                "ready"]
    assert lines[2].split()[-1] == "missing" and lines[2].split()[0] == "trixie-arm64"
    assert main(["image", "list", "--json"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert (first["state"], first["size"], first["python"]) == ("ready", 350 << 20, "3.11")


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
