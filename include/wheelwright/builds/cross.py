"""The compiler running natively while Python and the build backend run emulated.

Under qemu-user a Pi target's build runs every instruction of its ``gcc`` through the emulator, and a
C extension's compilation is most of its time. Debian ships cross compilers for its ARM
architectures built for the worker's own (``gcc-arm-linux-gnueabihf``, ``gcc-aarch64-linux-gnu`` for
amd64), of the same GCC release as the image's own compiler. This room makes one of them available
inside the target's sandbox:

- a **toolchain tree** per (distro, target architecture, worker architecture): the cross ``gcc``,
  ``g++``, binutils and ``ccache`` with the worker architecture's own C library and libraries,
  extracted from Debian's archive with ``mmdebstrap --variant=extract`` (nothing is configured, no
  maintainer script runs), kept beside the images in ``<images>/toolchains/`` and renamed into place
  when complete, like an image. The cross C library of the target is taken out of it: the compiler
  must compile and link against **the image's own** headers and libraries (its ``/usr/include``,
  ``/usr/include/<triplet>``, ``/usr/lib/<triplet>``), the sysroot a native build in the image uses;
  only GCC's own runtime (libgcc, libstdc++, their headers) stays.
- **inside the sandbox** the tree is bound read-only at :data:`MOUNT`, and the worker architecture's
  program loader at its own path (``/lib64/ld-linux-x86-64.so.2``, which no ARM image uses); small
  wrappers in ``<MOUNT>/bin`` (first on the build's ``PATH``) run the cross tools under the names a
  build calls (``gcc``, ``cc``, ``arm-linux-gnueabihf-gcc`` that Debian's Python names in its
  sysconfig, ``g++``, ``c++``, ``ar``, ``ranlib``, ``strip``...) with the tree's libraries on their
  own ``LD_LIBRARY_PATH`` only; nothing else in the build sees them.
- **compiler caching**: when the build has a compiler cache (:func:`ccache_folder`, one per target
  and package, writable by that package's builds only, so one package's build cannot poison another's
  objects), the wrappers run the compiler through the tree's native ``ccache``.

What the compiler produces is the same as the image's own compiler would: same GCC release, same
configured defaults (armhf: ARMv7-A, VFPv3-D16, Thumb-2, hard float), same glibc headers and symbol
versions, linked against the image's libraries; programs a configure step compiles and runs are ARM
programs and run under qemu like everything else (tests/test_cross.py holds the wheels to it).
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
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from wheelwright.builds import images
from wheelwright.errors import ConfigError, WheelwrightError

log = logging.getLogger(__name__)

MOUNT = "/opt/wheelwright/cross"
CCACHE_MOUNT = "/opt/wheelwright/ccache"
TOOLCHAIN_FORMAT = 1
# Debian architecture of the image -> the GNU triplet of its compilers
TRIPLETS = {"armhf": "arm-linux-gnueabihf", "arm64": "aarch64-linux-gnu", "armel": "arm-linux-gnueabi"}
# the worker's machine -> (its Debian architecture, its program loader, its multiarch folder)
HOSTS = {"x86_64": ("amd64", "/lib64/ld-linux-x86-64.so.2", "x86_64-linux-gnu")}
# GCC's own runtime, kept in the tree; the rest of <tree>/usr/<triplet>/lib is the cross C library,
# which the image's own replaces
_GCC_RUNTIME = re.compile(r"lib(gcc_s|stdc\+\+|supc\+\+|atomic|gomp|asan|ubsan|lsan|tsan|hwasan|itm|"
                          r"quadmath|gfortran|objc|gphobos|gdruntime|go|cc1)[.-]")
# names a build calls its tools by -> the tool of the tree (gcc and g++ with their GCC version)
C_NAMES = ("gcc", "cc")
CXX_NAMES = ("g++", "c++")
BINUTILS = ("ar", "ranlib", "strip", "nm", "objcopy", "objdump", "readelf", "as", "ld")
CCACHE_SIZE = "1G"


class ToolchainMissing(WheelwrightError):
    """No cross toolchain can be had here (unknown worker architecture, image target, or build failed)."""


@dataclass(frozen=True)
class ToolchainRecipe:
    distro: str
    arch: str                  # the image's (target's) Debian architecture
    host_arch: str             # the worker's Debian architecture

    @property
    def triplet(self) -> str:
        return TRIPLETS[self.arch]

    @property
    def packages(self) -> tuple[str, ...]:
        return (f"gcc-{self.triplet}", f"g++-{self.triplet}", "ccache")

    @property
    def digest(self) -> str:
        text = json.dumps({"format": TOOLCHAIN_FORMAT, "distro": self.distro, "arch": self.arch,
                           "host": self.host_arch, "packages": list(self.packages),
                           "wrappers": wrapper_text(self, "gcc-0", "x")}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def folder_name(self) -> str:
        return f"{self.distro}-{self.host_arch}-cross-{self.arch}-{self.digest}"


@dataclass(frozen=True)
class Toolchain:
    """A built tree: bind ``root`` at :data:`MOUNT` and ``loader`` at ``loader_inside``."""

    root: Path
    loader: Path
    loader_inside: str
    recipe: ToolchainRecipe

    @property
    def bin(self) -> str:
        return f"{MOUNT}/bin"


# --- pure --------------------------------------------------------------------------------------------

def toolchain_recipe(distro: str, arch: str, machine: str | None = None) -> ToolchainRecipe | None:
    """The toolchain an image of ``distro``/``arch`` gets on this worker, or None when its compiler
    runs natively anyway (an ARM worker) or no cross compiler is known for the pair."""
    machine = machine or platform.machine()
    if not images.needs_emulation(arch, machine) or machine not in HOSTS or arch not in TRIPLETS:
        return None
    return ToolchainRecipe(distro, arch, HOSTS[machine][0])


def wrapper_text(recipe: ToolchainRecipe, tool: str, multiarch: str, *, include: bool = False) -> str:
    """A wrapper running the tree's ``tool`` (a file of ``<MOUNT>/usr/bin``) with the tree's libraries,
    through ccache when the build has a cache, with the image's multiarch headers for compilers."""
    libs = f"{MOUNT}/lib/{multiarch}:{MOUNT}/usr/lib/{multiarch}"
    ccache = f"${{CCACHE_DIR:+{MOUNT}/usr/bin/ccache}} " if include else ""
    flags = f" -isystem /usr/include/{recipe.triplet}" if include else ""
    return (f"#!/bin/sh\n# wheelwright: the native cross {tool} (see wheelwright.builds.cross)\n"
            f"LD_LIBRARY_PATH={libs} exec {ccache}{MOUNT}/usr/bin/{tool}{flags} \"$@\"\n")


def ccache_environment() -> dict[str, str]:
    """What a build with a compiler cache is given (the cache itself is bound at CCACHE_MOUNT)."""
    return {"CCACHE_DIR": CCACHE_MOUNT, "CCACHE_BASEDIR": "/build", "CCACHE_NOHASHDIR": "1",
            "CCACHE_MAXSIZE": CCACHE_SIZE, "CCACHE_UMASK": "022"}


# --- the edge: the tree ------------------------------------------------------------------------------

def toolchain_store(image_store: Path) -> Path:
    return image_store / "toolchains"


def find_toolchain(recipe: ToolchainRecipe, store: Path) -> Toolchain | None:
    folder = store / recipe.folder_name
    if not (folder / "toolchain.json").is_file():
        return None
    _, loader_inside, multiarch = HOSTS[platform.machine()] if platform.machine() in HOSTS else (None, None, None)
    if loader_inside is None:
        return None
    # bookworm's libc6 ships it under /lib, trixie's (merged /usr) under /usr/lib
    for where in ("lib", "usr/lib"):
        loader = folder / "root" / where / multiarch / Path(loader_inside).name
        if loader.is_file():
            return Toolchain(folder / "root", loader, loader_inside, recipe)
    return None


def toolchain_for(distro: str, arch: str, image_store: Path, *, mirror: str | None = None,
                  progress=lambda line: None) -> Toolchain | None:
    """The toolchain of an image of ``distro``/``arch`` on this worker, built here on first use;
    None when its compiler runs natively anyway or none is known."""
    recipe = toolchain_recipe(distro, arch)
    if recipe is None:
        return None
    store = toolchain_store(image_store)
    found = find_toolchain(recipe, store)
    if found is not None:
        return found
    return build_toolchain(recipe, store, mirror=mirror, progress=progress)


def build_toolchain(recipe: ToolchainRecipe, store: Path, *, mirror: str | None = None,
                    progress=lambda line: None, timeout: float = 1800) -> Toolchain:
    mirror = mirror or os.environ.get("WHEELWRIGHT_DEBIAN_MIRROR") or images.DEFAULT_MIRROR
    if shutil.which("mmdebstrap") is None:
        raise ConfigError("mmdebstrap is not installed: as root, `apt-get install mmdebstrap`")
    store.mkdir(parents=True, exist_ok=True)
    with open(store / f".{recipe.folder_name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (found := find_toolchain(recipe, store)) is not None:
            return found
        final = store / recipe.folder_name
        work = store / f".tmp-{recipe.folder_name}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        work.mkdir(mode=0o755)
        started = time.monotonic()
        argv = ["mmdebstrap", "--verbose", "--variant=extract", f"--arch={recipe.host_arch}",
                "--format=directory", "--components=main", f"--include={','.join(recipe.packages)}",
                recipe.distro, str(work / "root"), mirror]
        progress(f"building the {recipe.triplet} toolchain {recipe.folder_name} from {mirror}")
        try:
            done = subprocess.run(images.in_own_mounts(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace", stdin=subprocess.DEVNULL, timeout=timeout,
                                  env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"})
            if done.returncode != 0:
                raise ToolchainMissing(f"mmdebstrap failed (status {done.returncode}) building "
                                       f"{recipe.folder_name}: {done.stdout.strip().splitlines()[-3:]}")
            _shape(recipe, work / "root")
            images._write_atomically(work / "toolchain.json", json.dumps({
                "recipe": {"distro": recipe.distro, "arch": recipe.arch, "host_arch": recipe.host_arch,
                           "packages": list(recipe.packages)},
                "built_at": time.time(), "seconds": round(time.monotonic() - started, 1),
                "mirror": mirror}, indent=1) + "\n")
            os.rename(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        progress(f"toolchain {recipe.folder_name} built in {time.monotonic() - started:.0f} s")
    found = find_toolchain(recipe, store)
    assert found is not None
    return found


def _shape(recipe: ToolchainRecipe, root: Path) -> None:
    """Take the target's cross C library out of the tree, and write the wrappers."""
    triplet = recipe.triplet
    multiarch = HOSTS[platform.machine()][2]
    cross = root / "usr" / triplet
    for entry in (cross / "include").iterdir() if (cross / "include").is_dir() else ():
        if entry.name != "c++":  # libstdc++'s headers are GCC's own; the rest is the C library's
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for entry in (cross / "lib").iterdir() if (cross / "lib").is_dir() else ():
        if not _GCC_RUNTIME.match(entry.name):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    gcc = _versioned(root, f"{triplet}-gcc")
    gxx = _versioned(root, f"{triplet}-g++")
    wrappers = root / "bin"
    wrappers.mkdir()
    named = {**{n: (gcc, True) for n in (*C_NAMES, f"{triplet}-gcc")},
             **{n: (gxx, True) for n in (*CXX_NAMES, f"{triplet}-g++")},
             **{n: (f"{triplet}-{n}", False) for n in BINUTILS},
             **{f"{triplet}-{n}": (f"{triplet}-{n}", False) for n in BINUTILS}}
    for name, (tool, compiler) in named.items():
        path = wrappers / name
        path.write_text(wrapper_text(recipe, tool, multiarch, include=compiler))
        path.chmod(0o755)


def _versioned(root: Path, name: str) -> str:
    """``arm-linux-gnueabihf-gcc-12`` for ``arm-linux-gnueabihf-gcc``: the file the link names."""
    link = root / "usr" / "bin" / name
    target = os.readlink(link) if link.is_symlink() else name
    return Path(target).name


# --- per-package compiler caches --------------------------------------------------------------------

def ccache_folder(home: Path, system_name: str, package: str, identity) -> Path:
    """The compiler cache of ``package``'s builds for one system, made for the build user: only
    that package's builds ever see it."""
    folder = home / "ccache" / system_name / canonicalize_name(package)
    folder.mkdir(parents=True, exist_ok=True)
    if identity is not None:
        os.chown(folder, identity[1], identity[2])
    os.utime(folder)
    return folder
