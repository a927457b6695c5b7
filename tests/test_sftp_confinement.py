"""A builder's SFTP session reaches its own folder and nothing else, and uploads are plain files.

The attack (issue 30, point 1): asyncssh's ``chroot=`` judged paths as strings while the OS followed
links, so a key holder made ``L -> .`` and then ``L/L/x -> ../../secret``, which the string says
stays inside and the OS resolves above the root; it then read and wrote anywhere the server's user
could (root under ``make run``). Every test here goes through a real SSH server on loopback with a
real SFTP client (paramiko, as the ssh provider's hook uses), and ends by checking that what lies
outside the account's folder is untouched. The same paths are thrown at the index host's own
reader (:mod:`wheelwright.beneath`), by hand and by hypothesis.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

import paramiko
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from support.build_world import SFTPServer
from wheelwright import beneath

SECRET = b"the index host's own file, outside every builder's folder\n"
HOME = "/incoming/pi-a"


@pytest.fixture(scope="module")
def index_host(tmp_path_factory):
    root = tmp_path_factory.mktemp("index-host")
    server = SFTPServer(root, tmp_path_factory.mktemp("keys"), accounts=("pi-a", "pi-b")).start()
    (root / "secret.txt").write_bytes(SECRET)                      # above incoming/
    (server.incoming / "pi-b" / "theirs.whl").write_bytes(b"pi-b's upload")   # another account's
    yield server
    server.stop()


@pytest.fixture
def sftp(index_host):
    ssh, client = index_host.client("pi-a")
    yield client
    client.close()
    ssh.close()


def untouched(index_host):
    root = index_host.root
    assert (root / "secret.txt").read_bytes() == SECRET
    assert sorted(p.name for p in root.iterdir()) == ["incoming", "secret.txt"], "nothing made outside"
    assert (index_host.incoming / "pi-b" / "theirs.whl").read_bytes() == b"pi-b's upload"
    assert sorted(p.name for p in index_host.incoming.iterdir()) == ["pi-a", "pi-b"]
    for path in index_host.root.rglob("*"):
        assert not path.is_symlink(), f"{path} is a link a client made"


def test_the_link_chain_that_escaped_the_chroot_is_refused_at_its_first_step(index_host, sftp):
    with pytest.raises(PermissionError, match="links are not accepted"):
        sftp.symlink(".", f"{HOME}/L")
    with pytest.raises(OSError):
        sftp.symlink("../../secret.txt", f"{HOME}/L/L/x")
    with pytest.raises(OSError):
        sftp.open(f"{HOME}/x").read()
    untouched(index_host)


def test_a_hard_link_is_refused(index_host, sftp):
    with sftp.open(f"{HOME}/mine.whl", "wb") as f:
        f.write(b"mine")
    with pytest.raises(OSError):   # paramiko has no call for it: speak OpenSSH's extension directly
        sftp._request(paramiko.sftp.CMD_EXTENDED, "hardlink@openssh.com", f"{HOME}/mine.whl", f"{HOME}/twin.whl")
    sftp.remove(f"{HOME}/mine.whl")
    untouched(index_host)


@pytest.mark.parametrize("path", [
    "/secret.txt", "/incoming/../secret.txt", f"{HOME}/../../secret.txt", f"{HOME}/../pi-b/theirs.whl",
    "../pi-b/theirs.whl", "../../secret.txt", "/incoming/pi-b/theirs.whl", "/", "/incoming", "/etc/passwd",
])
def test_nothing_outside_the_accounts_own_folder_can_be_read_listed_or_written(index_host, sftp, path):
    with pytest.raises(OSError):
        sftp.open(path).read()
    with pytest.raises(OSError):
        sftp.open(path, "wb").write(b"overwritten")
    with pytest.raises(OSError):
        sftp.listdir(path)
    with pytest.raises(OSError):
        sftp.stat(path)
    with pytest.raises(OSError):
        sftp.mkdir(posixpath.join(path, "new"))
    untouched(index_host)


def test_a_link_put_there_another_way_is_never_followed(index_host, sftp):
    """internal-sftp may one day let a link in, or an operator's mistake: serving never follows it."""
    (index_host.incoming / "pi-a" / "planted").symlink_to(index_host.root / "secret.txt")
    (index_host.incoming / "pi-a" / "up").symlink_to(index_host.root)
    try:
        for path in (f"{HOME}/planted", "planted", f"{HOME}/up/secret.txt"):
            with pytest.raises(OSError):
                sftp.open(path).read()
            with pytest.raises(OSError):
                sftp.open(path, "wb").write(b"overwritten")
        with pytest.raises(OSError):
            sftp.listdir(f"{HOME}/up")
        assert stat.S_ISLNK(sftp.stat(f"{HOME}/planted").st_mode), "a link is shown as what it is"
    finally:
        (index_host.incoming / "pi-a" / "planted").unlink()
        (index_host.incoming / "pi-a" / "up").unlink()
    untouched(index_host)


def test_uploads_are_plain_files_whose_mode_the_client_cannot_choose(index_host, sftp):
    sftp.mkdir(f"{HOME}/17")
    with sftp.open(f"{HOME}/17/.w.whl.part", "wb") as f:
        f.write(b"wheel bytes")
    sftp.posix_rename(f"{HOME}/17/.w.whl.part", f"{HOME}/17/w.whl")
    with pytest.raises(PermissionError):
        sftp.chmod(f"{HOME}/17/w.whl", 0o4755)
    with pytest.raises(PermissionError):
        sftp.utime(f"{HOME}/17/w.whl", (0, 0))
    received = index_host.incoming / "pi-a" / "17" / "w.whl"
    assert received.read_bytes() == b"wheel bytes"
    assert stat.S_IMODE(received.stat().st_mode) == 0o640
    assert sftp.listdir(f"{HOME}/17") == ["w.whl"] and sftp.normalize("17") == f"{HOME}/17"
    sftp.remove(f"{HOME}/17/w.whl")
    sftp.rmdir(f"{HOME}/17")
    untouched(index_host)


def test_nothing_is_renamed_into_or_out_of_another_folder(index_host, sftp):
    with sftp.open(f"{HOME}/mine.whl", "wb") as f:
        f.write(b"mine")
    for source, target in ((f"{HOME}/mine.whl", "/incoming/pi-b/mine.whl"),
                           (f"{HOME}/mine.whl", "../../moved.whl"),
                           ("/incoming/pi-b/theirs.whl", f"{HOME}/theirs.whl")):
        with pytest.raises(OSError):
            sftp.posix_rename(source, target)
        with pytest.raises(OSError):
            sftp.rename(source, target)
    sftp.remove(f"{HOME}/mine.whl")
    untouched(index_host)


def test_another_account_sees_only_its_own_folder(index_host):
    ssh, other = index_host.client("pi-b")
    try:
        assert other.listdir("/incoming/pi-b") == ["theirs.whl"]
        with pytest.raises(OSError):
            other.listdir(HOME)
        with pytest.raises(OSError):
            other.open(f"{HOME}/17", "wb")
    finally:
        other.close()
        ssh.close()
    untouched(index_host)


# --- hypothesis: any path a client can write ------------------------------------------------------

PARTS = st.sampled_from(["..", ".", "", "L", "up", "planted", "secret.txt", "pi-a", "pi-b", "incoming",
                         "theirs.whl", "17", "x.whl"])
PATHS = st.builds(lambda absolute, parts: ("/" if absolute else "") + "/".join(parts),
                  st.booleans(), st.lists(PARTS, max_size=8))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=PATHS)
def test_any_path_a_client_names_reads_only_its_own_files(index_host, sftp, path):
    """Whatever the path, a read returns nothing but what lies in the account's own folder."""
    mine = index_host.incoming / "pi-a"
    if not (mine / "L").is_symlink():
        (mine / "L").symlink_to(".")
        (mine / "up").symlink_to("..")
        (mine / "planted").symlink_to(index_host.root / "secret.txt")
        (mine / "x.whl").write_bytes(b"mine")
    try:
        data = sftp.open(path).read()
    except OSError:
        return
    assert data == b"mine", f"{path!r} read {data[:40]!r}"


@settings(max_examples=300, deadline=None)
@given(path=PATHS)
def test_the_index_host_opens_no_path_outside_its_root(tmp_path_factory, path):
    tree = _tree(tmp_path_factory)
    root_fd = beneath.open_root(tree / "root")
    try:
        fd = beneath.open_file(root_fd, path)
    except OSError as exc:
        assert exc.errno in (errno.ENOENT, errno.EACCES, errno.ENOTDIR, errno.EISDIR), exc
        return
    finally:
        os.close(root_fd)
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    assert real.startswith(str(tree / "root") + "/"), f"{path!r} opened {real}"
    assert "secret" not in real


@given(path=st.text(alphabet=st.sampled_from("./a\\b\0L%2e"), max_size=30))
def test_components_are_plain_names_that_never_climb(path):
    try:
        parts = beneath.components(path)
    except beneath.Refused:
        assert "\0" in path
        return
    assert all(p not in ("", ".", "..") and "/" not in p for p in parts), parts


_TREES = {}


def _tree(factory):
    """root/ with a file, a folder, links that climb and a FIFO; secret.txt beside root/."""
    if "tree" not in _TREES:
        base = factory.mktemp("beneath")
        root = base / "root"
        (root / "17").mkdir(parents=True)
        (root / "x.whl").write_bytes(b"mine")
        (root / "17" / "x.whl").write_bytes(b"mine too")
        (base / "secret.txt").write_bytes(SECRET)
        (root / "L").symlink_to(".")
        (root / "up").symlink_to("..")
        (root / "planted").symlink_to(base / "secret.txt")
        os.mkfifo(root / "theirs.whl")
        _TREES["tree"] = base
    return _TREES["tree"]
