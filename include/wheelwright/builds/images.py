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
  half-built image is never seen; one build per image at a time (a lock file), progress on the way;
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
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from wheelwright import package_data
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
                     float(data["seconds"]), str(data["python"]), recipe)
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


def mmdebstrap_command(recipe: Recipe, root: Path, mirror: str = DEFAULT_MIRROR) -> list[str]:
    # --verbose: apt's and dpkg's own lines instead of progress bars, so progress can be shown
    return ["mmdebstrap", "--verbose", f"--arch={recipe.arch}", *MMDEBSTRAP_OPTIONS,
            f"--include={','.join(recipe.packages)}", recipe.distro, str(root), mirror]


_SETTING_UP = re.compile(r"Setting up ([^ ]+) \(")


def progress_line(line: str) -> str | None:
    """What an operator wants to see of one line of mmdebstrap's output: its phases (``I:``),
    warnings and errors, and each package as dpkg sets it up; None for the rest."""
    if line[:3] in ("I: ", "W: ", "E: "):
        return line
    if m := _SETTING_UP.match(line):
        return f"setting up {m[1]}"
    return None


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
        return _build_locked(recipe, store, mirror, progress, timeout)


def _build_locked(recipe: Recipe, store: Path, mirror: str, progress: Progress, timeout: float) -> Image:
    final = store / recipe.folder_name
    work = store / f".tmp-{recipe.folder_name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    if final.exists():  # a folder without image.json: an image whose build was cut short
        shutil.rmtree(final)
    work.mkdir(mode=0o755)
    started = time.monotonic()
    argv = mmdebstrap_command(recipe, work / "root", mirror)
    progress(f"building image {recipe.folder_name} ({len(recipe.packages)} packages, "
             f"{'emulated' if needs_emulation(recipe.arch) else 'native'} {recipe.arch}) from {mirror}")
    tail: list[str] = []
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", stdin=subprocess.DEVNULL,
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"})
        deadline = started + timeout
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-20:]
            if (shown := progress_line(line)) is not None:
                progress(f"[{_clock(time.monotonic() - started)}] {shown}")
            if time.monotonic() > deadline:
                proc.kill()
                break
        status = proc.wait()
        if status != 0:
            raise WheelwrightError(f"mmdebstrap failed (status {status}) building {recipe.folder_name}:"
                                   f"\n  " + "\n  ".join(tail[-8:]))
        python = _python_version(work / "root", recipe)
        seconds = round(time.monotonic() - started, 1)
        size = _disk_usage(work)
        record = {"recipe": asdict(recipe), "digest": recipe.digest, "built_at": time.time(),
                  "seconds": seconds, "size": size, "python": python, "mirror": mirror,
                  "command": argv[:-2] + ["ROOT", mirror]}
        _write_atomically(work / "image.json", json.dumps(record, indent=1) + "\n")
        os.rename(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    progress(f"[{_clock(seconds)}] image {recipe.folder_name} built: {size / 2**20:.0f} MiB, "
             f"Python {python}")
    image = read_image(final)
    assert image is not None
    return image


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
    state: str                 # ready | missing | old | stale

    def as_dict(self, now: float | None = None) -> dict:
        return {"name": self.name, "digest": self.digest, "targets": list(self.targets),
                "state": self.state, "path": str(self.image.path) if self.image else None,
                "size": self.image.size if self.image else None,
                "age_days": round(self.image.age_days(now), 2) if self.image else None,
                "python": self.image.python if self.image else None}


def image_rows(targets, store: Path, *, max_age_days: float = MAX_AGE_DAYS,
               now: float | None = None) -> list[ImageRow]:
    """Every image ``targets`` want and every image the store holds, with its state.

    ``stale``: built from a recipe no target has any more (superseded); ``old``: current, but older
    than ``max_age_days``; ``missing``: wanted, not built; ``ready`` otherwise.
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
            rows.append(ImageRow(recipe.name, recipe.digest, users, None, "missing"))
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
        if row.state in ("missing", "old"):
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
                shutil.rmtree(aside, ignore_errors=True)
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
    shutil.rmtree(aside, ignore_errors=True)


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
