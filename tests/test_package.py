"""wheelwright is a real package: a plain (non-editable) install works from any folder.

A Pi worker installs wheelwright with pip, not from a checkout; the schema, the default targets and the
reference data must come with it. The wheel is built from this checkout and installed into a new virtual
environment that sees the test environment's dependencies (a .pth line) but not its editable install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from support.catalog import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(REPO)], check=True, capture_output=True, timeout=300)
    [built] = out.glob("wheelwright-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the test environment's dependencies, as plain path entries: its editable finder is not loaded
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                    "--quiet", "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True,
                   timeout=300)
    return venv


def test_the_wheel_carries_the_schema_the_targets_and_the_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for member in ("wheelwright/sql/001_catalog.sql", "wheelwright/sql/queries/status.sql",
                   "wheelwright/data/targets.toml", "wheelwright/data/missing-files.tsv",
                   "wheelwright/data/raspios-lite/bookworm.txt", "wheelwright/publish/templates/base.html"):
        assert member in names, f"{member} is missing from {wheel.name}"


def test_an_installed_wheelwright_inits_and_reports_from_any_folder(installed, catalog_dsn, tmp_path):
    env = {"PATH": os.environ["PATH"], "WHEELWRIGHT_DSN": catalog_dsn, "WHEELWRIGHT_HOME": str(tmp_path / "home")}
    where = subprocess.run([installed / "bin" / "python", "-c", "import wheelwright; print(wheelwright.__file__)"],
                           cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout
    assert where.startswith(str(installed)), f"imported from {where}, not the installed copy"
    init = subprocess.run([installed / "bin" / "wheelwright", "db", "init"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    status = subprocess.run([installed / "bin" / "wheelwright", "status", "--json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["serial"] == 0
    targets = subprocess.run([installed / "bin" / "python", "-c",
                              "from wheelwright.builds.targets import load_targets; "
                              "print(' '.join(t.name for t in load_targets()))"],
                             cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout
    assert "cp311-x86_64" in targets.split()
