"""The PyPI double says what the real PyPI would say about the end state of its changelog.

These tests talk to it over real HTTP on 127.0.0.1, through the product's own client where the product
would, and with plain ``requests`` or real ``pip`` where pip would.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import os
import re
import subprocess
import sys
import tarfile
import xmlrpc.client
import zipfile
from xml.etree import ElementTree

import pytest
import requests
from packaging.version import Version

from wheelwright.errors import ConfigError
from wheelwright.pypi.client import PyPI
from wheelwright.testing.pypi_double import PyPIDouble, generate_distribution, read_changelog, write_changelog

PIP_JSON_ACCEPT = ("application/vnd.pypi.simple.v1+json, "
                   "application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01")
T = 1_700_000_000

# A small world: Flask-Thing has two releases, the newer yanked; Gone was removed; Locked is
# quarantined; a role change on Flask-Thing deletes nothing; one row is malformed.
WORLD = [
    ["Flask-Thing", None, T, "create", 1],
    ["Flask-Thing", "1.0", T + 1, "new release", 2],
    ["Flask-Thing", "1.0", T + 2, "add source file Flask-Thing-1.0.tar.gz", 3],
    ["Flask-Thing", "1.0", T + 3, "add py3 file Flask_Thing-1.0-py3-none-any.whl", 4],
    ["flask_thing", "2.0", T + 4, "new release", 5],
    ["flask_thing", "2.0", T + 5, "add source file flask_thing-2.0.tar.gz", 6],
    ["flask_thing", "2.0", T + 6, "yank release", 7],
    ["Gone", None, T + 7, "create", 8],
    ["Gone", "0.1", T + 8, "add source file Gone-0.1.tar.gz", 9],
    ["Gone", None, T + 9, "remove project", 10],
    ["Locked", "1.0", T + 10, "add source file Locked-1.0.tar.gz", 11],
    ["Locked", None, T + 11, "project quarantined", 12],
    ["Flask-Thing", None, T + 12, "remove Owner bob", 13],
    ["Flask-Thing", 7, T + 13, "new release", 14],
    ["Empty", None, T + 14, "create", 15],
]


@pytest.fixture
def world():
    with PyPIDouble(WORLD, page_size=4,
                    summaries={"flask-thing": "Things for Flask"},
                    yank_reasons={("Flask_Thing", "2.0"): "broken <build>"},
                    requires_python={("flask-thing", "1.0"): ">=3.8,<4"}) as double:
        yield double


def get_json(url: str, **kwargs) -> dict:
    response = requests.get(url, timeout=10, **kwargs)
    assert response.status_code == 200, f"{url}: HTTP {response.status_code}"
    return response.json()


# -- changelog -----------------------------------------------------------------------------------------

def test_rows_are_served_verbatim_malformed_ones_included(world):
    proxy = xmlrpc.client.ServerProxy(world.xmlrpc_url, allow_none=True)
    served = []
    serial = 0
    while page := proxy.changelog_since_serial(serial):
        assert len(page) <= 4
        served += page
        serial = max(row[4] for row in page)
    assert served == WORLD
    assert proxy.changelog_last_serial() == 15


def test_answers_are_strict_xml_rpc(world):
    body = xmlrpc.client.dumps((0,), "changelog_since_serial").encode()
    response = requests.post(world.xmlrpc_url, data=body, timeout=10)
    root = ElementTree.fromstring(response.content)
    assert root.tag == "methodResponse"
    assert [child.tag for child in root] == ["params"]
    assert [child.tag for child in root[0]] == ["param"]
    rows = root.findall("params/param/value/array/data/value")
    assert len(rows) == 4


def test_rows_with_no_usable_serial_ride_with_the_row_before_them():
    rows = [["a", None, 1, "create", 1], ["a", None, 2, "create", "x"], ["a", None, 3, "create", 3]]
    with PyPIDouble(rows, page_size=1) as double, PyPI(double.xmlrpc_url) as pypi:
        assert pypi.changelog_since(0) == rows[:2], "a page never splits rows sharing a serial"
        assert pypi.changelog_since(1) == rows[2:]


def test_other_xmlrpc_methods_fault_like_pypi(world):
    proxy = xmlrpc.client.ServerProxy(world.xmlrpc_url)
    with pytest.raises(xmlrpc.client.Fault, match="no longer supports the XMLRPC list_packages"):
        proxy.list_packages()
    assert world.calls[-1] == ("list_packages", ())


def test_ratelimit_headers_ride_on_every_xmlrpc_answer(world):
    body = xmlrpc.client.dumps((), "changelog_last_serial").encode()
    response = requests.post(world.xmlrpc_url, data=body, timeout=10)
    assert re.fullmatch(r"limit=\d+, remaining=\d+, reset=\d+", response.headers["RateLimit"])


def test_the_double_enforces_its_rate_limit_with_pypis_fault():
    with PyPIDouble([], rate_limit=(1, 60.0)) as double:
        proxy = xmlrpc.client.ServerProxy(double.xmlrpc_url)
        assert proxy.changelog_last_serial() == 0
        with pytest.raises(xmlrpc.client.Fault, match=r"HTTPTooManyRequests.*reset in \d+ seconds"):
            proxy.changelog_last_serial()


def test_appending_while_running_moves_the_log_and_the_end_state(world):
    with PyPI(world.xmlrpc_url) as pypi:
        assert pypi.project_json("newcomer") is None
        world.append([["Newcomer", "0.1", T + 20, "add source file newcomer-0.1.tar.gz", 16]])
        assert pypi.last_serial() == 16
        assert pypi.project_json("newcomer")["info"]["version"] == "0.1"


def test_a_changelog_file_is_read_and_reread_when_it_grows(tmp_path):
    path = write_changelog(tmp_path / "log.jsonl", WORLD[:3])
    assert read_changelog(path) == WORLD[:3]
    with PyPIDouble(path) as double, PyPI(double.xmlrpc_url) as pypi:
        assert pypi.last_serial() == 3
        write_changelog(path, WORLD)
        assert pypi.last_serial() == 15
        assert pypi.changelog_since(14) == WORLD[14:]


def test_a_changelog_file_line_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('["a", null, 1, "create", 1]\n{oops\n')
    with pytest.raises(ConfigError, match=r"log.jsonl:2: not a JSON changelog row"):
        PyPIDouble(path)


# -- JSON API ------------------------------------------------------------------------------------------

def test_json_api_describes_the_end_state(world):
    with PyPI(world.xmlrpc_url) as pypi:
        document = pypi.project_json("FLASK.thing")
    info = document["info"]
    assert info["name"] == "Flask-Thing", "display name is the latest spelling seen"
    assert info["version"] == "1.0", "the latest non-yanked release, not the yanked 2.0"
    assert info["summary"] == "Things for Flask"
    assert info["requires_python"] == ">=3.8,<4"
    assert set(document["releases"]) == {"1.0", "2.0"}, "the malformed row made no release"
    assert [f["filename"] for f in document["urls"]] == [
        "Flask-Thing-1.0.tar.gz", "Flask_Thing-1.0-py3-none-any.whl"]
    [yanked] = document["releases"]["2.0"]
    assert yanked["yanked"] is True and yanked["yanked_reason"] == "broken <build>"
    assert yanked["packagetype"] == "sdist" and yanked["python_version"] == "source"
    assert yanked["upload_time_iso_8601"] == "2023-11-14T22:13:25.000000Z"


def test_json_api_files_hash_and_size_match_the_served_bytes(world):
    document = get_json(world.url + "/pypi/flask-thing/json")
    for release in document["releases"].values():
        for f in release:
            data = requests.get(f["url"], timeout=10).content
            assert hashlib.sha256(data).hexdigest() == f["digests"]["sha256"], f["filename"]
            assert len(data) == f["size"]
    wheel = document["urls"][1]
    assert wheel["packagetype"] == "bdist_wheel" and wheel["requires_python"] == ">=3.8,<4"


def test_json_api_for_one_version(world):
    document = get_json(world.url + "/pypi/Flask_Thing/2.0/json")
    assert document["info"]["version"] == "2.0"
    assert document["info"]["yanked"] is True
    assert document["info"]["yanked_reason"] == "broken <build>"
    assert [f["filename"] for f in document["urls"]] == ["flask_thing-2.0.tar.gz"]
    assert requests.get(world.url + "/pypi/flask-thing/9.9/json", timeout=10).status_code == 404


@pytest.mark.parametrize("name", ["gone", "locked", "empty", "never-heard-of"])
def test_json_api_404s_for_removed_quarantined_releaseless_and_unknown_projects(world, name):
    assert requests.get(f"{world.url}/pypi/{name}/json", timeout=10).status_code == 404


# -- simple index ----------------------------------------------------------------------------------------

def test_simple_page_is_html_by_default_with_hashes_and_pep_592_and_503_attributes(world):
    response = requests.get(world.url + "/simple/flask-thing/", timeout=10)
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.text
    assert '<meta name="pypi:repository-version" content="1.1">' in page
    anchors = re.findall(r"<a ([^>]*)>([^<]*)</a>", page)
    assert [text for _, text in anchors] == [
        "Flask-Thing-1.0.tar.gz", "Flask_Thing-1.0-py3-none-any.whl", "flask_thing-2.0.tar.gz"]
    attrs = {text: dict(re.findall(r'([\w-]+)="([^"]*)"', a)) for a, text in anchors}
    sdist = attrs["Flask-Thing-1.0.tar.gz"]
    assert sdist["data-requires-python"] == "&gt;=3.8,&lt;4"
    assert "data-yanked" not in sdist
    assert attrs["flask_thing-2.0.tar.gz"]["data-yanked"] == "broken &lt;build&gt;"
    url, digest = html.unescape(sdist["href"]).split("#sha256=")
    assert hashlib.sha256(requests.get(url, timeout=10).content).hexdigest() == digest


def test_simple_page_is_pep_691_json_for_pip(world):
    response = requests.get(world.url + "/simple/flask-thing/", headers={"Accept": PIP_JSON_ACCEPT},
                            timeout=10)
    assert response.headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"
    assert response.headers["Vary"] == "Accept"
    document = response.json()
    assert Version(document["meta"]["api-version"]) >= Version("1.1")
    assert document["name"] == "flask-thing"
    assert document["versions"] == ["1.0", "2.0"]
    files = {f["filename"]: f for f in document["files"]}
    assert files["flask_thing-2.0.tar.gz"]["yanked"] == "broken <build>"
    assert files["Flask-Thing-1.0.tar.gz"]["yanked"] is False
    assert files["Flask-Thing-1.0.tar.gz"]["requires-python"] == ">=3.8,<4"
    data = requests.get(files["Flask-Thing-1.0.tar.gz"]["url"], timeout=10).content
    assert hashlib.sha256(data).hexdigest() == files["Flask-Thing-1.0.tar.gz"]["hashes"]["sha256"]
    assert files["Flask-Thing-1.0.tar.gz"]["size"] == len(data)


@pytest.mark.parametrize("accept, kind", [
    ("text/html", "text/html"),
    ("*/*", "text/html"),
    ("application/vnd.pypi.simple.v1+html", "application/vnd.pypi.simple.v1+html"),
    ("application/vnd.pypi.simple.v1+json;q=0.5, text/html;q=0.4", "application/vnd.pypi.simple.v1+json"),
    ("image/png", "text/html"),
])
def test_simple_index_content_negotiation(world, accept, kind):
    response = requests.get(world.url + "/simple/", headers={"Accept": accept}, timeout=10)
    assert response.headers["Content-Type"].split(";")[0] == kind


def test_simple_root_lists_visible_projects(world):
    document = get_json(world.url + "/simple/", headers={"Accept": PIP_JSON_ACCEPT})
    assert [p["name"] for p in document["projects"]] == ["Empty", "Flask-Thing"]


@pytest.mark.parametrize("path", ["/simple/Flask_Thing/", "/simple/FLASK.THING/", "/simple/flask-thing"])
def test_non_canonical_simple_urls_redirect_to_the_canonical_page(world, path):
    response = requests.get(world.url + path, allow_redirects=False, timeout=10)
    assert response.status_code == 301
    assert response.headers["Location"] == "/simple/flask-thing/"


def test_simple_page_404s_for_removed_and_quarantined_projects(world):
    for name in ("gone", "locked", "nope"):
        assert requests.get(f"{world.url}/simple/{name}/", timeout=10).status_code == 404


def test_a_removed_file_is_not_served(world):
    assert requests.get(world.url + "/packages/aa/bb/cc/Gone-0.1.tar.gz", timeout=10).status_code == 404


# -- files ---------------------------------------------------------------------------------------------

def test_files_dir_bytes_are_served_and_extra_distributions_listed(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / "Flask-Thing-1.0.tar.gz").write_bytes(b"the real sdist")
    extra = generate_distribution("helper-3.1-py3-none-any.whl", "helper", "3.1",
                                  requires_python=">=3.9")
    (files / "helper-3.1-py3-none-any.whl").write_bytes(extra)
    with PyPIDouble(WORLD, files_dir=files) as double:
        listed = get_json(double.url + "/simple/flask-thing/", headers={"Accept": PIP_JSON_ACCEPT})
        sdist = next(f for f in listed["files"] if f["filename"] == "Flask-Thing-1.0.tar.gz")
        assert requests.get(sdist["url"], timeout=10).content == b"the real sdist"
        assert sdist["hashes"]["sha256"] == hashlib.sha256(b"the real sdist").hexdigest()
        helper = get_json(double.url + "/simple/helper/", headers={"Accept": PIP_JSON_ACCEPT})
        [wheel] = helper["files"]
        assert wheel["filename"] == "helper-3.1-py3-none-any.whl"
        assert wheel["requires-python"] == ">=3.9", "read from the wheel's METADATA"
        assert requests.get(wheel["url"], timeout=10).content == extra


def test_generated_files_are_deterministic():
    first = generate_distribution("Foo-1.0.tar.gz", "Foo", "1.0", "a summary", ">=3.8")
    again = generate_distribution("Foo-1.0.tar.gz", "Foo", "1.0", "a summary", ">=3.8")
    assert first == again
    with PyPIDouble(WORLD[:4]) as one, PyPIDouble(WORLD[:4]) as two:
        urls = [get_json(d.url + "/pypi/flask-thing/json")["urls"] for d in (one, two)]
    assert [f["digests"]["sha256"] for f in urls[0]] == [f["digests"]["sha256"] for f in urls[1]]


def test_a_generated_sdist_is_a_setuptools_project():
    data = generate_distribution("Foo.Bar-1.0.tar.gz", "Foo.Bar", "1.0", 'says "hi"', ">=3.8")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        pyproject = tar.extractfile("Foo.Bar-1.0/pyproject.toml").read().decode()
        pkg_info = tar.extractfile("Foo.Bar-1.0/PKG-INFO").read().decode()
        assert {m.mtime for m in tar.getmembers()} == {315532800}
    assert sorted(names) == ["Foo.Bar-1.0", "Foo.Bar-1.0/PKG-INFO", "Foo.Bar-1.0/foo_bar.py",
                             "Foo.Bar-1.0/pyproject.toml"]
    import tomllib
    project = tomllib.loads(pyproject)
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert project["project"] == {"name": "Foo.Bar", "version": "1.0", "description": 'says "hi"',
                                  "requires-python": ">=3.8"}
    assert "Requires-Python: >=3.8" in pkg_info.splitlines()


def test_a_generated_wheel_is_valid():
    data = generate_distribution("Foo_Bar-2.0-py3-none-any.whl", "Foo-Bar", "2.0", sdist=False)
    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        metadata = wheel.read("Foo_Bar-2.0.dist-info/METADATA").decode()
        assert "Name: Foo-Bar" in metadata and "Version: 2.0" in metadata
        assert "Tag: py3-none-any" in wheel.read("Foo_Bar-2.0.dist-info/WHEEL").decode()
        for path, digest, size in csv.reader(io.StringIO(
                wheel.read("Foo_Bar-2.0.dist-info/RECORD").decode())):
            if path.endswith("RECORD"):
                continue
            content = wheel.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=")
            assert digest == f"sha256={expected.decode()}" and int(size) == len(content)


def test_files_of_other_kinds_get_placeholder_bytes():
    assert b"placeholder" in generate_distribution("Foo-1.0.win32.exe", "Foo", "1.0", sdist=False)


def test_pip_wheel_builds_a_generated_sdist_from_the_double(tmp_path):
    rows = [["Foo.Bar", None, T, "create", 1],
            ["Foo.Bar", "1.0", T, "add source file Foo.Bar-1.0.tar.gz", 2]]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "PIP_NO_INPUT": "1"}
    if "PYTHONPATH" in os.environ:  # the build backend must be importable as it is here
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    with PyPIDouble(rows, requires_python={("foo-bar", "1.0"): ">=3.8"}) as double:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--isolated", "--no-deps", "--no-build-isolation",
             "--no-cache-dir", "--index-url", double.simple_url, "-w", str(tmp_path / "out"),
             "foo-bar==1.0"],
            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = (tmp_path / "out").iterdir()
    assert wheel.name == "Foo.Bar-1.0-py3-none-any.whl" or wheel.name.startswith("foo_bar-1.0-py3")
    with zipfile.ZipFile(wheel) as built:
        metadata = next(n for n in built.namelist() if n.endswith(".dist-info/METADATA"))
        assert "Requires-Python: >=3.8" in built.read(metadata).decode()


# -- the command line ------------------------------------------------------------------------------------

def test_running_the_double_from_the_command_line(tmp_path):
    path = write_changelog(tmp_path / "log.jsonl", WORLD)
    process = subprocess.Popen(
        [sys.executable, "-m", "wheelwright.testing.pypi_double", "--changelog", str(path), "--port", "0",
         "--page-size", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = re.search(r"at (http://127\.0\.0\.1:\d+);", line)[1]
        with PyPI(url + "/pypi") as pypi:
            assert pypi.last_serial() == 15
            assert len(pypi.changelog_since(0)) == 3
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
