"""Stopping the build a worker runs: a real sandboxed build, stopped from outside as the worker's Celery
process does it, ends at once as "stopped by the operator", a final failure, with nothing left running.

(The same through the broker, a real Celery worker and the index host's records: test_builder_control.py.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from support import build_world as buildworld
from support.build_world import PYPROJECT, make_sdist, open_folder, setup_py
from wheelwright.builds import running
from wheelwright.builds.builder import build
from wheelwright.testing.pypi_double import PyPIDouble

HANGS = """
    import time
    time.sleep(600)   # a build that would hold its worker for ten minutes
"""


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    files = tmp_path_factory.mktemp("files")
    for wheel in buildworld.backend_wheels().glob("*.whl"):
        shutil.copy(wheel, files)
    make_sdist(files, "hangs", "1.0", {"pyproject.toml": PYPROJECT,
                                       "setup.py": setup_py("hangs", "1.0", body=HANGS, py_modules="['hangs']"),
                                       "hangs.py": ""})
    with PyPIDouble([], files_dir=files) as pypi:
        yield pypi.simple_url


def test_a_registered_session_is_listed_and_stopped_by_its_start_time(tmp_path):
    folder = tmp_path / "running"
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        with running.Running({"build_id": 7, "package": "p", "version": "1", "target": "t"}, folder) as entry:
            entry.started(sleeper.pid)
            assert [e["build_id"] for e in running.entries(folder)] == [7]
            assert running.stop(folder, "ops\nnewline", build_id=8) == [], "only the build named"
            assert running.stop(folder, "ops\nnewline") == [7]
            assert sleeper.wait(timeout=10) == -signal.SIGKILL
            assert entry.stopped_by() == "ops newline"
            assert running.entries(folder) == [], "an ended session is not running"
        assert list(folder.iterdir()) == [], "the entry and its mark go with the build"
    finally:
        if sleeper.poll() is None:
            sleeper.kill()


def test_a_stale_entry_whose_pid_was_reused_is_never_killed(tmp_path):
    folder = tmp_path / "running"
    entry = running.Running({"build_id": 9}, folder)
    entry.started(os.getpid())
    text = (folder / "9.json").read_text().replace(running.process_start_time(os.getpid()), "1")
    (folder / "9.json").write_text(text)
    assert running.entries(folder) == [] and running.stop(folder, "ops") == []


def test_a_sandboxed_build_stopped_by_the_operator_ends_now_as_a_final_failure(index):
    workdir = open_folder("wheelwright-stop-")
    try:
        folder = running.running_folder(workdir)

        def stop_when_it_runs():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if running.entries(folder):
                    time.sleep(2)   # let pip hand over to the setup.py that hangs
                    running.stop(folder, "alice")
                    return
                time.sleep(0.2)

        stopper = threading.Thread(target=stop_when_it_runs)
        stopper.start()
        started = time.monotonic()
        outcome = build({"build_id": 31, "package": "hangs", "version": "1.0", "target": "cp311-x86_64",
                         "abi": "cp311"}, index_url=index, workdir_root=workdir, timeout=600,
                        memory_limit=1 << 30)
        stopper.join()
        try:
            assert (outcome.status, outcome.reason, outcome.transient) == \
                ("failure", "stopped by the operator (alice)", False)
            assert time.monotonic() - started < 120, "it did not wait for its ten minutes"
            assert not list(folder.glob("*")), "nothing of it is registered any more"
            assert not [p for p in workdir.iterdir() if p.name.startswith("build-")], "its work folder is gone"
        finally:
            outcome.cleanup()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
