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

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from wheelwright.errors import WheelwrightError

ELF_MAGIC = b"\x7fELF"
TOOL_TIMEOUT = 120  # seconds for one ldd or dpkg-query batch
_LDD_RESOLVED = re.compile(r"^\s*(\S+) => (/\S+) \(0x[0-9a-f]+\)\s*$")
_LDD_MISSING = re.compile(r"^\s*(\S+) => not found\s*$")
_LDD_DIRECT = re.compile(r"^\s*(/\S+) \(0x[0-9a-f]+\)\s*$")


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


def _metadata_bytes(zf: zipfile.ZipFile, filename: str, package: str) -> bytes:
    candidates = [n for n in zf.namelist()
                  if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
    wanted = canonicalize_name(package)
    matching = [n for n in candidates
                if canonicalize_name(n.split("/")[0][:-len(".dist-info")].rsplit("-", 1)[0]) == wanted]
    chosen = matching or candidates
    if len(chosen) != 1:
        raise WheelRefused(f"refused {filename}: expected one .dist-info/METADATA, found {len(chosen)}")
    return zf.read(chosen[0])


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
