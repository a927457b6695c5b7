"""Small builders of the world the build tests need: catalog rows for releases, targets, sdists.

Plain INSERTs into the catalog (the tests of the build side do not depend on how the journal is
folded), and sdist tarballs made from source trees in memory, as a maintainer's ``setup.py sdist``
would make them.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

from wheelwright.operate.sftp_server import SFTPServer  # noqa: F401  (the tests' index host)
from wheelwright.builds.targets import mirror_targets, parse_targets

NOW = datetime.now(timezone.utc)

TWO_TARGETS = """
[[target]]
name = "cp39-armv7l"
abi = "cp39"
platform = "linux_armv7l"
distro = "bullseye"

[[target]]
name = "cp311-armv7l"
abi = "cp311"
platform = "linux_armv7l"
distro = "bookworm"
"""


def use_targets(conn, text: str = TWO_TARGETS):
    targets = parse_targets(text)
    mirror_targets(conn, targets)
    return targets


def add_package(conn, package: str, *, present=True, quarantined=False, skip_reason=None) -> None:
    conn.execute(
        "INSERT INTO packages (package, display_name, present, quarantined, change_seq, "
        "skip_reason) VALUES (%s, %s, %s, %s, nextval('change_seq'), %s) "
        "ON CONFLICT (package) DO NOTHING",
        (package, package, present, quarantined, skip_reason))


def add_release(conn, package: str, version: str, *, released: datetime | None = None,
                age: timedelta | None = None, has_sdist=True, quarantined=False, skip_reason=None) -> None:
    add_package(conn, package)
    if released is None:
        released = NOW - (age if age is not None else timedelta(days=400))
    conn.execute(
        "INSERT INTO versions (package, version, born_serial, released, rank, valid, prerelease, "
        "yanked, quarantined, has_sdist, skip_reason) "
        "VALUES (%s, %s, 1, %s, 1, true, false, false, %s, %s, %s)",
        (package, version, released, quarantined, has_sdist, skip_reason))
    conn.commit()


def add_sdist(conn, package: str, version: str, size: int | None) -> None:
    """The release's sdist as the JSON API describes it (its size; None: not enriched yet)."""
    conn.execute(
        "INSERT INTO source_files (package, filename, version, pyver, born_serial, uploaded, size) "
        "VALUES (%s, %s, %s, 'source', 1, now(), %s)",
        (package, f"{package}-{version}.tar.gz", version, size))
    conn.commit()


def add_build(conn, package: str, version: str, target: str, status: str, *,
              wheels: tuple[str, ...] = ()) -> int:
    """A finished (or in-flight) build, with wheel rows named ``wheels`` (tags from the names)."""
    abi = conn.execute("SELECT abi FROM targets WHERE name = %s", (target,)).fetchone()[0]
    build_id = conn.execute(
        "INSERT INTO builds (package, version, abi, target, status) VALUES (%s, %s, %s, %s, %s) "
        "RETURNING build_id", (package, version, abi, target, status)).fetchone()[0]
    for filename in wheels:
        python_tag, abi_tag, platform_tag = filename[:-4].split("-")[-3:]
        conn.execute(
            "INSERT INTO wheels (filename, build_id, package, version, size, sha256, python_tag, "
            "abi_tag, platform_tag) VALUES (%s, %s, %s, %s, 1, 'x', %s, %s, %s)",
            (filename, build_id, package, version, python_tag, abi_tag, platform_tag))
    conn.commit()
    return build_id


# --- sdists ------------------------------------------------------------------------------------------

def make_sdist(directory: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """Write ``<name>-<version>.tar.gz`` holding ``files`` (dedented) under ``<name>-<version>/``."""
    base = f"{name}-{version}"
    members = {"PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", **files}
    path = Path(directory) / f"{base}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for member, text in sorted(members.items()):
            data = textwrap.dedent(text).encode()
            info = tarfile.TarInfo(f"{base}/{member}")
            info.size, info.mode, info.mtime = len(data), 0o644, 315532800
            tar.addfile(info, io.BytesIO(data))
    return path


def setup_py(name: str, version: str, body: str = "", **setup_args) -> str:
    """A setup.py that runs ``body`` (dedented) and then ``setup(name, version, **setup_args)``."""
    args = "".join(f", {key}={value}" for key, value in setup_args.items())
    return (textwrap.dedent(body) + "\nfrom setuptools import setup\n"
            f"setup(name={name!r}, version={version!r}{args})\n")


# --- an SFTP server on loopback -----------------------------------------------------------------------

def open_folder(prefix: str) -> Path:
    """A fresh folder in the system temp dir that the unprivileged build user can reach.

    pytest's own tmp folders are private to root (0700), and builds never run as root.
    """
    import tempfile
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def make_wheel(directory: Path, filename: str, members: dict[str, bytes]) -> Path:
    import zipfile
    path = Path(directory) / filename
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


# A pyproject that builds with setuptools from the index (the build is isolated, as on a worker).
PYPROJECT = """
    [build-system]
    requires = ["setuptools>=61", "wheel"]
    build-backend = "setuptools.build_meta"
"""

# A tiny C extension: it yields a platform wheel for this machine and an apt dependency on libc6.
C_SOURCE = """
    #include <Python.h>
    #include <unistd.h>
    static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "cext", NULL, -1, NULL};
    PyMODINIT_FUNC PyInit_cext(void) {
        PyObject *m = PyModule_Create(&module);
        if (m) PyModule_AddIntConstant(m, "pid", (long)getpid());  /* a call into libc */
        return m;
    }
"""


def backend_wheels() -> Path:
    """setuptools and wheel as wheels, for build isolation: fetched from PyPI once, then cached;
    builds themselves never leave 127.0.0.1."""
    repo = Path(__file__).resolve().parents[2]
    cache = Path(os.environ.get("WHEELWRIGHT_TEST_WHEELS", repo / ".wheelwright" / "test-wheels"))
    if not (list(cache.glob("setuptools-*.whl")) and list(cache.glob("wheel-*.whl"))):
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "--no-deps",
                        "-d", str(cache), "setuptools==80.9.0", "wheel==0.45.1"], check=True)
    return cache
