"""Names from outside, made ours once: canonical project names and ABI tags.

Project names arrive from PyPI's changelog and JSON, from operators and from wheels a build made. Each
becomes a canonical name here (PEP 503's normalisation, ``packaging.utils.canonicalize_name``), and only a
name that is canonical, plain and short enough to be a directory in the published tree is ours: the journal,
the writer and the index host's checks all ask this module, so a name that could carry a path never gets
past the door anywhere. ABI tags (``cp39``, ``cp311``, ``cp313t``) sort here in numeric order, the order in
which targets are tried and shown. A wheel's (or PyPI's) Requires-Dist lines become PEP 508 requirements
here too (:func:`pip_requirements`), before any page shows them.
"""

from __future__ import annotations

import re
from functools import lru_cache

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

# The canonical alphabet, for regex engines that need the pattern itself (polars, in a bulk replay).
CANONICAL_PATTERN = r"[a-z0-9]+(?:-[a-z0-9]+)*"
MAX_NAME_LENGTH = 200  # longer than any real project name, short enough for every file system

_CANONICAL = re.compile(CANONICAL_PATTERN + r"\Z")
_ABI = re.compile(r"([a-z]+)(\d)(\d+)([a-z0-9_]*)\Z")  # cp311 -> cp, 3, 11, ""; cp313t -> ..., "t"
_SAFE_ALIAS = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,198}[A-Za-z0-9])?\Z")


def is_canonical(name: str) -> bool:
    """A canonical project name we accept: safe as one directory name in the published tree."""
    return len(name) <= MAX_NAME_LENGTH and bool(_CANONICAL.match(name))


@lru_cache(maxsize=1 << 18)
def canonical_or_none(name: str) -> str | None:
    """The canonical form of ``name`` if it is one we accept, else None."""
    canon = canonicalize_name(name)
    return canon if is_canonical(canon) else None


def safe_alias(alias: str, canonical: str) -> bool:
    """An alias spelling that gets a ``project/<alias>`` link: differs and is a safe file name."""
    return alias != canonical and bool(_SAFE_ALIAS.match(alias))


def abi_order(abi: str) -> tuple | None:
    """Sort key putting ABI tags in numeric order (``cp39 < cp311 < cp313 < cp313t``); None if not one."""
    m = _ABI.match(abi)
    if not m:
        return None
    implementation, major, minor, suffix = m.groups()
    return implementation, int(major), int(minor), suffix


MAX_REQUIREMENTS = 500
MAX_REQUIREMENT_LENGTH = 1000


def pip_requirements(lines) -> tuple[str, ...]:
    """The Requires-Dist lines of a METADATA that are PEP 508 requirements, in their normal spelling.

    They come from the package's author: a line that does not parse, or absurdly many or long ones,
    are left out (the wheel itself is fine; pip reads the same METADATA and decides for itself).
    """
    kept = []
    for line in lines:
        if len(kept) >= MAX_REQUIREMENTS:
            break
        if not line or len(line) > MAX_REQUIREMENT_LENGTH:
            continue
        try:
            kept.append(str(Requirement(line)))
        except InvalidRequirement:
            continue
    return tuple(kept)
