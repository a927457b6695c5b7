"""`wheelwright build PACKAGE VERSION`: one release built here exactly as a worker would, end to end.

The PyPI double serves buildable sdists (and the setuptools/wheel wheels build isolation installs);
the catalog knows the releases; the command claims, builds with the real builder, hands the files over
through a local incoming folder, and records them with every check of the index host. Then
`wheelwright index` publishes, nginx (or the static server) serves the tree, and real pip installs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import build_world as buildworld
from support.build_world import C_SOURCE, PYPROJECT, add_release, make_sdist, open_folder, setup_py
from support.serving import serve
from wheelwright.operate.cli import main
from wheelwright.testing.pypi_double import PyPIDouble

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the builder runs on Linux workers")


TARGETS = """
[[target]]
name = "cp311-x86_64"
abi = "cp311"
platform = "linux_x86_64"
distro = "bookworm"
enabled = true

[[target]]
name = "cp311-armv7l"
abi = "cp311"
platform = "linux_armv7l"
distro = "bookworm"
image = false
enabled = false
"""


def pure_sdist(files: Path, answer: int) -> None:
    make_sdist(files, "purepkg", "1.0", {
        "pyproject.toml": PYPROJECT,
        "setup.py": setup_py("purepkg", "1.0", py_modules="['purepkg']", python_requires="'>=3.8'"),
        "purepkg.py": f"ANSWER = {answer}\n"})


@pytest.fixture(scope="module")
def pypi(tmp_path_factory):
    """The PyPI double with purepkg 1.0 (pure), cext 1.0 (a C extension) and broken 1.0 (fails)."""
    files = tmp_path_factory.mktemp("files")
    for wheel in buildworld.backend_wheels().glob("*.whl"):
        shutil.copy(wheel, files)
    pure_sdist(files, 42)
    make_sdist(files, "cext", "1.0", {
        "pyproject.toml": PYPROJECT,
        "setup.py": setup_py("cext", "1.0", body="from setuptools import Extension",
                             ext_modules="[Extension('cext', ['cext.c'])]"),
        "cext.c": C_SOURCE})
    make_sdist(files, "broken", "1.0", {"setup.py": setup_py("broken", "1.0", body="""
        raise SystemExit("broken fails on purpose")
    """)})
    with PyPIDouble([], files_dir=files) as double:
        double.files = files
        yield double


@pytest.fixture
def home():
    """WHEELWRIGHT_HOME where the unprivileged build user can reach its work folder."""
    path = open_folder("wheelwright-build-command-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def wheelwright(catalog, catalog_dsn, home, pypi, monkeypatch, capsys):
    """Run the `wheelwright` command in this process: (exit code, stdout, stderr)."""
    for name in ("purepkg", "cext", "broken"):
        add_release(catalog, name, "1.0")
    monkeypatch.setenv("WHEELWRIGHT_HOME", str(home))
    monkeypatch.setenv("WHEELWRIGHT_DSN", catalog_dsn)
    monkeypatch.setenv("WHEELWRIGHT_OUTPUT", str(home / "www"))
    monkeypatch.setenv("WHEELWRIGHT_PYPI_URL", pypi.xmlrpc_url)
    # This machine's target, and a Pi target not enabled (on the worker's own system, so trying it needs
    # no image): the case of an operator trying a target before enabling it.
    targets = home / "targets.toml"
    targets.write_text(TARGETS)
    monkeypatch.setenv("WHEELWRIGHT_TARGETS", str(targets))

    def run(*argv):
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def pip_install(index_url: str, target: Path, *requirements: str) -> str:
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir",
                             "--disable-pip-version-check", "--index-url", index_url, "--target", str(target),
                             *requirements], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_release_built_here_is_published_by_the_next_index_and_installs(wheelwright, home, tmp_path):
    code, out, err = wheelwright("build", "PurePkg", "1.0", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["accepted"] and result["status"] == "success" and result["target"] == "cp311-x86_64"
    assert result["wheels"] == ["purepkg-1.0-py3-none-any.whl"]
    assert (home / "www" / result["log_path"]).exists()
    assert wheelwright("index")[0] == 0
    served = serve(home / "www", tmp_path / "served")
    try:
        pip_install(f"{served.url}/simple/", tmp_path / "site", "purepkg==1.0")
    finally:
        served.stop()
    assert (tmp_path / "site" / "purepkg.py").read_text() == "ANSWER = 42\n"


def test_a_rebuild_with_other_bytes_gets_a_build_number_and_pip_installs_it(wheelwright, home, pypi, tmp_path):
    assert wheelwright("build", "purepkg", "1.0")[0] == 0
    assert wheelwright("rebuild", "purepkg", "1.0")[0] == 0
    pure_sdist(pypi.files, 43)  # the same release now builds other bytes (its own build is not reproducible)
    try:
        code, out, err = wheelwright("build", "purepkg", "1.0", "--json")
    finally:
        pure_sdist(pypi.files, 42)
    assert code == 0, err
    assert json.loads(out)["wheels"] == ["purepkg-1.0-1-py3-none-any.whl"]
    assert wheelwright("index")[0] == 0
    simple = home / "www" / "simple" / "purepkg"
    assert (simple / "purepkg-1.0-py3-none-any.whl").exists(), "the first URL keeps its bytes"
    served = serve(home / "www", tmp_path / "served")
    try:
        output = pip_install(f"{served.url}/simple/", tmp_path / "site", "purepkg==1.0")
    finally:
        served.stop()
    assert "purepkg-1.0-1-py3-none-any.whl" in output, "pip prefers the higher build number"
    assert (tmp_path / "site" / "purepkg.py").read_text() == "ANSWER = 43\n", \
        "the renamed wheel (its WHEEL and RECORD unchanged) installs"


def test_a_failed_build_exits_1_with_its_reason(wheelwright):
    code, out, err = wheelwright("build", "broken", "1.0", "--json")
    assert code == 1
    result = json.loads(out)
    assert result["status"] == "failure" and not result["accepted"]
    assert "the build exited with status 1" in result["reason"]
    assert "broken 1.0 was not built for cp311-x86_64: the build exited with status 1" in err


def test_a_target_not_enabled_can_be_tried_and_its_wrong_wheel_is_refused(wheelwright, catalog):
    """cp311-armv7l is not enabled; built on this x86_64 machine's own system, its wheel is x86_64."""
    code, out, err = wheelwright("build", "cext", "1.0", "--target", "cp311-armv7l", "--json")
    assert code == 1
    result = json.loads(out)
    assert result["target"] == "cp311-armv7l" and result["wheels"] == []
    # (the builder tagged it for the manylinux policy it meets: still x86_64)
    assert re.search(r"it is for (linux|manylinux_\d+_\d+)_x86_64, but the target builds for linux_armv7l",
                     result["reason"]), result["reason"]
    assert catalog.execute("SELECT count(*) FROM wheels").fetchone()[0] == 0


def test_an_unknown_release_exits_5(wheelwright):
    code, _out, err = wheelwright("build", "purepkg", "9.9")
    assert code == 5 and "purepkg 9.9 is not in the catalog" in err


def test_a_release_next_in_line_nowhere_needs_a_target(wheelwright):
    assert wheelwright("build", "purepkg", "1.0")[0] == 0
    code, out, err = wheelwright("build", "purepkg", "1.0", "--json")
    assert code == 1 and "name one with --target" in err
    assert json.loads(out)["accepted"] is False


def test_a_quarantined_release_is_not_built(wheelwright, catalog):
    catalog.execute("UPDATE versions SET quarantined = true WHERE package = 'purepkg'")
    catalog.commit()
    code, _out, err = wheelwright("build", "purepkg", "1.0")
    assert code == 1 and "purepkg 1.0 is quarantined on PyPI" in err
    assert catalog.execute("SELECT count(*) FROM builds").fetchone()[0] == 0
