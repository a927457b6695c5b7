"""The builder: one ``pip wheel`` of one release, on a worker, treated as the hostile code it may be.

Building an sdist runs its ``setup.py`` (or build backend): anybody's code, with our CPU, memory, disk
and network. piwheels learnt what that code does on a bad day: builds that never end, builds that eat
all memory, builds that write where they should not, builds that name another package. This room owns
what to run for one build and what its result means:

- the package name and version (and the sdist's sha256, when the catalog knows it) are checked before
  anything runs, and never pass through a shell;
- ``pip wheel PKG==VER --no-deps --no-binary PKG`` runs with the interpreter of the target's ABI, in a
  fresh folder of its own, against the configured index only (``--isolated``, no pip configuration),
  plus our own published index for build dependencies (``--extra-index-url``, as piwheels' builders
  use piwheels: no armv7l numpy is compiled again for every build needing it), pinned to the sdist's
  sha256 (``--require-hashes``) when there is one;
- on the target's own system: its image (:mod:`wheelwright.builds.images`, the sandbox's read-only
  root, built on first use) for a target with ``image = true``, else the worker's ``/``;
- it runs inside :mod:`wheelwright.builds.sandbox` (bubblewrap: own user, pid and network namespaces,
  a read-only system from ``root``, memory and process limits for the whole build, no network but the
  index), under a wall-clock timeout, in a work folder held to a disk quota
  (:mod:`wheelwright.builds.workspace`) and removed afterwards however the build shaped it
  (:mod:`wheelwright.builds.cleanup`); ``WHEELWRIGHT_UNSAFE_NO_SANDBOX=1`` runs it without a sandbox
  (as the build user, in its own session, under rlimits), for machines that cannot have one;
- its output goes to a gzipped log, capped in size with a note saying what was cut;
- the wheels it made are copied out without following links it may have planted, then checked and
  described by :mod:`wheelwright.builds.analysis`;
- while it runs, an operator may stop it (:mod:`wheelwright.builds.running`): it then ends as a final
  failure, "stopped by the operator".

The result is a :class:`BuildOutcome`: success with checked wheels, or failure with a one-line reason
and the log. A failure before any of the sdist's code ran, because the index could not be reached or
did not have the sdist yet, is **transient** (``outcome.transient``): the index host re-queues it;
every other failure is final. Whether and where files are published is decided on the index host
(:mod:`wheelwright.builds.transfer`, :mod:`wheelwright.builds.intake`).
"""

from __future__ import annotations

import gzip
import logging
import os
import platform
import re
import resource
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
from wheelwright.builds import install_test, running, sandbox
from wheelwright.builds.build_settings import BuildSettings, SettingRefused
from wheelwright.builds.cleanup import remove_tree
from wheelwright.builds.workspace import DiskQuota, Workspace, open_workspace
from wheelwright.builds.analysis import (FileInfo, WheelInfo, WheelRefused, analyse_wheel, check_members,
                                         check_plain_filename,
                                         safe_member_path, sha256_of)
from wheelwright.builds.wheel_abi import retag

log = logging.getLogger(__name__)

MiB = 1 << 20
GiB = 1 << 30
DEFAULT_TIMEOUT = 3 * 3600          # seconds; numpy on a Pi 3 took 20 minutes, scipy hours
DEFAULT_MEMORY_LIMIT = 4 * GiB      # memory of the whole build (per process without cgroups)
DEFAULT_PROCESS_LIMIT = 512         # processes of the whole build (make -j4 of C++ stays far below)
DEFAULT_LOG_CAP = 1 * MiB           # uncompressed bytes of build output kept
DEFAULT_BUILD_USER = "nobody"
MAX_UNPACKED = 4 * GiB              # a wheel unpacking to more is refused (the largest on PyPI: ~2 GiB)
MAX_RATIO = 200                     # ... and so is a member over 64 MiB compressed more than this
RATIO_FLOOR = 64 * MiB
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"

# PEP 508 names; versions as PyPI accepts them (PEP 440 characters, legacy strings included)
_PACKAGE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,198}[A-Za-z0-9])?\Z")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]{0,127}\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_INTERPRETER = re.compile(r"cp(\d)(\d+)\Z")


class UnsafeRequest(WheelwrightError):
    """A build request whose package name, version or hash could be read as something else."""


@dataclass
class BuildOutcome:
    """What one build produced. ``files_dir`` (worker side only) holds the log and the wheels.

    ``transient`` marks a failure that says nothing about the release (the index unreachable, a 5xx,
    the sdist not there yet): the build should be tried again later, not recorded as failed.
    """

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
    transient: bool = False
    # seconds per phase: fetch (the sdist), environment (build requirements: prepared, or pip
    # installing them), build (the backend: requirements asked, wheel built), analysis; with a
    # prepared environment, build's parts as the frontend timed them: requirements and wheel
    phases: dict[str, float] = field(default_factory=dict)

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
            "transient": self.transient,
            "builder": self.builder, "duration": self.duration,
            "log": None if self.log is None else vars(self.log).copy(),
            "wheels": [w.to_dict() for w in self.wheels],
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "BuildOutcome":
        return cls(
            build_id=int(d["build_id"]), package=d["package"], version=d["version"],
            target=d["target"], abi=d["abi"], status=d["status"], reason=d.get("reason"),
            builder=d.get("builder") or "", duration=float(d.get("duration") or 0),
            log=FileInfo(**d["log"]) if d.get("log") else None,
            wheels=[WheelInfo.from_dict(w) for w in d.get("wheels", [])],
            transient=d.get("transient") is True,
            phases={k: float(v) for k, v in (d.get("phases") or {}).items()
                    if isinstance(k, str) and isinstance(v, (int, float))})

    def cleanup(self) -> None:
        if self.files_dir is not None:
            remove_tree(self.files_dir)
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


def check_sha256(request) -> str | None:
    """The sdist's sha256 the request pins (lower-case hex), None when it carries none."""
    value = request.get("sdist_sha256")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _SHA256.match(value.lower()):
        raise UnsafeRequest(f"refused sdist sha256 {value!r}: not 64 hex digits")
    return value.lower()


def requirement(package: str, version: str) -> str:
    """``pkg==ver``; ``pkg===ver`` for a legacy version that ``==`` cannot name."""
    try:
        Version(version)
    except InvalidVersion:
        return f"{package}==={version}"
    return f"{package}=={version}"


def requirements_file(package: str, version: str, sha256: str) -> str:
    """A requirements file pinning the release to the sdist of that sha256 (for ``--require-hashes``)."""
    return f"{requirement(package, version)} --hash=sha256:{sha256}\n"


def pip_wheel_command(python: str, package: str, version: str, index_url: str,
                      wheel_dir: Path, *, requirements: Path | None = None,
                      proxy: str | None = None, extra_index_urls: tuple[str, ...] = ()) -> list[str]:
    """The argument list of the build. With ``requirements`` (a file from :func:`requirements_file`)
    the release is named there and pip checks the sdist's hash."""
    what = (["-r", str(requirements), "--require-hashes"] if requirements is not None
            else [requirement(package, version)])
    return [
        python, "-m", "pip", "wheel", *what,
        "--no-deps", "--no-binary", canonicalize_name(package),
        "--isolated", "--index-url", index_url,
        *[arg for url in extra_index_urls for arg in ("--extra-index-url", url)],
        "--wheel-dir", str(wheel_dir),
        "--no-cache-dir", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        "--verbose", *(["--proxy", proxy] if proxy else []),
    ]


def clean_environment(work: Path | str, user: str | None = None) -> dict[str, str]:
    """The whole environment of a build whose work folder is ``work`` (as the build sees it)."""
    env = {
        "PATH": CLEAN_PATH,
        "HOME": f"{work}/home",
        "TMPDIR": f"{work}/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # The one PIP_ variable we set: it makes pip (and the pip that installs build dependencies)
        # read no configuration file at all, so only the index on our command line is used.
        "PIP_CONFIG_FILE": os.devnull,
        "PYTHONNOUSERSITE": "1",
        "USER": user or "build",
        "LOGNAME": user or "build",
    }
    return env


def interpreter_for(abi: str, root: Path = Path("/")) -> str:
    """The interpreter that builds for ``abi`` (cp311 -> python3.11) on the clean PATH of ``root``.

    Not ``sys.executable``: the worker's own Python (Airflow's virtualenv) need not be the target's,
    and the sandbox shows only the system (or the target image).
    """
    m = _INTERPRETER.match(abi)
    if not m:
        raise ConfigError(f"no interpreter is known for ABI {abi!r}")
    name = f"python{m[1]}.{m[2]}"
    for folder in CLEAN_PATH.split(":"):
        candidate = Path(root) / folder.lstrip("/") / name
        if candidate.exists() and (candidate.is_symlink() or os.access(candidate, os.X_OK)):
            return f"{folder}/{name}"
    raise ConfigError(f"{name} (for {abi}) is not installed in {root} ({CLEAN_PATH})")


def build_user(run_as: str) -> tuple[str, int, int] | None:
    """``(name, uid, gid)`` to start builds as, or None when we are not root."""
    return sandbox.build_identity(run_as)


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


# Lines pip prints just before it hands over to the sdist's own code (build backend hooks, setup.py).
# Nothing the sdist does can come before them, so their absence proves none of its code ran.
_CODE_STARTS = (b"Getting requirements to build wheel", b"Preparing metadata", b"Running setup.py",
                b"setup.py egg_info", b"Building wheel for ")
# pip's own phases (it prints them as it goes when its output is not a terminal)
_PHASE_MARKS = (b"Installing build dependencies: started", b"Installing build dependencies: finished",
                b"Installing backend dependencies: started", b"Installing backend dependencies: finished")
_NETWORK_TROUBLE = re.compile(
    rb"ProxyError|Max retries exceeded|NewConnectionError|ConnectionError|Connection refused|"
    rb"Read timed out|ReadTimeoutError|ConnectTimeout|Connection broken|IncompleteRead|"
    rb"Temporary failure in name resolution|HTTP error 5\d\d|\b50[234] Server Error|"
    rb"Could not fetch URL|There was a problem confirming the ssl certificate")
_NO_MATCHING = re.compile(rb"No matching distribution found for ([A-Za-z0-9._-]+)")
_HASH_MISMATCH = re.compile(rb"THESE PACKAGES DO NOT MATCH THE HASHES")
_PIP_INCONSISTENT = re.compile(
    rb"has inconsistent (name|version): expected '([^']+)', but metadata has '([^']+)'")


def transient_reason(tail: bytes, package: str, code_ran: bool,
                     proxy_events: list[sandbox.ProxyEvent]) -> str | None:
    """Why a failed build is worth trying again later, or None when the failure is the release's own.

    Only a failure before any of the sdist's code ran can be transient: then pip was fetching the
    sdist or the build dependencies, and the index (or the way to it) let it down.
    """
    if code_ran:
        return None
    for event in proxy_events:
        if event.kind in ("unreachable", "server-error", "refused"):
            return f"could not fetch the sdist or its build dependencies: {event.sentence()}"
    if m := _NO_MATCHING.search(tail):
        wanted = m[1].decode("ascii", "replace")
        if canonicalize_name(re.split(r"[=<>!~]", wanted)[0]) == canonicalize_name(package):
            return (f"the index does not offer the sdist of {package} yet "
                    "(PyPI's CDN may lag behind an upload)")
    if m := _NETWORK_TROUBLE.search(tail):
        return (f"could not fetch the sdist or its build dependencies: "
                f"{m[0].decode('ascii', 'replace')}")
    return None


def failure_reason(status: int | None, tail: bytes, *, memory_limit: int, process_limit: int,
                   out_of_memory: bool = False, hit_process_limit: bool = False,
                   per_process: bool = False, what: str = "pip wheel") -> str:
    """The one-line reason of a build that ran and failed (``what`` ran: pip, or our frontend)."""
    if m := _PIP_INCONSISTENT.search(tail):
        # pip's own GSAS_II_WONDER check: the build's metadata names another package or version
        what, expected, got = (part.decode("utf-8", "replace") for part in m.groups())
        return f"refused: its setup.py gives the {what} {got!r}, not {expected!r}"
    if _HASH_MISMATCH.search(tail):
        return "refused: the sdist the index served is not the one whose sha256 the catalog knows"
    limit = f"{memory_limit // MiB} MiB {'per process' if per_process else 'for the whole build'}"
    if out_of_memory:
        return f"ran out of memory (limit {limit}); the kernel killed it"
    if hit_process_limit:
        return f"started more processes than its limit of {process_limit}; it was refused more"
    if b"MemoryError" in tail or b"Cannot allocate memory" in tail or b"out of memory" in tail:
        return f"ran out of memory (limit {limit})"
    if status is not None and status < 0:
        try:
            return f"{what} was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"{what} was killed by signal {-status}"
    return f"{what} exited with status {status}"


def check_archive(path: Path) -> None:
    """Refuse a wheel whose members hold a path leaving its folder, or that unpacks to far more than it
    weighs (a zip bomb), before anything opens its members; or that names a member twice or lists in
    its RECORD what it does not hold (:func:`~wheelwright.builds.analysis.check_members`)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            check_members(zf, path.name)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise WheelRefused(f"refused {path.name}: not a readable zip file ({exc})") from exc
    total = 0
    for info in members:
        if safe_member_path(info.filename) is None:
            raise WheelRefused(f"refused {path.name}: its member {info.filename!r} has a path "
                               "leaving the wheel")
        total += info.file_size
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise WheelRefused(f"refused {path.name}: its member {info.filename!r} unpacks to "
                               f"{info.file_size // MiB} MiB from {info.compress_size // 1024} KiB "
                               "(a zip bomb)")
    if total > MAX_UNPACKED:
        raise WheelRefused(f"refused {path.name}: it unpacks to {total // MiB} MiB, more than "
                           f"{MAX_UNPACKED // MiB} MiB (a zip bomb)")


# --- the edge: running it ---------------------------------------------------------------------------

# What a terminal acts on rather than shows: C0 controls but tab and newline (ESC starts a sequence that
# can retitle a window, write the clipboard or hide text; a bare CR rewrites a line), DEL, and C1
# controls as UTF-8 encodes them.
_CONTROLS = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")


def visible_controls(data: bytes) -> bytes:
    """``data`` with every control character a terminal would act on written as text (``^[``, ``^M``,
    ``\\x9b``): a log read with ``zcat`` or ``less -R`` only shows what the build printed."""
    return _CONTROLS.sub(lambda m: b"^" + bytes([m[0][0] ^ 0x40]) if len(m[0]) == 1 else b"\\x%02x" % m[0][1],
                         data)


def one_line(text: str, limit: int = 500) -> str:
    """``text`` as one line of visible characters (a reason may quote what the build chose: a file
    name, a package name), at most ``limit`` long."""
    text = re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda m: f"\\x{ord(m[0]):02x}", text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


class CappedLog:
    """A gzipped log keeping the first ``cap`` bytes of output and saying how much it dropped.

    The build's output is its own words: control characters are written visibly
    (:func:`visible_controls`). It also notes whether pip said it was handing over to the sdist's code
    (see ``code_ran``).
    """

    def __init__(self, path: Path, cap: int):
        self.path, self.cap = path, cap
        self.kept = self.dropped = 0
        self.tail = b""  # the last few KiB, to tell why a build failed
        self.code_ran = False
        self.seen: dict[bytes, float] = {}  # when each of _PHASE_MARKS was first printed
        self._carry = b""  # a chunk's last byte when it may start a two-byte C1 control
        self._file = gzip.open(path, "wb")

    def note(self, text: str) -> None:
        self._file.write(text.encode("utf-8", "replace"))

    def write(self, chunk: bytes) -> None:
        chunk = self._carry + chunk
        self._carry = b"\xc2" if chunk.endswith(b"\xc2") else b""
        self._keep(visible_controls(chunk[:len(chunk) - len(self._carry)]))

    def _keep(self, chunk: bytes) -> None:
        window = self.tail[-200:] + chunk
        if not self.code_ran:
            self.code_ran = any(marker in window for marker in _CODE_STARTS)
        for mark in _PHASE_MARKS:
            if mark not in self.seen and mark in window:
                self.seen[mark] = time.monotonic()
        room = self.cap - self.kept
        if room > 0:
            self._file.write(chunk[:room])
            self.kept += min(room, len(chunk))
        self.dropped += max(0, len(chunk) - max(room, 0))
        self.tail = (self.tail + chunk)[-8192:]

    def pip_environment_seconds(self) -> float:
        """How long pip spent installing build requirements into its isolated environment."""
        total = 0.0
        for what in (b"build", b"backend"):
            began = self.seen.get(b"Installing %s dependencies: started" % what)
            ended = self.seen.get(b"Installing %s dependencies: finished" % what)
            if began is not None and ended is not None:
                total += ended - began
        return total

    def close(self) -> None:
        if self._file.closed:
            return
        if self._carry:  # a lone 0xc2 at the very end: no control, kept as it is
            self._keep(self._carry)
            self._carry = b""
        if self.dropped:
            self.note(f"\n[wheelwright: log truncated at {self.cap} bytes; "
                      f"{self.dropped} further bytes of output were not kept]\n")
        self._file.close()


def build(request, *, index_url: str, workdir_root: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT,
          memory_limit: int = DEFAULT_MEMORY_LIMIT, log_cap: int = DEFAULT_LOG_CAP,
          run_as: str = DEFAULT_BUILD_USER, python: str | None = None,
          root: str | os.PathLike | None = None, process_limit: int = DEFAULT_PROCESS_LIMIT,
          allow: tuple[str, ...] = (), unsafe_no_sandbox: bool | None = None,
          extra_index_url: str | None = None, disk: DiskQuota | None = None,
          buildenvs_store: str | os.PathLike | None | bool = None) -> BuildOutcome:
    """Build ``request`` (a :class:`~wheelwright.builds.queue.BuildRequest`) and describe the result.

    ``root`` is the file system the build sees (``/`` or a target image's root); by default the
    request's target's (:func:`wheelwright.builds.images.root_for_target`: its image, built here on
    first use, or ``/``). ``extra_index_url`` is our own published index, where build dependencies
    are found too (default: ``WHEELWRIGHT_INDEX_URL``); ``allow`` more ``host:port`` the build may
    reach over HTTPS (or ``http://host:port`` over plain HTTP) besides the indexes (and those of
    ``WHEELWRIGHT_BUILD_ALLOW``, comma-separated: a mirror's file host). ``unsafe_no_sandbox`` defaults
    to the ``WHEELWRIGHT_UNSAFE_NO_SANDBOX`` setting; ``disk``, what the build may write, to
    ``WHEELWRIGHT_BUILD_DISK`` and ``WHEELWRIGHT_BUILD_FILES`` (:mod:`wheelwright.builds.workspace`).
    ``buildenvs_store`` is where prepared build
    environments are kept (:mod:`wheelwright.builds.buildenvs`; default ``WHEELWRIGHT_BUILDENVS``,
    else ``$WHEELWRIGHT_HOME/buildenvs``); ``False`` (or ``WHEELWRIGHT_BUILDENVS=off``) builds every
    sdist with pip's own isolated build environment.

    A build that fails, or is refused, is an outcome, not an exception; exceptions mean the worker
    itself is unfit (no sandbox, no interpreter, no build user, unusable work folder) and the build
    should be retried elsewhere or later. The caller calls ``outcome.cleanup()`` once the files are sent.
    """
    started = time.monotonic()
    host = socket.gethostname()
    try:
        settings = BuildSettings.from_request(request.get("settings"))
    except SettingRefused as exc:  # the request is the index host's; still, checked at this door too
        settings, refused_settings = BuildSettings(), str(exc)
    else:
        refused_settings = None
    if root is None:
        from wheelwright.builds.images import root_for_target
        root = root_for_target(str(request.get("target") or ""), extra=settings.apt)
    root = Path(root)
    timeout = settings.timeout or timeout
    configured = None
    if extra_index_url is None or buildenvs_store is None or root != Path("/"):
        from wheelwright.config import Settings
        configured = Settings.from_env()
    if extra_index_url is None:
        extra_index_url = configured.index_url
    store = _buildenvs_store(buildenvs_store, configured)
    extra = (extra_index_url,) if extra_index_url and extra_index_url != index_url else ()
    unsafe = sandbox.unsafe_opt_out() if unsafe_no_sandbox is None else unsafe_no_sandbox
    disk = DiskQuota.from_env() if disk is None else disk
    if unsafe and root != Path("/"):
        raise ConfigError(f"a build in the image {root} needs the sandbox; "
                          f"{sandbox.UNSAFE_SETTING} only builds on the worker's own system")
    workdir_root = Path(workdir_root)
    workdir_root.mkdir(parents=True, exist_ok=True)
    results = Path(tempfile.mkdtemp(prefix=f"result-{request.get('build_id')}-", dir=workdir_root))
    log_path = results / f"{request.get('build_id')}.txt.gz"
    log_file = CappedLog(log_path, log_cap)
    phases: dict[str, float] = {}

    def outcome(status, reason=None, wheels=(), transient=False):
        reason = one_line(reason) if reason is not None else None
        log_file.note(f"\n[wheelwright: {status}{' (transient, to be tried again)' if transient else ''}"
                      f"{': ' + reason if reason else ''}]\n")
        log_file.close()
        sha256, size = sha256_of(log_path)
        return BuildOutcome(
            build_id=request.get("build_id"), package=request.get("package"),
            version=request.get("version"), target=request.get("target"), abi=request.get("abi"),
            status=status, reason=reason, builder=host, duration=round(time.monotonic() - started, 3),
            log=FileInfo(log_path.name, sha256, size), wheels=list(wheels), files_dir=results,
            transient=transient, phases={k: round(v, 3) for k, v in phases.items()})

    try:
        try:
            build_id, package, version = check_request(request)
            sdist_sha256 = check_sha256(request)
        except UnsafeRequest as exc:
            log.warning("build %s refused: %s", request.get("build_id"), exc)
            return outcome("failure", str(exc))
        if refused_settings is not None:
            return outcome("failure", f"refused build settings: {refused_settings}")
        if not unsafe:
            sandbox.check_host()
        python = python or interpreter_for(request.get("abi") or "", root)
        user = build_user(run_as)
        if user is not None:
            check_reachable(workdir_root, user[1], user[2])
            if root != Path("/"):
                check_reachable(root, user[1], user[2])  # the sandbox starts as the build user
        job = _Job(request=request, build_id=build_id, package=package, version=version,
                   sdist_sha256=sdist_sha256, python=python, user=user, index_url=index_url,
                   workdir_root=workdir_root, results=results, timeout=timeout,
                   memory_limit=memory_limit, process_limit=process_limit, log_file=log_file,
                   host=host, root=root, unsafe=unsafe, extra_index_urls=extra, disk=disk, settings=settings,
                   allow=tuple(allow) + extra + tuple(part.strip() for part in
                                                      os.environ.get("WHEELWRIGHT_BUILD_ALLOW", "").split(",")
                                                      if part.strip()),
                   buildenvs_store=None if unsafe else store, phases=phases, started=started,
                   home=configured.home if configured is not None else None)
        return _build(job, outcome)
    except BaseException:
        log_file.close()
        remove_tree(results)
        raise


def _buildenvs_store(given, settings) -> Path | None:
    if given is False:
        return None
    if given is not None and given is not True:
        return Path(given)
    if os.environ.get("WHEELWRIGHT_BUILDENVS", "").strip().lower() in ("off", "0", "no", "false"):
        return None
    from wheelwright.builds.buildenvs import default_store
    return default_store(settings)


@dataclass
class _Job:
    request: dict
    build_id: int
    package: str
    version: str
    sdist_sha256: str | None
    python: str
    user: tuple[str, int, int] | None
    index_url: str
    workdir_root: Path
    results: Path
    timeout: float
    memory_limit: int
    process_limit: int
    log_file: CappedLog
    host: str
    root: Path
    allow: tuple[str, ...]
    unsafe: bool
    extra_index_urls: tuple[str, ...] = ()
    disk: DiskQuota = field(default_factory=DiskQuota)
    settings: BuildSettings = field(default_factory=BuildSettings)   # the operator's, for this package
    buildenvs_store: Path | None = None
    phases: dict = field(default_factory=dict)
    started: float = 0.0
    home: Path | None = None              # WHEELWRIGHT_HOME: the packages' compiler caches live there

    def time_left(self) -> float:
        return max(1.0, self.timeout - (time.monotonic() - self.started))

    def work_folder(self) -> tuple[Workspace, Path, str]:
        """A fresh work folder for the build user, held to the build's disk quota (close it when
        done), and the path the build sees it at."""
        space = open_workspace(self.workdir_root, f"build-{self.build_id}", self.disk,
                               owner=self.user[1:] if self.user else None)
        work = space.path
        for sub in ("home", "tmp", "wheels"):
            (work / sub).mkdir()
        if self.user is not None:
            for folder in (work / "home", work / "tmp", work / "wheels"):
                os.chown(folder, self.user[1], self.user[2])
        self.log_file.note(f"[wheelwright: /build is {space.how}]\n")
        return space, work, (sandbox.WORK if not self.unsafe else str(work))

    def headline(self, argv: list[str]) -> str:
        who = self.user[0] if self.user else "the worker user"
        where = (f"without a sandbox ({sandbox.UNSAFE_SETTING}), as {who}" if self.unsafe else
                 f"in a bubblewrap sandbox, as uid {sandbox.INSIDE_UID} inside and {who} outside")
        return (f"[wheelwright: build {self.build_id} of {self.package}=={self.version} for "
                f"{self.request.get('target')} on {self.host}, {where}]\n"
                + (f"[wheelwright: pinned to the sdist with sha256 {self.sdist_sha256}]\n"
                   if self.sdist_sha256 else "")
                + "".join(f"[wheelwright: build settings: {line}]\n" for line in self.settings.lines()
                          if self.settings != BuildSettings())
                + f"$ {' '.join(argv)}\n\n")

    def environment(self, seen_as: str) -> dict[str, str]:
        """The build's environment: the operator's variables for the package (checked, never one of
        the sandbox's own), under the clean environment every build gets."""
        return {**self.settings.environment, **clean_environment(seen_as, self.user[0] if self.user else None)}


def _toolchain(job: _Job):
    """The native cross toolchain of the job's image (:mod:`wheelwright.builds.cross`), built on first
    use; None for a build whose compiler runs natively anyway, or when ``WHEELWRIGHT_CROSS=off``."""
    from wheelwright.builds import cross, images
    if job.unsafe or _switched_off("WHEELWRIGHT_CROSS") or job.root == Path("/"):
        return None
    image = images.read_image(job.root.parent)
    if image is None:
        return None
    began = time.monotonic()
    try:
        return cross.toolchain_for(image.recipe.distro, image.recipe.arch, job.root.parent.parent,
                                   progress=lambda line: log.info("%s", line))
    except (WheelwrightError, OSError) as exc:
        job.log_file.note(f"[wheelwright: no native cross compiler ({exc}); the image's own compiles]\n")
        return None
    finally:
        job.phases["environment"] = job.phases.get("environment", 0.0) + time.monotonic() - began


def _native_tools(job: _Job, toolchain) -> tuple[tuple[sandbox.Bind, ...], dict[str, str]]:
    """Binds and environment that give an emulated build its image's native cross compiler and its
    package's compiler cache; nothing without a toolchain."""
    from wheelwright.builds import cross
    if toolchain is None:
        return (), {}
    binds = [sandbox.Bind(toolchain.root, cross.MOUNT), sandbox.Bind(toolchain.loader, toolchain.loader_inside)]
    env = {"PATH": toolchain.bin}
    note = f"the native {toolchain.recipe.triplet} compiler of {toolchain.recipe.folder_name}"
    if job.home is not None and not _switched_off("WHEELWRIGHT_CCACHE"):
        try:
            cache = cross.ccache_folder(job.home, job.root.parent.name, job.package, job.user)
            if job.user is not None:
                check_reachable(cache, job.user[1], job.user[2])
            binds.append(sandbox.Bind(cache, cross.CCACHE_MOUNT, writable=True))
            env.update(cross.ccache_environment())
            note += f", through {job.package}'s own compiler cache"
        except (ConfigError, OSError) as exc:
            note += f" (no compiler cache: {exc})"
    job.log_file.note(f"[wheelwright: compiling with {note}]\n")
    return tuple(binds), env


def _installer(job: _Job, toolchain):
    """uv to make prepared environments with, natively: the worker's own binary, with the worker's
    libraries from the cross toolchain's tree when the image is of another architecture. None (the
    image's pip makes them) when there is no uv, or no way to run it there, or ``WHEELWRIGHT_UV=off``."""
    from wheelwright.builds import buildenvs, cross, images
    binary = None if _switched_off("WHEELWRIGHT_UV") else buildenvs.worker_uv()
    if binary is None:
        return None
    if job.root == Path("/"):
        return buildenvs.Installer(binary)
    image = images.read_image(job.root.parent)
    if image is None:
        return None
    if not images.needs_emulation(image.recipe.arch):
        return buildenvs.Installer(binary)
    if toolchain is None:
        return None
    multiarch = cross.HOSTS[platform.machine()][2]
    return buildenvs.Installer(
        binary, binds=(sandbox.Bind(toolchain.root, cross.MOUNT),
                       sandbox.Bind(toolchain.loader, toolchain.loader_inside)),
        library_path=f"{cross.MOUNT}/lib/{multiarch}:{cross.MOUNT}/usr/lib/{multiarch}")


def _switched_off(setting: str) -> bool:
    return os.environ.get(setting, "").strip().lower() in ("off", "0", "no", "false")


def _with_tools(env: dict[str, str], tools_env: dict[str, str]) -> dict[str, str]:
    """``env`` with the native tools' folder first on its PATH and their settings."""
    merged = {**env, **{k: v for k, v in tools_env.items() if k != "PATH"}}
    if "PATH" in tools_env:
        merged["PATH"] = f"{tools_env['PATH']}:{env['PATH']}"
    return merged


def _build(job: _Job, outcome) -> BuildOutcome:
    """The release built with a prepared environment when its requirements allow, else with pip's
    isolated build (and always so without a sandbox)."""
    if job.buildenvs_store is not None:
        done = _build_prepared(job, outcome)
        if done is not None:
            return done
    return _build_isolated(job, outcome)


def _build_prepared(job: _Job, outcome) -> BuildOutcome | None:
    """Fetch the sdist, mount the prepared environment of its build requirements and build it with our
    frontend. None when it must go pip's way (unreadable pyproject, requirements without wheels)."""
    from wheelwright.builds import buildenvs, frontend, sdists
    store = job.buildenvs_store
    space, work, seen_as = job.work_folder()
    try:
        (work / "sdist").mkdir()
        began = time.monotonic()
        try:
            sdist = sdists.fetch_sdist(job.index_url, job.package, job.version, job.sdist_sha256,
                                       work / "sdist", sandbox.allowed_destinations(job.index_url, job.allow))
        except sdists.FetchFailed as exc:
            job.log_file.note(job.headline([f"(fetching the sdist of {job.package}=={job.version} from "
                                            f"{job.index_url})"]))
            return outcome("failure", exc.reason, transient=exc.transient)
        job.phases["fetch"] = time.monotonic() - began
        build_system = sdists.build_system_of(sdist)
        if build_system is None:
            job.log_file.note("[wheelwright: the sdist's build system cannot be read here; pip's isolated "
                              "build decides]\n")
            return None
        system = buildenvs.System(job.root, job.python)
        toolchain = _toolchain(job)
        maker = buildenvs.Maker(store=store, system=system, index_url=job.index_url,
                                extra_index_urls=job.extra_index_urls, allow=job.allow, identity=job.user,
                                scratch=job.workdir_root, output=job.log_file.write,
                                installer=_installer(job, toolchain))
        requirements = set(build_system.requires) | set(buildenvs.hints(store, system, job.package))
        tool_binds, tools_env = _native_tools(job, toolchain)
        for _ in range(3):
            began = time.monotonic()
            try:
                if job.user is not None:
                    store.mkdir(parents=True, exist_ok=True)
                    check_reachable(store, job.user[1], job.user[2])
                tools = frontend.frontend_folder(store)
                env = maker.prepare(tuple(requirements))
            except (buildenvs.PrepareFailed, ConfigError, OSError) as exc:
                job.log_file.note(f"[wheelwright: no prepared build environment: {exc}; pip's isolated "
                                  "build instead]\n")
                return None
            job.phases["environment"] = job.phases.get("environment", 0.0) + time.monotonic() - began
            for leftover in ("src", "wheels", frontend.REPORT):
                path = work / leftover
                remove_tree(path) if path.is_dir() else path.unlink(missing_ok=True)
            (work / "wheels").mkdir()
            (work / "job.json").write_text(frontend.job_file(
                package=job.package, sdist=f"{seen_as}/sdist/{sdist.name}", backend=build_system.backend,
                backend_path=build_system.backend_path, work=seen_as))
            if job.user is not None:
                for path in (work / "wheels", work / "job.json", work / "sdist", sdist):
                    os.chown(path, job.user[1], job.user[2])
            argv = [env.python, f"{frontend.MOUNT}/{frontend.SCRIPT}", f"{seen_as}/job.json"]
            job.log_file.note(job.headline(argv) +
                              f"[wheelwright: prepared build environment {env.env_id}, read-only at "
                              f"{buildenvs.MOUNT}: {env.describe()}]\n")
            env_vars = _with_tools(job.environment(seen_as), tools_env)
            env_vars["PATH"] = f"{buildenvs.MOUNT}/bin:{env_vars['PATH']}"
            began = time.monotonic()
            ran, stopped_by = _stoppable(job, lambda on_start: sandbox.run(
                argv, root=job.root, work=work, env=env_vars, index_url=job.index_url,
                timeout=job.time_left(), memory_limit=job.memory_limit, process_limit=job.process_limit,
                output=job.log_file.write, identity=job.user, allow=job.allow,
                name=f"build-{job.build_id}-{work.name[-8:]}", python=job.python,
                watch=space.watch, tmp=work / "tmp", on_start=on_start,
                binds=(sandbox.Bind(env.venv, buildenvs.MOUNT), sandbox.Bind(tools, frontend.MOUNT), *tool_binds)))
            job.phases["build"] = job.phases.get("build", 0.0) + time.monotonic() - began
            report = frontend.read_report(work)
            if report.get("times"):
                job.log_file.note("[wheelwright: frontend seconds: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in report["times"].items()) + "]\n")
                # within "build": the backend asked for its requirements, then made the wheel
                for key, phase in (("requires", "requirements"), ("build", "wheel")):
                    if key in report["times"]:
                        job.phases[phase] = job.phases.get(phase, 0.0) + report["times"][key]
            if stopped_by is None and ran.status == frontend.UNMET and not ran.timed_out and report.get("unmet"):
                try:
                    wanted = buildenvs.checked_requirements(report["unmet"])
                except buildenvs.PrepareFailed:
                    return None
                if set(wanted) <= requirements:
                    return None
                buildenvs.remember(store, system, job.package, wanted)
                requirements |= set(wanted)
                continue
            return _finish(job, space, ran, outcome, what="the build", stopped_by=stopped_by)
        return None
    finally:
        space.close()  # however deep and locked-down the build left its tree


def _build_isolated(job: _Job, outcome) -> BuildOutcome:
    """``pip wheel`` with pip's own isolated build environment."""
    job.log_file.code_ran = False  # a prepared attempt before this one ran the sdist's code, this has not yet
    space, work, seen_as = job.work_folder()
    try:
        requirements = None
        if job.sdist_sha256:
            (work / "requirements.txt").write_text(
                requirements_file(job.package, job.version, job.sdist_sha256))
            requirements = Path(seen_as) / "requirements.txt"
        argv = pip_wheel_command(job.python, job.package, job.version, job.index_url,
                                 Path(seen_as) / "wheels", requirements=requirements,
                                 proxy=None if job.unsafe else "@PROXY@",
                                 extra_index_urls=job.extra_index_urls)
        job.log_file.note(job.headline(argv))
        tool_binds, tools_env = _native_tools(job, _toolchain(job))
        env = _with_tools(job.environment(seen_as), tools_env)
        log.info("building %s==%s (build %d) for %s", job.package, job.version, job.build_id,
                 job.request.get("target"))
        began = time.monotonic()
        if job.unsafe:
            ran, stopped_by = _stoppable(job, lambda on_start: _run_unsafe(
                argv, cwd=work, env=env, user=job.user, timeout=job.time_left(), memory_limit=job.memory_limit,
                log=job.log_file, watch=space.watch, on_start=on_start))
        else:
            ran, stopped_by = _stoppable(job, lambda on_start: sandbox.run(
                argv, root=job.root, work=work, env=env, index_url=job.index_url, timeout=job.time_left(),
                memory_limit=job.memory_limit, process_limit=job.process_limit, output=job.log_file.write,
                identity=job.user, allow=job.allow, name=f"build-{job.build_id}-{work.name[-8:]}",
                python=job.python, watch=space.watch, tmp=work / "tmp", binds=tool_binds, on_start=on_start))
        environment = job.log_file.pip_environment_seconds()
        job.phases["environment"] = job.phases.get("environment", 0.0) + environment
        job.phases["build"] = job.phases.get("build", 0.0) + time.monotonic() - began - environment
        return _finish(job, space, ran, outcome, what="pip wheel", stopped_by=stopped_by)
    finally:
        space.close()  # however deep and locked-down the build left its tree


def _stoppable(job: _Job, run) -> tuple[sandbox.Ran, str | None]:
    """``run(on_start)``, a build an operator may stop while it runs (:mod:`wheelwright.builds.running`,
    through the worker's Celery process): how it ended, and who stopped it, if anyone did."""
    with running.Running(job.request, running.running_folder(job.workdir_root)) as current:
        ran = run(current.started)
        return ran, current.stopped_by()


def _finish(job: _Job, space: Workspace, ran: sandbox.Ran, outcome, *, what: str,
            stopped_by: str | None = None) -> BuildOutcome:
    """What the sandboxed build's end means: stopped by an operator, a timeout, its disk quota overrun,
    a failure (transient or final), or wheels taken out, checked and analysed."""
    work = space.path
    if stopped_by is not None:  # final: the operator meant it, retrying would undo it
        return outcome("failure", f"stopped by the operator ({stopped_by})")
    if ran.timed_out:
        return outcome("failure", f"timed out after {job.timeout:g} s; the build and everything it "
                                  "started were killed")
    if ran.status != 0:
        if over := ran.stopped or space.explain(job.log_file.tail):
            return outcome("failure", over)
        if again := transient_reason(job.log_file.tail, job.package, job.log_file.code_ran,
                                     ran.proxy_events):
            return outcome("failure", again, transient=True)
        return outcome("failure", failure_reason(
            ran.status, job.log_file.tail, memory_limit=job.memory_limit,
            process_limit=job.process_limit, out_of_memory=ran.out_of_memory,
            hit_process_limit=ran.hit_process_limit, per_process="RLIMIT_AS" in ran.limits, what=what))
    began = time.monotonic()
    try:
        wheels = _take_out(work / "wheels", job.results)
        if not wheels:
            return outcome("failure", f"{what} succeeded but made no wheel")
        for path in wheels:
            check_archive(path)
        infos = [_analysed(path, job) for path in wheels]
        _install_test(infos, job)
    except WheelRefused as exc:
        for path in job.results.iterdir():
            if path != job.log_file.path:
                path.unlink()
        log.warning("build %d of %s==%s: %s", job.build_id, job.package, job.version, exc)
        return outcome("failure", str(exc))
    job.phases["analysis"] = time.monotonic() - began
    log.info("built %s==%s (build %d): %s", job.package, job.version, job.build_id,
             ", ".join(w.filename for w in infos))
    return outcome("success", None, infos)


def _analysed(path: Path, job: _Job) -> WheelInfo:
    """The wheel at ``path`` checked and described; a ``linux_*`` wheel that meets a manylinux policy
    is written again under that tag (pip then checks the running glibc: builds/wheel_abi.py)."""
    info = analyse_wheel(path, job.package, job.version, root=job.root, scratch=job.workdir_root)
    if info.manylinux and info.platform_tag.startswith("linux_"):
        path.with_name(path.name + ".metadata").unlink(missing_ok=True)
        retagged = retag(path, info.manylinux)
        job.log_file.note(f"\n[wheelwright: {path.name} needs glibc {info.glibc_floor} and only libraries "
                          f"every glibc system has: tagged {info.manylinux} as {retagged.name}]\n")
        info = analyse_wheel(retagged, job.package, job.version, root=job.root, scratch=job.workdir_root)
    elif info.glibc_floor:
        job.log_file.note(f"\n[wheelwright: {path.name} needs glibc {info.glibc_floor}]\n")
    return info


def _install_test(infos: list[WheelInfo], job: _Job) -> None:
    """The builder's install test of each compiled wheel, a first filter before anything travels (the
    index host tests again): a wheel that does not load is refused, with the import's words."""
    where = install_test.image_where(job.root) if not job.unsafe else None
    if where is None or not install_test.tested_on("builder"):
        return
    for info in infos:
        path = job.results / info.filename
        if info.pure or not install_test.has_compiled_code(path):
            continue
        result = install_test.run_test(path, job.package, root=job.root, where=where,
                                       workdir=job.workdir_root, python=job.python, identity=job.user)
        shown = result.output if len(result.output) <= 16384 else "...\n" + result.output[-16384:]
        job.log_file.note(f"\n[wheelwright: install test of {info.filename} on {where}]\n{shown}"
                          f"[wheelwright: {result.sentence()}]\n")
        if not result.loads:
            raise WheelRefused(result.sentence())


def _run_unsafe(argv, *, cwd: Path, env: dict, user, timeout: float, memory_limit: int,
                log: CappedLog, watch=None, on_start=None) -> sandbox.Ran:
    """``WHEELWRIGHT_UNSAFE_NO_SANDBOX``: pip as the build user (when root) in its own session, under
    an address-space limit, its session killed at the end. Nothing hides the worker from it."""
    log.note(f"[wheelwright: UNSAFE: {sandbox.UNSAFE_SETTING} is set; this build ran without a "
             "sandbox]\n")
    limits = {resource.RLIMIT_AS: memory_limit}
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, umask=0o022,
                                preexec_fn=sandbox._enter([], user, limits))
    except OSError as exc:
        raise ConfigError(f"cannot start {argv[0]} for the build: {exc}") from exc
    if on_start is not None:
        on_start(proc.pid)
    status, timed_out, stopped = sandbox._pump(proc, timeout, log.write, watch)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what it left behind in its session
    except (ProcessLookupError, PermissionError):
        pass
    return sandbox.Ran(status=status, timed_out=timed_out, out_of_memory=False, hit_process_limit=False,
                       limits=f"RLIMIT_AS {memory_limit // MiB} MiB per process", stopped=stopped)


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
