"""The build's disk (``builds.workspace``): its quota as a setting, cut to what the worker has free, a
file system of its own for a worker that is root, and what a worker killed mid-build left behind.

Builds that overrun the quota, in both ways a worker holds them to it, are in ``test_sandbox.py``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from wheelwright.builds import workspace
from wheelwright.builds.workspace import DiskQuota, OwnDisk, open_workspace, parse_size
from wheelwright.errors import ConfigError

MiB, GiB = 1 << 20, 1 << 30


@pytest.mark.parametrize("text, size", [("10G", 10 * GiB), ("512M", 512 * MiB), ("512MiB", 512 * MiB),
                                        ("1.5T", int(1.5 * (1 << 40))), ("4096", 4096), (" 2 gb ", 2 * GiB)])
def test_a_size_is_read_as_people_write_it(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "10 X", "-1G", "10GG"])
def test_what_is_no_size_is_refused_with_a_sentence(text):
    with pytest.raises(ConfigError, match="is not a size"):
        parse_size(text)


def test_the_quota_is_a_setting_with_a_default_for_numpy_class_builds():
    assert DiskQuota.from_env({}) == DiskQuota(10 * GiB, 1_000_000)
    assert DiskQuota.from_env({"WHEELWRIGHT_BUILD_DISK": "20G", "WHEELWRIGHT_BUILD_FILES": "2000000"}) == \
        DiskQuota(20 * GiB, 2_000_000)
    with pytest.raises(ConfigError, match="too small"):
        DiskQuota.from_env({"WHEELWRIGHT_BUILD_DISK": "1M"})
    with pytest.raises(ConfigError, match="WHEELWRIGHT_BUILD_FILES must be a number"):
        DiskQuota.from_env({"WHEELWRIGHT_BUILD_FILES": "many"})


def test_an_overrun_says_what_was_passed():
    quota = DiskQuota(10 * GiB, 1_000_000)
    assert quota.overrun(wrote=10 * GiB, made=1_000_000) is None
    assert quota.overrun(wrote=10 * GiB + 1, made=0) == "the build wrote more than 10 GiB, its disk quota"
    assert quota.overrun(wrote=0, made=1_000_001) == \
        "the build made more than 1,000,000 files and folders, its quota"


@pytest.fixture
def small_disk(tmp_path):
    """A 200 MiB file system standing for a worker's nearly full disk."""
    folder = tmp_path / "disk"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


@needs_root
def test_the_quota_is_cut_to_what_the_worker_s_disk_has_free(small_disk):
    space = open_workspace(small_disk, "build-1", DiskQuota(10 * GiB, 100_000))
    try:
        assert isinstance(space, OwnDisk)
        assert space.quota.size <= 180 * MiB, "200 MiB, less a tenth kept free"
        assert "cut to what the worker had free" in space.how
    finally:
        assert space.close() == []
    assert os.listdir(small_disk) == []


@needs_root
def test_a_disk_too_full_to_build_on_is_said(small_disk):
    (small_disk / "ballast").write_bytes(bytes(150 * MiB))
    with pytest.raises(ConfigError, match="too little to build on"):
        open_workspace(small_disk, "build-1", DiskQuota())


@needs_root
def test_the_file_system_of_a_worker_killed_mid_build_is_removed_by_the_next_build(tmp_path):
    root = Path(tmp_path / "builds")
    root.mkdir()
    crashed = open_workspace(root, "build-1", DiskQuota(64 * MiB, 2000))
    (crashed.path / "left.txt").write_text("from a build whose worker died")
    os.close(crashed._lock)  # the worker's process is gone: so is its lock
    assert os.path.ismount(crashed.path)
    running = open_workspace(root, "build-2", DiskQuota(64 * MiB, 2000))  # sweeps first
    try:
        assert not crashed.path.exists() and not crashed.image.exists()
        assert workspace.sweep_disks(root) == [], "a build in progress is never swept"
        assert os.path.ismount(running.path)
    finally:
        running.close()
    assert os.listdir(root) == []
