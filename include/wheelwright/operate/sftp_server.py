"""The index host's SFTP endpoint, for a deployment on one machine and for the tests.

On a real deployment the index host runs OpenSSH (``internal-sftp``, chrooted: see
:func:`wheelwright.operate.stack.sshd_config`) and builders reach it over the network. When everything
runs on one machine (`wheelwright run`) and in the tests, this real SSH server (asyncssh) stands in for
it on 127.0.0.1, with its own host key (which clients pin: the ssh provider checks host keys) and one
authorised client key per account (the production stack gives each builder its own account).

Each account sees exactly one folder, its own: ``/incoming/<account>`` as SFTP names it, which is
``<root>/incoming/<account>`` here, as it is ``<incoming>/<account>`` on the index host in production.
Nothing else is visible: a path outside that folder is refused. The server runs as whoever runs it
(root under ``make run``), so asyncssh's own ``chroot=`` is not enough: it rewrites path strings while
the OS follows links, and a client that makes ``L -> .`` and then a link through ``L`` reaches above
the chroot. So every request is served through :mod:`wheelwright.beneath`, from a descriptor of the
account's folder, one component at a time, never through a link; clients cannot make links (symlink
and hard link requests are refused), nor set modes or owners (uploads are plain files, mode 0640,
folders 0750), nor open anything but plain files and folders.
"""

from __future__ import annotations

import base64
import errno
import os
import stat
from pathlib import Path

import asyncssh
from asyncssh.sftp import (FXF_APPEND, FXF_CREAT, FXF_EXCL, FXF_READ, FXF_TRUNC, FXF_WRITE, SFTPName,
                           SFTPOpUnsupported, SFTPPermissionDenied)

from wheelwright import beneath

REMOTE_INCOMING = "/incoming"    # where every account's folder is, as SFTP names it
FILE_MODE, FOLDER_MODE = 0o640, 0o750


def _key(path: Path):
    """The ed25519 private key at ``path``, made (mode 0600) if it is not there yet."""
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.write_bytes(key.export_private_key("openssh"))
    path.chmod(0o600)
    return key


def account_folder(incoming: str | os.PathLike, account: str) -> Path:
    """The folder of ``account`` on the index host: ``<incoming>/<account>``."""
    return Path(incoming) / account


class SFTPServer:
    """A real SSH server (asyncssh) on 127.0.0.1 serving SFTP, one folder per account, in a thread.

    ``root`` holds ``incoming/``; each name in ``accounts`` (default: one, ``builder``) has its own
    folder ``incoming/<account>`` (made at start) and exactly one client key of its own: a key logs in
    only as its account. ``client_key_file`` is the first account's private key (OpenSSH format),
    ``client_key_files`` every account's, ``host_key_line`` the ``ssh-ed25519 AAAA...`` line a client
    pins, and ``logins`` the accounts that logged in, in order.
    """

    def __init__(self, root: Path, keys_dir: Path, port: int = 0, accounts: tuple[str, ...] = ("builder",)):
        self.root = Path(root)
        self.incoming = self.root / "incoming"
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

        for account in self._allowed:
            account_folder(self.incoming, account).mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve():
            self._server = await asyncssh.listen(
                "127.0.0.1", self._port, server_host_keys=[self._host_key],
                server_factory=lambda: _Accounts(self._allowed, self.logins),
                sftp_factory=lambda chan: _AccountSFTP(chan, self.incoming), allow_scp=False)
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

    def client(self, account: str | None = None, *, host_key_line: str | None = None):
        """A paramiko SSH client and its SFTP session as ``account`` (default: the first), trusting only
        the pinned host key (``host_key_line``, default ours)."""
        import paramiko
        account = account or next(iter(self.client_key_files))
        key_type, key_data = (host_key_line or self.host_key_line).split()[:2]
        ssh = paramiko.SSHClient()
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        ssh.get_host_keys().add(f"[127.0.0.1]:{self.port}", key_type,
                                paramiko.PKey.from_type_string(key_type, _b64(key_data)))
        ssh.connect("127.0.0.1", port=self.port, username=account,
                    key_filename=str(self.client_key_files[account]), look_for_keys=False, allow_agent=False,
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


class _AccountSFTP(asyncssh.SFTPServer):
    """One SFTP session: every request resolved beneath the logged-in account's own folder.

    Client paths are SFTP's (``/incoming/<account>/17/x.whl``; a relative path starts in the account's
    folder, as OpenSSH's ``-d`` makes it); a path that does not lie in the account's folder once ``..``
    is folded is refused, and what lies in it is opened component by component, never through a link.
    """

    def __init__(self, chan, incoming: Path):
        super().__init__(chan)
        account = chan.get_extra_info("username")
        self._home = f"{REMOTE_INCOMING}/{account}".encode()
        self._prefix = beneath.components(self._home)
        self._root = beneath.open_root(account_folder(incoming, account))

    # --- paths ------------------------------------------------------------------------------------

    def _beneath(self, path: bytes) -> str:
        """``path`` as a path relative to the account's folder; refused if it lies outside."""
        if not path.startswith(b"/"):
            path = self._home + b"/" + path
        parts = beneath.components(path)
        if parts[:len(self._prefix)] != self._prefix:
            raise SFTPPermissionDenied("only your own folder, " + self._home.decode() + ", is served")
        return "/".join(parts[len(self._prefix):])

    def _parent(self, path: bytes) -> tuple[int, str]:
        relative = self._beneath(path)
        if not relative:
            raise SFTPPermissionDenied("your folder itself cannot be changed")
        return beneath.parent_of(self._root, relative)

    # --- files --------------------------------------------------------------------------------------

    def open(self, path: bytes, pflags: int, attrs):
        if pflags & FXF_READ and pflags & FXF_WRITE:
            flags, mode = os.O_RDWR, "r+b"
        elif pflags & FXF_WRITE:
            flags, mode = os.O_WRONLY, "wb"
        else:
            flags, mode = os.O_RDONLY, "rb"
        flags |= ((os.O_APPEND if pflags & FXF_APPEND else 0) | (os.O_CREAT if pflags & FXF_CREAT else 0)
                  | (os.O_TRUNC if pflags & FXF_TRUNC else 0) | (os.O_EXCL if pflags & FXF_EXCL else 0))
        fd = beneath.open_file(self._root, self._beneath(path), flags, FILE_MODE)  # the client's mode is not asked
        return os.fdopen(fd, mode, buffering=0)

    def open56(self, path, desired_access, flags, attrs):
        raise SFTPOpUnsupported("SFTP versions above 3 are not served")

    def lstat(self, path: bytes):
        return beneath.lstat(self._root, self._beneath(path))

    stat = lstat   # no request follows a link: there is none to follow

    def setstat(self, path, attrs):
        raise SFTPPermissionDenied("modes, owners and times are the index host's")

    lsetstat = setstat

    def fsetstat(self, file_obj, attrs):
        raise SFTPPermissionDenied("modes, owners and times are the index host's")

    async def scandir(self, path: bytes):
        relative = self._beneath(path)
        if relative:
            parent, name = beneath.parent_of(self._root, relative)
            try:
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise SFTPPermissionDenied(f"{name} is not a folder") from None
                raise
            finally:
                os.close(parent)
        else:
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._root)
        try:
            yield SFTPName(b".", attrs=asyncssh.SFTPAttrs.from_local(os.fstat(fd)))
            with os.scandir(fd) as entries:
                for entry in entries:
                    yield SFTPName(os.fsencode(entry.name),
                                   attrs=asyncssh.SFTPAttrs.from_local(entry.stat(follow_symlinks=False)))
        finally:
            os.close(fd)

    def remove(self, path: bytes) -> None:
        parent, name = self._parent(path)
        try:
            if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                raise SFTPPermissionDenied(f"{name} is a folder")
            os.unlink(name, dir_fd=parent)
        finally:
            os.close(parent)

    def mkdir(self, path: bytes, attrs) -> None:
        parent, name = self._parent(path)
        try:
            os.mkdir(name, FOLDER_MODE, dir_fd=parent)
        finally:
            os.close(parent)

    def rmdir(self, path: bytes) -> None:
        parent, name = self._parent(path)
        try:
            os.rmdir(name, dir_fd=parent)
        finally:
            os.close(parent)

    def realpath(self, path: bytes) -> bytes:
        if not path.startswith(b"/"):
            path = self._home + b"/" + path
        return ("/" + "/".join(beneath.components(path))).encode()

    def _rename(self, oldpath: bytes, newpath: bytes, *, replace: bool) -> None:
        old_parent, old_name = self._parent(oldpath)
        try:
            new_parent, new_name = self._parent(newpath)
            try:
                if not replace:
                    try:
                        os.stat(new_name, dir_fd=new_parent, follow_symlinks=False)
                    except FileNotFoundError:
                        pass
                    else:
                        raise FileExistsError(errno.EEXIST, "it exists", newpath.decode(errors="replace"))
                os.rename(old_name, new_name, src_dir_fd=old_parent, dst_dir_fd=new_parent)
            finally:
                os.close(new_parent)
        finally:
            os.close(old_parent)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._rename(oldpath, newpath, replace=False)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._rename(oldpath, newpath, replace=True)

    def readlink(self, path: bytes):
        raise SFTPPermissionDenied("links are not served")

    def symlink(self, oldpath: bytes, newpath: bytes):
        raise SFTPPermissionDenied("links are not accepted: uploads are plain files")

    link = symlink

    def statvfs(self, path: bytes):
        raise SFTPOpUnsupported("statvfs is not served")

    def fstatvfs(self, file_obj):
        raise SFTPOpUnsupported("statvfs is not served")

    def exit(self) -> None:
        os.close(self._root)


def _b64(text: str) -> bytes:
    return base64.b64decode(text)
