"""The world the index tests need, in layers: a catalog row, a release, a build, its wheel on disk.

Plain INSERTs into the catalog (the publisher reads tables, however they were derived), and real wheel
files made in memory: a zip with ``METADATA``, ``WHEEL`` and ``RECORD`` that pip installs.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from wheelwright.publish.writer import log_path_for

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


@dataclass
class Wheel:
    filename: str
    data: bytes
    metadata: bytes


def make_wheel(name: str, version: str, *, requires_python: str | None = None,
               tag: str = "py3-none-any", module: str | None = None) -> Wheel:
    """A minimal, installable wheel of a one-module project."""
    dist = re.sub(r"[-_.]+", "_", name)
    dist_info = f"{dist}-{version}.dist-info"
    module = module or f"{dist.lower()}_mod"
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    metadata = ("\n".join(lines) + "\n").encode()
    files = {
        f"{module}.py": f"VERSION = {version!r}\n".encode(),
        f"{dist_info}/METADATA": metadata,
        f"{dist_info}/WHEEL": (f"Wheel-Version: 1.0\nGenerator: index_world\nRoot-Is-Purelib: true\n"
                               f"Tag: {tag}\n").encode(),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return Wheel(f"{dist.lower()}-{version}-{tag}.whl", buffer.getvalue(), metadata)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class World:
    """Builds catalog rows (and the files the build side would place) for one test."""

    def __init__(self, conn, output: Path):
        self.conn = conn
        self.output = output

    def target(self, name="cp311", abi="cp311", platform="linux_armv7l", distro="bookworm", position=1):
        self.conn.execute(
            "INSERT INTO targets (name, queue, abi, platform, distro, enabled, position) "
            "VALUES (%s, %s, %s, %s, %s, true, %s) ON CONFLICT DO NOTHING",
            (name, name, abi, platform, distro, position))
        self.conn.commit()
        return name

    def package(self, name: str, *, summary=None, present=True, quarantined=False, skip_reason=None,
                aliases=()) -> str:
        canon = canonicalize_name(name)
        self.conn.execute(
            "INSERT INTO packages (package, display_name, present, quarantined, change_seq,"
            " summary, skip_reason) VALUES (%s, %s, %s, %s, nextval('change_seq'), %s, %s)"
            " ON CONFLICT (package) DO UPDATE SET display_name = excluded.display_name,"
            " present = excluded.present, quarantined = excluded.quarantined,"
            " summary = excluded.summary, skip_reason = excluded.skip_reason,"
            " change_seq = nextval('change_seq')",
            (canon, name, present, quarantined, summary, skip_reason))
        for i, alias in enumerate({name, *aliases}):
            self.conn.execute(
                "INSERT INTO aliases (package, alias, last_ts, last_serial) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING", (canon, alias, i, i))
        self.conn.commit()
        return canon

    def release(self, package: str, version: str, *, released=None, yanked=False, yanked_reason=None,
                quarantined=False, requires_python=None, skip_reason=None, prerelease=None) -> None:
        try:
            parsed = Version(version)
            valid, pre = True, parsed.is_prerelease
        except InvalidVersion:
            valid, pre = False, False
        n = self.conn.execute("SELECT count(*) FROM versions WHERE package = %s", (package,)).fetchone()[0]
        self.conn.execute(
            "INSERT INTO versions (package, version, born_serial, released, rank, valid, prerelease,"
            " yanked, yanked_reason, quarantined, has_sdist, requires_python, skip_reason)"
            " VALUES (%s, %s, 1, %s, 0, %s, %s, %s, %s, %s, true, %s, %s)",
            (package, version, released or T0 + timedelta(days=n), valid,
             pre if prerelease is None else prerelease, yanked, yanked_reason, quarantined,
             requires_python, skip_reason))
        self._rank(package)
        self.changed(package)

    def _rank(self, package: str) -> None:
        versions = [v for (v,) in self.conn.execute("SELECT version FROM versions WHERE package = %s",
                                                    (package,))]

        def key(v):
            try:
                return (0, Version(v), v)
            except InvalidVersion:
                return (1, Version("0"), v)
        for rank, v in enumerate(sorted(versions, key=key), start=1):
            self.conn.execute("UPDATE versions SET rank = %s WHERE package = %s AND version = %s",
                              (rank, package, v))

    def build(self, package: str, version: str, target: str = "cp311", *, status="success",
              reason=None, log: str | None = "build log\n", duration=42) -> int:
        abi = self.conn.execute("SELECT abi FROM targets WHERE name = %s", (target,)).fetchone()[0]
        build_id = self.conn.execute(
            "INSERT INTO builds (package, version, abi, target, status, builder, duration, reason)"
            " VALUES (%s, %s, %s, %s, %s, 'pi-1', make_interval(secs => %s), %s) RETURNING build_id",
            (package, version, abi, target, status, duration, reason)).fetchone()[0]
        if log is not None:
            rel = log_path_for(build_id)
            path = self.output / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(gzip.compress(log.encode()))
            self.conn.execute("UPDATE builds SET log_path = %s WHERE build_id = %s", (rel, build_id))
        self.changed(package)
        return build_id

    def wheel(self, package: str, version: str, target: str = "cp311", *, wheel: Wheel | None = None,
              requires_python=None, apt=(), unowned=(), metadata=True, uploaded=None) -> Wheel:
        """A successful build of ``version`` with one wheel, placed in the tree as the build side does."""
        display = self.conn.execute("SELECT display_name FROM packages WHERE package = %s",
                                    (package,)).fetchone()[0]
        wheel = wheel or make_wheel(display, version, requires_python=requires_python)
        build_id = self.build(package, version, target)
        folder = self.output / "simple" / package
        folder.mkdir(parents=True, exist_ok=True)
        (folder / wheel.filename).write_bytes(wheel.data)
        if metadata:
            (folder / f"{wheel.filename}.metadata").write_bytes(wheel.metadata)
        python_tag, abi_tag, platform_tag = wheel.filename[:-4].split("-")[-3:]
        self.conn.execute(
            "INSERT INTO wheels (filename, build_id, package, version, size, sha256, python_tag, abi_tag,"
            " platform_tag, requires_python, metadata_sha256, uploaded)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (wheel.filename, build_id, package, version, len(wheel.data), sha256(wheel.data), python_tag,
             abi_tag, platform_tag, requires_python, sha256(wheel.metadata) if metadata else None,
             uploaded or T0))
        for tool, deps in (("apt", apt), ("unowned", unowned)):
            for dep in deps:
                self.conn.execute("INSERT INTO wheel_dependencies (filename, tool, dependency)"
                                  " VALUES (%s, %s, %s)", (wheel.filename, tool, dep))
        self.changed(package)
        return wheel

    def changed(self, *packages: str) -> None:
        self.conn.execute("UPDATE packages SET change_seq = nextval('change_seq') WHERE package = ANY(%s)",
                          (list(packages),))
        self.conn.commit()

    def delete_version(self, package: str, version: str) -> None:
        self.conn.execute("DELETE FROM versions WHERE package = %s AND version = %s", (package, version))
        self.changed(package)

    def delete_package(self, package: str) -> None:
        """What derive does when PyPI removes a project: a tombstone without versions or aliases."""
        self.conn.execute("DELETE FROM versions WHERE package = %s", (package,))
        self.conn.execute("DELETE FROM aliases WHERE package = %s", (package,))
        self.conn.execute("UPDATE packages SET present = false WHERE package = %s", (package,))
        self.changed(package)

    def set(self, package: str, **columns) -> None:
        for column, value in columns.items():
            self.conn.execute(f"UPDATE packages SET {column} = %s WHERE package = %s", (value, package))
        self.changed(package)
