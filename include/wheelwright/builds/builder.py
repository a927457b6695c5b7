"""The builder: one ``pip wheel`` of one release, on a worker, treated as the hostile code it may be.

Building an sdist runs its ``setup.py`` (or build backend): anybody's code, with our CPU, memory, disk
and network. piwheels learnt what that code does on a bad day: builds that never end, builds that eat
all memory, builds that write where they should not, builds that name another package. This room owns
running it so that none of that reaches the worker, the index or the next build:

- the package name and version are checked before anything runs, and never pass through a shell;
- ``pip wheel PKG==VER --no-deps --no-binary PKG`` runs with the interpreter of the target's ABI, in a
  fresh folder of its own, against the configured index only (``--isolated``, no pip configuration,
  an environment holding nothing but PATH, HOME, TMPDIR and the locale);
- as an unprivileged user when the worker runs as root (it never builds as root), in its own process
  group, under an address-space limit, with a wall-clock timeout after which the whole group, and
  every process it started, is killed; nothing it started outlives the build either way;
- its output goes to a gzipped log, capped in size with a note saying what was cut;
- the wheels it made are copied out without following links it may have planted, then checked and
  described by :mod:`wheelwright.builds.analysis`.

The result is a :class:`BuildOutcome`: success with checked wheels, or failure with a one-line reason
and the log. Whether and where the files are published is decided on the index host
(:mod:`wheelwright.builds.transfer`, :mod:`wheelwright.builds.intake`).
"""

from __future__ import annotations

import gzip
import logging
import os
import pwd
import re
import resource
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from wheelwright.errors import ConfigError, WheelwrightError
from wheelwright.builds.analysis import FileInfo, WheelInfo, WheelRefused, analyse_wheel, check_plain_filename, sha256_of

log = logging.getLogger(__name__)

MiB = 1 << 20
GiB = 1 << 30
DEFAULT_TIMEOUT = 3 * 3600          # seconds; numpy on a Pi 3 took 20 minutes, scipy hours
DEFAULT_MEMORY_LIMIT = 4 * GiB      # address space per process of the build
DEFAULT_LOG_CAP = 1 * MiB           # uncompressed bytes of build output kept
DEFAULT_BUILD_USER = "nobody"
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
DRAIN_GRACE = 5.0                   # seconds to wait for output after pip exits (left-behind processes)

# PEP 508 names; versions as PyPI accepts them (PEP 440 characters, legacy strings included)
_PACKAGE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,198}[A-Za-z0-9])?\Z")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]{0,127}\Z")
_INTERPRETER = re.compile(r"cp(\d)(\d+)\Z")


class UnsafeRequest(WheelwrightError):
    """A build request whose package name or version could be read as something else."""


@dataclass
class BuildOutcome:
    """What one build produced. ``files_dir`` (worker side only) holds the log and the wheels."""

    build_id: int
    package: str
    version: str
    target: str
    abi: str
    status: str                        # 'success' or 'failure'
    reason: str | None                 # why it failed, in one line
    builder: str                       # host name of the worker
    duration: float                    # seconds
    log: FileInfo | None
    wheels: list[WheelInfo] = field(default_factory=list)
    files_dir: Path | None = None

    def files(self) -> list[FileInfo]:
        """Every file the index host must receive: wheels, their ``.metadata``, the log."""
        found = []
        for wheel in self.wheels:
            found += [FileInfo(wheel.filename, wheel.sha256, wheel.size), wheel.metadata]
        if self.log is not None:
            found.append(self.log)
        return found

    def to_dict(self) -> dict:
        """The outcome as small JSON-able data (an XCom), without local paths."""
        return {
            "build_id": self.build_id, "package": self.package, "version": self.version,
            "target": self.target, "abi": self.abi, "status": self.status, "reason": self.reason,
            "builder": self.builder, "duration": self.duration,
            "log": None if self.log is None else vars(self.log).copy(),
            "wheels": [w.to_dict() for w in self.wheels],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "BuildOutcome":
        return cls(
            build_id=int(d["build_id"]), package=d["package"], version=d["version"],
            target=d["target"], abi=d["abi"], status=d["status"], reason=d.get("reason"),
            builder=d.get("builder") or "", duration=float(d.get("duration") or 0),
            log=FileInfo(**d["log"]) if d.get("log") else None,
            wheels=[WheelInfo.from_dict(w) for w in d.get("wheels", [])])

    def cleanup(self) -> None:
        if self.files_dir is not None:
            shutil.rmtree(self.files_dir, ignore_errors=True)
            self.files_dir = None


# --- pure: what we run, and with what ---------------------------------------------------------------

def check_request(request) -> tuple[int, str, str]:
    """``(build_id, package, version)`` of ``request``, refusing anything a command line could misread."""
    build_id, package, version = request.get("build_id"), request.get("package"), request.get("version")
    if not isinstance(build_id, int) or isinstance(build_id, bool) or build_id < 1:
        raise UnsafeRequest(f"refused build id {build_id!r}")
    if not isinstance(package, str) or not _PACKAGE.match(package):
        raise UnsafeRequest(f"refused package name {package!r}: not a PEP 508 name")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise UnsafeRequest(f"refused version {version!r} of {package}: not a version string")
    return build_id, package, version


def requirement(package: str, version: str) -> str:
    """``pkg==ver``; ``pkg===ver`` for a legacy version that ``==`` cannot name."""
    try:
        Version(version)
    except InvalidVersion:
        return f"{package}==={version}"
    return f"{package}=={version}"


def pip_wheel_command(python: str, package: str, version: str, index_url: str,
                      wheel_dir: Path) -> list[str]:
    return [
        python, "-m", "pip", "wheel", requirement(package, version),
        "--no-deps", "--no-binary", canonicalize_name(package),
        "--isolated", "--index-url", index_url,
        "--wheel-dir", str(wheel_dir),
        "--no-cache-dir", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        "--verbose",
    ]


def clean_environment(sandbox: Path, user: str | None) -> dict[str, str]:
    env = {
        "PATH": CLEAN_PATH,
        "HOME": str(sandbox / "home"),
        "TMPDIR": str(sandbox / "tmp"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # The one PIP_ variable we set: it makes pip (and the pip that installs build dependencies)
        # read no configuration file at all, so only the index on our command line is used.
        "PIP_CONFIG_FILE": os.devnull,
        "PYTHONNOUSERSITE": "1",
    }
    if user:
        env["USER"] = env["LOGNAME"] = user
    return env


def interpreter_for(abi: str) -> str:
    """The interpreter that builds for ``abi`` (cp311 -> python3.11) on the clean PATH.

    Not ``sys.executable``: the worker's own Python (Airflow's virtualenv) need not be the target's,
    and the unprivileged build user may not be able to read it.
    """
    m = _INTERPRETER.match(abi)
    if not m:
        raise ConfigError(f"no interpreter is known for ABI {abi!r}")
    name = f"python{m[1]}.{m[2]}"
    found = shutil.which(name, path=CLEAN_PATH)
    if found is None:
        raise ConfigError(f"{name} (for {abi}) is not installed on this worker ({CLEAN_PATH})")
    return found


def build_user(run_as: str) -> tuple[str, int, int] | None:
    """``(name, uid, gid)`` to build as, or None when we are not root (we then build as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(run_as)
    except KeyError:
        raise ConfigError(f"the build user {run_as!r} does not exist on this worker") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise ConfigError(f"the build user {run_as!r} is root: builds never run as root")
    return entry.pw_name, entry.pw_uid, entry.pw_gid


def check_reachable(path: Path, uid: int, gid: int) -> None:
    """Refuse a work folder the build user cannot reach (e.g. under /root, or pytest's 0700 tmp)."""
    for folder in [path, *path.parents]:
        st = folder.stat()
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise ConfigError(f"the build user cannot reach the work folder {path}: {folder} is closed "
                              f"to it (mode {stat.filemode(st.st_mode)})")


# --- the edge: running it ---------------------------------------------------------------------------

class CappedLog:
    """A gzipped log keeping the first ``cap`` bytes of output and saying how much it dropped."""

    def __init__(self, path: Path, cap: int):
        self.path, self.cap = path, cap
        self.kept = self.dropped = 0
        self.tail = b""  # the last few KiB, to tell why a build failed
        self._file = gzip.open(path, "wb")

    def note(self, text: str) -> None:
        self._file.write(text.encode("utf-8", "replace"))

    def write(self, chunk: bytes) -> None:
        room = self.cap - self.kept
        if room > 0:
            self._file.write(chunk[:room])
            self.kept += min(room, len(chunk))
        self.dropped += max(0, len(chunk) - max(room, 0))
        self.tail = (self.tail + chunk)[-8192:]

    def close(self) -> None:
        if self._file.closed:
            return
        if self.dropped:
            self.note(f"\n[wheelwright: log truncated at {self.cap} bytes; "
                      f"{self.dropped} further bytes of output were not kept]\n")
        self._file.close()


def _limits(memory_limit: int):
    def apply():  # runs in the child, after it dropped privileges, before pip starts
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill the build's process group and every process descended from it, wherever it went."""
    stray = []
    try:
        import psutil
        try:
            stray = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            pass
    except ImportError:  # pragma: no cover - psutil comes with Airflow
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for child in stray:  # e.g. a daemon that called setsid() to leave the group
        try:
            child.kill()
        except Exception:
            pass
    proc.wait()


def _kill_marked(home: str | None, uid: int | None) -> None:
    """Kill processes of the build user that still carry this build's HOME: detached daemons.

    A process that double-forks and calls setsid() leaves the group and has no living ancestor in the
    build, but it keeps the environment it was given, and no other process has this HOME.
    """
    if not home or uid is None:
        return
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with Airflow
        return
    for process in psutil.process_iter(["uids"]):
        try:
            if process.info["uids"] is None or process.info["uids"].real != uid:
                continue
            if process.environ().get("HOME") == home:
                process.kill()
        except psutil.Error:
            continue


def run_sandboxed(argv: list[str], *, cwd: Path, env: dict, user: tuple[str, int, int] | None,
                  timeout: float, memory_limit: int, log: CappedLog) -> tuple[int | None, bool]:
    """Run ``argv`` sandboxed, output into ``log``; ``(exit status or None, timed out)``."""
    identity = {}
    if user is not None:
        _, uid, gid = user
        identity = {"user": uid, "group": gid, "extra_groups": []}
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, umask=0o022,
                                preexec_fn=_limits(memory_limit), **identity)
    except OSError as exc:
        raise ConfigError(f"cannot start {argv[0]} for the build: {exc}") from exc
    deadline = time.monotonic() + timeout
    exited_at = None
    timed_out = False
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                if now >= deadline:
                    timed_out = True
                    break
                if proc.poll() is not None:
                    exited_at = exited_at or now
                    if now - exited_at > DRAIN_GRACE:
                        break  # something it left behind holds the output open
                if selector.select(min(deadline - now, 0.5)):
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        break
                    log.write(chunk)
    finally:
        _kill_tree(proc)  # nothing the build started survives it ...
        _kill_marked(env.get("HOME"), identity.get("user"))  # ... not even a daemon it detached
        proc.stdout.close()
    return (None if timed_out else proc.returncode), timed_out


def build(request, *, index_url: str, workdir_root: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT,
          memory_limit: int = DEFAULT_MEMORY_LIMIT, log_cap: int = DEFAULT_LOG_CAP,
          run_as: str = DEFAULT_BUILD_USER, python: str | None = None) -> BuildOutcome:
    """Build ``request`` (a :class:`~wheelwright.builds.queue.BuildRequest`) and describe the result.

    A build that fails, or is refused, is an outcome, not an exception; exceptions mean the worker
    itself is unfit (no interpreter, no build user, unusable work folder) and the build should be
    retried elsewhere or later. The caller calls ``outcome.cleanup()`` once the files are sent.
    """
    started = time.monotonic()
    host = socket.gethostname()
    workdir_root = Path(workdir_root)
    workdir_root.mkdir(parents=True, exist_ok=True)
    results = Path(tempfile.mkdtemp(prefix=f"result-{request.get('build_id')}-", dir=workdir_root))
    log_path = results / f"{request.get('build_id')}.txt.gz"
    log_file = CappedLog(log_path, log_cap)

    def outcome(status, reason=None, wheels=()):
        log_file.note(f"\n[wheelwright: {status}{': ' + reason if reason else ''}]\n")
        log_file.close()
        sha256, size = sha256_of(log_path)
        return BuildOutcome(
            build_id=request.get("build_id"), package=request.get("package"),
            version=request.get("version"), target=request.get("target"), abi=request.get("abi"),
            status=status, reason=reason, builder=host, duration=round(time.monotonic() - started, 3),
            log=FileInfo(log_path.name, sha256, size), wheels=list(wheels), files_dir=results)

    try:
        try:
            build_id, package, version = check_request(request)
        except UnsafeRequest as exc:
            log.warning("build %s refused: %s", request.get("build_id"), exc)
            return outcome("failure", str(exc))
        python = python or interpreter_for(request.get("abi") or "")
        user = build_user(run_as)
        if user is not None:
            check_reachable(workdir_root, user[1], user[2])
        return _build_in_sandbox(request, build_id, package, version, python=python, user=user,
                                 index_url=index_url, workdir_root=workdir_root, results=results,
                                 timeout=timeout, memory_limit=memory_limit, log_file=log_file,
                                 host=host, outcome=outcome)
    except BaseException:
        log_file.close()
        shutil.rmtree(results, ignore_errors=True)
        raise


def _build_in_sandbox(request, build_id, package, version, *, python, user, index_url, workdir_root,
                      results, timeout, memory_limit, log_file, host, outcome) -> BuildOutcome:
    sandbox = Path(tempfile.mkdtemp(prefix=f"build-{build_id}-", dir=workdir_root))
    try:
        for sub in ("home", "tmp", "wheels"):
            (sandbox / sub).mkdir()
        if user is not None:
            for folder in (sandbox, sandbox / "home", sandbox / "tmp", sandbox / "wheels"):
                os.chown(folder, user[1], user[2])
        argv = pip_wheel_command(python, package, version, index_url, sandbox / "wheels")
        log_file.note(f"[wheelwright: build {build_id} of {package}=={version} for "
                      f"{request.get('target')} on {host}, as {user[0] if user else 'the worker user'}]\n"
                      f"$ {' '.join(argv)}\n\n")
        log.info("building %s==%s (build %d) for %s", package, version, build_id, request.get("target"))
        status, timed_out = run_sandboxed(
            argv, cwd=sandbox, env=clean_environment(sandbox, user[0] if user else None),
            user=user, timeout=timeout, memory_limit=memory_limit, log=log_file)
        if timed_out:
            return outcome("failure", f"timed out after {timeout:g} s; the build and everything it "
                                      "started were killed")
        if status != 0:
            return outcome("failure", _failure_reason(status, log_file.tail, memory_limit))
        try:
            wheels = _take_out(sandbox / "wheels", results)
            if not wheels:
                return outcome("failure", "pip wheel succeeded but made no wheel")
            infos = [analyse_wheel(path, package, version, run_as=user[1] if user else None,
                                   scratch=workdir_root) for path in wheels]
        except WheelRefused as exc:
            for path in results.iterdir():
                if path != log_file.path:
                    path.unlink()
            log.warning("build %d of %s==%s: %s", build_id, package, version, exc)
            return outcome("failure", str(exc))
        log.info("built %s==%s (build %d): %s", package, version, build_id,
                 ", ".join(w.filename for w in infos))
        return outcome("success", None, infos)
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


_PIP_INCONSISTENT = re.compile(
    rb"has inconsistent (name|version): expected '([^']+)', but metadata has '([^']+)'")


def _failure_reason(status: int, tail: bytes, memory_limit: int) -> str:
    if m := _PIP_INCONSISTENT.search(tail):
        # pip's own GSAS_II_WONDER check: the build's metadata names another package or version
        what, expected, got = (part.decode("utf-8", "replace") for part in m.groups())
        return f"refused: its setup.py gives the {what} {got!r}, not {expected!r}"
    if b"MemoryError" in tail or b"Cannot allocate memory" in tail or b"out of memory" in tail:
        return f"ran out of memory (limit {memory_limit // MiB} MiB per process)"
    if status < 0:
        try:
            return f"pip wheel was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"pip wheel was killed by signal {-status}"
    return f"pip wheel exited with status {status}"


def _take_out(wheel_dir: Path, results: Path) -> list[Path]:
    """Copy the wheels the build left in ``wheel_dir`` into ``results``, trusting no link it planted."""
    taken = []
    try:
        dir_fd = os.open(wheel_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise WheelRefused(f"refused the build's wheel folder: {exc.strerror}") from exc
    try:
        for name in sorted(os.listdir(dir_fd)):
            check_plain_filename(name)
            if not name.endswith(".whl"):
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
            except OSError as exc:
                raise WheelRefused(f"refused {name}: {exc.strerror}") from exc
            with open(fd, "rb") as src:
                st = os.fstat(src.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                    raise WheelRefused(f"refused {name}: not a plain file of its own")
                target = results / name
                with open(target, "xb") as dst:
                    shutil.copyfileobj(src, dst)
            taken.append(target)
    finally:
        os.close(dir_fd)
    return taken
