"""Prepared build environments: each set of build requirements made once, read-only, for every build.

Real sdists built by the real builder in its sandbox on this machine's own target, against the PyPI
double serving setuptools and wheel as wheels (as PyPI does): the first build of a requirement set
resolves it and installs it into an environment; every later build with requirements resolving to
the same wheels mounts that environment read-only and builds with the frontend, no pip at all. A
hostile build can write nothing into it; a backend asking for more than the set gets an environment
extended by what it asked for (remembered for the package's next build); a set that cannot be made of
wheels goes pip's isolated way.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from support import build_world, hostile
from support.build_world import PYPROJECT, make_sdist, open_folder, setup_py
from wheelwright.builds import buildenvs, frontend, sdists
from wheelwright.builds.builder import BuildOutcome, build
from wheelwright.testing.pypi_double import PyPIDouble

ABI = "cp311"
TARGET = "cp311-x86_64"
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the builder runs on Linux workers")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    files = tmp_path_factory.mktemp("files")
    for wheel in build_world.backend_wheels().glob("*.whl"):
        shutil.copy(wheel, files)
    for name in ("alpha", "beta"):
        make_sdist(files, name, "1.0", {
            "pyproject.toml": PYPROJECT, "setup.py": setup_py(name, "1.0", py_modules=f"[{name!r}]"),
            f"{name}.py": "X = 1\n"})
    # a build tool only setup_requires names: the backend asks for it at build time
    build_world.make_wheel(files, "buildtool-1.0-py3-none-any.whl", {
        "buildtool.py": b"MADE_BY = 'buildtool'\n",
        "buildtool-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: buildtool\nVersion: 1.0\n",
        "buildtool-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "buildtool-1.0.dist-info/RECORD": b""})
    make_sdist(files, "dynamic", "1.0", {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n',
        "setup.py": setup_py("dynamic", "1.0", body="""
            import sys
            if "bdist_wheel" in sys.argv:
                import buildtool  # only there once the environment has it
                open("dynamic.py", "w").write(f"MADE_BY = {buildtool.MADE_BY!r}\\n")
        """, py_modules="['dynamic']", setup_requires="['buildtool>=1']"),
        "dynamic.py": "X = 1\n"})
    make_sdist(files, "legacy", "1.0", {  # no pyproject.toml at all: PEP 517's setuptools default
        "setup.py": setup_py("legacy", "1.0", py_modules="['legacy']"), "legacy.py": "X = 1\n"})
    make_sdist(files, "nowheel", "1.0", {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61", "not-on-the-index>=1"]\n',
        "setup.py": setup_py("nowheel", "1.0", py_modules="['nowheel']"), "nowheel.py": "X = 1\n"})
    hostile.poisoner(files)
    with PyPIDouble([], files_dir=files) as pypi:
        yield pypi.simple_url, files


@pytest.fixture(scope="module")
def store():
    path = open_folder("wheelwright-buildenvs-")
    yield path
    for folder, _, _ in os.walk(path):
        os.chmod(folder, 0o755)
    shutil.rmtree(path)


@pytest.fixture
def built(corpus, store):
    work = open_folder("wheelwright-builds-")
    outcomes = []

    def make(package, **options):
        request = {"build_id": 200 + len(outcomes), "package": package, "version": "1.0", "target": TARGET,
                   "abi": ABI}
        outcome = build(request, index_url=corpus[0], workdir_root=work, root=Path("/"), extra_index_url="",
                        timeout=180, memory_limit=1 << 30, buildenvs_store=store, **options)
        outcomes.append(outcome)
        return outcome
    yield make
    for outcome in outcomes:
        outcome.cleanup()
    shutil.rmtree(work)


def log_text(outcome: BuildOutcome) -> str:
    return gzip.decompress((outcome.files_dir / outcome.log.filename).read_bytes()).decode()


def env_of(outcome: BuildOutcome) -> str:
    found = re.findall(r"prepared build environment ([0-9a-f]{24}), read-only", log_text(outcome))
    assert found, log_text(outcome)
    return found[-1]


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for item in sorted(path.rglob("*")):
        st = item.lstat()
        digest.update(f"{item.relative_to(path)} {st.st_mode:o} {st.st_size}\n".encode())
        if item.is_file() and not item.is_symlink():
            digest.update(item.read_bytes())
    return digest.hexdigest()


# --- sharing ---------------------------------------------------------------------------------------

def test_sdists_whose_requirements_resolve_alike_share_one_environment_made_once(built, store):
    first, second = built("alpha"), built("beta")
    assert first.status == second.status == "success", log_text(second)
    assert env_of(first) == env_of(second)
    assert "pip wheel" not in log_text(second) and "Installing build dependencies" not in log_text(second)
    assert "prepared build environment" not in log_text(second).split("read-only")[0].split("$")[0]
    made = json.loads((store / "envs" / env_of(first) / "env.json").read_text())
    assert sorted(p[0] for p in made["pins"]) == ["setuptools", "wheel"]
    assert all(p[2] and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in p[2]) for p in made["pins"]), \
        "every wheel is pinned by hash"
    with zipfile.ZipFile(second.files_dir / second.wheels[0].filename) as zf:
        assert zf.read("beta.py") == b"X = 1\n"


def test_an_sdist_without_pyproject_builds_with_the_legacy_setuptools_backend(built):
    outcome = built("legacy")
    assert outcome.status == "success", log_text(outcome)
    assert [w.filename for w in outcome.wheels] == ["legacy-1.0-py3-none-any.whl"]
    assert "read-only at /opt/wheelwright/buildenv: setuptools==" in log_text(outcome)


def test_the_outcome_times_fetch_environment_build_and_analysis(built):
    outcome = built("alpha")
    assert set(outcome.phases) == {"fetch", "environment", "build", "requirements", "wheel", "analysis"}
    assert outcome.phases["requirements"] + outcome.phases["wheel"] < outcome.phases["build"]
    assert BuildOutcome.from_dict(outcome.to_dict()).phases == outcome.phases


# --- soundness -------------------------------------------------------------------------------------

def test_a_hostile_build_cannot_write_into_its_prepared_environment_or_the_frontend(built, store):
    honest = built("alpha")
    env = store / "envs" / env_of(honest) / "venv"
    before = tree_digest(env), tree_digest(next(store.glob("frontend-*")))
    found = None
    outcome = built("poisoner")
    assert outcome.status == "success", log_text(outcome)
    with zipfile.ZipFile(outcome.files_dir / outcome.wheels[0].filename) as zf:
        namespace = {}
        exec(zf.read("found.py").decode(), namespace)
        found = namespace["FOUND"]
    assert found["prefix"] == buildenvs.MOUNT
    for what, result in found.items():
        if what != "prefix":
            assert result.startswith("refused"), f"{what}: {result}"
    assert env_of(outcome) == env_of(honest)
    assert (tree_digest(env), tree_digest(next(store.glob("frontend-*")))) == before
    again = built("beta")
    assert again.status == "success" and env_of(again) == env_of(honest)


def test_what_the_backend_asks_for_beyond_the_set_extends_it_and_is_remembered(built, store):
    outcome = built("dynamic")
    assert outcome.status == "success", log_text(outcome)
    text = log_text(outcome)
    assert "the prepared build environment lacks buildtool>=1, which the backend asked for" in text
    assert "pip wheel" not in text
    first, extended = re.findall(r"prepared build environment ([0-9a-f]{24}), read-only", text)
    assert first != extended
    with zipfile.ZipFile(outcome.files_dir / outcome.wheels[0].filename) as zf:
        assert zf.read("dynamic.py") == b"MADE_BY = 'buildtool'\n"
    later = built("dynamic")
    assert later.status == "success"
    assert "lacks" not in log_text(later) and env_of(later) == extended, "the hint made it right at once"


def test_requirements_without_a_wheel_for_the_target_go_pip_s_isolated_way(built):
    outcome = built("nowheel")
    text = log_text(outcome)
    assert "no prepared build environment: resolving the build requirements failed" in text
    assert "pip wheel nowheel==1.0" in text
    assert outcome.status == "failure" and not outcome.transient
    assert "not-on-the-index" in text


# --- the pure parts --------------------------------------------------------------------------------

def test_build_systems_are_read_from_pyproject_or_default_to_legacy_setuptools():
    assert sdists.parse_build_system("") == sdists.BuildSystem(("setuptools>=40.8.0",),
                                                               "setuptools.build_meta:__legacy__")
    got = sdists.parse_build_system('[build-system]\nrequires = ["wheel", "Cython >= 3", "setuptools"]\n'
                                    'build-backend = "setuptools.build_meta"\n')
    assert got.requires == ("Cython>=3", "setuptools", "wheel") and got.backend == "setuptools.build_meta"
    for bad in ('[build-system]\nrequires = "setuptools"', '[build-system]\nrequires = ["not a req !!"]',
                '[build-system]\nrequires = []\nbuild-backend = "os; import x"',
                '[build-system]\nrequires = []\nbackend-path = ["../outside"]', "not toml ["):
        assert sdists.parse_build_system(bad) is None, bad


def test_pyproject_is_read_from_the_archive_without_unpacking_it(tmp_path):
    path = make_sdist(tmp_path, "foo", "1.0", {"pyproject.toml": PYPROJECT, "setup.py": "x"})
    assert sdists.build_system_of(path).requires == ("setuptools>=61", "wheel")
    bare = make_sdist(tmp_path / ".." / tmp_path.name, "bar", "1.0", {"setup.py": "x"})
    assert sdists.read_pyproject(bare) is None


def test_the_sdist_of_the_release_is_picked_by_name_version_and_hash():
    files = [("foo-1.0.tar.gz", "u1", "a" * 64), ("foo-1.0-py3-none-any.whl", "u2", "b" * 64),
             ("Foo-1.0.zip", "u3", "c" * 64), ("foo-1.01.tar.gz", "u4", "d" * 64),
             ("foobar-1.0.tar.gz", "u5", "e" * 64)]
    assert sdists.pick_sdist(files, "foo", "1.0", None)[1] in ("u1", "u3")
    assert sdists.pick_sdist(files, "FOO", "1.0", "c" * 64)[1] == "u3"
    assert sdists.pick_sdist(files, "foo", "2.0", None) is None


def test_an_environment_is_named_by_its_system_and_the_wheels_in_it():
    system = buildenvs.System(Path("/"), "/usr/bin/python3.11")
    one = (buildenvs.Pin("setuptools", "80.9.0", ("a" * 64,)),)
    assert buildenvs.env_id(system, one) == buildenvs.env_id(system, one)
    assert buildenvs.env_id(system, one) != buildenvs.env_id(system, (buildenvs.Pin("setuptools", "80.9.0", ("b" * 64,)),))
    other = buildenvs.System(Path("/images/bookworm-armhf-0123456789abcdef/root"), "/usr/bin/python3.11")
    assert buildenvs.env_id(system, one) != buildenvs.env_id(other, one)
    with pytest.raises(buildenvs.PrepareFailed):
        buildenvs.checked_requirements(["setuptools; os.system('x')"])


def test_a_resolution_without_hashes_or_with_an_sdist_is_refused():
    item = {"metadata": {"name": "Setuptools", "version": "80.9.0"},
            "download_info": {"url": "http://i/setuptools-80.9.0-py3-none-any.whl",
                              "archive_info": {"hashes": {"sha256": "a" * 64}}}}
    assert buildenvs.pins_from_report({"install": [item]}) == (buildenvs.Pin("setuptools", "80.9.0", ("a" * 64,)),)
    with pytest.raises(buildenvs.PrepareFailed):
        buildenvs.pins_from_report({"install": [{**item, "download_info": {"url": "x.whl"}}]})
    with pytest.raises(buildenvs.PrepareFailed):
        buildenvs.pins_from_report({"install": [{**item, "download_info": {
            **item["download_info"], "url": "http://i/setuptools-80.9.0.tar.gz"}}]})


def test_the_frontend_report_is_read_as_untrusted(tmp_path):
    (tmp_path / frontend.REPORT).write_text(json.dumps({"times": {"build": 1.5, "x" * 50: 1, "bad": "no"},
                                                       "unmet": ["wheel", 3, "y" * 600], "other": 1}))
    assert frontend.read_report(tmp_path) == {"times": {"build": 1.5}, "unmet": ["wheel"]}
    (tmp_path / frontend.REPORT).unlink()
    (tmp_path / frontend.REPORT).symlink_to("/etc/passwd")
    assert frontend.read_report(tmp_path) == {}


def test_environments_unused_for_a_month_are_pruned_and_the_rest_kept(tmp_path):
    import time as clock
    for name, age_days in (("old", 31), ("fresh", 2)):
        venv = tmp_path / "envs" / name / "venv"
        venv.mkdir(parents=True)
        (venv / "file").write_text("x")
        (tmp_path / "envs" / name / "env.json").write_text("{}")
        (tmp_path / "envs" / name / "used").touch()
        used = clock.time() - age_days * 86400
        os.utime(tmp_path / "envs" / name / "used", (used, used))
        venv.chmod(0o555)
    assert buildenvs.prune(tmp_path) == ["old"]
    assert sorted(p.name for p in (tmp_path / "envs").iterdir()) == ["fresh"]
    (tmp_path / "envs" / "fresh" / "venv").chmod(0o755)


def test_uv_s_resolution_is_read_into_pins_with_every_hash_it_allows():
    compiled = ("setuptools==80.9.0 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64 +
                "\nWheel==0.45.1 \\\n    --hash=sha256:" + "c" * 64 + "\n")
    assert buildenvs.pins_from_compiled(compiled) == (
        buildenvs.Pin("setuptools", "80.9.0", ("a" * 64, "b" * 64)), buildenvs.Pin("wheel", "0.45.1", ("c" * 64,)))
    for bad in ("setuptools==80.9.0\n", "-e ./local\n", "setuptools==80.9.0 --hash=sha256:xyz\n"):
        with pytest.raises(buildenvs.PrepareFailed):
            buildenvs.pins_from_compiled(bad)


def test_an_index_address_that_could_break_out_of_the_installer_s_command_is_refused(tmp_path):
    maker = buildenvs.Maker(store=tmp_path, system=buildenvs.System(Path("/"), "/usr/bin/python3.11"),
                            index_url="http://127.0.0.1:1/simple/' ; touch /tmp/x ; '", extra_index_urls=(),
                            allow=(), identity=None, scratch=tmp_path, output=lambda b: None)
    with pytest.raises(buildenvs.PrepareFailed, match="cannot be given to an installer"):
        maker.prepare(("setuptools",))
