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

from wheelwright.targets import mirror_targets, parse_targets

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
        "INSERT INTO packages (package, display_name, present, quarantined, state_hash, change_seq, "
        "skip_reason) VALUES (%s, %s, %s, %s, 'test', nextval('change_seq'), %s) "
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

class SFTPServer:
    """A real SSH server (asyncssh) on 127.0.0.1 serving SFTP rooted at ``root``, in a thread.

    It has its own host key and accepts exactly one client key; ``client_key_file`` is that key's
    private half (OpenSSH format) and ``host_key_line`` the ``ssh-ed25519 AAAA...`` line a client pins.
    """

    def __init__(self, root: Path, keys_dir: Path):
        import asyncssh
        self.root = Path(root)
        keys_dir = Path(keys_dir)
        keys_dir.mkdir(parents=True, exist_ok=True)
        self._host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key_file = keys_dir / "client_ed25519"
        self.client_key_file.write_bytes(client_key.export_private_key("openssh"))
        self.client_key_file.chmod(0o600)
        self._authorized = asyncssh.import_authorized_keys(
            client_key.export_public_key("openssh").decode())
        self.host_key_line = self._host_key.export_public_key("openssh").decode().strip()
        self.port = None
        self._loop = self._thread = self._server = None

    @property
    def host_key_base64(self) -> str:
        return self.host_key_line.split()[1]

    def start(self) -> "SFTPServer":
        import asyncio
        import threading

        import asyncssh
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve():
            root = str(self.root)
            self._server = await asyncssh.listen(
                "127.0.0.1", 0, server_host_keys=[self._host_key],
                authorized_client_keys=self._authorized,
                sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=root.encode()),
                allow_scp=False)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()

        def run():
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="sftp-server", daemon=True)
        self._thread.start()
        if not ready.wait(20):
            raise RuntimeError("the SFTP server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close():
            self._server.close()
            await self._server.wait_closed()

        import asyncio
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def client(self, *, host_key_line: str | None = None):
        """A paramiko SFTP client that trusts only the pinned host key (``host_key_line``, default ours)."""
        import paramiko
        key_type, key_data = (host_key_line or self.host_key_line).split()[:2]
        ssh = paramiko.SSHClient()
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        ssh.get_host_keys().add(f"[127.0.0.1]:{self.port}", key_type,
                                paramiko.PKey.from_type_string(key_type, _b64(key_data)))
        ssh.connect("127.0.0.1", port=self.port, username="builder",
                    key_filename=str(self.client_key_file), look_for_keys=False, allow_agent=False,
                    timeout=10)
        return ssh, ssh.open_sftp()


def _b64(text: str) -> bytes:
    import base64
    return base64.b64decode(text)


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
    repo = Path(__file__).resolve().parents[1]
    cache = Path(os.environ.get("WHEELWRIGHT_TEST_WHEELS", repo / ".wheelwright" / "test-wheels"))
    if not (list(cache.glob("setuptools-*.whl")) and list(cache.glob("wheel-*.whl"))):
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "--no-deps",
                        "-d", str(cache), "setuptools==80.9.0", "wheel==0.45.1"], check=True)
    return cache
