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
libraries (pyelftools), resolved as the dynamic loader would (the image's ``ld.so.conf``, the multiarch
folders of the object's machine, and the object's RPATH/RUNPATH where it lies inside those) against
the root filesystem of the target's image (``/`` for a target built on the worker's own system), then
the Debian package owning each file according to that image's dpkg database
(``var/lib/dpkg/info/*.list``). Those headers are the wheel's word, so the root is read only through
:class:`RootFiles`: links followed inside the root, never into ``/proc``, ``/sys``, ``/dev`` or
``/run``, and only regular files of a library folder, of a capped size, are opened. ``ldd`` cannot do
this: it runs the loader on a hostile file, and under qemu it cannot trace a foreign one at all ("not
a dynamic executable"). Libraries the wheel bundles itself (auditwheel's ``.libs``) are its own;
libraries found but owned by no package, and libraries not found, are recorded as ``unowned``.
Subtracting what Raspberry Pi OS Lite preinstalls happens where pages are written
(:func:`wheelwright.publish.reports.needed_apt`).

Parsing is pure functions over bytes and text; the image's files are read at the edge.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import logging
import os
import posixpath
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from wheelwright.errors import WheelwrightError
from wheelwright.names import pip_requirements

log = logging.getLogger(__name__)

ELF_MAGIC = b"\x7fELF"
_CPYTHON_ABI = re.compile(r"cp(\d)(\d+)[a-z]*\Z")

# What the index host reads of a received wheel, at most: a wheel past these is refused unread.
MAX_MEMBERS = 100_000               # files in one wheel (numpy: ~1,500; the biggest known: ~30,000)
MAX_UNCOMPRESSED = 4 << 30          # bytes, all members together, as the zip declares them
MAX_RATIO = 1000                    # uncompressed / compressed for one member past MAX_RATIO_FROM
MAX_RATIO_FROM = 16 << 20           # bytes: below this a high ratio is harmless (a file of zeros)
MAX_METADATA = 2 << 20              # bytes of METADATA
MAX_RECORD = 16 << 20               # bytes of RECORD (a wheel of 30,000 files: ~3 MiB)
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
            or "/" in filename or "\\" in filename or not filename.isprintable()
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
    except Exception:  # crafted or truncated headers: pyelftools raises whatever its parsing met
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
    requires_dist: tuple[str, ...] = ()           # its Requires-Dist, parsed (see pip_requirements)
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
                        requires_dist=pip_requirements(parse_metadata(metadata)[2]),
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
    check_members(zf, filename)


def check_members(zf: zipfile.ZipFile, filename: str) -> None:
    """Refuse a zip that names a member twice (installers disagree on which one counts: pip would
    install another ``METADATA`` than the one we publish) or whose ``RECORD`` lists a file it does
    not hold (an installer uninstalls what RECORD lists: ``../../bin/python`` would go with it)."""
    names = zf.namelist()
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})[:3]
        raise WheelRefused(f"refused {filename}: it holds {', '.join(map(repr, twice))} more than once")
    members = set(names)
    for record in sorted(n for n in members if n.count("/") == 1 and n.endswith(".dist-info/RECORD")):
        info = zf.getinfo(record)
        if info.file_size > MAX_RECORD:
            raise WheelRefused(f"refused {filename}: its RECORD is {info.file_size:,} bytes, more than "
                               f"{MAX_RECORD:,}")
        with zf.open(info) as member:
            data = member.read(MAX_RECORD + 1)
        try:
            rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise WheelRefused(f"refused {filename}: its RECORD is not a CSV file of paths ({exc})") from None
        for row in rows:
            if row and row[0] and row[0] not in members:
                raise WheelRefused(f"refused {filename}: its RECORD lists {row[0][:200]!r}, which the wheel "
                                   "does not hold")


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
    if len({soname for _member, elf in objects for soname in elf.needed}) > MAX_DEPENDENCIES:
        raise WheelRefused(f"refused a wheel whose compiled code names more than {MAX_DEPENDENCIES:,} "
                           "libraries")
    deps: set[tuple[str, str]] = set()
    with RootFiles(root) as files:
        owners = dpkg_owners(files)
        found_before: dict[tuple, str | None] = {}
        for member, elf in objects:
            for soname in elf.needed:
                if not _LIBRARY_NAME.match(soname):
                    raise WheelRefused(f"refused a wheel: its {member!r} needs a library named {soname[:100]!r}, "
                                       "which is no library name (visible ASCII, at most 255 characters)")
                if soname in bundled:
                    continue
                key = (soname, elf.machine, elf.elfclass, elf.search)
                if key not in found_before:
                    found_before[key] = resolve_library(files, soname, elf)
                found = found_before[key]
                if found is None:
                    deps.add(("unowned", soname))
                    continue
                packages = owners_of(files, found, owners)
                deps |= {("apt", p) for p in packages} if packages else {("unowned", found)}
    if len(deps) > MAX_DEPENDENCIES:
        raise WheelRefused(f"refused a wheel whose compiled code needs {len(deps):,} libraries, more than "
                           f"{MAX_DEPENDENCIES:,}")
    return tuple(sorted(deps))


# --- the edge: a root file system, read only where libraries live -----------------------------------

NEVER_READ = ("proc", "sys", "dev", "run")   # top folders no resolution enters, whatever links say
MAX_LINKS = 40                               # links followed resolving one path (the kernel's own limit)
MAX_LIBRARY_BYTES = 1 << 30                  # a library file larger than this is not read
MAX_CONF_BYTES = 1 << 16                     # nor an ld.so.conf file larger than this
MAX_DPKG_LIST_BYTES = 16 << 20               # nor a dpkg .list file larger than this
MAX_DEPENDENCIES = 1000                      # distinct libraries one wheel's compiled code may need
ELF_HEADER_BYTES = 52                        # the smallest ELF header: a file below is none
_LIBRARY_NAME = re.compile(r"[!-~]{1,255}\Z")     # visible ASCII: what a page and the catalog can show
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class RootFiles:
    """The files of one root file system (a target's image, or the worker's own ``/``), opened the only
    way wheel analysis opens anything.

    A wheel's ELF headers name folders (``RUNPATH``) and libraries (``NEEDED``) that the worker would
    otherwise open as itself: ``RUNPATH=/proc`` and ``NEEDED=kmsg`` made it read ``/proc/kmsg`` as root,
    blocking for the whole task and eating the kernel's log. So every path is resolved here component by
    component from the root's descriptor (``openat`` with ``O_PATH|O_NOFOLLOW``), links followed *inside*
    the root (an absolute link starts again at the root; ``..`` stops at it), never into ``/proc``,
    ``/sys``, ``/dev`` or ``/run``; and a file is read only when it is a regular file of a sensible size
    (``fstat`` of the descriptor opened with ``O_NOFOLLOW|O_NONBLOCK``, its identity the one resolved).
    Which folders may hold libraries at all is the caller's rule (:func:`resolve_library`).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self._folders: list[str] | None = None

    def __enter__(self) -> "RootFiles":
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)

    def resolve(self, path: str) -> tuple[list[str], int] | None:
        """``(real components, O_PATH descriptor)`` of ``path`` inside the root, or None when it leads
        nowhere, loops, or into a folder no resolution enters. The caller closes the descriptor."""
        todo = [p for p in reversed(path.split("/")) if p not in ("", ".")]
        real: list[str] = []
        links = 0
        here = os.dup(self.fd)
        try:
            while todo:
                part = todo.pop()
                if part in ("", "."):
                    continue
                if part == "..":
                    if real:
                        real.pop()
                        up = os.open("..", _PATH | os.O_DIRECTORY, dir_fd=here)
                        os.close(here)
                        here = up
                    continue
                if not real and part in NEVER_READ:
                    return None
                try:
                    fd = os.open(part, _PATH, dir_fd=here)
                except OSError:
                    return None
                st = os.fstat(fd)
                if stat.S_ISLNK(st.st_mode):
                    os.close(fd)
                    links += 1
                    if links > MAX_LINKS:
                        return None
                    try:
                        target = os.readlink(part, dir_fd=here)
                    except OSError:
                        return None
                    if target.startswith("/"):  # absolute: from the root, the image's, not the host's
                        real = []
                        os.close(here)
                        here = os.dup(self.fd)
                    todo.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
                    continue
                if todo and not stat.S_ISDIR(st.st_mode):
                    os.close(fd)
                    return None
                real.append(part)
                os.close(here)
                here = fd
            found, here = (real, here), -1
            return found
        finally:
            if here != -1:
                os.close(here)

    def real_path(self, path: str) -> str | None:
        """``path`` with every link followed inside the root, if it leads to a regular file."""
        resolved = self.resolve(path)
        if resolved is None:
            return None
        real, fd = resolved
        try:
            return "/" + "/".join(real) if stat.S_ISREG(os.fstat(fd).st_mode) else None
        finally:
            os.close(fd)

    def open_regular(self, path: str, max_bytes: int, min_bytes: int = 0, within: list[str] | None = None):
        """``(file object, real path)`` of ``path`` when it resolves to a regular file of between
        ``min_bytes`` and ``max_bytes`` (and, given ``within``, in one of those real folders); else None.
        Nothing else is ever opened for reading."""
        resolved = self.resolve(path)
        if resolved is None:
            return None
        real, handle = resolved
        try:
            st = os.fstat(handle)
            if not stat.S_ISREG(st.st_mode) or not min_bytes <= st.st_size <= max_bytes or not real:
                return None
            if within is not None and not _inside("/" + "/".join(real[:-1]), within):
                return None
            parent = self.resolve("/".join(real[:-1]))
            if parent is None:
                return None
            folder, folder_fd = parent
            try:
                fd = os.open(real[-1], _READ, dir_fd=folder_fd)
            except OSError:
                return None
            finally:
                os.close(folder_fd)
        finally:
            os.close(handle)
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(opened.st_mode):
            os.close(fd)
            return None
        return open(fd, "rb"), "/" + "/".join(real)

    def read_text(self, path: str, max_bytes: int) -> str | None:
        opened = self.open_regular(path, max_bytes)
        if opened is None:
            return None
        with opened[0] as f:
            return f.read(max_bytes).decode("utf-8", "replace")

    def list_folder(self, path: str) -> tuple[str, list[str]] | None:
        """``(real path, names)`` of the folder ``path`` resolves to, or None."""
        resolved = self.resolve(path)
        if resolved is None:
            return None
        real, handle = resolved
        try:
            if not stat.S_ISDIR(os.fstat(handle).st_mode):
                return None
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=handle)
        except OSError:
            return None
        finally:
            os.close(handle)
        try:
            return "/" + "/".join(real), sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def library_folders(self) -> list[str]:
        """The folders the image's loader is configured to search (``ld.so.conf`` and its includes),
        as written; the same for every object, so read once."""
        if self._folders is None:
            folders: list[str] = []
            seen: set[str] = set()
            pending = ["/etc/ld.so.conf"]
            while pending and len(seen) < 200:
                conf = pending.pop(0)
                if conf in seen:
                    continue
                seen.add(conf)
                text = self.read_text(conf, MAX_CONF_BYTES)
                if text is None:
                    continue
                listed, includes = parse_ld_so_conf(text)
                folders.extend(listed)
                for pattern in includes:
                    if not pattern.startswith("/"):
                        pattern = posixpath.join(posixpath.dirname(conf), pattern)
                    listing = self.list_folder(posixpath.dirname(pattern))
                    if listing is not None:
                        pending.extend(posixpath.join(posixpath.dirname(pattern), name) for name in listing[1]
                                       if fnmatch.fnmatchcase(name, posixpath.basename(pattern)))
            self._folders = folders
        return self._folders


def library_folders(files: RootFiles, elf: ElfObject) -> list[str]:
    """Where the loader of the image looks for ``elf``'s libraries, in order, and may look for them
    here: its configured and default folders, and the object's own RPATH/RUNPATH only where it lies
    inside one of those (a RUNPATH of ``/proc``, ``/tmp`` or ``$ORIGIN`` is not followed: what the
    wheel bundles is found by name)."""
    known = list(files.library_folders())
    if elf.triplet:
        known += [f"/lib/{elf.triplet}", f"/usr/lib/{elf.triplet}"]
    known += ["/lib64", "/usr/lib64"] if elf.elfclass == 64 else []
    known += ["/lib", "/usr/lib"]
    known = [posixpath.normpath(k) for k in known if k.startswith("/")]
    own = [posixpath.normpath(p) for p in elf.search if p.startswith("/") and _inside(posixpath.normpath(p), known)]
    return list(dict.fromkeys(own + known))


def _inside(path: str, folders: list[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def resolve_library(files: RootFiles, soname: str, elf: ElfObject) -> str | None:
    """The path, as seen inside the root, of the library ``soname`` that ``elf`` would load; None if
    no regular file of that name and of ``elf``'s machine lies in a library folder of the root. Only
    such files are opened (see :class:`RootFiles`): a name or folder leading anywhere else is simply
    not found."""
    folders = library_folders(files, elf)
    real_folders = [real for real in (_real_folder(files, f) for f in folders) if real is not None]
    if "/" in soname:  # an absolute path in DT_NEEDED is taken as it is, if a library folder holds it
        candidates = [posixpath.normpath(soname)] if soname.startswith("/") else []
    else:
        candidates = [posixpath.join(folder, soname) for folder in folders]
    for candidate in candidates:
        opened = files.open_regular(candidate, MAX_LIBRARY_BYTES, ELF_HEADER_BYTES, within=real_folders)
        if opened is None:
            continue
        stream, _real = opened
        with stream:
            found = read_elf(stream)
        if found is not None and (found.machine, found.elfclass) == (elf.machine, elf.elfclass):
            return candidate
    return None


def _real_folder(files: RootFiles, folder: str) -> str | None:
    listing = files.resolve(folder)
    if listing is None:
        return None
    real, fd = listing
    os.close(fd)
    return "/" + "/".join(real)


def real_path_in(root: Path, path: str) -> str | None:
    """``path`` inside the tree ``root`` with every symbolic link followed *within* that tree (an
    image's absolute links point into the image, not into the host), or None if it leads nowhere."""
    with RootFiles(root) as files:
        return files.real_path(path)


def owners_of(files: RootFiles, path: str, owners: dict[str, str]) -> set[str]:
    """The packages owning the library at ``path`` in the root: by the name it was found under or the
    file it leads to, with and without merged /usr."""
    spellings = path_aliases(path)
    real = files.real_path(path)
    if real:
        spellings += path_aliases(real)
        # a link's folder may be a link too (merged /usr: /lib -> usr/lib): dpkg knows the packaged name
        spellings += path_aliases(posixpath.join(posixpath.dirname(real), posixpath.basename(path)))
    return {owners[s] for s in spellings if s in owners}


_OWNERS: dict[tuple[int, int, int], dict[str, str]] = {}


def dpkg_owners(files: RootFiles) -> dict[str, str]:
    """``{path: package}`` of every file the dpkg database of the root knows.

    Read from the files themselves (each a regular file, opened as :class:`RootFiles` opens files), so
    it works for an image of another architecture; kept while the database folder is unchanged.
    """
    resolved = files.resolve("/var/lib/dpkg/info")
    if resolved is None:
        return {}
    _real, handle = resolved
    try:
        st = os.fstat(handle)
        if not stat.S_ISDIR(st.st_mode):
            return {}
        key = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if key in _OWNERS:
            return _OWNERS[key]
        folder = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=handle)
    finally:
        os.close(handle)
    owners: dict[str, str] = {}
    try:
        for name in sorted(n for n in os.listdir(folder) if n.endswith(".list")):
            try:
                if not stat.S_ISREG(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
                    continue
                fd = os.open(name, _READ, dir_fd=folder)
            except OSError:
                continue
            with open(fd, "rb") as f:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_DPKG_LIST_BYTES:
                    continue
                text = f.read(MAX_DPKG_LIST_BYTES).decode("utf-8", "replace")
            owners.update(parse_dpkg_list(name[:-len(".list")], text))
    finally:
        os.close(folder)
    if len(_OWNERS) >= 8:
        _OWNERS.clear()
    _OWNERS[key] = owners
    return owners
