"""`wheelwright import`: wheels built by hand go through the index host's own door, or not at all.

The first test is the operator's whole story on a Raspberry Pi target: a wheel holding a real armhf
shared object (taken from the target's image, linked against OpenSSL and the C library) is imported
with its log through the `wheelwright` command, its apt dependencies are found in the armhf image, the
next `wheelwright index` publishes it, and the project page and JSON say who imported it. The others
hold the door: a wheel of an unknown release, of no target, naming another package, for a target it
does not fit, each refused with a sentence and no trace in the catalog.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.build_world import add_build, add_release, open_folder, use_targets
from support.images import TEST_TARGETS, built_image, image_store
from support.received import metadata, wheel_of
from wheelwright.builds.imports import ImportRefused, import_wheels
from wheelwright.builds.queue import queue_head
from wheelwright.operate.admin import UnknownRelease, skip

PI = "cp311-armv7l"
ON_THIS_SYSTEM = lambda _target: Path("/")  # noqa: E731 - targets without an image resolve here


def wheelwright(settings, *args, env_extra=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHEELWRIGHT")}
    env.update({"WHEELWRIGHT_HOME": str(settings.home), "WHEELWRIGHT_DSN": settings.dsn,
                "WHEELWRIGHT_OUTPUT": str(settings.output), **(env_extra or {})})
    return subprocess.run([sys.executable, "-m", "wheelwright", *args], env=env, capture_output=True,
                          text=True, timeout=600)


def builds(conn) -> list[tuple]:
    return conn.execute("SELECT package, version, target, status, imported_by FROM builds ORDER BY build_id"
                        ).fetchall()


@pytest.fixture
def world(catalog):
    """Two armv7l targets (cp39, cp311) and the releases cext 1.0 and purepkg 2.0."""
    use_targets(catalog)
    add_release(catalog, "cext", "1.0")
    add_release(catalog, "purepkg", "2.0")
    return catalog


@pytest.fixture
def reachable_home():
    """A home the install test's build user can reach (pytest's own tmp folders are root's alone)."""
    home = open_folder("wheelwright-import-")
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_an_armhf_wheel_is_imported_with_its_apt_dependencies_and_who_imported_it(catalog, settings, tmp_path,
                                                                                  reachable_home):
    image = built_image(PI)
    so = next((image.root / "usr/lib/python3.11/lib-dynload").glob("_ssl.cpython-311-arm-linux-gnueabihf.so"))
    targets = tmp_path / "targets.toml"
    targets.write_text(TEST_TARGETS)
    add_release(catalog, "cext", "1.0")
    wheel = wheel_of(tmp_path, "cext-1.0-cp311-cp311-linux_armv7l.whl", "cext", "1.0", members={
        # a real armhf extension module, under the name its init function has: the install test imports it
        "cext/__init__.py": b"",
        "cext/_ssl.cpython-311-arm-linux-gnueabihf.so": so.read_bytes(),
        "cext-1.0.dist-info/METADATA": metadata("cext", "1.0", ">=3.11"),
        "cext-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311-cp311-linux_armv7l\n",
        "cext-1.0.dist-info/RECORD": b""})
    build_log = tmp_path / "build.log"
    build_log.write_text("built by hand on pi-kitchen: CFLAGS=-O1, 4 h 12 min\n")
    env = {"WHEELWRIGHT_TARGETS": str(targets), "WHEELWRIGHT_IMAGES": str(image_store()),
           "WHEELWRIGHT_HOME": str(reachable_home)}

    done = wheelwright(settings, "import", str(wheel), "--log", str(build_log), "--by", "alice", env_extra=env)
    assert done.returncode == 0, done.stderr
    assert "cext-1.0-cp311-cp311-linux_armv7l.whl" in done.stdout and "libssl3" in done.stdout
    assert builds(catalog) == [("cext", "1.0", PI, "success", "alice")]
    deps = set(catalog.execute("SELECT tool, dependency FROM wheel_dependencies").fetchall())
    assert {("apt", "libssl3"), ("apt", "libc6")} <= deps and not [d for d in deps if d[0] == "unowned"], \
        "its armhf libraries were found in the armhf image, and their packages in its dpkg database"
    assert queue_head(catalog, PI) == [], "an imported wheel is the target's build of the release"

    published = wheelwright(settings, "index", env_extra=env)
    assert published.returncode == 0, published.stderr
    www = settings.output
    assert (www / "simple/cext/cext-1.0-cp311-cp311-linux_armv7l.whl").read_bytes() == wheel.read_bytes()
    assert (www / "simple/cext/cext-1.0-cp311-cp311-linux_armv7l.whl.metadata").read_bytes() == \
        metadata("cext", "1.0", ">=3.11")
    data = json.loads((www / "project/cext/json/index.json").read_bytes())
    [build] = data["releases"]["1.0"]["builds"]
    assert (build["imported_by"], build["builder"], build["status"]) == ("alice", "imported by alice", "success")
    assert b"pi-kitchen" in gzip.decompress((www / build["log_url"].lstrip("/")).read_bytes())
    published_file = data["releases"]["1.0"]["files"]["cext-1.0-cp311-cp311-linux_armv7l.whl"]
    assert published_file["unowned_libraries"] == [], "every library it needs was found in the image"
    assert published_file["apt_dependencies"] == [], "Raspberry Pi OS Lite has OpenSSL and the C library"
    page = (www / "project/cext/index.html").read_text()
    assert "imported by alice" in page and "imports on bookworm armhf" in page, "install-tested like any build"


def test_a_wheel_of_an_unknown_release_is_refused_with_a_sentence(world, settings, tmp_path):
    wheel = wheel_of(tmp_path, "cext-9.9-py3-none-any.whl", "cext", "9.9")
    done = wheelwright(settings, "import", str(wheel))
    assert done.returncode == 5 and "cext has no release 9.9 in the catalog" in done.stderr
    stranger = wheel_of(tmp_path, "stranger-1.0-py3-none-any.whl", "stranger", "1.0")
    done = wheelwright(settings, "import", str(stranger))
    assert done.returncode == 5 and "stranger is not in the catalog" in done.stderr
    assert builds(world) == []


def test_a_wheel_no_target_installs_is_refused(world, settings, tmp_path):
    wheel = wheel_of(tmp_path, "cext-1.0-cp311-cp311-linux_x86_64.whl", "cext", "1.0")
    done = wheelwright(settings, "import", str(wheel), env_extra={"WHEELWRIGHT_TARGETS": str(_two(tmp_path))})
    assert done.returncode == 1
    assert "cp311-cp311-linux_x86_64) install on no target of this index" in done.stderr
    assert "cp311-armv7l (cp311 on linux_armv7l)" in done.stderr
    with pytest.raises(ImportRefused, match="install on no target named: cp39-armv7l"):
        import_wheels(world, [wheel_of(tmp_path, "cext-1.0-cp311-cp311-linux_armv7l.whl", "cext", "1.0")],
                      by="ops", output=settings.output, scratch=tmp_path / "s", target="cp39-armv7l",
                      root_for=ON_THIS_SYSTEM)
    assert builds(world) == []


def test_a_wheel_whose_metadata_names_another_package_is_refused(world, settings, tmp_path):
    forged = wheel_of(tmp_path, "cext-1.0-cp311-cp311-linux_armv7l.whl", "cext", "1.0", members={
        "cext-1.0.dist-info/METADATA": metadata("gsas-ii-wonder-linux", "1.0")})
    with pytest.raises(ImportRefused, match="METADATA names 'gsas-ii-wonder-linux'"):
        import_wheels(world, [forged], by="ops", output=settings.output, scratch=tmp_path / "s",
                      root_for=ON_THIS_SYSTEM)
    bomb = tmp_path / "bomb" / "cext-1.0-cp311-cp311-linux_armv7l.whl"
    bomb.parent.mkdir()
    bomb.write_bytes(b"not a zip at all")
    with pytest.raises(ImportRefused, match="not a readable zip"):
        import_wheels(world, [bomb], by="ops", output=settings.output, scratch=tmp_path / "s",
                      root_for=ON_THIS_SYSTEM)
    assert builds(world) == [] and not (settings.output / "simple" / "cext").exists()


def test_a_pure_wheel_is_the_first_targets_build_and_serves_every_target(world, settings, tmp_path):
    wheel = wheel_of(tmp_path, "purepkg-2.0-py3-none-any.whl", "purepkg", "2.0")
    [done] = import_wheels(world, [wheel], by="ops", output=settings.output, scratch=tmp_path / "s",
                           root_for=ON_THIS_SYSTEM)
    assert (done.target, done.wheels) == ("cp39-armv7l", ["purepkg-2.0-py3-none-any.whl"])
    assert ("purepkg", "2.0") not in queue_head(world, "cp39-armv7l") + queue_head(world, "cp311-armv7l")
    assert (settings.output / "simple/purepkg/purepkg-2.0-py3-none-any.whl").is_file()


def test_a_release_the_builders_skip_can_be_imported(world, settings, tmp_path):
    skip(world, "cext", reason="takes a Pi down for a day")
    wheel = wheel_of(tmp_path, "cext-1.0-cp311-cp311-linux_armv7l.whl", "cext", "1.0")
    [done] = import_wheels(world, [wheel], by="ops", output=settings.output, scratch=tmp_path / "s",
                           root_for=ON_THIS_SYSTEM)
    assert done.target == "cp311-armv7l" and builds(world) == [("cext", "1.0", "cp311-armv7l", "success", "ops")]


def test_other_bytes_under_a_published_name_get_the_next_build_number(world, settings, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = wheel_of(tmp_path / "a", "cext-1.0-cp311-cp311-linux_armv7l.whl", "cext", "1.0", extra=b"one")
    second = wheel_of(tmp_path / "b", "cext-1.0-cp311-cp311-linux_armv7l.whl", "cext", "1.0", extra=b"two")
    import_wheels(world, [first], by="ops", output=settings.output, scratch=tmp_path / "s", root_for=ON_THIS_SYSTEM)
    [again] = import_wheels(world, [second], by="ops", output=settings.output, scratch=tmp_path / "s",
                            root_for=ON_THIS_SYSTEM)
    assert again.wheels == ["cext-1.0-1-cp311-cp311-linux_armv7l.whl"], "a URL never changes its bytes"
    assert (settings.output / "simple/cext/cext-1.0-cp311-cp311-linux_armv7l.whl").read_bytes() == first.read_bytes()


def test_nothing_is_imported_over_a_build_in_flight_or_a_takedown(world, settings, tmp_path):
    from wheelwright.operate.takedowns import remove
    add_build(world, "cext", "1.0", "cp311-armv7l", "building")
    wheel = wheel_of(tmp_path, "cext-1.0-cp311-cp311-linux_armv7l.whl", "cext", "1.0")
    with pytest.raises(ImportRefused, match="being built for cp311-armv7l right now"):
        import_wheels(world, [wheel], by="ops", output=settings.output, scratch=tmp_path / "s",
                      root_for=ON_THIS_SYSTEM)
    remove(world, "cext", reason="licence", by="ops")
    with pytest.raises(ImportRefused, match="taken off the index"):
        import_wheels(world, [wheel], by="ops", output=settings.output, scratch=tmp_path / "s",
                      root_for=ON_THIS_SYSTEM)
    with pytest.raises(UnknownRelease):
        import_wheels(world, [wheel_of(tmp_path, "nope-1.0-py3-none-any.whl", "nope", "1.0")], by="ops",
                      output=settings.output, scratch=tmp_path / "s", root_for=ON_THIS_SYSTEM)


def _two(tmp_path: Path) -> Path:
    from support.build_world import TWO_TARGETS
    path = tmp_path / "two-targets.toml"
    path.write_text(TWO_TARGETS)
    return path


def test_the_dashboard_never_builds_an_image_it_names_the_command_instead(tmp_path, monkeypatch):
    from wheelwright.builds.imports import image_root_built
    from wheelwright.errors import ConfigError
    targets = tmp_path / "targets.toml"
    targets.write_text(TEST_TARGETS)
    monkeypatch.setenv("WHEELWRIGHT_TARGETS", str(targets))
    monkeypatch.setenv("WHEELWRIGHT_IMAGES", str(tmp_path / "no-images"))
    with pytest.raises(ConfigError, match="wheelwright image build cp311-armv7l"):
        image_root_built(PI)
    assert image_root_built("not-a-target-of-the-file") == Path("/")
