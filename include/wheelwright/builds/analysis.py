"""Wheel analysis: what a freshly built wheel is, and whether we may publish it.

``setup.py`` is arbitrary code, so a wheel says whatever its build made it say. piwheels learnt this
from GSAS_II_WONDER: three packages whose ``setup.py`` chose the name by platform, so building
``GSAS_II_WONDER_mac`` made a wheel of ``GSAS_II_WONDER_linux``. This room owns believing nothing a
wheel says until it is checked: its file name must parse (``packaging.utils.parse_wheel_filename``),
name no directory, and name the package and version we built; its ``METADATA`` must exist and agree.
What it learns is what the index publishes: size and sha256, the tags, ``Requires-Python`` and
``Requires-Dist``, the ``METADATA`` bytes themselves (served as ``<wheel>.metadata``, PEP 658), and the
apt packages its compiled code needs at run time (every ELF object, ``ldd``, then ``dpkg-query -S``;
libraries no package owns are recorded as such, so a Pi user learns what to ``apt install``).

The same checks run twice, for two different reasons. On the worker (:func:`analyse_wheel`) they stop a
build that went wrong before its files travel. On the index host (:func:`check_received_wheel`) they
are the ones that count, because a worker is a machine anybody's ``setup.py`` ran on: there the wheel is
read again from the received file, safely (member names without paths, a cap on the number of members
and on their declared uncompressed size, so a zip bomb is refused unread), its tags must fit the
target it was built for (:func:`check_target_tags`), and its ``METADATA`` (Name, Version) must agree.

Parsing is pure functions over bytes and text; ``ldd`` and ``dpkg-query`` run at the edge, batched, with
argument lists, a timeout and (when we are root) as the unprivileged build user.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import subprocess
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

ELF_MAGIC = b"\x7fELF"
TOOL_TIMEOUT = 120  # seconds for one ldd or dpkg-query batch
_LDD_RESOLVED = re.compile(r"^\s*(\S+) => (/\S+) \(0x[0-9a-f]+\)\s*$")
_LDD_MISSING = re.compile(r"^\s*(\S+) => not found\s*$")
_LDD_DIRECT = re.compile(r"^\s*(/\S+) \(0x[0-9a-f]+\)\s*$")
_CPYTHON_ABI = re.compile(r"cp(\d)(\d+)[a-z]*\Z")

# What the index host reads of a received wheel, at most: a wheel past these is refused unread.
MAX_MEMBERS = 100_000               # files in one wheel (numpy: ~1,500; the biggest known: ~30,000)
MAX_UNCOMPRESSED = 4 << 30          # bytes, all members together, as the zip declares them
MAX_RATIO = 1000                    # uncompressed / compressed for one member past MAX_RATIO_FROM
MAX_RATIO_FROM = 16 << 20           # bytes: below this a high ratio is harmless (a file of zeros)
MAX_METADATA = 2 << 20              # bytes of METADATA
MAX_BUILD_NUMBER = 999_999          # a PEP 427 build number a wheel name may carry


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


def parse_ldd(output: str) -> tuple[set[str], set[str]]:
    """``(resolved library paths, sonames not found)`` from ``ldd`` output of one or more files."""
    resolved, missing = set(), set()
    for line in output.splitlines():
        if m := _LDD_RESOLVED.match(line):
            resolved.add(m[2])
        elif m := _LDD_MISSING.match(line):
            missing.add(m[1])
        elif m := _LDD_DIRECT.match(line):
            resolved.add(m[1])  # the dynamic loader itself, named by path
    return resolved, missing


def parse_dpkg_search(output: str) -> dict[str, set[str]]:
    """``{path: {apt package, ...}}`` from ``dpkg-query -S`` output (architecture qualifiers dropped)."""
    owners: dict[str, set[str]] = {}
    for line in output.splitlines():
        if line.startswith("diversion by ") or ": " not in line:
            continue
        packages, path = line.split(": ", 1)
        owners.setdefault(path.strip(), set()).update(
            p.strip().split(":", 1)[0] for p in packages.split(",") if p.strip())
    return owners


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
    for tag in sorted(tags, key=str):
        if tag.platform not in ("any", platform):
            raise WheelRefused(f"refused {filename}: it is for {tag.platform}, but the target builds for "
                               f"{platform} (a worker of another platform served its queue)")
        if tag.abi not in ("none", "abi3", abi):
            raise WheelRefused(f"refused {filename}: it is for {tag.abi}, but the target builds for {abi} "
                               "(the worker built with another Python)")
    supported = target_tags(abi, platform)
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


def analyse_wheel(path: Path, package: str, version: str, *, run_as: int | None = None,
                  scratch: Path | None = None) -> WheelInfo:
    """Check and describe the wheel at ``path``; write its ``METADATA`` beside it as ``<wheel>.metadata``.

    ``run_as`` is the uid to run ``ldd`` as (the build user when we are root); ``scratch`` a folder for
    extracting compiled objects (a private temporary one by default).
    """
    path = Path(path)
    python_tag, abi_tag, platform_tag = check_wheel_filename(path.name, package, version)
    sha256, size = sha256_of(path)
    try:
        with zipfile.ZipFile(path) as zf:
            metadata = _metadata_bytes(zf, path.name, package)
            name, requires_python, requires_dist = parse_metadata(metadata)
            if name is None or canonicalize_name(name) != canonicalize_name(package):
                raise WheelRefused(f"refused {path.name}: its METADATA names {name!r}, not {package}")
            dependencies = _dependencies(zf, run_as=run_as, scratch=scratch)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise WheelRefused(f"refused {path.name}: not a readable zip file ({exc})") from exc
    metadata_path = path.with_name(path.name + ".metadata")
    metadata_path.write_bytes(metadata)
    return WheelInfo(
        filename=path.name, sha256=sha256, size=size, python_tag=python_tag, abi_tag=abi_tag,
        platform_tag=platform_tag, requires_python=requires_python, requires_dist=requires_dist,
        metadata=FileInfo(metadata_path.name, hashlib.sha256(metadata).hexdigest(), len(metadata)),
        dependencies=dependencies)



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

    @property
    def metadata_sha256(self) -> str:
        return hashlib.sha256(self.metadata).hexdigest()

    @property
    def pure(self) -> bool:
        return self.abi_tag == "none" and self.platform_tag == "any"


def check_received_wheel(path: Path, *, package: str, version: str, abi: str, platform: str,
                         digest: tuple[str, int] | None = None) -> CheckedWheel:
    """Read the wheel at ``path`` on the index host and check it against the build row it answers.

    ``package``, ``version``, ``abi`` and ``platform`` come from the index host's own build row, never
    from the worker. Refuses (:class:`WheelRefused`, one line) a name that is not a wheel name of that
    release, tags that do not fit the target, a zip that is not safe to read, and a ``METADATA`` that
    is missing or names another package or version. ``digest``: ``(sha256, size)`` of the file when
    the caller has just checked them (the transfer's acceptance), to save reading it twice.
    """
    path = Path(path)
    python_tag, abi_tag, platform_tag = check_wheel_filename(path.name, package, version)
    check_target_tags(path.name, abi, platform)
    if (number := build_number(path.name)) > MAX_BUILD_NUMBER:
        raise WheelRefused(f"refused {path.name}: its build number {number} is absurd")
    sha256, size = digest if digest is not None else sha256_of(path)
    try:
        with zipfile.ZipFile(path) as zf:
            check_zip_safe(zf, path.name)
            metadata = _metadata_bytes(zf, path.name, package, version=version)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, ValueError) as exc:
        raise WheelRefused(f"refused {path.name}: not a readable zip file ({exc})") from exc
    name, meta_version, requires_python = parse_core_metadata(metadata)
    if name is None or canonicalize_name(name) != canonicalize_name(package):
        raise WheelRefused(f"refused {path.name}: its METADATA names {name!r}, not {package}")
    if meta_version is None or not _same_version(meta_version, version):
        raise WheelRefused(f"refused {path.name}: its METADATA says version {meta_version!r}, not {version}")
    return CheckedWheel(filename=path.name, sha256=sha256, size=size, python_tag=python_tag,
                        abi_tag=abi_tag, platform_tag=platform_tag, build_number=build_number(path.name),
                        requires_python=requires_python, metadata=metadata)


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


def _dependencies(zf: zipfile.ZipFile, *, run_as: int | None,
                  scratch: Path | None) -> tuple[tuple[str, str], ...]:
    elf_members = []
    for info in zf.infolist():
        if info.is_dir() or info.file_size < 4:
            continue
        with zf.open(info) as member:
            if is_elf(member.read(4)):
                elf_members.append(info)
    if not elf_members:
        return ()
    with tempfile.TemporaryDirectory(prefix="elf-", dir=scratch) as tmp:
        root = Path(tmp)
        extracted = []
        for info in elf_members:
            relative = safe_member_path(info.filename)
            if relative is None:
                raise WheelRefused(f"refused a wheel member with an unsafe path: {info.filename!r}")
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            extracted.append(target)
        if run_as is not None:
            _hand_over(root, run_as)
        resolved, missing = parse_ldd(run_ldd(extracted, run_as=run_as))
    # libraries the wheel bundles itself (auditwheel's .libs) are resolved inside the extraction
    external = sorted(p for p in resolved if not p.startswith(str(root) + os.sep))
    owners = find_owners(external)
    deps = {("apt", pkg) for path in external for pkg in owners.get(path, ())}
    deps |= {("unowned", path) for path in external if not owners.get(path)}
    deps |= {("unowned", soname) for soname in missing}
    return tuple(sorted(deps))


def _hand_over(root: Path, uid: int) -> None:
    """Let ``uid`` read the extracted objects (ldd runs as the build user, never as root)."""
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, uid, -1)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, -1)


def run_ldd(paths: list[Path], *, run_as: int | None = None) -> str:
    """``ldd`` output for ``paths`` (one call); never executes the objects' own loaders."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    kwargs = {}
    if run_as is not None:
        import pwd
        entry = pwd.getpwuid(run_as)
        kwargs = {"user": run_as, "group": entry.pw_gid, "extra_groups": []}
    result = subprocess.run(["ldd", *map(str, paths)], capture_output=True, text=True, env=env,
                            timeout=TOOL_TIMEOUT, stdin=subprocess.DEVNULL, errors="replace", **kwargs)
    # ldd exits non-zero when one object is not dynamic (static, or data that looks like ELF)
    return result.stdout


def find_owners(paths: list[str]) -> dict[str, set[str]]:
    """``{path: {apt package}}`` for library ``paths``, from one ``dpkg-query -S`` call."""
    if not paths or shutil.which("dpkg-query") is None:
        return {}
    spellings: dict[str, str] = {}
    for path in paths:
        for alias in path_aliases(path) + path_aliases(os.path.realpath(path)):
            spellings.setdefault(alias, path)
    result = subprocess.run(["dpkg-query", "-S", *spellings], capture_output=True, text=True,
                            timeout=TOOL_TIMEOUT, stdin=subprocess.DEVNULL, errors="replace",
                            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})
    if result.returncode not in (0, 1):  # 1: some path has no owner, which is an answer
        raise WheelwrightError(f"dpkg-query -S failed: {result.stderr.strip()[:200]}")
    owners: dict[str, set[str]] = {}
    for spelling, packages in parse_dpkg_search(result.stdout).items():
        if spelling in spellings:
            owners.setdefault(spellings[spelling], set()).update(packages)
    return owners
