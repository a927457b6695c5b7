"""What a worker sends the index host, made by hand: wheels with exact bytes, and outcomes that say
whatever a test wants them to say (honest ones, and the forgeries a hostile builder could send).

Wheels are written with fixed timestamps, so the same members give the same bytes (a rebuild that
reproduces a wheel), and any difference in members gives other bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

from wheelwright.builds.transfer import incoming_folder

FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def metadata(name: str, version: str, requires_python: str | None = None) -> bytes:
    text = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    if requires_python:
        text += f"Requires-Python: {requires_python}\n"
    return text.encode()


def exact_wheel(directory: Path, filename: str, members: dict[str, bytes]) -> Path:
    """A zip of ``members`` named ``filename`` (nothing checks that it makes sense: tests forge)."""
    path = Path(directory) / filename
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path


def wheel_of(directory: Path, filename: str, name: str = "foo", version: str = "1.0", *,
             requires_python: str | None = ">=3.7", extra: bytes = b"",
             members: dict[str, bytes] | None = None) -> Path:
    """An honest-looking wheel: a module and ``<name>-<version>.dist-info/METADATA``."""
    module = name.replace("-", "_")
    return exact_wheel(directory, filename, members if members is not None else {
        f"{module}/__init__.py": extra,
        f"{module}-{version}.dist-info/METADATA": metadata(name, version, requires_python),
        f"{module}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    })


def file_entry(path: Path) -> dict:
    data = Path(path).read_bytes()
    return {"filename": Path(path).name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def send(incoming: Path, request: dict, wheel_files: list[Path] = (), *, status: str = "success",
         reason: str | None = None, log_text: bytes | None = b"the build's output\n", **changes) -> dict:
    """An outcome dict for ``request`` announcing ``wheels`` (already in its incoming folder) and a log,
    as a worker's XCom carries it; ``changes`` override any key (forgeries)."""
    folder = incoming_folder(incoming, request["build_id"])
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for path in wheel_files:
        entry = file_entry(path)
        entry.update({"python_tag": "", "abi_tag": "", "platform_tag": "", "requires_python": None,
                      "requires_dist": [], "dependencies": [], "metadata": None})
        entries.append(entry)
    log_entry = None
    if log_text is not None:
        log_path = folder / f"{request['build_id']}.txt.gz"
        log_path.write_bytes(gzip.compress(log_text, mtime=0))
        log_entry = file_entry(log_path)
    outcome = {"build_id": request["build_id"], "package": request["package"], "version": request["version"],
               "target": request["target"], "abi": request["abi"], "status": status, "reason": reason,
               "builder": "pi-7", "duration": 12.5, "log": log_entry, "wheels": entries}
    outcome.update(changes)
    return outcome
