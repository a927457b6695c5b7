"""The index host's SFTP endpoint, for a deployment on one machine and for the tests.

On a real deployment the index host runs OpenSSH and builders reach it over the network. When
everything runs on one machine (`wheelwright run`) and in the tests, this real SSH server (asyncssh)
listens on 127.0.0.1 with SFTP chrooted to a folder, its own host key (which clients pin: the ssh
provider checks host keys) and one authorised client key per account (the production stack gives each
builder its own account: operate/stack.py). The transfer code is the same either
way: the ssh provider's SSHHook on the worker, transfer.py on both ends.
"""

from __future__ import annotations

import base64
from pathlib import Path

import asyncssh


def _key(path: Path):
    """The ed25519 private key at ``path``, made (mode 0600) if it is not there yet."""
    import asyncssh
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.write_bytes(key.export_private_key("openssh"))
    path.chmod(0o600)
    return key


class SFTPServer:
    """A real SSH server (asyncssh) on 127.0.0.1 serving SFTP rooted at ``root``, in a thread.

    It has its own host key and one account per name in ``accounts`` (default: one, ``builder``), each
    with exactly one client key of its own: a key logs in only as its account. ``client_key_file`` is the
    first account's private key (OpenSSH format), ``client_key_files`` every account's, ``host_key_line``
    the ``ssh-ed25519 AAAA...`` line a client pins, and ``logins`` the accounts that logged in, in order.
    """

    def __init__(self, root: Path, keys_dir: Path, port: int = 0, accounts: tuple[str, ...] = ("builder",)):
        self.root = Path(root)
        keys_dir = Path(keys_dir)
        keys_dir.mkdir(parents=True, exist_ok=True)
        # Keys are made once and kept, so a pinned host key stays valid across restarts.
        self._host_key = _key(keys_dir / "host_ed25519")
        self.client_key_files = {
            account: keys_dir / ("client_ed25519" if account == "builder" else f"client_{account}_ed25519")
            for account in accounts}
        self.client_key_file = self.client_key_files[accounts[0]]
        self._allowed = {account: _key(path).public_data for account, path in self.client_key_files.items()}
        self.logins: list[str] = []
        self._port = port
        self.host_key_line = self._host_key.export_public_key("openssh").decode().strip()
        self.port = None
        self._loop = self._thread = self._server = None

    def start(self) -> "SFTPServer":
        import asyncio
        import threading

        import asyncssh
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve():
            root = str(self.root)
            self._server = await asyncssh.listen(
                "127.0.0.1", self._port, server_host_keys=[self._host_key],
                server_factory=lambda: _Accounts(self._allowed, self.logins),
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


class _Accounts(asyncssh.SSHServer):
    """Public-key logins only, each key valid for its own account alone."""

    def __init__(self, allowed: dict[str, bytes], logins: list[str]):
        self._allowed = allowed
        self._logins = logins

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key) -> bool:
        ok = username in self._allowed and key.public_data == self._allowed[username]
        if ok:
            self._logins.append(username)
        return ok


def _b64(text: str) -> bytes:
    return base64.b64decode(text)

