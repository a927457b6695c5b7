"""Production's SFTP endpoint held to the same tests as the stand-in: OpenSSH's sshd, run for real
with the configuration the stack ships (tests/support/openssh.py).

In production a builder's session is OpenSSH's ``internal-sftp``, chrooted by the kernel, so a link
cannot lead a session above its chroot; but inside it, a link could still lead the index host (which
reads the folder from outside the chroot) anywhere, and one builder could reach another's folder.
So the shipped configuration allows only the requests an upload needs (no symlink, hard link or
setstat), starts each account in its own folder, and the incoming folder's modes keep every account
out of the others' folders. Then an upload through it is recorded by the real intake, bound to the
account that sent it.
"""

from __future__ import annotations

import os
import posixpath
import stat

import paramiko
import pytest

from wheelwright.builds import incoming

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sshd chroots and switches users: root only")

SECRET = b"outside the chroot\n"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    from support.openssh import start_openssh
    server = start_openssh(("pi-a", "pi-b"), tmp_path_factory.mktemp("keys"))
    (server.base / "secret.txt").write_bytes(SECRET)                 # beside the chroot
    yield server
    server.stop()


@pytest.fixture
def sftp(endpoint):
    ssh, client = endpoint.client("pi-a")
    yield client
    client.close()
    ssh.close()


def untouched(endpoint):
    assert (endpoint.base / "secret.txt").read_bytes() == SECRET
    assert sorted(p.name for p in endpoint.root.iterdir()) == ["incoming"]
    for path in endpoint.root.rglob("*"):
        assert not path.is_symlink(), f"{path} is a link a client made"
        assert os.stat(path, follow_symlinks=False).st_nlink == 1 or path.is_dir()


def test_a_session_starts_in_its_own_folder(endpoint, sftp):
    assert sftp.normalize(".") == "/incoming/pi-a"


def test_links_are_refused_so_the_chain_cannot_start(endpoint, sftp):
    with pytest.raises(PermissionError):
        sftp.symlink(".", "L")
    with pytest.raises(PermissionError):
        sftp.symlink("../../../secret.txt", "x")
    with sftp.open("mine.whl", "wb") as f:
        f.write(b"mine")
    with pytest.raises(OSError):
        sftp._request(paramiko.sftp.CMD_EXTENDED, "hardlink@openssh.com", "/incoming/pi-a/mine.whl",
                      "/incoming/pi-a/twin.whl")
    with pytest.raises(PermissionError):
        sftp.chmod("mine.whl", 0o4755)
    sftp.remove("mine.whl")
    untouched(endpoint)


@pytest.mark.parametrize("path", ["/incoming/pi-b", "/incoming/pi-b/x.whl", "/incoming", "../pi-b/x.whl",
                                  "../../secret.txt", "/etc/passwd", "/incoming/.intake/x"])
def test_nothing_beyond_the_accounts_own_folder_can_be_read_listed_or_written(endpoint, sftp, path):
    (endpoint.incoming / "pi-b" / "x.whl").write_bytes(b"pi-b's")
    with pytest.raises(OSError):
        sftp.open(path).read()
    with pytest.raises(OSError):
        sftp.open(posixpath.join(path, "new") if path.endswith("pi-b") else path, "wb").write(b"overwritten")
    with pytest.raises(OSError):
        sftp.listdir(path)
    assert (endpoint.incoming / "pi-b" / "x.whl").read_bytes() == b"pi-b's"
    untouched(endpoint)


def test_nothing_is_renamed_into_or_out_of_another_folder(endpoint, sftp):
    (endpoint.incoming / "pi-b" / "x.whl").write_bytes(b"pi-b's")
    with sftp.open("mine.whl", "wb") as f:
        f.write(b"mine")
    for source, target in (("mine.whl", "/incoming/pi-b/mine.whl"), ("mine.whl", "/incoming/moved.whl"),
                           ("/incoming/pi-b/x.whl", "theirs.whl")):
        with pytest.raises(OSError):
            sftp.posix_rename(source, target)
        with pytest.raises(OSError):
            sftp.rename(source, target)
    sftp.remove("mine.whl")
    assert (endpoint.incoming / "pi-b" / "x.whl").read_bytes() == b"pi-b's"
    untouched(endpoint)


def test_an_upload_through_openssh_is_bound_to_its_account_and_recorded(endpoint, catalog, tmp_path):
    from support.build_world import add_release, use_targets
    from test_builder_accounts import TARGET, built, module_of, published, row
    from wheelwright.builds import transfer
    from wheelwright.builds.queue import claim_wave
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    [request] = claim_wave(catalog, TARGET, 1)
    request = dict(request)
    output = tmp_path / "www"
    for account, module in (("pi-a", b"honest = True\n"), ("pi-b", b"evil = True\n")):
        ssh, client = endpoint.client(account)
        try:
            sent = transfer.send_outcome(client, built(tmp_path, request, module), f"/incoming/{account}")
            incoming.send_manifest(client, sent, f"/incoming/{account}")
        finally:
            client.close()
            ssh.close()
        if account == "pi-a":
            folder = endpoint.incoming / "pi-a" / str(request["build_id"])
            mode = folder.stat().st_mode
            assert stat.S_IMODE(mode) & 0o007 == 0, "nothing a builder makes is readable by another"
            incoming.sweep(catalog, endpoint.incoming, output)   # the index host looks: pi-a answered first
    assert incoming.record_arrival(catalog, request, endpoint.incoming, output) == ["foo"]
    assert row(catalog, request["build_id"])[:2] == ("success", "pi-a")
    assert module_of(published(output)) == b"honest = True\n"
    assert not (endpoint.incoming / "pi-b" / str(request["build_id"])).exists()
    untouched(endpoint)
