"""Where a wheel can load: the glibc it needs at least, and the manylinux policy it meets.

A wheel's tags are what pip decides with, and pip reads them literally (``packaging.tags``): a
``linux_aarch64`` wheel installs on **every** aarch64 Linux with a matching Python, whatever its C
library; a ``manylinux_2_X_aarch64`` wheel installs only where the running glibc is 2.X or newer (and
the distribution does not veto it through a ``_manylinux`` module). A ``cp313`` wheel built on trixie
(glibc 2.41) that calls, say, ``strtol`` needs ``GLIBC_2.38`` (C23's ``__isoc23_strtol``): tagged
``linux_aarch64`` it is installed on a bookworm Pi (glibc 2.36) running a Python 3.13 from uv or pyenv,
and fails to load there. piwheels' issue 301 is that complaint.

This room owns the two facts that decide it, read from the wheel's ELF files, never by running them:

- the **glibc floor**: the highest ``GLIBC_x.y`` symbol version any of its compiled objects needs
  (``.gnu.version_r``), shown to people on the project page and in the JSON API;
- the **manylinux policy** it meets, by auditwheel's policy check with auditwheel's own policy data
  (``auditwheel`` is pinned; its ``WheelPolicies``): every library it links that it does not bundle is
  on the policy's list (libc, libm, libstdc++, libgcc_s, libz, ...: what every glibc distribution
  has), every symbol version it needs (GLIBC, GLIBCXX, CXXABI, GCC, ...) is within the policy's, and it
  uses none of the policy's forbidden symbols. The lowest such policy is the tag it qualifies for.
  Libraries are never grafted into wheels (no ``auditwheel repair``): a wheel linking a Debian library
  (libyaml, libssl, libgpiod...) keeps its ``linux_*`` tag, which names it what it is, a wheel for the
  system it was built on, and its apt dependencies say what to install.

The builder retags a wheel that qualifies (:func:`retag`: file name and the ``Tag`` lines of its
``WHEEL``, with its ``RECORD`` entry); the index host reads the received ELF files again and refuses a
manylinux tag the wheel does not meet (:func:`tag_problem`): a builder's word is not evidence.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from wheelwright.builds.analysis import ElfObject, WheelRefused

_GLIBC = re.compile(r"GLIBC_(\d+)\.(\d+)(?:\.\d+)?\Z")
_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_([a-z0-9_]+)\Z")
# auditwheel's architectures for the wheel platforms we build
ARCHITECTURES = {"linux_armv7l": "armv7l", "linux_aarch64": "aarch64", "linux_x86_64": "x86_64",
                 "linux_i686": "i686", "linux_ppc64le": "ppc64le", "linux_s390x": "s390x",
                 "linux_riscv64": "riscv64"}


@dataclass(frozen=True)
class WheelAbi:
    """What a wheel's compiled code asks of the system it loads on."""

    glibc_floor: str | None       # "2.34": the newest GLIBC_ symbol version needed; None: no glibc need
    manylinux: str | None         # the lowest policy it meets ("manylinux_2_31_armv7l"), None: linux_*
    why_not: str | None = None    # why it meets none, in words (for the log)


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def glibc_floor(objects: list[ElfObject]) -> str | None:
    """The highest ``GLIBC_x.y`` version any of ``objects`` needs, as ``"x.y"``; None if none."""
    found = [(int(m[1]), int(m[2])) for elf in objects for _library, version in elf.versions
             if (m := _GLIBC.match(version))]
    return f"{max(found)[0]}.{max(found)[1]}" if found else None


@lru_cache(maxsize=16)
def _policies(architecture: str):
    from auditwheel.architecture import Architecture
    from auditwheel.libc import Libc
    from auditwheel.policy import WheelPolicies
    return WheelPolicies(libc=Libc.GLIBC, arch=Architecture(architecture))


def manylinux_policy(objects: list[ElfObject], bundled: frozenset[str], platform: str) -> WheelAbi:
    """The lowest manylinux policy (auditwheel's data) that ``objects`` meet on ``platform``.

    ``bundled`` are the file names the wheel carries itself: libraries of those names are its own.
    """
    floor = glibc_floor(objects)
    architecture = ARCHITECTURES.get(platform)
    if not objects or architecture is None:
        return WheelAbi(floor, None, "no compiled code" if not objects else f"no policy for {platform}")
    policies = _policies(architecture)
    external = sorted({soname for elf in objects for soname in elf.needed
                       if soname not in bundled and "ld-linux" not in soname
                       and soname not in ("ld64.so.1", "ld64.so.2")})
    undefined = frozenset().union(*(elf.undefined for elf in objects))
    versioned: dict[str, set[str]] = {}
    for elf in objects:
        for library, version in elf.versions:
            if library not in bundled:
                versioned.setdefault(library, set()).add(version)
    by_symbols = policies.versioned_symbols_policy(versioned)
    # from the oldest glibc to the newest: the first policy that every rule allows
    for policy in sorted(policies, key=lambda p: -p.priority):
        if policy == policies.linux or policy.priority > by_symbols.priority:
            continue
        if any(soname not in policy.whitelist for soname in external):
            continue
        if any(undefined & set(policy.blacklist.get(soname, ())) for soname in external):
            continue
        return WheelAbi(floor, policy.name)
    outside = [soname for soname in external
               if not any(soname in policy.whitelist for policy in policies if policy != policies.linux)]
    forbidden = sorted(name for policy in policies for soname in external
                       for name in undefined & set(policy.blacklist.get(soname, ())))
    if outside:
        why = f"links {', '.join(outside[:4])}, outside the manylinux policy (not bundled: no grafting)"
    elif forbidden:
        why = f"uses {forbidden[0]}, a symbol the manylinux policy forbids"
    else:
        why = "needs symbol versions newer than any manylinux policy auditwheel knows"
    return WheelAbi(floor, None, why)


def wheel_abi(zf: zipfile.ZipFile, platform: str, *, scratch: Path | None = None,
              objects: list | None = None) -> WheelAbi:
    """Floor and policy of the wheel open in ``zf``, built for ``platform`` (``linux_armv7l``)."""
    from wheelwright.builds.analysis import bundled_names, elf_members
    if objects is None:
        objects = elf_members(zf, scratch=scratch)
    return manylinux_policy([elf for _name, elf in objects], bundled_names(zf), platform)


def linux_platform(platform_tag: str) -> str:
    """The ``linux_<arch>`` a platform tag is for: itself, or a manylinux tag's architecture."""
    m = _MANYLINUX.match(platform_tag)
    return f"linux_{m[3]}" if m else platform_tag


def tag_problem(platform_tag: str, abi: WheelAbi) -> str | None:
    """Why a wheel of ``abi`` must not carry ``platform_tag`` (a manylinux tag), or None."""
    m = _MANYLINUX.match(platform_tag)
    if m is None:
        return None
    if abi.manylinux is None:
        return f"it claims {platform_tag}, but {abi.why_not or 'it meets no manylinux policy'}"
    claimed, met = (int(m[1]), int(m[2])), tuple(int(x) for x in _MANYLINUX.match(abi.manylinux).groups()[:2])
    if claimed < met:
        return (f"it claims {platform_tag}, but its compiled code needs {abi.manylinux} "
                f"(glibc {abi.glibc_floor})")
    return None


def retagged_name(filename: str, platform_tag: str) -> str:
    """``filename`` with its platform tag replaced by ``platform_tag`` (name, version, build kept)."""
    parts = filename[:-len(".whl")].split("-")
    return "-".join(parts[:-1] + [platform_tag]) + ".whl"


def retag(path: Path, platform_tag: str) -> Path:
    """Write the wheel at ``path`` again as a ``platform_tag`` wheel beside it; return the new path.

    Only the file name, the ``Tag`` lines of ``*.dist-info/WHEEL`` and that file's ``RECORD`` line
    change; every other member is copied as it is. The old file is removed.
    """
    path = Path(path)
    target = path.with_name(retagged_name(path.name, platform_tag))
    with zipfile.ZipFile(path) as source:
        names = source.namelist()
        [wheel_member] = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/WHEEL")]
        record_member = wheel_member[:-len("WHEEL")] + "RECORD"
        wheel_text = source.read(wheel_member).decode("utf-8")
        tags, lines = [], []
        for line in wheel_text.splitlines():
            if line.startswith("Tag:"):
                python, abi, _platform = line.split(":", 1)[1].strip().split("-")
                tag = f"{python}-{abi}-{platform_tag}"
                if tag not in tags:
                    tags.append(tag)
                    lines.append(f"Tag: {tag}")
            else:
                lines.append(line)
        new_wheel = ("\n".join(lines) + "\n").encode("utf-8")
        digest = base64.urlsafe_b64encode(hashlib.sha256(new_wheel).digest()).rstrip(b"=").decode()
        rows = list(csv.reader(io.StringIO(source.read(record_member).decode("utf-8"))))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for row in rows:
            writer.writerow([wheel_member, f"sha256={digest}", str(len(new_wheel))]
                            if row and row[0] == wheel_member else row)
        new_record = out.getvalue().encode("utf-8")
        partial = target.with_name(f".{target.name}.part")
        try:
            with zipfile.ZipFile(partial, "w") as dest:
                for info in source.infolist():
                    if info.filename == wheel_member:
                        dest.writestr(info, new_wheel)
                    elif info.filename == record_member:
                        dest.writestr(info, new_record)
                    else:
                        with source.open(info) as member, dest.open(info, "w") as copy:
                            while chunk := member.read(1 << 20):
                                copy.write(chunk)
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    if target != path:
        path.unlink()
    return target


def check_tags_fit(platform_tag: str, target_platform: str) -> None:
    """Refuse a manylinux tag of another architecture than the target's (its policy is checked apart)."""
    if linux_platform(platform_tag) != target_platform:
        raise WheelRefused(f"it is for {platform_tag}, but the target builds for {target_platform}")
