"""Wheel analysis: what a freshly built wheel is, and whether we may publish it.

``setup.py`` is arbitrary code, so a wheel says whatever its build made it say. piwheels learnt this
from GSAS_II_WONDER: three packages whose ``setup.py`` chose the name by platform, so building
``GSAS_II_WONDER_mac`` made a wheel of ``GSAS_II_WONDER_linux``. This room owns believing nothing a
wheel says until it is checked: its file name must parse (``packaging.utils.parse_wheel_filename``),
name no directory, and name the package and version we built; its ``METADATA`` must exist and agree.
What it learns is what the index publishes: size and sha256, the tags, ``Requires-Python`` and
``Requires-Dist``, the ``METADATA`` bytes themselves (served as ``<wheel>.metadata``, PEP 658), and the
apt packages its compiled code needs at run time, so a Pi user learns what to ``apt install``.

The same checks run twice, for two different reasons. On the worker (:func:`analyse_wheel`) they stop a
build that went wrong before its files travel. On the index host (:func:`check_received_wheel`) they
are the ones that count, because a worker is a machine anybody's ``setup.py`` ran on: there the wheel is
read again from the received file, safely (member names without paths, a cap on the number of members
and on their declared uncompressed size, so a zip bomb is refused unread), its tags must fit the
target it was built for (:func:`check_target_tags`), and its ``METADATA`` (Name, Version) must agree.

The apt packages come from the ELF headers, never from running anything: every ELF member's ``DT_NEEDED``
libraries (pyelftools), resolved as the dynamic loader would (the object's RPATH/RUNPATH, the image's
``ld.so.conf``, the multiarch folders of the object's machine) against the root filesystem of the
target's image (``/`` for a target built on the worker's own system), then the Debian package owning
each file according to that image's dpkg database (``var/lib/dpkg/info/*.list``). ``ldd`` cannot do
this: it runs the loader on a hostile file, and under qemu it cannot trace a foreign one at all ("not
a dynamic executable"). Libraries the wheel bundles itself (auditwheel's ``.libs``) are its own;
libraries found but owned by no package, and libraries not found, are recorded as ``unowned``.
Subtracting what Raspberry Pi OS Lite preinstalls happens where pages are written
(:func:`wheelwright.publish.reports.needed_apt`).

Parsing is pure functions over bytes and text; the image's files are read at the edge.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from wheelwright.errors import WheelwrightError

log = logging.getLogger(__name__)

ELF_MAGIC = b"\x7fELF"
_CPYTHON_ABI = re.compile(r"cp(\d)(\d+)[a-z]*\Z")

# What the index host reads of a received wheel, at most: a wheel past these is refused unread.
MAX_MEMBERS = 100_000               # files in one wheel (numpy: ~1,500; the biggest known: ~30,000)
MAX_UNCOMPRESSED = 4 << 30          # bytes, all members together, as the zip declares them
MAX_RATIO = 1000                    # uncompressed / compressed for one member past MAX_RATIO_FROM
MAX_RATIO_FROM = 16 << 20           # bytes: below this a high ratio is harmless (a file of zeros)
MAX_METADATA = 2 << 20              # bytes of METADATA
MAX_BUILD_NUMBER = 999_999          # a PEP 427 build number a wheel name may carry
MAX_ELF_BYTES = 1 << 30  # a compiled member larger than this is not read (named unowned instead)
# (ELF machine, class) -> the Debian multiarch triplet whose folders hold its libraries
MULTIARCH = {("EM_ARM", 32): "arm-linux-gnueabihf", ("EM_AARCH64", 64): "aarch64-linux-gnu",
             ("EM_X86_64", 64): "x86_64-linux-gnu", ("EM_386", 32): "i386-linux-gnu",
             ("EM_RISCV", 64): "riscv64-linux-gnu", ("EM_PPC64", 64): "powerpc64le-linux-gnu",
             ("EM_S390", 64): "s390x-linux-gnu"}


class WheelRefused(WheelwrightError):
    """A built wheel that must not be published; the message says why, in one line."""


@dataclass(frozen=True)
class FileInfo:
    """A file as the builder reported it: what the receiver checks before it publishes."""

    filename: str
    sha256: str
    size: int


@dataclass(frozen=True)
class WheelInfo:
    filename: str
    sha256: str
    size: int
    python_tag: str
    abi_tag: str
    platform_tag: str
    requires_python: str | None
    requires_dist: tuple[str, ...]
    metadata: FileInfo                            # <wheel>.metadata, PEP 658
    dependencies: tuple[tuple[str, str], ...] = field(default=())  # (tool, dependency), sorted
    glibc_floor: str | None = None                # the newest GLIBC_x.y its compiled code needs
    manylinux: str | None = None                  # the manylinux policy it meets (builds/wheel_abi.py)

    @property
    def pure(self) -> bool:
        return self.abi_tag == "none" and self.platform_tag == "any"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["requires_dist"] = list(self.requires_dist)
        d["dependencies"] = [list(dep) for dep in self.dependencies]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "WheelInfo":
        return cls(**{**d, "requires_dist": tuple(d["requires_dist"]),
                      "metadata": FileInfo(**d["metadata"]),
                      "dependencies": tuple(tuple(dep) for dep in d["dependencies"])})


# --- pure: names, metadata, tool output ------------------------------------------------------------

def check_plain_filename(filename: str) -> str:
    """``filename`` if it names a file and nothing else: no directory part, no tricks."""
    if (not isinstance(filename, str) or not filename or filename in (".", "..")
            or "/" in filename or "\\" in filename or "\x00" in filename
            or filename.startswith(".") or len(filename) > 255):
        raise WheelRefused(f"refused file name {filename!r}: not a plain file name")
    return filename


def check_wheel_filename(filename: str, package: str, version: str) -> tuple[str, str, str]:
    """The ``(python, abi, platform)`` tags of a wheel named ``filename`` built from ``package==version``.

    Refuses names that are not wheel names, that carry a path, that name another package (the
    GSAS_II_WONDER case) or another version.
    """
    check_plain_filename(filename)
    try:
        name, wheel_version, _, _ = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise WheelRefused(f"refused {filename}: not a valid wheel file name ({exc})") from exc
    if name != canonicalize_name(package):
        raise WheelRefused(f"refused {filename}: it is a wheel of {name}, not of {canonicalize_name(package)} "
                           "(its setup.py names another package)")
    if not _same_version(str(wheel_version), version):
        raise WheelRefused(f"refused {filename}: it is version {wheel_version}, not {version}")
    python_tag, abi_tag, platform_tag = filename[:-len(".whl")].split("-")[-3:]
    return python_tag, abi_tag, platform_tag


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def parse_metadata(data: bytes) -> tuple[str | None, str | None, tuple[str, ...]]:
    """``(Name, Requires-Python, Requires-Dist...)`` of a core metadata file."""
    message = BytesParser(policy=compat32).parsebytes(data, headersonly=True)

    def text(value):
        return None if value is None else str(value).strip()

    requires_dist = tuple(text(v) for v in message.get_all("Requires-Dist") or [])
    return text(message.get("Name")), text(message.get("Requires-Python")) or None, requires_dist


@dataclass(frozen=True)
class ElfObject:
    """What the dynamic loader would read from a shared object: its machine and what it needs."""

    machine: str                 # e_machine, e.g. EM_ARM
    elfclass: int                # 32 or 64
    needed: tuple[str, ...]      # DT_NEEDED sonames, in order
    search: tuple[str, ...]      # DT_RPATH then DT_RUNPATH folders, split, $ORIGIN unexpanded
    versions: tuple[tuple[str, str], ...] = ()   # (library, symbol version) it needs: ("libc.so.6", "GLIBC_2.34")
    undefined: frozenset[str] = frozenset()      # names of the symbols it takes from libraries

    @property
    def triplet(self) -> str | None:
        return MULTIARCH.get((self.machine, self.elfclass))


def read_elf(stream) -> ElfObject | None:
    """The dynamic section of the ELF file ``stream`` (seekable), or None if it has none or is no ELF.

    pyelftools only reads: nothing in the file runs, however it was crafted.
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerNeedSection
    from elftools.elf.sections import SymbolTableSection
    try:
        elf = ELFFile(stream)
        needed, search, versions, undefined = [], [], [], set()
        for section in elf.iter_sections():
            if isinstance(section, GNUVerNeedSection):
                for library, auxiliaries in section.iter_versions():
                    versions.extend((library.name, aux.name) for aux in auxiliaries)
            elif isinstance(section, SymbolTableSection) and section.name == ".dynsym":
                undefined.update(symbol.name for symbol in section.iter_symbols()
                                 if symbol["st_shndx"] == "SHN_UNDEF" and symbol.name)
            if not isinstance(section, DynamicSection):
                continue
            for tag in section.iter_tags():
                if tag.entry.d_tag == "DT_NEEDED":
                    needed.append(tag.needed)
                elif tag.entry.d_tag == "DT_RPATH":
                    search.extend(p for p in tag.rpath.split(":") if p)
                elif tag.entry.d_tag == "DT_RUNPATH":
                    search.extend(p for p in tag.runpath.split(":") if p)
        return ElfObject(elf["e_machine"], elf.elfclass, tuple(needed), tuple(search),
                         tuple(dict.fromkeys(versions)), frozenset(undefined))
    except (ELFError, ValueError, KeyError, AttributeError, UnicodeDecodeError, OSError,
            AssertionError, TypeError, IndexError):  # crafted or truncated headers
        return None


def parse_ld_so_conf(text: str) -> tuple[list[str], list[str]]:
    """``(folders, include globs)`` of an ``ld.so.conf`` file."""
    folders, includes = [], []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("include "):
            includes.extend(line.split()[1:])
        elif line.startswith("/"):
            folders.append(line)
    return folders, includes


def parse_dpkg_list(package: str, text: str) -> dict[str, str]:
    """``{path: package}`` from ``var/lib/dpkg/info/<package>[:<arch>].list`` (the arch dropped)."""
    name = package.split(":", 1)[0]
    return {line: name for line in (l.strip() for l in text.splitlines()) if line.startswith("/")}


def path_aliases(path: str) -> list[str]:
    """Spellings of a library path dpkg may know it by: with and without merged /usr."""
    aliases = [path]
    if path.startswith("/usr/lib/") or path.startswith("/usr/lib64/"):
        aliases.append(path[len("/usr"):])
    elif path.startswith("/lib/") or path.startswith("/lib64/"):
        aliases.append("/usr" + path)
    return aliases


def is_elf(head: bytes) -> bool:
    return head[:4] == ELF_MAGIC


def safe_member_path(name: str) -> str | None:
    """A zip member's relative path if it stays inside the extraction folder, else None."""
    normal = posixpath.normpath(name)
    if name.startswith("/") or normal.startswith("..") or "\\" in name or "\x00" in name:
        return None
    return normal



def target_tags(abi: str, platform: str) -> frozenset[Tag] | None:
    """Every tag an interpreter of ``abi`` on ``platform`` installs (pip's own list), or None when
    ``abi`` is not a CPython ABI we can reason about (then only the ABI and platform are checked)."""
    m = _CPYTHON_ABI.match(abi)
    if not m:
        return None
    python_version = (int(m[1]), int(m[2]))
    return frozenset(cpython_tags(python_version, abis=[abi], platforms=[platform])) | frozenset(
        compatible_tags(python_version, interpreter=f"cp{m[1]}{m[2]}", platforms=[platform]))


def check_target_tags(filename: str, abi: str, platform: str) -> frozenset[Tag]:
    """The tags of the wheel ``filename`` if it fits the target (``abi`` on ``platform``), or is pure.

    Every tag it claims must be for the target's platform (or ``any``) and ABI (or ``none``/``abi3``):
    a wheel that also claims another platform would be installed there. And at least one of them must
    be one the target's interpreter installs (a ``cp312`` wheel is no ``cp311`` wheel).
    """
    try:
        _name, _version, _build, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise WheelRefused(f"refused {filename}: not a valid wheel file name ({exc})") from exc
    from wheelwright.builds.wheel_abi import linux_platform
    for tag in sorted(tags, key=str):
        if tag.platform not in ("any", platform) and linux_platform(tag.platform) != platform:
            raise WheelRefused(f"refused {filename}: it is for {tag.platform}, but the target builds for "
                               f"{platform} (a worker of another platform served its queue)")
        if tag.abi not in ("none", "abi3", abi):
            raise WheelRefused(f"refused {filename}: it is for {tag.abi}, but the target builds for {abi} "
                               "(the worker built with another Python)")
    # a manylinux tag of the target's architecture is checked by the wheel's own ELF files, apart
    supported = target_tags(abi, platform)
    for manylinux in sorted({t.platform for t in tags} - {"any", platform}):
        supported = None if supported is None else supported | target_tags(abi, manylinux)
    if supported is not None and not tags & supported:
        raise WheelRefused(f"refused {filename}: none of its tags ({', '.join(sorted(map(str, tags)))}) "
                           f"installs on {abi}/{platform}")
    return tags


def build_number(filename: str) -> int:
    """The PEP 427 build number of a wheel file name (its build tag's leading digits); 0 without one."""
    _name, _version, build, _tags = parse_wheel_filename(filename)
    return build[0] if build else 0


def with_build_number(filename: str, number: int) -> str:
    """``filename`` with the build number ``number``: ``foo-1.0-cp311-...`` -> ``foo-1.0-2-cp311-...``.

    Name and version keep their spelling; only the build tag is set (pip reads it from the file name
    alone: the wheel's own WHEEL and RECORD need not change).
    """
    if number < 1:
        raise ValueError(f"a build number is at least 1, not {number}")
    parts = filename[:-len(".whl")].split("-")
    if len(parts) not in (5, 6):
        raise WheelRefused(f"refused {filename}: not a valid wheel file name")
    name, version, tags = parts[0], parts[1], parts[-3:]
    return "-".join([name, version, str(number), *tags]) + ".whl"

# --- the edge: files and tools ----------------------------------------------------------------------

def sha256_of(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def analyse_wheel(path: Path, package: str, version: str, *, root: str | os.PathLike = "/",
                  scratch: Path | None = None, run_as: int | None = None) -> WheelInfo:
    """Check and describe the wheel at ``path``; write its ``METADATA`` beside it as ``<wheel>.metadata``.

    ``root`` is the root filesystem the wheel was built in (its target's image, or ``/``): its
    compiled objects' libraries are looked up there. ``scratch`` is a folder for copies of large
    compiled members (a private temporary one by default). ``run_as`` is accepted for old callers and
    unused: nothing of the wheel is run.
    """
    from wheelwright.builds.wheel_abi import linux_platform, wheel_abi
    path = Path(path)
    python_tag, abi_tag, platform_tag = check_wheel_filename(path.name, package, version)
    platform_tag_built = linux_platform(platform_tag)
    sha256, size = sha256_of(path)
    try:
        with zipfile.ZipFile(path) as zf:
            metadata = _metadata_bytes(zf, path.name, package)
            name, requires_python, requires_dist = parse_metadata(metadata)
            if name is None or canonicalize_name(name) != canonicalize_name(package):
                raise WheelRefused(f"refused {path.name}: its METADATA names {name!r}, not {package}")
            objects = elf_members(zf, scratch=scratch)
            dependencies = _dependencies(zf, objects, root=Path(root))
            abi = wheel_abi(zf, platform_tag_built, objects=objects) if objects else None
    except (zipfile.BadZipFile, EOFError) as exc:
        raise WheelRefused(f"refused {path.name}: not a readable zip file ({exc})") from exc
    metadata_path = path.with_name(path.name + ".metadata")
    metadata_path.write_bytes(metadata)
    return WheelInfo(
        filename=path.name, sha256=sha256, size=size, python_tag=python_tag, abi_tag=abi_tag,
        platform_tag=platform_tag, requires_python=requires_python, requires_dist=requires_dist,
        metadata=FileInfo(metadata_path.name, hashlib.sha256(metadata).hexdigest(), len(metadata)),
        dependencies=dependencies, glibc_floor=abi.glibc_floor if abi else None,
        manylinux=abi.manylinux if abi else None)



@dataclass(frozen=True)
class CheckedWheel:
    """A received wheel as the index host read it itself: what gets published, and nothing else."""

    filename: str
    sha256: str
    size: int
    python_tag: str
    abi_tag: str
    platform_tag: str
    build_number: int
    requires_python: str | None
    metadata: bytes                               # the wheel's own METADATA, served as <wheel>.metadata
    glibc_floor: str | None = None                # read here from its ELF files (builds/wheel_abi.py)

    @property
    def metadata_sha256(self) -> str:
        return hashlib.sha256(self.metadata).hexdigest()

    @property
    def pure(self) -> bool:
        return self.abi_tag == "none" and self.platform_tag == "any"


def check_received_wheel(path: Path, *, package: str, version: str, abi: str, platform: str,
                         digest: tuple[str, int] | None = None, scratch: Path | None = None) -> CheckedWheel:
    """Read the wheel at ``path`` on the index host and check it against the build row it answers.

    ``package``, ``version``, ``abi`` and ``platform`` come from the index host's own build row, never
    from the worker. Refuses (:class:`WheelRefused`, one line) a name that is not a wheel name of that
    release, tags that do not fit the target, a zip that is not safe to read, and a ``METADATA`` that
    is missing or names another package or version. ``digest``: ``(sha256, size)`` of the file when
    the caller has just checked them (the transfer's acceptance), to save reading it twice.
    """
    path = Path(path)
    python_tag, abi_tag, platform_tag = check_wheel_filename(path.name, package, version)
    check_target_tags(path.name, abi, platform)  # a manylinux tag: its policy is checked below
    if (number := build_number(path.name)) > MAX_BUILD_NUMBER:
        raise WheelRefused(f"refused {path.name}: its build number {number} is absurd")
    sha256, size = digest if digest is not None else sha256_of(path)
    from wheelwright.builds.wheel_abi import linux_platform, tag_problem, wheel_abi
    abi = None
    try:
        with zipfile.ZipFile(path) as zf:
            check_zip_safe(zf, path.name)
            metadata = _metadata_bytes(zf, path.name, package, version=version)
            if platform_tag != "any":  # what its compiled code needs, read here, not taken on trust
                abi = wheel_abi(zf, linux_platform(platform_tag), scratch=scratch)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, ValueError) as exc:
        raise WheelRefused(f"refused {path.name}: not a readable zip file ({exc})") from exc
    if abi is not None and (problem := tag_problem(platform_tag, abi)) is not None:
        raise WheelRefused(f"refused {path.name}: {problem}")
    name, meta_version, requires_python = parse_core_metadata(metadata)
    if name is None or canonicalize_name(name) != canonicalize_name(package):
        raise WheelRefused(f"refused {path.name}: its METADATA names {name!r}, not {package}")
    if meta_version is None or not _same_version(meta_version, version):
        raise WheelRefused(f"refused {path.name}: its METADATA says version {meta_version!r}, not {version}")
    return CheckedWheel(filename=path.name, sha256=sha256, size=size, python_tag=python_tag,
                        abi_tag=abi_tag, platform_tag=platform_tag, build_number=build_number(path.name),
                        requires_python=requires_python, metadata=metadata,
                        glibc_floor=abi.glibc_floor if abi else None)


def check_zip_safe(zf: zipfile.ZipFile, filename: str) -> None:
    """Refuse a zip whose members hold paths, are too many, or declare too much to unpack (a bomb).

    Only the central directory is read: reading a member never yields more than it declares (zipfile
    stops there and checks the CRC), so capping the declared sizes caps what reading can cost.
    """
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise WheelRefused(f"refused {filename}: {len(infos):,} members, more than {MAX_MEMBERS:,}")
    total = 0
    for info in infos:
        if safe_member_path(info.filename) is None or info.filename.startswith("./"):
            raise WheelRefused(f"refused {filename}: a member's name holds a path: {info.filename!r}")
        total += info.file_size
        if (info.file_size > MAX_RATIO_FROM
                and info.file_size > MAX_RATIO * max(info.compress_size, 1)):
            raise WheelRefused(f"refused {filename}: {info.filename!r} would unpack {info.file_size:,} bytes "
                               f"from {info.compress_size:,} (a zip bomb)")
    if total > MAX_UNCOMPRESSED:
        raise WheelRefused(f"refused {filename}: its members would unpack to {total:,} bytes, more than "
                           f"{MAX_UNCOMPRESSED:,} (a zip bomb)")


def parse_core_metadata(data: bytes) -> tuple[str | None, str | None, str | None]:
    """``(Name, Version, Requires-Python)`` of a core metadata file."""
    message = BytesParser(policy=compat32).parsebytes(data, headersonly=True)

    def text(value):
        return None if value is None else str(value).strip() or None

    return text(message.get("Name")), text(message.get("Version")), text(message.get("Requires-Python"))


def _metadata_bytes(zf: zipfile.ZipFile, filename: str, package: str, *, version: str | None = None) -> bytes:
    """The ``METADATA`` of the wheel's own ``.dist-info`` folder, read with a size cap.

    With ``version`` (the index host) the folder must be named for the package and that version, and be
    the only one; without it (the worker) a single folder of another name is taken, and refused later
    by its Name.
    """
    candidates = [n for n in zf.namelist()
                  if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
    wanted = canonicalize_name(package)

    def named_for(member):
        stem = member.split("/")[0][:-len(".dist-info")]
        name, _, dist_version = stem.rpartition("-")
        return canonicalize_name(name) == wanted and (version is None or _same_version(dist_version, version))

    matching = [n for n in candidates if named_for(n)]
    chosen = matching if version is not None else (matching or candidates)
    if len(chosen) != 1 or (version is not None and len(candidates) != 1):
        raise WheelRefused(f"refused {filename}: expected one .dist-info/METADATA, found {len(chosen)}"
                           + (f" named for {package} {version} among {len(candidates)}" if version else ""))
    info = zf.getinfo(chosen[0])
    if info.file_size > MAX_METADATA:
        raise WheelRefused(f"refused {filename}: its METADATA is {info.file_size:,} bytes, more than "
                           f"{MAX_METADATA:,}")
    with zf.open(info) as member:
        data = member.read(MAX_METADATA + 1)
    if len(data) > MAX_METADATA:
        raise WheelRefused(f"refused {filename}: its METADATA is larger than {MAX_METADATA:,} bytes")
    return data


def elf_members(zf: zipfile.ZipFile, *, scratch: Path | None = None) -> list[tuple[str, ElfObject]]:
    """``(member name, ElfObject)`` of every ELF file in the wheel, read without running anything."""
    objects = []
    for info in zf.infolist():
        if info.is_dir() or info.file_size < 4:
            continue
        with zf.open(info) as member:
            if not is_elf(member.read(4)):
                continue
        if safe_member_path(info.filename) is None:
            raise WheelRefused(f"refused a wheel member with an unsafe path: {info.filename!r}")
        if info.file_size > MAX_ELF_BYTES:
            log.warning("%s: %d bytes, too large to read its ELF header", info.filename, info.file_size)
            continue
        with tempfile.SpooledTemporaryFile(max_size=16 << 20, dir=scratch) as copy:
            with zf.open(info) as member:
                shutil.copyfileobj(member, copy)
            copy.seek(0)
            elf = read_elf(copy)
        if elf is not None:
            objects.append((info.filename, elf))
    return objects


def bundled_names(zf: zipfile.ZipFile) -> frozenset[str]:
    """File names of the wheel's members: a library of that name is the wheel's own, not the system's."""
    return frozenset(posixpath.basename(info.filename) for info in zf.infolist() if not info.is_dir())


def _dependencies(zf: zipfile.ZipFile, objects: list[tuple[str, ElfObject]], *,
                  root: Path) -> tuple[tuple[str, str], ...]:
    if not objects:
        return ()
    # libraries the wheel bundles itself (auditwheel's <pkg>.libs/, or beside the extension)
    bundled = bundled_names(zf)
    owners = dpkg_owners(root)
    deps: set[tuple[str, str]] = set()
    for member, elf in objects:
        for soname in elf.needed:
            if soname in bundled:
                continue
            found = resolve_library(root, soname, elf)
            if found is None:
                deps.add(("unowned", soname))
                continue
            packages = owners_of(root, found, owners)
            deps |= {("apt", p) for p in packages} if packages else {("unowned", found)}
    return tuple(sorted(deps))


def library_folders(root: Path, elf: ElfObject) -> list[str]:
    """Where the loader of the image at ``root`` looks for ``elf``'s libraries, in order."""
    folders = [p for p in elf.search if not p.startswith("$")]
    seen_conf: set[str] = set()

    def read_conf(path: str) -> None:
        if path in seen_conf or len(seen_conf) > 200:
            return
        seen_conf.add(path)
        try:
            text = (root / path.lstrip("/")).read_text(errors="replace")
        except OSError:
            return
        listed, includes = parse_ld_so_conf(text)
        folders.extend(listed)
        for pattern in includes:
            if not pattern.startswith("/"):
                pattern = posixpath.join(posixpath.dirname(path), pattern)
            for match in sorted(root.glob(pattern.lstrip("/"))):
                read_conf("/" + str(match.relative_to(root)))

    read_conf("/etc/ld.so.conf")
    if elf.triplet:
        folders += [f"/lib/{elf.triplet}", f"/usr/lib/{elf.triplet}"]
    folders += ["/lib64", "/usr/lib64"] if elf.elfclass == 64 else []
    folders += ["/lib", "/usr/lib"]
    return list(dict.fromkeys(folders))


def resolve_library(root: Path, soname: str, elf: ElfObject) -> str | None:
    """The path, as seen inside ``root``, of the library ``soname`` that ``elf`` would load; None if
    no file of that name and of ``elf``'s machine is in its search folders."""
    if "/" in soname:  # an absolute or relative path in DT_NEEDED is taken as it is
        candidates = [soname] if soname.startswith("/") else []
    else:
        candidates = [posixpath.join(folder, soname) for folder in library_folders(root, elf)]
    for candidate in candidates:
        real = real_path_in(root, candidate)
        if real is None:
            continue
        try:
            with open(root / real.lstrip("/"), "rb") as f:
                found = read_elf(f)
        except OSError:
            continue
        if found is not None and (found.machine, found.elfclass) == (elf.machine, elf.elfclass):
            return candidate
    return None


def real_path_in(root: Path, path: str, _depth: int = 0) -> str | None:
    """``path`` inside the tree ``root`` with every symbolic link followed *within* that tree (an
    image's absolute links point into the image, not into the host), or None if it leads nowhere."""
    parts = [p for p in path.split("/") if p and p != "."]
    resolved = ""
    for i, part in enumerate(parts):
        if part == "..":
            resolved = posixpath.dirname(resolved)
            continue
        candidate = f"{resolved}/{part}"
        full = root / candidate.lstrip("/")
        try:
            if os.path.islink(full):
                if _depth > 40:
                    return None
                link = os.readlink(full)
                target = link if link.startswith("/") else posixpath.join(resolved or "/", link)
                rest = "/".join(parts[i + 1:])
                return real_path_in(root, posixpath.join(target, rest) if rest else target, _depth + 1)
        except OSError:
            return None
        resolved = candidate
    return resolved if (root / resolved.lstrip("/")).is_file() else None


def owners_of(root: Path, path: str, owners: dict[str, str]) -> set[str]:
    """The packages owning the library at ``path`` in ``root``: by the name it was found under or the
    file it leads to, with and without merged /usr."""
    spellings = path_aliases(path)
    real = real_path_in(root, path)
    if real:
        spellings += path_aliases(real)
        # a link's folder may be a link too (merged /usr: /lib -> usr/lib): dpkg knows the packaged name
        spellings += path_aliases(posixpath.join(posixpath.dirname(real), posixpath.basename(path)))
    return {owners[s] for s in spellings if s in owners}


@lru_cache(maxsize=8)
def _dpkg_owners_cached(info: str, _stamp: int) -> dict[str, str]:
    owners: dict[str, str] = {}
    try:
        names = sorted(n for n in os.listdir(info) if n.endswith(".list"))
    except OSError:
        return owners
    for name in names:
        try:
            with open(os.path.join(info, name), encoding="utf-8", errors="replace") as f:
                owners.update(parse_dpkg_list(name[:-len(".list")], f.read()))
        except OSError:
            continue
    return owners


def dpkg_owners(root: Path) -> dict[str, str]:
    """``{path: package}`` of every file the dpkg database of the system at ``root`` knows.

    Read from the files themselves, so it works for an image of another architecture; cached while
    the database folder is unchanged.
    """
    info = os.path.join(str(root), "var/lib/dpkg/info")
    try:
        stamp = os.stat(info).st_mtime_ns
    except OSError:
        return {}
    return _dpkg_owners_cached(info, stamp)
