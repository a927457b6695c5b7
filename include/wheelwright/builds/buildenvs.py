"""Prepared build environments: each set of build requirements installed once per target, then
mounted read-only into every build that asks for it.

pip's build isolation installs an sdist's build requirements into a fresh environment for every
build: 2.3 s of a 2.5 s trivial build natively, far more under qemu, and the same setuptools every
time. Here the worker resolves an sdist's ``[build-system] requires`` (read by
:mod:`wheelwright.builds.sdists`) for the target's own Python and platform, and installs the result
once into a virtual environment that every later build with the same resolved set mounts read-only
at :data:`MOUNT`. The builder runs :mod:`wheelwright.builds.frontend` with it instead of pip.

How it stays sound:

- **Keyed by what is in it.** Requirements resolve to exact pins (name, version, sha256 of the wheel);
  the environment is named by a hash of the target system and those pins. Two sdists share an
  environment only when their requirements resolve to the same wheels; a hostile sdist that names a
  hostile build requirement gets an environment of its own that nobody else mounts.
- **Made from wheels only, checked by hash.** Resolution (``pip install --dry-run --report``) and
  installation (``--require-hashes --no-deps``, the pins) both run in the sandbox, in the target's
  image, with ``--only-binary :all:``: nothing of any sdist runs while an environment is made. A
  requirement without a wheel for the target cannot be prepared, and that build goes pip's isolated way.
- **Read-only once made.** It is built in a temporary folder, given to the worker's user, made
  read-only (no write bit anywhere) and renamed into place in one step; builds see it through a
  read-only bind. A build cannot write into it, so it cannot poison the next build.
- **Dynamic requirements.** What the backend asks for at build time (``get_requires_for_build_wheel``:
  ``setup_requires``, scikit-build-core's cmake) is checked by the frontend; what the environment
  lacks extends the set (a new environment, remembered per package as a hint for its next build),
  or, when it cannot be prepared, the build goes pip's isolated way.
- **Fresh enough.** A resolution is kept :data:`RESOLVED_FOR` (a day): a new setuptools release
  reaches builds the next day, as a new environment; old environments unused for
  :data:`UNUSED_FOR_DAYS` are pruned.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from wheelwright.builds import sandbox
from wheelwright.errors import WheelwrightError

log = logging.getLogger(__name__)

MOUNT = "/opt/wheelwright/buildenv"      # where builds see their prepared environment
UV = "/opt/wheelwright/uv/uv"            # where uv is, while an environment is made
RESOLVED_FOR = 24 * 3600                 # seconds a resolution of a requirement set is reused
UNUSED_FOR_DAYS = 30                     # environments unused this long are pruned
MAX_HINTS = 16                           # dynamic requirements remembered per package
PREPARE_TIMEOUT = 1800                   # seconds for one resolution or installation
PREPARE_MEMORY = 2 << 30
_PIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]*\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


class PrepareFailed(WheelwrightError):
    """A requirement set could not be made into an environment (no wheel for the target, index down)."""


@dataclass(frozen=True)
class Pin:
    """One requirement resolved: its exact version and the sha256 of the wheel(s) it may be."""

    name: str
    version: str
    hashes: tuple[str, ...]

    def line(self) -> str:
        return f"{self.name}=={self.version} " + " ".join(f"--hash=sha256:{h}" for h in self.hashes)


@dataclass(frozen=True)
class Installer:
    """uv, run natively inside the sandbox: the worker's own binary bound at ``UV``, with the worker
    architecture's libraries when the image is another's (the cross toolchain's tree, see
    :mod:`wheelwright.builds.cross`)."""

    binary: Path
    binds: tuple = ()
    library_path: str | None = None

    def command(self) -> str:
        return (f"LD_LIBRARY_PATH={self.library_path} " if self.library_path else "") + UV


@dataclass(frozen=True)
class PreparedEnv:
    """A ready environment: ``venv`` is bound at :data:`MOUNT`; ``made`` says whether this call made it."""

    env_id: str
    venv: Path
    pins: tuple[Pin, ...]
    made: bool = False

    @property
    def python(self) -> str:
        return f"{MOUNT}/bin/python"

    def describe(self) -> str:
        return ", ".join(f"{p.name}=={p.version}" for p in self.pins) or "nothing"


@dataclass(frozen=True)
class System:
    """Where environments run: the build root (an image's, or the worker's ``/``) and its Python."""

    root: Path
    python: str            # the interpreter inside, e.g. /usr/bin/python3.11

    @property
    def name(self) -> str:
        if self.root == Path("/"):
            return f"host-{platform.machine()}-{Path(self.python).name}"
        return f"{self.root.parent.name}-{Path(self.python).name}"


# --- pure -------------------------------------------------------------------------------------------

def checked_requirements(texts) -> tuple[str, ...]:
    """PEP 508 strings, normalised and sorted; refuses anything else."""
    out = set()
    for text in texts:
        if not isinstance(text, str) or len(text) > 500:
            raise PrepareFailed(f"refused build requirement {str(text)[:80]!r}")
        try:
            out.add(str(Requirement(text)))
        except InvalidRequirement as exc:
            raise PrepareFailed(f"refused build requirement {text[:80]!r}: {exc}") from None
    return tuple(sorted(out))


def resolution_key(system: System, requirements: tuple[str, ...], indexes: tuple[str, ...]) -> str:
    text = json.dumps({"system": system.name, "requires": list(requirements), "indexes": list(indexes)})
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def env_id(system: System, pins: tuple[Pin, ...]) -> str:
    text = json.dumps({"system": system.name, "mount": MOUNT,
                       "pins": [[p.name, p.version, sorted(p.hashes)] for p in pins]})
    return hashlib.sha256(text.encode()).hexdigest()[:24]


_PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def pins_from_compiled(text: str) -> tuple[Pin, ...]:
    """The pins of ``uv pip compile --generate-hashes`` output (``name==version`` and its hashes)."""
    pins, current = [], None
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("--hash") else line.strip()
        if not line:
            continue
        if m := _PINNED.match(line):
            name, version = canonicalize_name(m[1]), m[2]
            hashes = tuple(sorted(set(_HASH.findall(line))))
            if not (_PIN.match(name) and _VERSION.match(version) and hashes):
                raise PrepareFailed(f"uv's resolution names an unusable pin {line[:100]!r}")
            current = Pin(name, version, hashes)
            pins.append(current)
        elif line.startswith("--hash") and current is not None:
            pins[-1] = current = Pin(current.name, current.version,
                                     tuple(sorted(set(current.hashes) | set(_HASH.findall(line)))))
        else:
            raise PrepareFailed(f"uv's resolution holds a line that is no pin: {line[:100]!r}")
    return tuple(sorted(pins, key=lambda p: p.name))


def pins_from_report(report: dict) -> tuple[Pin, ...]:
    """The exact wheels a ``pip install --dry-run --report`` chose, each with its sha256."""
    pins = []
    for item in report.get("install", []) if isinstance(report, dict) else []:
        try:
            name = canonicalize_name(item["metadata"]["name"])
            version = str(item["metadata"]["version"])
            info = item["download_info"]
            digest = str(info["archive_info"]["hashes"]["sha256"]).lower()
        except (KeyError, TypeError):
            raise PrepareFailed("pip's resolution report lacks a name, version or sha256") from None
        if not (_PIN.match(name) and _VERSION.match(version) and _SHA256.match(digest)):
            raise PrepareFailed(f"pip's resolution report names an unusable pin {name!r} {version!r}")
        if not str(info.get("url", "")).split("#")[0].endswith(".whl"):
            raise PrepareFailed(f"{name}=={version} has no wheel for this target")
        pins.append(Pin(name, version, (digest,)))
    return tuple(sorted(pins, key=lambda p: p.name))


# --- the store --------------------------------------------------------------------------------------

def default_store(settings) -> Path:
    """``$WHEELWRIGHT_BUILDENVS``, else ``$WHEELWRIGHT_HOME/buildenvs``."""
    given = os.environ.get("WHEELWRIGHT_BUILDENVS")
    return Path(given).expanduser().absolute() if given else settings.home / "buildenvs"


class _Locked:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "w")
        fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self.file.close()


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def hints(store: Path, system: System, package: str) -> tuple[str, ...]:
    """The dynamic requirements an earlier build of ``package`` asked for on this system."""
    path = store / "hints" / system.name / f"{canonicalize_name(package)}.json"
    try:
        return checked_requirements(json.loads(path.read_text())[:MAX_HINTS])
    except (OSError, ValueError, TypeError, PrepareFailed):
        return ()


def remember(store: Path, system: System, package: str, requirements: tuple[str, ...]) -> None:
    known = set(hints(store, system, package)) | set(checked_requirements(requirements))
    _write_json(store / "hints" / system.name / f"{canonicalize_name(package)}.json",
                sorted(known)[:MAX_HINTS])


def _read_only(top: Path, uid: int, gid: int) -> None:
    """Give ``top`` to the worker's user and take every write bit away (links are left as they are)."""
    for folder, dirs, files in os.walk(top, topdown=False):
        for name in files + dirs:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            os.lchown(path, uid, gid)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o222 | 0o444)
    os.lchown(top, uid, gid)
    os.chmod(top, 0o555)


def _remove(path: Path) -> None:
    """Remove a read-only tree (write bits first, so rmtree may unlink)."""
    for folder, dirs, _ in os.walk(path):
        os.chmod(folder, 0o755)
    shutil.rmtree(path, ignore_errors=True)


def prune(store: Path, unused_for_days: float = UNUSED_FOR_DAYS) -> list[str]:
    """Remove environments no build has used for ``unused_for_days``; their names."""
    removed = []
    envs = store / "envs"
    if not envs.is_dir():
        return removed
    for path in envs.iterdir():
        if path.name.startswith("."):
            continue
        try:
            if time.time() - (path / "used").stat().st_mtime > unused_for_days * 86400:
                aside = envs / f".rm-{path.name}-{os.getpid()}"
                os.rename(path, aside)
                _remove(aside)
                removed.append(path.name)
        except OSError:
            continue
    return removed


def worker_uv() -> Path | None:
    """The worker's own uv (``uv`` of requirements.txt, beside its Python), when it has one."""
    import sys
    for candidate in (Path(sys.executable).parent / "uv", shutil.which("uv")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(candidate).resolve()
    return None


# --- making one -------------------------------------------------------------------------------------

@dataclass
class Maker:
    """What making an environment needs of the worker: where, with which indexes, as whom."""

    store: Path
    system: System
    index_url: str
    extra_index_urls: tuple[str, ...]
    allow: tuple[str, ...]
    identity: tuple[str, int, int] | None
    scratch: Path                                 # where temporary work folders go
    output: object                                # callable taking bytes: the build's log
    installer: Installer | None = None            # uv, natively; None: the image's pip

    def note(self, text: str) -> None:
        self.output(f"[wheelwright: {text}]\n".encode())

    def prepare(self, requirements: tuple[str, ...]) -> PreparedEnv:
        """The environment of ``requirements`` on this system: found, or made now (resolved, installed)."""
        for url in (self.index_url, *self.extra_index_urls):
            if not re.fullmatch(r"https?://[A-Za-z0-9._~:/?#@!&()*+,;=%\[\]-]+", url) or "'" in url:
                raise PrepareFailed(f"the index address {url[:100]!r} cannot be given to an installer")
        requirements = checked_requirements(requirements)
        pins = self._pins(requirements)
        ident = env_id(self.system, pins)
        final = self.store / "envs" / ident
        if (final / "env.json").is_file():
            os.utime(final / "used")
            return PreparedEnv(ident, final / "venv", pins)
        with _Locked(self.store / "envs" / f".{ident}.lock"):
            if (final / "env.json").is_file():
                return PreparedEnv(ident, final / "venv", pins)
            started = time.monotonic()
            self._install(ident, pins)
            self.note(f"prepared build environment {ident} ({', '.join(p.name + '==' + p.version for p in pins)}) "
                      f"in {time.monotonic() - started:.1f} s with {self._tool()}")
        return PreparedEnv(ident, final / "venv", pins, made=True)

    def _pins(self, requirements: tuple[str, ...]) -> tuple[Pin, ...]:
        key = resolution_key(self.system, requirements, (self.index_url, *self.extra_index_urls))
        path = self.store / "resolved" / f"{key}.json"
        try:
            data = json.loads(path.read_text())
            if time.time() - float(data["at"]) < RESOLVED_FOR:
                return tuple(Pin(n, v, tuple(h)) for n, v, h in data["pins"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        with _Locked(self.store / "resolved" / f".{key}.lock"):
            started = time.monotonic()
            pins = self._resolve(requirements)
            _write_json(path, {"at": time.time(), "requires": list(requirements),
                               "pins": [[p.name, p.version, list(p.hashes)] for p in pins]})
            self.note(f"resolved build requirements {', '.join(requirements) or '(none)'} for "
                      f"{self.system.name} in {time.monotonic() - started:.1f} s with {self._tool()}")
        return pins

    def _tool(self) -> str:
        return "uv (native)" if self.installer is not None else "the image's pip"

    def _uv(self, verb: str, python: str) -> str:
        extra = " ".join(f"--extra-index-url '{u}'" for u in self.extra_index_urls)
        return (f"{self.installer.command()} pip {verb} --python {python} --no-config --no-cache --quiet "
                f"--only-binary :all: --index-url '{self.index_url}' {extra}")

    def _pip(self, python: str) -> str:
        extra = " ".join(f"--extra-index-url '{u}'" for u in self.extra_index_urls)
        return (f"{self.system.python} -m pip --python {python} install --isolated --only-binary :all: "
                f"--index-url '{self.index_url}' {extra} --proxy @PROXY@ --disable-pip-version-check "
                f"--no-input --progress-bar off --quiet")

    def _resolve(self, requirements: tuple[str, ...]) -> tuple[Pin, ...]:
        with self._work() as work:
            (work / "requirements.in").write_text("".join(r + "\n" for r in requirements))
            if self.installer is not None:
                script = (f"set -e; {self._uv('compile', self.system.python)} --generate-hashes --no-header "
                          f"--no-annotate --output-file {sandbox.WORK}/pinned.txt {sandbox.WORK}/requirements.in")
                self._run(work, script, "resolving")
                try:
                    return pins_from_compiled((work / "pinned.txt").read_text())
                except OSError as exc:
                    raise PrepareFailed(f"uv wrote no resolution ({exc})") from None
            script = (f"set -e; {self.system.python} -m venv --without-pip {sandbox.WORK}/probe; "
                      f"{self._pip(sandbox.WORK + '/probe/bin/python')} --dry-run --ignore-installed "
                      f"--report {sandbox.WORK}/report.json -r {sandbox.WORK}/requirements.in")
            self._run(work, script, "resolving")
            try:
                report = json.loads((work / "report.json").read_text())
            except (OSError, ValueError) as exc:
                raise PrepareFailed(f"pip wrote no resolution report ({exc})") from None
            return pins_from_report(report)

    def _install(self, ident: str, pins: tuple[Pin, ...]) -> None:
        envs = self.store / "envs"
        envs.mkdir(parents=True, exist_ok=True)
        tmp = envs / f".tmp-{ident}-{os.getpid()}"
        _remove(tmp)
        (tmp / "venv").mkdir(parents=True)
        if self.identity is not None:
            os.chown(tmp / "venv", self.identity[1], self.identity[2])
        try:
            with self._work() as work:
                (work / "pinned.txt").write_text("".join(p.line() + "\n" for p in pins))
                install = (f"{self._uv('install', MOUNT + '/bin/python')} --compile-bytecode"
                           if self.installer is not None else self._pip(MOUNT + '/bin/python'))
                script = (f"set -e; {self.system.python} -m venv --without-pip {MOUNT}; "
                          + (f"{install} --no-deps --require-hashes -r {sandbox.WORK}/pinned.txt"
                             if pins else "true"))
                self._run(work, script, "installing",
                          binds=(sandbox.Bind(tmp / "venv", MOUNT, writable=True),))
            _read_only(tmp / "venv", os.geteuid(), os.getegid())
            (tmp / "env.json").write_text(json.dumps({
                "system": self.system.name, "made_at": time.time(), "tool": self._tool(),
                "pins": [[p.name, p.version, list(p.hashes)] for p in pins]}, indent=1))
            (tmp / "used").touch()
            os.rename(tmp, envs / ident)
        except BaseException:
            _remove(tmp)
            raise

    def _work(self):
        maker = self

        class Work:
            def __enter__(self):
                self.path = Path(tempfile.mkdtemp(prefix="buildenv-", dir=maker.scratch))
                for sub in ("", "home", "tmp"):
                    (self.path / sub).mkdir(exist_ok=True)
                    if maker.identity is not None:
                        os.chown(self.path / sub, maker.identity[1], maker.identity[2])
                return self.path

            def __exit__(self, *exc):
                shutil.rmtree(self.path, ignore_errors=True)
        return Work()

    def _run(self, work: Path, script: str, doing: str, binds: tuple[sandbox.Bind, ...] = ()) -> None:
        from wheelwright.builds.builder import clean_environment
        if self.identity is not None:
            for name in ("requirements.in", "pinned.txt"):
                if (work / name).exists():
                    os.chown(work / name, self.identity[1], self.identity[2])
        env = clean_environment(sandbox.WORK, self.identity[0] if self.identity else None)
        tail = bytearray()

        def keep(chunk: bytes) -> None:
            tail.extend(chunk)
            del tail[:-4000]
        if self.installer is not None:
            binds = (*binds, sandbox.Bind(self.installer.binary, UV), *self.installer.binds)
        ran = sandbox.run(["/bin/sh", "-c", script], root=self.system.root, work=work, env=env,
                          index_url=self.index_url, timeout=PREPARE_TIMEOUT, memory_limit=PREPARE_MEMORY,
                          process_limit=256, output=keep, identity=self.identity, allow=self.allow,
                          name=f"buildenv-{work.name[-8:]}", python=self.system.python, binds=binds)
        if ran.timed_out or ran.status != 0:
            said = bytes(tail).decode("utf-8", "replace").strip().splitlines()
            last = next((line for line in reversed(said) if line.startswith("ERROR")), said[-1] if said else "")
            raise PrepareFailed(f"{doing} the build requirements failed"
                                f"{' (timed out)' if ran.timed_out else ''}: {last[:300]}")
