"""Recording a build on the index host: all of it in one transaction, or nothing published."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from datetime import timedelta

import pytest

from support.build_world import add_release, use_targets
from support.received import exact_wheel
from wheelwright.builds.queue import claim_wave, expire_lost
from wheelwright.operate.admin import rebuild
from wheelwright.builds.builder import BuildOutcome
from wheelwright.builds.intake import log_path_for, receive, record
from wheelwright.builds.transfer import accept, incoming_folder
from wheelwright.builds.analysis import FileInfo, analyse_wheel

FIRST = "cp39-armv7l"
METADATA = (b"Metadata-Version: 2.1\nName: foo\nVersion: 1.0\nRequires-Python: >=3.7\n"
            b"Requires-Dist: six>=1.16\nRequires-Dist: pytest; extra == 'test'\nRequires-Dist: ???\n")


@pytest.fixture
def request_(catalog):
    """The world: two targets, foo 1.0 released with an sdist, and its build claimed by the first."""
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    [claimed] = claim_wave(catalog, FIRST, 1)
    return claimed


@pytest.fixture
def incoming(tmp_path):
    return tmp_path / "incoming"


@pytest.fixture
def output(tmp_path):
    return tmp_path / "www"


def arrived(incoming, request, *, status="success", wheels=("foo-1.0-cp39-cp39-linux_armv7l.whl",),
            reason=None, extra=b"") -> BuildOutcome:
    """What a worker sent for ``request``, already in the incoming folder, and its outcome."""
    folder = incoming_folder(incoming, request["build_id"])
    folder.mkdir(parents=True, exist_ok=True)
    infos = []
    for filename in wheels if status == "success" else ():
        path = exact_wheel(folder, filename, {"foo/__init__.py": extra, "foo-1.0.dist-info/METADATA": METADATA})
        info = analyse_wheel(path, "foo", "1.0")
        infos.append(dataclasses.replace(info, dependencies=(("apt", "libc6"), ("unowned", "libfoo.so.1"))))
    log = folder / f"{request['build_id']}.txt.gz"
    log.write_bytes(gzip.compress(b"the build's output\n"))
    return BuildOutcome(build_id=request["build_id"], package="foo", version="1.0", target=request["target"],
                        abi=request["abi"], status=status, reason=reason, builder="pi-7", duration=93.5,
                        log=FileInfo(log.name, hashlib.sha256(log.read_bytes()).hexdigest(),
                                     log.stat().st_size), wheels=infos)


def change_seq(conn, package="foo"):
    return conn.execute("SELECT change_seq FROM packages WHERE package = %s", (package,)).fetchone()[0]


def test_the_log_path_splits_the_build_id_into_folders_of_four():
    assert log_path_for(42) == "logs/0000/0000/0042.txt.gz"
    assert log_path_for(123456789012) == "logs/1234/5678/9012.txt.gz"


def test_a_successful_build_is_recorded_and_published_whole(catalog, request_, incoming, output):
    outcome = arrived(incoming, request_)
    before = change_seq(catalog)
    changed = receive(catalog, request_, outcome.to_dict(), incoming, output)
    assert changed == ["foo"]
    build = catalog.execute("SELECT status, builder, duration, log_path, reason, target, abi FROM builds "
                            "WHERE build_id = %s", (request_["build_id"],)).fetchone()
    log_path = log_path_for(request_["build_id"])
    assert build[0:2] == ("success", "pi-7") and build[2].total_seconds() == 93.5
    assert build[3:] == (log_path, None, FIRST, "cp39")
    wheel = outcome.wheels[0]
    assert catalog.execute(
        "SELECT filename, package, version, size, sha256, python_tag, abi_tag, platform_tag, "
        "requires_python, metadata_sha256, requires_dist FROM wheels").fetchall() == [
        (wheel.filename, "foo", "1.0", wheel.size, wheel.sha256, "cp39", "cp39", "linux_armv7l", ">=3.7",
         hashlib.sha256(METADATA).hexdigest(), ["six>=1.16", 'pytest; extra == "test"'])], \
        "the index host keeps the wheel's own Requires-Dist (what it read, not what the worker said)"
    assert catalog.execute("SELECT tool, dependency FROM wheel_dependencies ORDER BY 1").fetchall() == [
        ("apt", "libc6"), ("unowned", "libfoo.so.1")]
    published = output / "simple" / "foo"
    assert hashlib.sha256((published / wheel.filename).read_bytes()).hexdigest() == wheel.sha256
    assert (published / f"{wheel.filename}.metadata").read_bytes() == METADATA
    assert gzip.decompress((output / log_path).read_bytes()) == b"the build's output\n"
    assert not incoming_folder(incoming, request_["build_id"]).exists(), "incoming is emptied"
    assert change_seq(catalog) > before, "the package's pages must follow"


def test_a_failed_build_records_its_reason_and_log(catalog, request_, incoming, output):
    outcome = arrived(incoming, request_, status="failure", reason="pip wheel exited with status 1")
    assert receive(catalog, request_, outcome, incoming, output) == ["foo"]
    assert catalog.execute("SELECT status, reason, log_path FROM builds").fetchone() == (
        "failure", "pip wheel exited with status 1", log_path_for(request_["build_id"]))
    assert catalog.execute("SELECT count(*) FROM wheels").fetchone()[0] == 0
    assert (output / log_path_for(request_["build_id"])).exists()
    assert not (output / "simple").exists()


def test_a_release_deleted_while_it_was_built_is_not_published(catalog, request_, incoming, output):
    outcome = arrived(incoming, request_)
    catalog.execute("DELETE FROM versions WHERE package = 'foo'")  # the journal said "remove release"
    catalog.commit()
    assert receive(catalog, request_, outcome, incoming, output) == []
    assert catalog.execute("SELECT count(*) FROM wheels").fetchone()[0] == 0
    assert not output.exists() or not any(output.rglob("*")), "nothing reaches the published tree"
    assert not incoming_folder(incoming, request_["build_id"]).exists(), "the files are dropped"


@pytest.mark.parametrize("decision, why", [
    ("UPDATE versions SET skip_reason = 'broken' WHERE package = 'foo'", "release was skipped"),
    ("UPDATE packages SET skip_reason = 'miner' WHERE package = 'foo'", "package was skipped"),
    ("UPDATE packages SET quarantined = true WHERE package = 'foo'", "quarantined"),
    ("UPDATE versions SET quarantined = true WHERE package = 'foo'", "quarantined"),
    ("UPDATE packages SET present = false WHERE package = 'foo'", "package was deleted"),
])
def test_a_release_skipped_or_quarantined_while_it_was_built_is_not_published(
        catalog, request_, incoming, output, decision, why):
    outcome = arrived(incoming, request_)
    catalog.execute(decision)
    catalog.commit()
    assert receive(catalog, request_, outcome, incoming, output) == []
    status, reason = catalog.execute("SELECT status, reason FROM builds").fetchone()
    assert status == "lost" and why in reason, "dropped, and not counted as tried"
    assert catalog.execute("SELECT count(*) FROM wheels").fetchone()[0] == 0
    assert not (output / "simple").exists()


def test_a_late_result_of_a_lost_build_is_dropped(catalog, request_, incoming, output):
    outcome = arrived(incoming, request_)
    catalog.execute("UPDATE builds SET status = 'lost'")
    catalog.commit()
    assert receive(catalog, request_, outcome, incoming, output) == []
    assert catalog.execute("SELECT count(*) FROM wheels").fetchone()[0] == 0


def test_a_result_is_recorded_once(catalog, request_, incoming, output):
    outcome = arrived(incoming, request_)
    accepted = accept(incoming_folder(incoming, request_["build_id"]), outcome.files())
    assert record(catalog, request_, outcome, accepted, output) == ["foo"]
    again = arrived(incoming, request_)
    assert receive(catalog, request_, again, incoming, output) == []
    assert catalog.execute("SELECT count(*) FROM wheels").fetchone()[0] == 1


def test_a_corrupted_transfer_publishes_nothing_and_the_build_is_retried_later(catalog, request_, incoming,
                                                                               output):
    outcome = arrived(incoming, request_)
    wheel = incoming_folder(incoming, request_["build_id"]) / outcome.wheels[0].filename
    wheel.write_bytes(wheel.read_bytes()[:-10])  # the connection dropped, someone renamed it anyway
    assert receive(catalog, request_, outcome, incoming, output) == ["foo"], "the page shows why"
    status, reason, transient = catalog.execute("SELECT status, reason, transient FROM builds").fetchone()
    assert (status, transient) == ("retry", True)
    assert "bytes, the builder sent" in reason and "attempt 1 of" in reason
    assert catalog.execute("SELECT count(*) FROM wheels").fetchone()[0] == 0
    assert not (output / "simple").exists()
    assert not incoming_folder(incoming, request_["build_id"]).exists()
    assert claim_wave(catalog, FIRST, 5) == [], "not before its back-off has passed"
    catalog.execute("UPDATE builds SET not_before = now() - interval '1 second'")
    catalog.commit()
    expire_lost(catalog, timedelta(hours=4))  # what the scheduling run does before it claims
    assert [r["package"] for r in claim_wave(catalog, FIRST, 5)] == ["foo"], "it is built again"


def test_a_rebuild_with_other_bytes_gets_the_next_build_number(catalog, incoming, output):
    """A URL never changes its bytes: the published file stays, the new one gets a PEP 427 build tag."""
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    [first] = claim_wave(catalog, FIRST, 1)
    receive(catalog, first, arrived(incoming, first, wheels=("foo-1.0-py3-none-any.whl",)), incoming, output)
    published = output / "simple" / "foo" / "foo-1.0-py3-none-any.whl"
    original = published.read_bytes()
    rebuild(catalog, "foo", "1.0")  # the operator: build it again (its wheel rows go, its name stays known)
    [second] = claim_wave(catalog, FIRST, 1)
    again = arrived(incoming, second, wheels=("foo-1.0-py3-none-any.whl",), extra=b"# other bytes\n")
    assert receive(catalog, second, again, incoming, output) == ["foo"]
    assert published.read_bytes() == original, "the old URL keeps its bytes"
    assert catalog.execute("SELECT filename, build_id FROM wheels").fetchall() == [
        ("foo-1.0-1-py3-none-any.whl", second["build_id"])]
    renamed = output / "simple" / "foo" / "foo-1.0-1-py3-none-any.whl"
    assert hashlib.sha256(renamed.read_bytes()).hexdigest() == again.wheels[0].sha256
    assert renamed.with_name(renamed.name + ".metadata").read_bytes() == METADATA
    rebuild(catalog, "foo", "1.0")
    [third] = claim_wave(catalog, FIRST, 1)
    receive(catalog, third, arrived(incoming, third, wheels=("foo-1.0-py3-none-any.whl",),
                                    extra=b"# yet other bytes\n"), incoming, output)
    assert catalog.execute("SELECT filename FROM wheels").fetchall() == [("foo-1.0-2-py3-none-any.whl",)]


def test_a_rebuild_with_the_same_bytes_adds_nothing(catalog, incoming, output):
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    [first] = claim_wave(catalog, FIRST, 1)
    name = "foo-1.0-cp39-cp39-linux_armv7l.whl"
    receive(catalog, first, arrived(incoming, first, wheels=(name,)), incoming, output)
    catalog.execute("UPDATE builds SET status = 'lost'")  # re-queued while its wheel stays listed
    catalog.commit()
    [second] = claim_wave(catalog, FIRST, 1)
    assert receive(catalog, second, arrived(incoming, second, wheels=(name,)), incoming, output) == ["foo"]
    status, reason = catalog.execute("SELECT status, reason FROM builds WHERE build_id = %s",
                                     (second["build_id"],)).fetchone()
    assert status == "success" and f"identical to the published {name}" in reason
    assert catalog.execute("SELECT filename, build_id FROM wheels").fetchall() == [(name, first["build_id"])]
    assert sorted(p.name for p in (output / "simple" / "foo").iterdir()) == [name, name + ".metadata"]


def test_an_outcome_of_another_build_is_refused(catalog, request_, incoming, output):
    outcome = arrived(incoming, request_)
    forged = {**outcome.to_dict(), "build_id": request_["build_id"] + 1}
    assert receive(catalog, request_, forged, incoming, output) == ["foo"]
    status, reason = catalog.execute("SELECT status, reason FROM builds").fetchone()
    assert status == "failure" and reason == (f"refused: the outcome is of build {request_['build_id'] + 1}, "
                                              f"not of build {request_['build_id']}")
    assert not output.exists()


def test_receive_needs_the_request_it_answers(catalog, request_, incoming, output):
    with pytest.raises(TypeError, match="needs the build request"):
        receive(catalog, None, arrived(incoming, request_), incoming, output)


def test_a_wheel_for_another_platform_is_not_published(catalog, request_, incoming, output):
    """A worker of the wrong kind took the target's queue: its x86_64 wheel is no armv7l wheel."""
    outcome = arrived(incoming, request_, wheels=("foo-1.0-cp39-cp39-linux_x86_64.whl",))
    assert receive(catalog, request_, outcome, incoming, output) == ["foo"]
    status, reason = catalog.execute("SELECT status, reason FROM builds").fetchone()
    assert status == "failure" and "is for linux_x86_64, but the target builds for linux_armv7l" in reason, reason
    assert catalog.execute("SELECT count(*) FROM wheels").fetchone()[0] == 0
    assert not (output / "simple").exists()


def test_a_recording_that_fails_publishes_nothing_and_can_be_retried(catalog, request_, incoming, output,
                                                                     monkeypatch):
    import wheelwright.builds.intake as record_module
    outcome = arrived(incoming, request_)
    real_place = record_module.place
    calls = []

    def disk_full_on_the_second_file(source, destination):
        calls.append(destination)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_place(source, destination)

    monkeypatch.setattr(record_module, "place", disk_full_on_the_second_file)
    with pytest.raises(OSError, match="No space left"):
        receive(catalog, request_, outcome, incoming, output)
    assert catalog.execute("SELECT status FROM builds").fetchone() == ("building",), "rolled back"
    assert [p for p in output.rglob("*") if p.is_file()] == [], "the first file was taken back"
    monkeypatch.setattr(record_module, "place", real_place)
    assert receive(catalog, request_, outcome, incoming, output) == ["foo"], "the retry finds the files"
    assert (output / "simple" / "foo" / outcome.wheels[0].filename).exists()


def test_wheels_published_before_names_were_remembered_are_remembered_by_the_migration(catalog, request_):
    from wheelwright import package_data
    from support.build_world import add_build
    add_build(catalog, "foo", "1.0", FIRST, "success",
              wheels=("foo-1.0-cp39-cp39-linux_armv7l.whl", "foo-1.0-2-py3-none-any.whl"))
    catalog.execute("DELETE FROM wheel_names")
    migration = package_data.sql("013_wheel_names.sql").read_text()
    catalog.execute(migration[migration.index("INSERT INTO wheel_names"):])  # its backfill, as on upgrade
    assert catalog.execute("SELECT filename, build_number, python_tag, abi_tag, platform_tag FROM wheel_names "
                           "ORDER BY filename").fetchall() == [
        ("foo-1.0-2-py3-none-any.whl", 2, "py3", "none", "any"),
        ("foo-1.0-cp39-cp39-linux_armv7l.whl", 0, "cp39", "cp39", "linux_armv7l")]
