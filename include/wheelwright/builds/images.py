"""Target images: a Debian root filesystem per target, so any machine can build for any Pi.

wheelwright exists to give Raspberry Pi users wheels, and a Pi wheel must be built against the Pi's
own Python, headers and libraries. piwheels does that on racks of Pis, one rack per Debian release.
Here a target *is* an image: the root filesystem of its distro and Debian architecture (``bookworm`` /
``armhf`` for ``cp311`` / ``linux_armv7l``), made from Debian's archive with ``mmdebstrap``. A build
runs inside it as the read-only root of the sandbox (:mod:`wheelwright.builds.sandbox`): natively on
an ARM host, under qemu-user (binfmt_misc) on any other.

This room owns:

- the **recipe** of a target's image (distro, architecture, packages: Python, its headers and pip, plus
  the build packages the target names, e.g. ``data/build-packages.txt``) and its **hash**, which names
  the image: a changed recipe is a new image, an old one is *stale*;
- **building** it: ``mmdebstrap`` into a temporary folder beside the store, then one rename, so a
  half-built image is never seen; one build per image at a time (a lock file); how far it is (a
  percentage from the packages apt unpacks and sets up, and an estimate of the time left) shown on the
  way and kept in a progress file beside the store, so `image list` and the dashboard can say it;
  the ``.deb`` files downloaded kept per Debian release (``.apt-cache/``) for the next build;
- the **store** under ``$WHEELWRIGHT_HOME/images/<distro>-<arch>-<hash>/`` (``root/`` and
  ``image.json``): what is built, for which targets, how big, how old, stale or not; ``update``
  rebuilds what is missing, stale or older than a month of Debian security updates, and prunes;
- **emulation**: whether this host runs the image's binaries natively, and when it does not, that
  binfmt_misc has qemu registered with the ``F`` flag (so it works in namespaces); registered here when
  we are root and Debian's ``qemu-user-static`` is installed, else a sentence saying what to run.

Recipes and names are pure functions over plain data; mmdebstrap, /proc and the file system are at
the edges.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from wheelwright import package_data
from wheelwright.builds.cleanup import remove_tree
from wheelwright.builds.targets import PLATFORM_ARCH
from wheelwright.errors import ConfigError, WheelwrightError

log = logging.getLogger(__name__)

# Bump when the way an image is made changes (options below), so every image is rebuilt.
RECIPE_FORMAT = 1
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MAX_AGE_DAYS = 30  # Debian publishes security updates: an image older than this is rebuilt by update
# What every image has, whatever its target names: the distro's Python, headers, pip and venv.
BASE_PACKAGES = ("python3", "python3-dev", "python3-pip", "python3-venv")
# mmdebstrap options that shape an image (part of its hash): the smallest Debian that runs apt, no
# documentation (a build needs none; copyright files stay).
MMDEBSTRAP_OPTIONS = (
    "--variant=apt", "--components=main", "--format=directory",
    '--aptopt=Acquire::Retries "3"',
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
)
# Options that change how fast an image is made, not what it is (not in its hash). dpkg fsyncs every
# file it unpacks (several ms each on a VM's disk, for tens of thousands of files): an image is built in
# a temporary folder and renamed into place only once complete, and the store is synced before that
# rename, so a crash loses a half-built image, which is thrown away anyway.
SPEED_OPTIONS = ("--dpkgopt=force-unsafe-io",)

# The Python each Debian release ships: a target's ABI must be its distro's.
DISTRO_PYTHON = {"bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13", "forky": "3.13"}
# Debian architecture -> the qemu-user binfmt entry that runs it elsewhere
ARCH_QEMU = {"armhf": "qemu-arm", "armel": "qemu-arm", "arm64": "qemu-aarch64", "amd64": "qemu-x86_64",
             "i386": "qemu-i386", "riscv64": "qemu-riscv64", "ppc64el": "qemu-ppc64le",
             "s390x": "qemu-s390x"}
# the kernel's machine -> Debian architectures it runs without emulation
NATIVE = {"x86_64": {"amd64", "i386"}, "aarch64": {"arm64", "armhf", "armel"},
          "armv7l": {"armhf", "armel"}, "armv8l": {"armhf", "armel"}, "riscv64": {"riscv64"},
          "ppc64le": {"ppc64el"}, "s390x": {"s390x"}}

BINFMT = Path("/proc/sys/fs/binfmt_misc")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+\Z")
_IMAGE_DIR = re.compile(r"(?P<name>[a-z0-9][a-z0-9.-]*-[a-z0-9]+)-(?P<digest>[0-9a-f]{16})\Z")

Progress = Callable[[str], None]


def _quiet(_line: str) -> None:
    pass


# --- pure: recipes ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """What an image is made of. Its ``digest`` names it; the mirror is where, not what."""

    distro: str
    arch: str
    packages: tuple[str, ...]  # sorted, unique, the base ones included

    @property
    def name(self) -> str:
        return f"{self.distro}-{self.arch}"

    @property
    def digest(self) -> str:
        text = json.dumps({"format": RECIPE_FORMAT, "distro": self.distro, "arch": self.arch,
                           "packages": list(self.packages), "options": list(MMDEBSTRAP_OPTIONS)},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def folder_name(self) -> str:
        return f"{self.name}-{self.digest}"


def make_recipe(distro: str, arch: str, packages: Iterable[str]) -> Recipe:
    """A checked recipe: known architecture, Debian package names only, the base packages added."""
    if arch not in ARCH_QEMU:
        raise ConfigError(f"unknown Debian architecture {arch!r} (known: {', '.join(sorted(ARCH_QEMU))})")
    if not re.fullmatch(r"[a-z][a-z0-9-]*", distro):
        raise ConfigError(f"{distro!r} is not a Debian release name like bookworm")
    wanted = set(BASE_PACKAGES)
    for package in packages:
        if not isinstance(package, str) or not _PACKAGE.match(package):
            raise ConfigError(f"{package!r} is not a Debian package name")
        wanted.add(package)
    return Recipe(distro, arch, tuple(sorted(wanted)))


def parse_package_list(text: str) -> list[str]:
    """Package names of a list file: one or more a line, ``#`` starts a comment."""
    return [word for line in text.splitlines() for word in line.split("#", 1)[0].split()]


def package_list(name: str) -> list[str]:
    """The packages of list ``name``: an absolute path, or a file of the package's ``data/``."""
    path = Path(name)
    if not path.is_absolute() and ("/" in name or name.startswith(".")):
        raise ConfigError(f"package list {name!r}: give a file of data/ by name, or an absolute path")
    source = path if path.is_absolute() else Path(str(package_data.data(name)))
    try:
        return parse_package_list(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the package list {source}: {exc.strerror}") from exc


def arch_of(target) -> str:
    arch = getattr(target, "arch", None) or PLATFORM_ARCH.get(target.platform)
    if arch is None:
        raise ConfigError(f"target {target.name}: no Debian architecture is known for "
                          f"{target.platform}; say arch = \"...\" in targets.toml")
    return arch


def recipe_for(target, extra: Iterable[str] = ()) -> Recipe:
    """The recipe of ``target``'s image (a :class:`~wheelwright.builds.targets.Target`); with ``extra``
    Debian packages (a package's build settings), the recipe of the image derived from it: another
    image, named by its own hash, built on first use like any."""
    python = DISTRO_PYTHON.get(target.distro)
    m = re.fullmatch(r"cp(\d)(\d+)", target.abi)
    if python is None:
        raise ConfigError(f"target {target.name}: no image recipe knows distro {target.distro!r} "
                          f"(known: {', '.join(DISTRO_PYTHON)})")
    if not m or f"{m[1]}.{m[2]}" != python:
        raise ConfigError(f"target {target.name}: {target.distro} ships Python {python}, which builds "
                          f"cp{python.replace('.', '')} wheels, not {target.abi}")
    packages = list(getattr(target, "packages", ()))
    for name in getattr(target, "package_lists", ()):
        packages += package_list(name)
    return make_recipe(target.distro, arch_of(target), [*packages, *extra])


def needs_emulation(arch: str, machine: str | None = None) -> bool:
    """Whether this host (its kernel's ``machine``) runs ``arch`` binaries only under qemu."""
    return arch not in NATIVE.get(machine or platform.machine(), set())


def parse_binfmt_entry(text: str) -> dict:
    """``{"enabled": bool, "interpreter": str, "flags": str}`` of a /proc/sys/fs/binfmt_misc entry."""
    entry = {"enabled": False, "interpreter": None, "flags": ""}
    for line in text.splitlines():
        if line.strip() == "enabled":
            entry["enabled"] = True
        elif line.startswith("interpreter "):
            entry["interpreter"] = line.split(" ", 1)[1].strip()
        elif line.startswith("flags:"):
            entry["flags"] = line.split(":", 1)[1].strip()
    return entry


def emulation_advice(arch: str) -> str:
    qemu = ARCH_QEMU[arch]
    return (f"this {platform.machine()} host runs {arch} images under qemu-user, registered with "
            f"binfmt_misc. As root: `apt-get install qemu-user-static binfmt-support`, then "
            f"`mount -t binfmt_misc binfmt_misc {BINFMT}` (if {BINFMT} is empty) and "
            f"`update-binfmts --enable {qemu}`")


# --- the edge: emulation ----------------------------------------------------------------------------

def emulation_problem(arch: str, binfmt: Path = BINFMT) -> str | None:
    """None when ``arch`` binaries run here (natively or under a usable qemu), else what is wrong."""
    if not needs_emulation(arch):
        return None
    qemu = ARCH_QEMU[arch]
    if not (binfmt / "register").exists():
        return f"binfmt_misc is not mounted at {binfmt}"
    try:
        entry = parse_binfmt_entry((binfmt / qemu).read_text())
    except OSError:
        return f"no binfmt_misc entry {qemu} is registered"
    if not entry["enabled"]:
        return f"the binfmt_misc entry {qemu} is disabled"
    if "F" not in entry["flags"]:
        # without F the kernel opens the interpreter by path inside the image, where it is not
        return f"the binfmt_misc entry {qemu} lacks the F (fix binary) flag: use qemu-user-static's"
    if not entry["interpreter"] or not Path(entry["interpreter"]).exists():
        return f"the interpreter of binfmt_misc entry {qemu} ({entry['interpreter']}) is missing"
    return None


def ensure_emulation(arch: str, binfmt: Path = BINFMT) -> None:
    """Make ``arch`` binaries runnable here, registering qemu-user when we can; else say what to do."""
    problem = emulation_problem(arch, binfmt)
    if problem is None:
        return
    qemu = ARCH_QEMU[arch]
    spec = Path("/usr/share/binfmts") / qemu
    if os.geteuid() == 0 and shutil.which("update-binfmts") and spec.exists():
        log.info("registering %s with binfmt_misc (%s)", qemu, problem)
        if not (binfmt / "register").exists():
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)],
                           capture_output=True, check=False)
        subprocess.run(["update-binfmts", "--enable", qemu], capture_output=True, check=False)
        problem = emulation_problem(arch, binfmt)
        if problem is None:
            return
    raise ConfigError(f"cannot run {arch} binaries: {problem}; {emulation_advice(arch)}")


# --- the edge: the store ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Image:
    """A built image in the store."""

    path: Path           # <store>/<distro>-<arch>-<digest>
    name: str            # <distro>-<arch>
    digest: str
    built_at: float      # Unix time
    size: int            # bytes on disk
    seconds: float       # how long it took to build
    python: str          # the Python version inside, e.g. 3.11
    recipe: Recipe
    packages: int = 0    # Debian packages installed (0: an image from before this was recorded)
    later_packages: int = 0  # of those, installed after the essential ones (how builds see progress)

    @property
    def root(self) -> Path:
        return self.path / "root"

    def age_days(self, now: float | None = None) -> float:
        return ((now or time.time()) - self.built_at) / 86400


def default_store(settings, environ=None) -> Path:
    """``$WHEELWRIGHT_IMAGES``, else ``$WHEELWRIGHT_HOME/images``."""
    given = (os.environ if environ is None else environ).get("WHEELWRIGHT_IMAGES")
    return Path(given).expanduser().absolute() if given else settings.home / "images"


def read_image(path: Path) -> Image | None:
    """The image at ``path`` if it is a complete one (its image.json written last), else None."""
    m = _IMAGE_DIR.match(path.name)
    if not m or not (path / "root").is_dir():
        return None
    try:
        data = json.loads((path / "image.json").read_text())
        recipe = Recipe(data["recipe"]["distro"], data["recipe"]["arch"],
                        tuple(data["recipe"]["packages"]))
        return Image(path, m["name"], m["digest"], float(data["built_at"]), int(data["size"]),
                     float(data["seconds"]), str(data["python"]), recipe,
                     int(data.get("packages", 0)), int(sum(data.get("stages", [0])[1:])))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stored_images(store: Path) -> list[Image]:
    if not store.is_dir():
        return []
    images = [read_image(p) for p in sorted(store.iterdir()) if not p.name.startswith(".")]
    return [i for i in images if i is not None]


def find_image(recipe: Recipe, store: Path) -> Image | None:
    return read_image(store / recipe.folder_name)


def image_root(target, store: Path, *, build: bool = True, progress: Progress = _quiet,
               extra: Iterable[str] = ()) -> Path:
    """The root file system ``target`` builds in (with ``extra`` Debian packages: its derived image),
    built first if missing and ``build``."""
    recipe = recipe_for(target, extra)
    image = find_image(recipe, store)
    if image is None:
        if not build:
            raise ConfigError(f"the image of target {target.name} ({recipe.folder_name}) is not "
                              f"built: run `wheelwright image build {target.name}`")
        image = build_image(recipe, store, progress=progress)
    ensure_emulation(recipe.arch)
    return image.root


def root_for_target(name: str, store: Path | None = None, *, progress: Progress | None = None,
                    extra: Iterable[str] = ()) -> Path:
    """The root filesystem builds for the target ``name`` run in: its image when it has one (built
    here on first use, so a worker needs no preparation; with ``extra`` Debian packages, the image
    derived from it), else the worker's own ``/`` (which ``extra`` cannot change: refused)."""
    from wheelwright.builds.targets import load_targets
    from wheelwright.config import Settings
    target = next((t for t in load_targets() if t.name == name), None)
    if target is None or not target.image:
        if extra:
            raise ConfigError(f"target {name} builds on the worker's own system: its build settings' apt "
                              f"packages ({' '.join(extra)}) need an image (image = true)")
        return Path("/")
    if store is None:
        store = default_store(Settings.from_env())
    return image_root(target, store, build=True, progress=progress or (lambda line: log.info("%s", line)),
                      extra=extra)


def _disk_usage(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def mmdebstrap_command(recipe: Recipe, root: Path, mirror: str = DEFAULT_MIRROR, *,
                       apt_cache: Path | None = None, apt_cache_out: Path | None = None) -> list[str]:
    """mmdebstrap's arguments for ``recipe`` into ``root``; with ``apt_cache``, the ``.deb`` files
    found there are offered to apt first (it checks each against the archive's signed index, as it
    would a download) and every one the build had is copied out to ``apt_cache_out``."""
    # --verbose: apt's and dpkg's own lines instead of progress bars, so progress can be shown
    argv = ["mmdebstrap", "--verbose", f"--arch={recipe.arch}", *MMDEBSTRAP_OPTIONS, *SPEED_OPTIONS]
    if apt_cache is not None and apt_cache_out is not None:
        # mmdebstrap's own recipe (its man page, "sync-in"); its special hooks split on white space
        if any(c.isspace() for c in f"{apt_cache}{apt_cache_out}"):
            raise ConfigError(f"the image store's path may not contain white space: {apt_cache}")
        argv += ["--skip=essential/unlink",
                 '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
                 f"--setup-hook=sync-in {apt_cache} /var/cache/apt/archives/",
                 f"--customize-hook=sync-out /var/cache/apt/archives {apt_cache_out}"]
    return argv + [f"--include={','.join(recipe.packages)}", recipe.distro, str(root), mirror]


HEARTBEAT = 30  # seconds: a build says something at least this often, however quiet dpkg is
_SETTING_UP = re.compile(r"Setting up ([^ ]+) \(")
_NEWLY_INSTALLED = re.compile(r"\d+ upgraded, (\d+) newly installed")


@dataclass
class BuildMeter:
    """How far an image build has come, read from mmdebstrap's own lines, fed one at a time.

    mmdebstrap installs in two stages, Debian's essential packages and then the rest; before each,
    apt says how many packages it will install, and dpkg then unpacks and sets up each one. Under
    emulation that work per package is nearly all of the time, so the share of those steps taken is
    the share of the build done (downloads and clean-up count as a few per cent). Until apt has named
    the second stage's count, ``expected_rest`` (what the last build of this image installed after
    the essential ones, else a guess from the recipe) stands in for it.
    """

    expected_rest: int = 0
    announced: list[int] = field(default_factory=list)
    steps: int = 0              # packages unpacked + packages set up
    finished: bool = False
    doing: str = ""             # what dpkg does now: "unpacking X", "setting up X" (for a heartbeat)
    shown: float = 0.0          # the highest fraction said so far: a guess corrected never goes back

    def feed(self, line: str) -> str | None:
        """Count ``line``; return what an operator wants to see of it: mmdebstrap's phases (``I:``),
        warnings and errors, and each package as dpkg sets it up; None for the rest."""
        if m := _NEWLY_INSTALLED.search(line):
            self.announced.append(int(m[1]))
            return None
        if line.startswith("Unpacking "):
            self.steps += 1
            self.doing = f"unpacking {line.split()[1]}"
            return None
        if m := _SETTING_UP.match(line):
            self.steps += 1
            self.doing = f"setting up {m[1]}"
            return self.doing
        if line[:3] in ("I: ", "W: ", "E: "):
            if line.startswith("I: success in"):
                self.finished = True
            return line
        return None

    def fraction(self) -> float:
        if self.finished:
            return 1.0
        if self.announced:
            packages = self.announced[0] + (self.announced[1] if len(self.announced) > 1 else self.expected_rest)
            self.shown = max(self.shown, min(0.98, 0.03 + 0.95 * self.steps / (2 * max(packages, 1))))
        return self.shown

    def seconds_left(self, elapsed: float, last_seconds: float | None = None) -> float | None:
        """What is left, from the pace so far once it says something (a tenth done), before that
        from the last build of this image; None when nothing is known."""
        done = self.fraction()
        if done >= 0.1:
            return elapsed * (1 - done) / done
        if last_seconds:
            return max(last_seconds - elapsed, 0.0)
        return None


def progress_line(line: str) -> str | None:
    """What an operator wants to see of one line of mmdebstrap's output (see :meth:`BuildMeter.feed`)."""
    return BuildMeter().feed(line)


def describe_left(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 90:
        return "about a minute left"
    return f"about {round(seconds / 60)} min left"


# --- the edge: progress beside the store ------------------------------------------------------------

def _progress_path(store: Path, recipe: Recipe) -> Path:
    return store / f".{recipe.folder_name}.progress.json"


def build_in_progress(recipe: Recipe, store: Path) -> dict | None:
    """``{"percent", "seconds_left", "phase", "started_at", "updated_at"}`` of the build of ``recipe``
    running now in ``store``, else None. A build holds the image's lock while it runs: a progress file
    whose lock is free is what a killed build left."""
    try:
        with open(store / f".{recipe.folder_name}.lock") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held: a build runs
            else:
                return None
        return json.loads(_progress_path(store, recipe).read_text())
    except (OSError, ValueError):
        return None


def _last_build(recipe: Recipe, store: Path) -> Image | None:
    """The newest stored image of the same distro and architecture (any recipe): how long it took."""
    same = [i for i in stored_images(store) if i.name == recipe.name]
    return max(same, key=lambda i: i.built_at, default=None)


def _installed_count(root: Path) -> int:
    try:
        status = (root / "var/lib/dpkg/status").read_text(errors="replace")
    except OSError:
        return 0
    return status.count("\nStatus: install ok installed")


def _keep_apt_cache(used: Path, cache: Path) -> None:
    """Move the ``.deb`` files a build had (``used``) into ``cache``, dropping the cache's other
    versions of the same packages: the cache holds what the latest build of each image needed."""
    if not used.is_dir():
        return
    cache.mkdir(parents=True, exist_ok=True)
    debs = [p for p in used.iterdir() if p.suffix == ".deb" and p.is_file()]
    kept = {p.name.split("_", 1)[0] + "_" + p.name.rsplit("_", 1)[-1]: p.name for p in debs}
    for old in cache.iterdir():
        key = old.name.split("_", 1)[0] + "_" + old.name.rsplit("_", 1)[-1]
        if old.suffix == ".deb" and kept.get(key) not in (None, old.name):
            old.unlink(missing_ok=True)
    for deb in debs:
        os.replace(deb, cache / deb.name)


# An image with Rust's toolchain (LLVM) configured under qemu on a busy machine took more than an hour here
IMAGE_TIMEOUT = 3 * 3600


def build_image(recipe: Recipe, store: Path, *, mirror: str | None = None,
                progress: Progress = _quiet, timeout: float = IMAGE_TIMEOUT) -> Image:
    """Build the image of ``recipe`` into ``store`` (or find it built by someone we waited for)."""
    mirror = mirror or os.environ.get("WHEELWRIGHT_DEBIAN_MIRROR") or DEFAULT_MIRROR
    if shutil.which("mmdebstrap") is None:
        raise ConfigError("mmdebstrap is not installed: as root, `apt-get install mmdebstrap`")
    ensure_emulation(recipe.arch)
    store.mkdir(parents=True, exist_ok=True)
    with open(store / f".{recipe.folder_name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another build of image {recipe.folder_name}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if (found := find_image(recipe, store)) is not None:
            return found
        try:
            return _build_locked(recipe, store, mirror, progress, timeout)
        finally:
            _progress_path(store, recipe).unlink(missing_ok=True)


def _build_locked(recipe: Recipe, store: Path, mirror: str, progress: Progress, timeout: float) -> Image:
    final = store / recipe.folder_name
    work = store / f".tmp-{recipe.folder_name}-{os.getpid()}"
    _remove_image_tree(work)
    if final.exists():  # a folder without image.json: an image whose build was cut short
        if left := _remove_image_tree(final):
            raise WheelwrightError(f"cannot remove the unfinished image {final}: {left[0]}")
    work.mkdir(mode=0o755)
    started, started_at = time.monotonic(), time.time()
    apt_cache = store / ".apt-cache" / recipe.name
    apt_cache.mkdir(parents=True, exist_ok=True)
    argv = mmdebstrap_command(recipe, work / "root", mirror, apt_cache=apt_cache,
                              apt_cache_out=work / "apt-archives")
    last = _last_build(recipe, store)
    meter = BuildMeter(expected_rest=last.later_packages if last and last.later_packages
                       else 6 * len(recipe.packages))
    kind = "emulated" if needs_emulation(recipe.arch) else "native"
    progress(f"building image {recipe.folder_name} ({len(recipe.packages)} packages, {kind} "
             f"{recipe.arch}) from {mirror}" + (f"; the last build took {_clock(last.seconds)}" if last else ""))
    tail: list[str] = []
    written = said = 0.0
    proc = None
    try:
        proc = subprocess.Popen(in_own_mounts(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent,
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"})
        deadline = started + timeout
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
        while True:
            # dpkg can be silent for minutes (unpacking under qemu; output held in a pipe's buffer):
            # the progress file, the heartbeat and the deadline go on with the clock, not the lines
            try:
                line = lines.get(timeout=min(2, HEARTBEAT))
            except queue.Empty:
                line = ""
            if line is None:
                break
            tail = (tail + [line])[-20:] if line else tail
            shown = meter.feed(line) if line else None
            elapsed = time.monotonic() - started
            left = meter.seconds_left(elapsed, last.seconds if last else None)
            if shown is None and elapsed - said >= HEARTBEAT:
                shown = f"{meter.doing} (still)" if meter.doing else "working"
            if shown is not None:
                said = elapsed
                progress(f"[{_clock(elapsed)}] {round(100 * meter.fraction()):2d}% {shown}"
                         + (f" ({describe_left(left)})" if left is not None else ""))
            if elapsed - written >= 2:
                written = elapsed
                _write_atomically(_progress_path(store, recipe), json.dumps({
                    "image": recipe.folder_name, "percent": round(100 * meter.fraction()),
                    "seconds_left": round(left) if left is not None else None,
                    "started_at": started_at, "updated_at": time.time()}))
            if time.monotonic() > deadline:
                _stop(proc)
                raise WheelwrightError(f"building image {recipe.folder_name} took more than "
                                       f"{timeout / 60:.0f} min: stopped")
        status = proc.wait()
        if status != 0:
            raise WheelwrightError(f"mmdebstrap failed (status {status}) building {recipe.folder_name}:"
                                   f"\n  " + "\n  ".join(tail[-8:]))
        python = _python_version(work / "root", recipe)
        _keep_apt_cache(work / "apt-archives", apt_cache)
        remove_tree(work / "apt-archives")
        seconds = round(time.monotonic() - started, 1)
        size = _disk_usage(work)
        record = {"recipe": asdict(recipe), "digest": recipe.digest, "built_at": time.time(),
                  "seconds": seconds, "size": size, "python": python, "mirror": mirror,
                  "packages": _installed_count(work / "root"), "stages": meter.announced,
                  "command": argv[:-2] + ["ROOT", mirror]}
        _write_atomically(work / "image.json", json.dumps(record, indent=1) + "\n")
        # dpkg wrote without fsync (SPEED_OPTIONS): the image is on disk before it takes its name
        subprocess.run(["sync", "--file-system", str(work)], check=True)
        os.rename(work, final)
    except BaseException:
        if proc is not None and proc.poll() is None:
            _stop(proc)  # interrupted: mmdebstrap is told to clean up first
        _remove_image_tree(work)
        raise
    progress(f"[{_clock(seconds)}] image {recipe.folder_name} built: {size / 2**20:.0f} MiB, "
             f"Python {python}")
    image = read_image(final)
    assert image is not None
    return image


def in_own_mounts(argv: list[str]) -> list[str]:
    """``argv`` run in a mount namespace of its own, when we are root (mmdebstrap's root mode).

    mmdebstrap mounts /proc, /sys, a devpts and a *bind of this machine's /dev/shm* inside the root it
    builds, and unmounts them when it ends well. Killed, it left them behind, and removing the
    half-built tree then emptied this machine's /dev/shm (every PostgreSQL server here lost its
    shared memory). In a namespace of its own every mount goes away with it, however it ends; the
    namespace's first process ends mmdebstrap when it is itself ended (``--kill-child``).
    """
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return argv  # mmdebstrap's unshare mode makes a namespace of its own
    return ["unshare", "--mount", "--propagation", "private", "--fork", "--kill-child=SIGTERM", *argv]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started us dies (a killed worker
    must not leave an image build running)."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM


def _stop(proc: subprocess.Popen, grace: float = 30) -> None:
    """Stop an image build: SIGTERM lets mmdebstrap clean up, then whatever is left of it is killed."""
    import psutil
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    if proc.poll() is None:
        proc.kill()
    for process in family:  # those that outlived it (a dpkg, a qemu)
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def _remove_image_tree(folder: Path) -> list:
    """Remove an image's tree (half-built, or an old one), first unmounting whatever an older, killed
    build left mounted below it: :func:`~wheelwright.builds.cleanup.remove_tree` never crosses a mount,
    and what is mounted there may be this machine's /dev/shm. What could not be removed is returned."""
    _unmount_under(folder)
    return remove_tree(folder)


def _unmount_under(folder: Path) -> None:
    """Lazily unmount every file system mounted below ``folder``, deepest first."""
    prefix = str(folder.absolute()) + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = [line.split()[4].encode().decode("unicode_escape") for line in lines]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


def _read_lines(stream, lines: "queue.Queue[str | None]") -> None:
    for line in stream:
        lines.put(line.rstrip())
    lines.put(None)


def _python_version(root: Path, recipe: Recipe) -> str:
    """The version of the image's python3, read from its files (no need to run it)."""
    expected = DISTRO_PYTHON.get(recipe.distro)
    candidates = sorted((root / "usr/bin").glob("python3.[0-9]*"))
    versions = [p.name[len("python"):] for p in candidates if re.fullmatch(r"python3\.\d+", p.name)]
    if not versions:
        raise WheelwrightError(f"image {recipe.folder_name} has no python3 interpreter")
    if expected and expected not in versions:
        raise WheelwrightError(f"image {recipe.folder_name} has Python {', '.join(versions)}, "
                               f"not {expected}")
    return expected or versions[-1]


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60):d}:{int(seconds % 60):02d}"


# --- list and update --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageRow:
    """One line of ``image list``: an image built or wanted."""

    name: str
    digest: str
    targets: tuple[str, ...]   # targets whose current recipe it is
    image: Image | None        # None: wanted by ``targets`` but not built
    state: str                 # ready | missing | building | old | stale
    building: dict | None = None   # a build of it running now: percent, seconds_left (build_in_progress)

    def as_dict(self, now: float | None = None) -> dict:
        return {"name": self.name, "digest": self.digest, "targets": list(self.targets),
                "state": self.state, "path": str(self.image.path) if self.image else None,
                "size": self.image.size if self.image else None,
                "age_days": round(self.image.age_days(now), 2) if self.image else None,
                "python": self.image.python if self.image else None, "building": self.building}


def image_rows(targets, store: Path, *, max_age_days: float = MAX_AGE_DAYS,
               now: float | None = None) -> list[ImageRow]:
    """Every image ``targets`` want and every image the store holds, with its state.

    ``stale``: built from a recipe no target has any more (superseded); ``old``: current, but older
    than ``max_age_days``; ``missing``: wanted, not built; ``building``: wanted, being built now;
    ``ready`` otherwise.
    """
    wanted: dict[str, list[str]] = {}
    recipes: dict[str, Recipe] = {}
    for target in targets:
        if not getattr(target, "image", True):
            continue
        recipe = recipe_for(target)
        wanted.setdefault(recipe.folder_name, []).append(target.name)
        recipes[recipe.folder_name] = recipe
    built = {image.path.name: image for image in stored_images(store)}
    rows = []
    for folder in sorted(set(wanted) | set(built)):
        image = built.get(folder)
        users = tuple(wanted.get(folder, ()))
        if image is None:
            recipe = recipes[folder]
            building = build_in_progress(recipe, store)
            rows.append(ImageRow(recipe.name, recipe.digest, users, None,
                                 "building" if building else "missing", building))
            continue
        if not users:
            state = "stale"
        elif image.age_days(now) > max_age_days:
            state = "old"
        else:
            state = "ready"
        rows.append(ImageRow(image.name, image.digest, users, image, state))
    return rows


def update_images(targets, store: Path, *, max_age_days: float = MAX_AGE_DAYS, prune: bool = True,
                  progress: Progress = _quiet) -> dict[str, list[str]]:
    """Build what is missing or old, remove what is stale; ``{"built": [...], "removed": [...]}``."""
    done = {"built": [], "removed": []}
    for row in image_rows(targets, store, max_age_days=max_age_days):
        if row.state in ("missing", "building", "old"):
            target = next(t for t in targets if t.name == row.targets[0])
            recipe = recipe_for(target)
            if row.image is not None:  # old: build afresh beside it, swap, then drop the old one
                aside = store / f".old-{row.image.path.name}-{os.getpid()}"
                os.rename(row.image.path, aside)
                try:
                    build_image(recipe, store, progress=progress)
                except BaseException:
                    os.rename(aside, row.image.path)
                    raise
                _remove_image_tree(aside)
            else:
                build_image(recipe, store, progress=progress)
            done["built"].append(recipe.folder_name)
        elif row.state == "stale" and prune:
            progress(f"removing stale image {row.image.path.name}")
            remove_image(row.image)
            done["removed"].append(row.image.path.name)
    return done


def remove_image(image: Image) -> None:
    """Remove ``image`` from the store: renamed away first, so no reader sees half of it."""
    aside = image.path.with_name(f".rm-{image.path.name}-{os.getpid()}")
    os.rename(image.path, aside)
    _remove_image_tree(aside)


# --- running something in an image (operators and tests; builds go through the sandbox) -------------

def run_in_image(root: Path, argv: list[str], *, binds: Iterable[tuple[Path, str]] = (),
                 network: bool = False, cwd: str = "/", env: dict | None = None,
                 timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``argv`` inside the image ``root`` (read-only) with bubblewrap: what a Pi user would see.

    ``binds`` are (host folder, path inside) pairs mounted writable; ``network`` shares the host's
    network (to reach an index on loopback, say). Not the build sandbox: no limits, for trusted use.
    """
    if shutil.which("bwrap") is None:
        raise ConfigError("bubblewrap is not installed: as root, `apt-get install bubblewrap`")
    command = ["bwrap", "--ro-bind", str(root), "/", "--proc", "/proc", "--dev", "/dev",
               "--tmpfs", "/tmp", "--tmpfs", "/root", "--unshare-all", "--die-with-parent",
               "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
               "--setenv", "HOME", "/tmp", "--setenv", "LC_ALL", "C.UTF-8"]
    if network:
        command += ["--share-net"]
    for key, value in (env or {}).items():
        command += ["--setenv", key, value]
    for host, inside in binds:
        command += ["--bind", str(host), inside]
    command += ["--chdir", cwd, *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, errors="replace")
