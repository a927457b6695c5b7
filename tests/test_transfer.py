"""SFTP transfer to a real SSH server on loopback, and the receiver that publishes only what matches."""

from __future__ import annotations

import hashlib
import json

import paramiko
import pytest

from support.build_world import SFTPServer
from wheelwright.builds.transfer import (LocalFolder, TransferError, accept, incoming_folder, place, upload,
                                         wheel_destination, write_file)
from wheelwright.builds.analysis import FileInfo

BUILD_ID = 42
REMOTE = "/incoming/builder"   # the account's own folder, as SFTP names it


@pytest.fixture(scope="module")
def index_host(tmp_path_factory):
    root = tmp_path_factory.mktemp("index-host")
    (root / "incoming").mkdir()
    server = SFTPServer(root, tmp_path_factory.mktemp("keys")).start()
    yield server
    server.stop()


@pytest.fixture
def sftp(index_host):
    ssh, client = index_host.client()
    yield client
    client.close()
    ssh.close()


@pytest.fixture
def sent_files(tmp_path):
    """Two files on the worker, as the builder describes them."""
    local = tmp_path / "results"
    local.mkdir()
    infos = []
    for name, data in [("foo-1.0-py3-none-any.whl", b"PK\x03\x04 wheel bytes" * 1000),
                       (f"{BUILD_ID}.txt.gz", b"log bytes")]:
        (local / name).write_bytes(data)
        infos.append(FileInfo(name, hashlib.sha256(data).hexdigest(), len(data)))
    return local, infos


def received(index_host, build_id=BUILD_ID):
    return incoming_folder(index_host.incoming / "builder", build_id)


def test_files_sent_over_sftp_are_accepted_when_size_and_hash_match(index_host, sftp, sent_files):
    local, infos = sent_files
    upload(sftp, local, infos, REMOTE, BUILD_ID)
    folder = received(index_host)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.filename for f in infos), \
        "no .part file is left behind"
    accepted = accept(folder, infos)
    assert [(a.filename, a.sha256, a.size) for a in accepted] == [tuple(vars(f).values()) for f in infos]


def test_sending_the_same_build_again_replaces_its_files(index_host, sftp, sent_files):
    local, infos = sent_files
    upload(sftp, local, infos, REMOTE, BUILD_ID + 1)
    upload(sftp, local, infos, REMOTE, BUILD_ID + 1)
    assert len(accept(received(index_host, BUILD_ID + 1), infos)) == 2


def test_a_corrupted_transfer_is_refused_and_discarded(index_host, sftp, sent_files):
    local, infos = sent_files
    upload(sftp, local, infos, REMOTE, BUILD_ID + 2)
    folder = received(index_host, BUILD_ID + 2)
    wheel = folder / infos[0].filename
    data = bytearray(wheel.read_bytes())
    data[100] ^= 0xFF  # one flipped byte on the way
    wheel.write_bytes(bytes(data))
    with pytest.raises(TransferError, match=r"foo-1.0-py3-none-any.whl has sha256 .*, the builder sent"):
        accept(folder, infos)
    assert not folder.exists(), "a refused transfer leaves nothing behind"


def test_a_half_sent_file_is_never_accepted(index_host, sftp, sent_files):
    local, infos = sent_files
    folder = f"{REMOTE}/{BUILD_ID + 3}"
    sftp.mkdir(folder)
    with sftp.open(f"{folder}/.{infos[0].filename}.part", "wb") as f:  # the connection drops here
        f.write(local.joinpath(infos[0].filename).read_bytes()[:500])
    with pytest.raises(TransferError, match="did not arrive"):
        accept(received(index_host, BUILD_ID + 3), infos)


def test_a_truncated_file_is_refused_by_its_size(tmp_path, sent_files):
    local, infos = sent_files
    folder = tmp_path / "incoming" / "7"
    folder.mkdir(parents=True)
    for f in infos:
        folder.joinpath(f.filename).write_bytes(local.joinpath(f.filename).read_bytes()[:-1])
    with pytest.raises(TransferError, match=r"is \d+ bytes, the builder sent \d+"):
        accept(folder, infos)


@pytest.mark.parametrize("name", ["../../simple/foo/evil-1.0-py3-none-any.whl", "a/b.whl", "..", ".hidden"])
def test_a_file_name_with_a_path_is_refused(tmp_path, name):
    folder = tmp_path / "incoming" / "8"
    folder.mkdir(parents=True)
    with pytest.raises(TransferError, match="not a plain file name"):
        accept(folder, [(name, "0" * 64, 1)])


def test_an_unknown_host_key_is_refused(index_host):
    import asyncssh
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    with pytest.raises(paramiko.BadHostKeyException):
        index_host.client(host_key_line=other)


def test_placing_a_file_moves_it_into_the_published_tree(tmp_path):
    source = tmp_path / "incoming" / "foo-1.0-py3-none-any.whl"
    source.parent.mkdir()
    source.write_bytes(b"wheel")
    destination = wheel_destination(tmp_path / "www", "Foo_Bar", source.name)
    assert destination == tmp_path / "www" / "simple" / "foo-bar" / source.name
    place(source, destination)
    assert destination.read_bytes() == b"wheel" and not source.exists()
    assert destination.stat().st_mode & 0o777 == 0o644


def test_the_airflow_ssh_hook_uploads_with_the_pinned_host_key(index_host, sent_files, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST", json.dumps({
        "conn_type": "ssh", "host": "127.0.0.1", "port": index_host.port, "login": "builder",
        "extra": {"key_file": str(index_host.client_key_file), "host_key": index_host.host_key_line,
                  "no_host_key_check": False, "look_for_keys": False}}))
    from airflow.providers.ssh.hooks.ssh import SSHHook

    hook = SSHHook(ssh_conn_id="wheelwright_index_host")
    assert hook.no_host_key_check is False and hook.host_key is not None
    with hook.get_conn() as ssh:
        sftp = ssh.open_sftp()
        local, infos = sent_files
        upload(sftp, local, infos, REMOTE, BUILD_ID + 4)
        sftp.close()
    assert len(accept(received(index_host, BUILD_ID + 4), infos)) == 2


@pytest.mark.parametrize("package, filename", [
    ("/opt/x", "foo-1.0-py3-none-any.whl"),          # canonicalize_name keeps the slashes
    ("..", "foo-1.0-py3-none-any.whl"),
    ("foo/../../etc", "foo-1.0-py3-none-any.whl"),
    ("foo", "../../dags/evil.py"),
    ("foo", "/etc/cron.d/evil"),
    ("foo", ".."),
])
def test_a_destination_is_made_of_canonical_parts_and_stays_in_the_tree(tmp_path, package, filename):
    with pytest.raises(TransferError):
        wheel_destination(tmp_path / "www", package, filename)
    assert not (tmp_path / "www").exists()


def test_a_destination_through_a_planted_symlink_is_refused(tmp_path):
    (tmp_path / "www" / "simple").mkdir(parents=True)
    (tmp_path / "www" / "simple" / "foo").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(TransferError, match="it leaves"):
        wheel_destination(tmp_path / "www", "foo", "foo-1.0-py3-none-any.whl")


def test_a_file_nobody_announced_is_refused(tmp_path, sent_files):
    local, infos = sent_files
    folder = tmp_path / "incoming" / "9"
    folder.mkdir(parents=True)
    for f in infos:
        folder.joinpath(f.filename).write_bytes(local.joinpath(f.filename).read_bytes())
    folder.joinpath("surprise.whl").write_bytes(b"x")
    folder.joinpath(".foo-1.0-py3-none-any.whl.part").write_bytes(b"half")  # an upload cut short: ignored
    with pytest.raises(TransferError, match="surprise.whl was not announced by the builder"):
        accept(folder, infos)


def test_a_local_folder_takes_the_same_upload_as_the_index_host(tmp_path, sent_files):
    """`wheelwright build` sends its files through the same upload code, into a local incoming folder."""
    local, infos = sent_files
    (tmp_path / "incoming").mkdir()
    upload(LocalFolder(), local, infos, str(tmp_path / "incoming"), BUILD_ID)
    upload(LocalFolder(), local, infos, str(tmp_path / "incoming"), BUILD_ID)  # a retry replaces
    assert len(accept(incoming_folder(tmp_path / "incoming", BUILD_ID), infos)) == 2


def test_a_written_file_appears_whole(tmp_path):
    destination = tmp_path / "www" / "simple" / "foo" / "foo-1.0-py3-none-any.whl.metadata"
    write_file(destination, b"Metadata-Version: 2.1\n")
    assert destination.read_bytes() == b"Metadata-Version: 2.1\n"
    assert [p.name for p in destination.parent.iterdir()] == [destination.name], "no temporary file left"


def test_a_worker_hands_back_a_build_over_sftp_from_its_watch_thread(index_host, monkeypatch, tmp_path):
    """The batch watch's thread opens its own session through the Airflow SSH hook (host key pinned)
    and leaves the hand-back marker in each unstarted build's folder; the worker then skips them."""
    from support.waiting import wait_until
    from wheelwright.builds import batches
    from wheelwright.builds.incoming import HANDED_BACK
    from wheelwright.operate import dag_tasks
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST", json.dumps({
        "conn_type": "ssh", "host": "127.0.0.1", "port": index_host.port, "login": "builder",
        "extra": {"key_file": str(index_host.client_key_file), "host_key": index_host.host_key_line,
                  "no_host_key_check": False, "look_for_keys": False}}))
    monkeypatch.setattr(batches, "HAND_BACK_AFTER", 0)
    batch = [{"build_id": BUILD_ID + 10 + i} for i in range(3)]
    watch = dag_tasks._BatchWatch(batch, REMOTE)
    markers = [received(index_host, r["build_id"]) / HANDED_BACK for r in batch]
    try:
        assert watch.start(batch[0]), "the first build always starts"
        wait_until(lambda: markers[1].is_file() and markers[2].is_file(), 30, "the hand-back markers")
        assert not watch.start(batch[1]) and not watch.start(batch[2])
        assert not markers[0].exists(), "the build under way is not handed back"
    finally:
        watch.stop()
