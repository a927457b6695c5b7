"""`wheelwright run` hands over to Airflow standalone: whatever stops us stops all of Airflow too."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

# Stands in for `airflow standalone`: starts a worker of its own, notes both pids, and waits to be stopped
# (deaf to SIGTERM if asked, as a hung scheduler would be).
STANDALONE = """
import os, signal, subprocess, sys, time
if sys.argv[2] == "deaf":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1] + ".tmp", "w") as out:
    out.write(f"{os.getpid()} {worker.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""

SUPERVISOR = """
import os, sys
from wheelwright.operate.launcher import supervise
pids, mode, grace = sys.argv[1:]
sys.exit(supervise([sys.executable, "-c", {standalone!r}, pids, mode], dict(os.environ), grace=float(grace)))
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has stopped; only nobody has reaped it yet


@contextmanager
def supervising(tmp_path: Path, mode: str, grace: float):
    """A supervisor of the stand-in, once the stand-in has started: the supervisor and the stand-in's pids.
    Whatever a test leaves running is killed after it."""
    pids_file = tmp_path / "pids"
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR.format(standalone=STANDALONE),
                                   str(pids_file), mode, str(grace)], stderr=subprocess.PIPE, text=True)
    pids = []
    try:
        deadline = time.monotonic() + 60
        while not pids_file.exists():
            assert supervisor.poll() is None, supervisor.stderr.read()
            assert time.monotonic() < deadline, "the stand-in for Airflow never started"
            time.sleep(0.05)
        pids = [int(pid) for pid in pids_file.read_text().split()]
        yield supervisor, pids
    finally:
        supervisor.kill()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_stops_airflow_and_its_workers_and_gives_the_shells_exit_code(tmp_path, signum):
    with supervising(tmp_path, "obliging", grace=60) as (supervisor, pids):
        supervisor.send_signal(signum)
        assert supervisor.wait(timeout=30) == 128 + signum
        assert not [pid for pid in pids if alive(pid)], "Airflow outlived the stop"


def test_airflow_deaf_to_sigterm_is_killed_after_the_grace_period(tmp_path):
    with supervising(tmp_path, "deaf", grace=1) as (supervisor, pids):
        supervisor.terminate()
        assert supervisor.wait(timeout=30) == 128 + signal.SIGTERM
        assert not [pid for pid in pids if alive(pid)], "Airflow outlived the stop"


def test_airflow_exiting_by_itself_gives_its_own_exit_code(tmp_path):
    code = "import sys; sys.exit(3)"
    supervisor = subprocess.run([sys.executable, "-c", "import os, sys\nfrom wheelwright.operate.launcher import supervise\n"
                                 f"sys.exit(supervise([sys.executable, '-c', {code!r}], dict(os.environ)))"],
                                timeout=60)
    assert supervisor.returncode == 3


def test_when_one_airflow_process_exits_the_others_are_stopped_but_a_finished_one_shot_stops_nothing(tmp_path):
    """`wheelwright run` runs Airflow's processes side by side (API server, scheduler, workers) and the
    image builds beside them: a crashed scheduler ends the lot; image builds that finish end nothing."""
    sleeper = [sys.executable, "-c", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
               "time.sleep(600)"]
    code = f"""
import os, sys, time
from pathlib import Path
from wheelwright.operate.launcher import supervise_all
tmp = Path({str(tmp_path)!r})
crash = [sys.executable, "-c", "import sys, time, pathlib; p = pathlib.Path(sys.argv[1]); "
         "[time.sleep(0.1) for _ in iter(lambda: p.exists(), True)]; sys.exit(7)", str(tmp / "crash-now")]
sys.exit(supervise_all([("worker", {sleeper!r} + [str(tmp / "worker.pid")]), ("scheduler", crash)],
                       dict(os.environ), grace=5, log_dir=tmp / "logs",
                       one_shots=[("images", [sys.executable, "-c", "open(" + repr(str(tmp / "images.done")) + ", 'w')"])]))
"""
    supervisor = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not ((tmp_path / "images.done").exists() and (tmp_path / "worker.pid").exists()):
            assert supervisor.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        assert supervisor.poll() is None, "a one-shot that finished stopped everything"
        worker = int((tmp_path / "worker.pid").read_text())
        (tmp_path / "crash-now").write_text("")
        assert supervisor.wait(timeout=30) == 7, "the exit code of the process that ended first"
        assert not alive(worker), "the worker outlived the crashed scheduler"
    finally:
        supervisor.kill()


def test_an_image_build_started_before_start_up_is_stopped_with_the_rest(tmp_path):
    """`wheelwright run` starts the image builds first (the longest step on a new machine) and hands
    them to the supervisor: a crash of Airflow stops a build still running."""
    code = f"""
import os, subprocess, sys
from pathlib import Path
from wheelwright.operate.launcher import supervise_all
tmp = Path({str(tmp_path)!r})
build = subprocess.Popen([sys.executable, "-c", "import os, sys, time; "
                          "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)", str(tmp / "build.pid")],
                         start_new_session=True)
crash = [sys.executable, "-c", "import sys, time, pathlib; p = pathlib.Path(sys.argv[1]); "
         "[time.sleep(0.1) for _ in iter(lambda: p.exists(), True)]; sys.exit(7)", str(tmp / "build.pid")]
sys.exit(supervise_all([("scheduler", crash)], dict(os.environ), grace=5, started=[("images", build)]))
"""
    supervisor = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert supervisor.wait(timeout=60) == 7
        assert not alive(int((tmp_path / "build.pid").read_text())), "the image build outlived the crash"
    finally:
        supervisor.kill()
