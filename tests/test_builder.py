"""The builder: real sdists built by real pip from the PyPI double, and hostile builds contained.

Builds run as they would on a worker: in the bubblewrap sandbox, started as the unprivileged user
``nobody`` when the tests run as root,
with the interpreter of this machine's target ABI (``python3.11`` on the clean PATH), against the
PyPI double, which serves the test sdists and the setuptools/wheel wheels that build isolation
installs. Those two wheels are fetched from PyPI once (``pip download``) and cached under
``.wheelwright/test-wheels``; the builds themselves never leave 127.0.0.1.
"""

from __future__ import annotations

import gzip
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from support import build_world as buildworld
from support.build_world import C_SOURCE, PYPROJECT, make_sdist, open_folder, setup_py
from wheelwright.builds import builder
from wheelwright.builds.builder import BuildOutcome, build, check_request, pip_wheel_command
from wheelwright.testing.pypi_double import PyPIDouble

REPO = Path(__file__).resolve().parents[1]
ABI = "cp311"
TARGET = "cp311-x86_64"
MEMORY_LIMIT = 1 << 30   # every test build runs under 1 GiB of address space: ordinary builds fit
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the builder runs on Linux workers")


@pytest.fixture(scope="session")
def backend_wheels() -> Path:
    return buildworld.backend_wheels()


@pytest.fixture(scope="session")
def workdir_root():
    path = open_folder("wheelwright-builds-")
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="session")
def index(tmp_path_factory, backend_wheels):
    """The PyPI double serving every test sdist and the build backend; yields its simple index URL."""
    files = tmp_path_factory.mktemp("files")
    for wheel in backend_wheels.glob("*.whl"):
        shutil.copy(wheel, files)
    make_sdist(files, "purepkg", "1.0", {
        "pyproject.toml": PYPROJECT,
        "setup.py": setup_py("purepkg", "1.0", py_modules="['purepkg']", python_requires="'>=3.8'",
                             install_requires="['requests>=2']"),
        "purepkg.py": "ANSWER = 42\n"})
    make_sdist(files, "cext", "1.0", {
        "pyproject.toml": PYPROJECT,
        "setup.py": setup_py("cext", "1.0", body="from setuptools import Extension",
                             ext_modules="[Extension('cext', ['cext.c'])]"),
        "cext.c": C_SOURCE})
    with PyPIDouble([], files_dir=files) as pypi:
        yield pypi.simple_url


def run(index, workdir_root, package, version="1.0", build_id=1, **options) -> BuildOutcome:
    options = {"timeout": 120, "memory_limit": MEMORY_LIMIT, **options}
    request = {"build_id": build_id, "package": package, "version": version, "target": TARGET, "abi": ABI}
    return build(request, index_url=index, workdir_root=workdir_root, **options)


def log_text(outcome: BuildOutcome) -> str:
    return gzip.decompress((outcome.files_dir / outcome.log.filename).read_bytes()).decode()


@pytest.fixture(scope="session")
def built(index, workdir_root):
    """The two honest builds, shared by the tests that look at their results."""
    outcomes = {"purepkg": run(index, workdir_root, "purepkg", build_id=11),
                "cext": run(index, workdir_root, "cext", build_id=12)}
    yield outcomes
    for outcome in outcomes.values():
        outcome.cleanup()


# --- honest builds -----------------------------------------------------------------------------------

def test_a_pure_python_sdist_becomes_a_pure_wheel(built):
    outcome = built["purepkg"]
    assert (outcome.status, outcome.reason) == ("success", None), log_text(outcome)
    [wheel] = outcome.wheels
    assert wheel.filename == "purepkg-1.0-py3-none-any.whl" and wheel.pure
    assert wheel.requires_python == ">=3.8" and wheel.requires_dist == ("requests>=2",)
    assert wheel.dependencies == ()
    with zipfile.ZipFile(outcome.files_dir / wheel.filename) as zf:
        assert zf.read("purepkg.py") == b"ANSWER = 42\n"


# The C extension needs only libc (getpid, GLIBC_2.2.5): it meets the oldest manylinux policy, and the
# builder tags it so (builds/wheel_abi.py): pip then installs it on any x86_64 glibc 2.5 or newer.
CEXT_WHEEL = "cext-1.0-cp311-cp311-manylinux_2_5_x86_64.whl"


def test_a_c_extension_becomes_a_wheel_for_this_machine_that_needs_libc6(built):
    outcome = built["cext"]
    assert outcome.status == "success", log_text(outcome)
    [wheel] = outcome.wheels
    assert wheel.filename == CEXT_WHEEL
    assert ("apt", "libc6") in wheel.dependencies
    assert (wheel.glibc_floor, wheel.manylinux) == ("2.2", "manylinux_2_5_x86_64")
    assert "tagged manylinux_2_5_x86_64" in log_text(outcome)


def test_the_outcome_lists_every_file_to_send_and_survives_a_round_trip(built):
    outcome = built["cext"]
    names = [f.filename for f in outcome.files()]
    assert names == [CEXT_WHEEL, f"{CEXT_WHEEL}.metadata", "12.txt.gz"]
    for f in outcome.files():
        assert (outcome.files_dir / f.filename).stat().st_size == f.size
    again = BuildOutcome.from_dict(outcome.to_dict())
    assert again.files() == outcome.files() and again.wheels == outcome.wheels


def test_the_build_log_holds_the_command_the_environment_and_the_backend_s_output(built):
    text = log_text(built["cext"])
    assert "$ /opt/wheelwright/buildenv/bin/python /opt/wheelwright/frontend/frontend.py /build/job.json" in text
    assert "read-only at /opt/wheelwright/buildenv: setuptools==80.9.0, wheel==0.45.1" in text
    assert "Getting requirements to build wheel" in text and "running build_ext" in text
    assert "Successfully built cext-1.0-cp311-cp311-linux_x86_64.whl" in text
    assert text.rstrip().endswith("[wheelwright: success]")
    assert "in a bubblewrap sandbox, as uid 65534 inside" in text
    if os.geteuid() == 0:
        assert "and nobody outside" in text


def test_without_prepared_environments_pip_builds_in_its_own_isolated_environment(index, workdir_root):
    outcome = run(index, workdir_root, "cext", build_id=13, buildenvs_store=False)
    try:
        assert outcome.status == "success", log_text(outcome)
        text = log_text(outcome)
        assert "pip wheel cext==1.0 --no-deps --no-binary cext --isolated" in text
        assert "Installing build dependencies: finished with status 'done'" in text
        assert "Successfully built cext" in text
        assert outcome.phases["environment"] > 0, "pip's own environment is timed from its log"
    finally:
        outcome.cleanup()


def test_the_build_leaves_no_sandbox_behind(built, workdir_root):
    assert not list(workdir_root.glob("build-*")), "each build's sandbox is removed"


# --- hostile requests (hostile builds: tests/test_sandbox.py) ------------------------------------------

@pytest.mark.parametrize("package, version", [
    ("-e", "1.0"), ("--index-url=http://evil/", "1.0"), ("foo; rm -rf /", "1.0"), ("foo", "1.0 ; rm"),
    ("foo", "--pre"), ("foo", "1.0\n--extra-index-url=http://evil/"), ("", "1.0"), ("foo", ""),
])
def test_a_hostile_name_or_version_is_refused_before_anything_runs(tmp_path, package, version):
    request = {"build_id": 30, "package": package, "version": version, "target": TARGET, "abi": ABI}
    outcome = build(request, index_url="http://127.0.0.1:9/simple/", workdir_root=tmp_path,
                    python="/nonexistent/python")  # would fail loudly if anything ran
    try:
        assert outcome.status == "failure" and outcome.reason.startswith("refused")
        assert outcome.wheels == [] and not list(tmp_path.glob("build-*"))
    finally:
        outcome.cleanup()


def test_requests_are_checked_and_commands_are_argument_lists():
    assert check_request({"build_id": 3, "package": "Foo.Bar_baz", "version": "1!2.0rc1+local"}) == (
        3, "Foo.Bar_baz", "1!2.0rc1+local")
    argv = pip_wheel_command("/usr/bin/python3.11", "Foo_Bar", "1.0", "http://i/simple/", Path("/w"))
    assert argv[:5] == ["/usr/bin/python3.11", "-m", "pip", "wheel", "Foo_Bar==1.0"]
    assert argv[argv.index("--no-binary") + 1] == "foo-bar"
    assert argv[argv.index("--index-url") + 1] == "http://i/simple/"
    assert "--isolated" in argv and "--no-deps" in argv
    legacy = pip_wheel_command("python", "foo", "2004d", "http://i/", Path("/w"))
    assert legacy[4] == "foo===2004d", "a legacy version is named exactly"


def test_the_build_environment_holds_no_secrets():
    env = builder.clean_environment("/build", "nobody")
    assert set(env) == {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PIP_CONFIG_FILE", "PYTHONNOUSERSITE",
                        "USER", "LOGNAME"}
    assert env["PIP_CONFIG_FILE"] == os.devnull and env["HOME"] == "/build/home"


def test_a_pinned_sdist_is_named_with_its_hash_and_a_bad_hash_is_refused_before_anything_runs(tmp_path):
    sha = "ab" * 32
    assert builder.requirements_file("Foo", "1.0", sha) == f"Foo==1.0 --hash=sha256:{sha}\n"
    argv = pip_wheel_command("python", "Foo", "1.0", "http://i/", Path("/w"), requirements=Path("/w/r.txt"))
    assert argv[4:7] == ["-r", "/w/r.txt", "--require-hashes"] and "Foo==1.0" not in argv
    request = {"build_id": 32, "package": "foo", "version": "1.0", "target": TARGET, "abi": ABI,
               "sdist_sha256": "../../etc/passwd"}
    outcome = build(request, index_url="http://127.0.0.1:9/simple/", workdir_root=tmp_path,
                    python="/nonexistent/python")
    try:
        assert outcome.status == "failure" and outcome.reason.startswith("refused sdist sha256")
    finally:
        outcome.cleanup()


def test_an_outcome_says_whether_its_failure_is_transient():
    outcome = BuildOutcome(build_id=1, package="p", version="1", target=TARGET, abi=ABI, status="failure",
                           reason="the index does not offer the sdist of p yet", builder="w", duration=1.0,
                           log=None, transient=True)
    assert outcome.to_dict()["transient"] is True
    assert BuildOutcome.from_dict(outcome.to_dict()).transient is True
    older = {k: v for k, v in outcome.to_dict().items() if k != "transient"}
    assert BuildOutcome.from_dict(older).transient is False
    assert BuildOutcome.from_dict({**older, "transient": "yes"}).transient is False


@pytest.mark.skipif(os.geteuid() != 0, reason="only root drops privileges")
def test_a_work_folder_the_build_user_cannot_reach_is_a_clear_error(tmp_path):
    from wheelwright.errors import ConfigError
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    request = {"build_id": 31, "package": "foo", "version": "1.0", "target": TARGET, "abi": ABI}
    with pytest.raises(ConfigError, match="cannot reach the work folder"):
        build(request, index_url="http://127.0.0.1:9/simple/", workdir_root=closed)


# --- the whole journey -------------------------------------------------------------------------------

def test_a_claimed_release_is_built_sent_over_sftp_and_published(catalog, index, workdir_root, tmp_path):
    from support.build_world import SFTPServer, add_release
    from wheelwright.builds.queue import claim_wave, queue_head
    from wheelwright.builds.intake import log_path_for, receive
    from wheelwright.builds.targets import load_targets, mirror_targets
    from wheelwright.builds.transfer import send_outcome

    mirror_targets(catalog, load_targets())  # the repository's file: this machine is the one enabled
    add_release(catalog, "cext", "1.0")
    [request] = claim_wave(catalog, TARGET, 10)
    index_host = tmp_path / "index-host"
    server = SFTPServer(index_host, tmp_path / "keys").start()
    try:
        outcome = build(request, index_url=index, workdir_root=workdir_root, memory_limit=MEMORY_LIMIT)
        ssh, sftp = server.client()
        try:
            sent = send_outcome(sftp, outcome, "/incoming/builder")   # the account's own folder
        finally:
            sftp.close()
            ssh.close()
            outcome.cleanup()
    finally:
        server.stop()
    output = tmp_path / "www"
    assert receive(catalog, request, sent, server.incoming / "builder", output) == ["cext"]
    wheel = output / "simple" / "cext" / CEXT_WHEEL
    assert wheel.exists() and wheel.with_name(wheel.name + ".metadata").exists()
    assert (output / log_path_for(request["build_id"])).exists()
    assert catalog.execute("SELECT w.filename, d.tool, d.dependency FROM wheels w "
                           "JOIN wheel_dependencies d USING (filename) WHERE d.tool = 'apt'").fetchall() == [
        (wheel.name, "apt", "libc6")]
    assert queue_head(catalog, TARGET) == [], "built: no longer queued for this target"
