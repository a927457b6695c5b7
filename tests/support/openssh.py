"""Production's SFTP endpoint, for real: OpenSSH's sshd with the configuration the stack ships.

``stack.sshd_config`` is what the sftp service runs (``internal-sftp``, chrooted, an allowlist of
requests); ``stack.prepare_incoming`` is how that service lays out the incoming folder. This module
runs exactly those on 127.0.0.1, with only the port, the chroot's place and the host key changed.
sshd wants real accounts: rather than adding users to a shared machine, the builder accounts (and
the groups ``wheelwright-builders`` and ``wheelwright``) are given to sshd through nss_wrapper
(Debian ``libnss-wrapper``, which ``make setup`` installs), over a copy of the machine's own passwd and
group files. sshd needs root (it chroots and switches users); the chroot's path must be root's all
the way up, so it lives under /run, and is removed when the server stops.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from support.airflow_processes import free_port, wait_until
from wheelwright.operate import stack

NSS_WRAPPER = Path("/usr/lib") / sysconfig.get_config_var("MULTIARCH") / "libnss_wrapper.so"
INDEX_GID, BUILDERS_GID, FIRST_UID = 61000, 61100, 61001


@dataclass
class OpenSSHEndpoint:
    base: Path                      # /run/wheelwright-sftp-...: the chroot (root/) and sshd's files
    port: int
    host_key_line: str
    client_key_files: dict[str, Path]
    uids: dict[str, int]
    process: subprocess.Popen | None = None
    log: Path = field(default=None)

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    def client(self, account: str):
        """A paramiko client and SFTP session as ``account``, the host key pinned."""
        import base64

        import paramiko
        key_type, key_data = self.host_key_line.split()[:2]
        ssh = paramiko.SSHClient()
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        ssh.get_host_keys().add(f"[127.0.0.1]:{self.port}", key_type,
                                paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data)))
        ssh.connect("127.0.0.1", port=self.port, username=account, key_filename=str(self.client_key_files[account]),
                    look_for_keys=False, allow_agent=False, timeout=10)
        return ssh, ssh.open_sftp()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else ""


def start_openssh(accounts: tuple[str, ...], keys_dir: Path) -> OpenSSHEndpoint:
    """sshd with the shipped configuration, one account per name, each with its own key."""
    base = Path("/run") / f"wheelwright-sftp-{uuid.uuid4().hex[:12]}"
    base.mkdir(mode=0o755)
    endpoint = OpenSSHEndpoint(base=base, port=free_port(), host_key_line="", client_key_files={},
                               uids={a: FIRST_UID + i for i, a in enumerate(accounts)}, log=base / "sshd.log")
    try:
        host_key = base / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        key_type, key_data = host_key.with_suffix(".pub").read_text().split()[:2]
        endpoint.host_key_line = f"{key_type} {key_data}"
        keys_dir.mkdir(parents=True, exist_ok=True)
        public = {}
        for account in accounts:
            key = asyncssh.generate_private_key("ssh-ed25519")
            private = keys_dir / f"{account}_ed25519"
            private.write_bytes(key.export_private_key("openssh"))
            private.chmod(0o600)
            endpoint.client_key_files[account] = private
            public[account] = key.export_public_key("openssh").decode().strip()
        stack.install_keys(public, base / "keys")
        (base / "root").mkdir(mode=0o755)
        stack.prepare_incoming(endpoint.incoming, list(accounts), index_gid=INDEX_GID,
                               account_uid=endpoint.uids.__getitem__)
        passwd, group = base / "passwd", base / "group"
        passwd.write_text(Path("/etc/passwd").read_text() + "".join(
            f"{a}:x:{uid}:{BUILDERS_GID}::/incoming/{a}:/usr/sbin/nologin\n" for a, uid in endpoint.uids.items()))
        group.write_text(Path("/etc/group").read_text()
                         + f"wheelwright:x:{INDEX_GID}:\nwheelwright-builders:x:{BUILDERS_GID}:\n")
        config = base / "sshd_config"
        config.write_text(stack.sshd_config(str(host_key), str(base / "keys"), port=endpoint.port,
                                            root=str(base / "root")))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege separation folder
        with endpoint.log.open("wb") as out:
            endpoint.process = subprocess.Popen(
                ["/usr/sbin/sshd", "-D", "-e", "-f", str(config), "-o", "PidFile=none",
                 "-o", "ListenAddress=127.0.0.1"],
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LD_PRELOAD": str(NSS_WRAPPER),
                     "NSS_WRAPPER_PASSWD": str(passwd), "NSS_WRAPPER_GROUP": str(group)},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def banner():
            if endpoint.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {endpoint.tail()}")
            import socket
            try:
                with socket.create_connection(("127.0.0.1", endpoint.port), timeout=1) as s:
                    return s.recv(4) == b"SSH-"
            except OSError:
                return False
        wait_until(banner, 20, "sshd to answer", interval=0.1, on_timeout=endpoint.tail)
        time.sleep(0.1)
        return endpoint
    except BaseException:
        endpoint.stop()
        raise
