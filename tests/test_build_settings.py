"""Per-package build settings: checked at every door, kept in the catalog, carried to the builder, applied."""

from __future__ import annotations

import gzip
import shutil
from datetime import timedelta

import pytest

from support.build_world import PYPROJECT, add_build, add_release, backend_wheels, make_sdist, open_folder, setup_py, use_targets
from wheelwright.builds import build_settings
from wheelwright.builds.build_settings import BuildSettings, SettingRefused, change, parse_duration, read
from wheelwright.builds.queue import claim_wave, expire_lost
from wheelwright.operate.admin import UnknownRelease

FIRST = "cp39-armv7l"


@pytest.mark.parametrize("name", ["PATH", "HOME", "http_proxy", "HTTPS_PROXY", "PIP_INDEX_URL", "PIP_TRUSTED_HOST",
                                  "LD_PRELOAD", "PYTHONPATH", "LC_ALL", "WHEELWRIGHT_HOME", "SSL_CERT_FILE"])
def test_a_setting_never_overrides_the_sandbox_s_own_variables(name):
    with pytest.raises(SettingRefused, match=f"{name} belongs to the build sandbox"):
        build_settings.check_environment({name: "x"})


@pytest.mark.parametrize("variables, says", [
    ({"A B": "1"}, "not an environment variable name"), ({"X": "two\nlines"}, "one line"),
    ({"X": "x" * 2000}, "at most 1024"), ({"X": 3}, "printable text")])
def test_variables_are_plain_names_with_one_line_values(variables, says):
    with pytest.raises(SettingRefused, match=says):
        build_settings.check_environment(variables)


def test_apt_packages_are_debian_names_and_timeouts_stay_within_bounds():
    assert build_settings.check_apt(["libcups2-dev", "libcups2-dev", "g++"]) == ("g++", "libcups2-dev")
    for bad in (["libfoo; rm -rf /"], ["-o=APT::x"], "libfoo-dev"):
        with pytest.raises(SettingRefused):
            build_settings.check_apt(bad)
    assert parse_duration("6h") == 21600 and parse_duration("1h30m") == 5400 and parse_duration("5400") == 5400
    with pytest.raises(SettingRefused, match="between 1m and 48h"):
        build_settings.check_timeout(parse_duration("3d"))
    with pytest.raises(SettingRefused, match="not a duration"):
        parse_duration("soon")


def test_the_builder_checks_a_request_s_settings_again():
    assert BuildSettings.from_request(None) == BuildSettings()
    assert BuildSettings.from_request({"apt": ["libcups2-dev"], "timeout": 7200, "env": {"MAX_JOBS": "1"}}) == \
        BuildSettings(("libcups2-dev",), 7200.0, {"MAX_JOBS": "1"})
    with pytest.raises(SettingRefused):
        BuildSettings.from_request({"env": {"PATH": "/evil"}})
    with pytest.raises(SettingRefused):
        BuildSettings.from_request({"apt": [], "shell": "x"})


@pytest.fixture
def world(catalog):
    use_targets(catalog)
    add_release(catalog, "numpy", "2.0")
    add_release(catalog, "tiny", "1.0")
    return catalog


def test_settings_are_kept_per_package_changed_in_part_and_cleared(world):
    assert read(world, "numpy") is None
    change(world, "NumPy", by="ops", apt=["libopenblas-dev"], timeout=6 * 3600, set_env={"NPY_NUM_BUILD_JOBS": "1"})
    change(world, "numpy", by="ops", set_env={"CFLAGS": "-O1"})
    assert read(world, "numpy") == BuildSettings(("libopenblas-dev",), 21600.0,
                                                 {"NPY_NUM_BUILD_JOBS": "1", "CFLAGS": "-O1"})
    change(world, "numpy", by="ops", timeout=None, unset_env=["CFLAGS"])
    assert read(world, "numpy") == BuildSettings(("libopenblas-dev",), None, {"NPY_NUM_BUILD_JOBS": "1"})
    assert change(world, "numpy", by="ops", clear=True) is None and read(world, "numpy") is None
    with pytest.raises(UnknownRelease):
        change(world, "nothere", by="ops", apt=["x1"])
    with pytest.raises(SettingRefused):
        change(world, "numpy", by="ops", set_env={"PATH": "/x"})
    assert read(world, "numpy") is None, "a refused change changes nothing"


def test_a_claimed_build_carries_its_package_s_settings_to_the_worker(world):
    change(world, "numpy", by="ops", apt=["libopenblas-dev"], timeout=7200)
    wave = {r["package"]: r for r in claim_wave(world, FIRST, 10)}
    assert wave["numpy"]["settings"] == {"apt": ["libopenblas-dev"], "timeout": 7200.0, "env": {}}
    assert "settings" not in wave["tiny"]


def test_a_longer_timeout_is_not_given_up_as_lost_before_it_ran_out(world):
    change(world, "numpy", by="ops", timeout=6 * 3600)
    slow, quick = (add_build(world, p, v, FIRST, status="building") for p, v in (("numpy", "2.0"), ("tiny", "1.0")))
    world.execute("UPDATE builds SET started_at = now() - interval '5 hours'")
    lost = {r["package"] for r in expire_lost(world, timedelta(hours=4))}
    assert lost == {"tiny"}, "numpy may take 6 h, and an hour more before it counts as lost"
    world.execute("UPDATE builds SET started_at = now() - interval '8 hours' WHERE status = 'building'")
    assert {r["package"] for r in expire_lost(world, timedelta(hours=4))} == {"numpy"}


def test_the_cli_shows_and_changes_a_package_s_settings(world, catalog_dsn):
    from test_cli import wheelwright
    done = wheelwright("settings", "NumPy", "--apt", "libopenblas-dev", "--timeout", "6h",
                       "--env", "NPY_NUM_BUILD_JOBS=1", dsn=catalog_dsn)
    assert done.returncode == 0, done.stderr
    assert "libopenblas-dev" in done.stdout and "6h" in done.stdout and "NPY_NUM_BUILD_JOBS=1" in done.stdout
    refused = wheelwright("settings", "numpy", "--env", "PATH=/tmp", dsn=catalog_dsn)
    assert refused.returncode == 2 and "PATH belongs to the build sandbox" in refused.stderr
    shown = wheelwright("settings", "numpy", dsn=catalog_dsn)
    assert "timeout       6h" in shown.stdout
    assert wheelwright("settings", "numpy", "--clear", dsn=catalog_dsn).stdout.strip() == \
        "numpy: default build settings"
    assert wheelwright("settings", "nothere", dsn=catalog_dsn).returncode == 5


SETUP_READS_ENV = """
import os, sys
if os.environ.get("WANTED") != "yes, please":
    sys.exit("WANTED is not set: " + repr(os.environ.get("WANTED")))
"""


def test_the_builder_applies_the_variables_and_the_timeout(tmp_path):
    from wheelwright.builds.builder import build
    from wheelwright.testing.pypi_double import PyPIDouble
    files = open_folder("wheelwright-settings-sdists-")
    work = open_folder("wheelwright-settings-work-")
    try:
        for wheel in backend_wheels().glob("*.whl"):
            shutil.copy(wheel, files)
        make_sdist(files, "needsenv", "1.0", {
            "pyproject.toml": PYPROJECT,
            "setup.py": SETUP_READS_ENV + setup_py("needsenv", "1.0", py_modules="['needsenv']"),
            "needsenv.py": ""})
        with PyPIDouble([], files_dir=files) as pypi:
            request = {"build_id": 5, "package": "needsenv", "version": "1.0", "target": "cp311-x86_64",
                       "abi": "cp311"}
            plain = build(dict(request), index_url=pypi.simple_url, workdir_root=work, timeout=300)
            assert plain.status == "failure"
            plain.cleanup()
            request["settings"] = {"apt": [], "timeout": 240, "env": {"WANTED": "yes, please"}}
            done = build(dict(request), index_url=pypi.simple_url, workdir_root=work, timeout=300)
            log = gzip.decompress((done.files_dir / done.log.filename).read_bytes()).decode()
            assert done.status == "success", log[-2000:]
            assert "build settings: timeout       4m" in log and "WANTED=yes, please" in log
            done.cleanup()
            request["settings"] = {"env": {"PATH": "/evil"}}
            refused = build(dict(request), index_url=pypi.simple_url, workdir_root=work, timeout=300)
            assert refused.status == "failure" and "refused build settings: PATH belongs" in refused.reason
            refused.cleanup()
    finally:
        shutil.rmtree(files)
        shutil.rmtree(work)


def test_extra_apt_packages_make_a_derived_image_named_by_its_own_recipe_hash():
    from support.images import image_targets
    from wheelwright.builds import images
    target = image_targets()["cp311-armv7l"]
    base, derived = images.recipe_for(target), images.recipe_for(target, ["libcups2-dev"])
    assert "libcups2-dev" in derived.packages and set(base.packages) < set(derived.packages)
    assert derived.name == base.name and derived.digest != base.digest, "another image, same distro and arch"
    assert images.recipe_for(target, ["libcups2-dev"]).digest == derived.digest, "the same settings, the same image"


def test_apt_packages_need_an_image_a_worker_s_own_system_cannot_take_them():
    from wheelwright.builds.images import root_for_target
    from wheelwright.errors import ConfigError
    with pytest.raises(ConfigError, match="need an image"):
        root_for_target("cp311-x86_64", extra=("libcups2-dev",))


def test_the_broker_never_hands_a_build_to_a_second_worker_while_the_longest_allowed_one_runs():
    # Redis redelivers a task unacknowledged past its visibility timeout: a build would run twice
    from wheelwright.builds.build_settings import MAX_TIMEOUT
    from wheelwright.operate.celery_config import CELERY_CONFIG
    assert CELERY_CONFIG["broker_transport_options"]["visibility_timeout"] > MAX_TIMEOUT
