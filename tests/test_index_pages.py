"""Golden tests of every format the index writer produces, from literal data (no database, no disk)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from wheelwright.publish import pages
from wheelwright.publish.pages import Build, Downloads, Project, Release, WheelFile
from wheelwright.publish.status import TargetInfo, target_rows
from wheelwright.publish.reports import missing_in_log, needed_apt, provider

SHA = "a" * 64
META = "b" * 64


def wheel(filename, version, **kw) -> WheelFile:
    fields = dict(filename=filename, build_id=7, version=version, size=2048, sha256=SHA, builder_abi="cp311",
                  target="cp311", abi_tag="cp311", platform_tag="linux_armv7l", requires_python=None,
                  metadata_sha256=None, uploaded="2024-05-01T12:00:00Z")
    fields.update(kw)
    return WheelFile(**fields)


TARGETS = [TargetInfo("cp311", "cp311", "linux_armv7l", "bookworm", 1),
           TargetInfo("cp313", "cp313", "linux_aarch64", "trixie", 2)]


@pytest.fixture
def project() -> Project:
    """Two releases: 1.0 (a wheel with metadata, Requires-Python, Requires-Dist and an apt dependency)
    and 2.0rc1 (yanked with a hostile reason, a pure wheel)."""
    old = Release(version="1.0", released="2024-05-01T12:00:00Z", prerelease=False, yanked=False,
                  yanked_reason=None, requires_python=">=3.9,<4", skip_reason=None,
                  files=[wheel("demo_pkg-1.0-cp311-cp311-linux_armv7l.whl", "1.0",
                               requires_python=">=3.9,<4", metadata_sha256=META,
                               apt_dependencies=("libxml2",), distro="bookworm",
                               requires_dist=("numpy>=1.20", 'pytest; extra == "test"'))],
                  builds=[Build(build_id=7, version="1.0", abi="cp311", status="success", builder="pi-1",
                                duration=75.0, log_path="logs/0000/0000/0007.txt.gz", reason=None,
                                target="cp311")],
                  in_scope=("cp311", "cp313"), downloads=Downloads(5, 40))
    new = Release(version="2.0rc1", released="2024-06-01T08:30:00Z", prerelease=True, yanked=True,
                  yanked_reason='broken "<script>" & more', requires_python=None, skip_reason=None,
                  files=[wheel("demo_pkg-2.0rc1-py3-none-any.whl", "2.0rc1", build_id=8, abi_tag="none",
                               platform_tag="any", uploaded="2024-06-01T09:00:00Z")],
                  builds=[Build(build_id=8, version="2.0rc1", abi="cp311", status="success", builder=None,
                                duration=None, log_path=None, reason=None, target="cp311")],
                  in_scope=("cp311", "cp313"))
    for release in (old, new):
        release.targets = target_rows(release, TARGETS)
    return Project(package="demo-pkg", display_name="Demo.Pkg", summary="A <b>demo</b> & friends",
                   skip_reason=None, aliases=("Demo.Pkg",), releases=[new, old],
                   downloads=Downloads(5, 40), downloads_through="2024-06-30")


class Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.anchors, self.meta, self._attrs = [], {}, None

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._attrs = dict(attrs)
        elif tag == "meta":
            d = dict(attrs)
            self.meta[d.get("name")] = d.get("content")

    def handle_data(self, data):
        if self._attrs is not None:
            self.anchors.append((data, self._attrs))
            self._attrs = None


def test_simple_project_html_golden(project):
    assert pages.simple_project_html(project).decode() == (
        '<!DOCTYPE html>\n<html>\n  <head>\n'
        '    <meta name="pypi:repository-version" content="1.1">\n'
        '    <title>Links for Demo.Pkg</title>\n  </head>\n  <body>\n'
        '    <h1>Links for Demo.Pkg</h1>\n'
        f'    <a href="demo_pkg-1.0-cp311-cp311-linux_armv7l.whl#sha256={SHA}" '
        'data-requires-python="&gt;=3.9,&lt;4" '
        f'data-core-metadata="sha256={META}" data-dist-info-metadata="sha256={META}">'
        'demo_pkg-1.0-cp311-cp311-linux_armv7l.whl</a><br>\n'
        f'    <a href="demo_pkg-2.0rc1-py3-none-any.whl#sha256={SHA}" '
        'data-yanked="broken &quot;&lt;script&gt;&quot; &amp; more">'
        'demo_pkg-2.0rc1-py3-none-any.whl</a><br>\n'
        '  </body>\n</html>\n')


def test_simple_project_html_parses_as_pip_sees_it(project):
    parser = Anchors()
    parser.feed(pages.simple_project_html(project).decode())
    assert parser.meta["pypi:repository-version"] == "1.1"
    (text1, a1), (text2, a2) = parser.anchors
    assert text1 == a1["href"].split("#")[0] and a1["href"].endswith(f"#sha256={SHA}")
    assert a1["data-requires-python"] == ">=3.9,<4"
    assert "data-yanked" not in a1
    assert a2["data-yanked"] == 'broken "<script>" & more'
    assert "data-core-metadata" not in a2


def test_a_yanked_file_without_a_reason_has_an_empty_data_yanked(project):
    project.releases[0].yanked_reason = None
    html = pages.simple_project_html(project).decode()
    assert 'data-yanked="">demo_pkg-2.0rc1' in html
    files = json.loads(pages.simple_project_json(project))["files"]
    assert files[1]["yanked"] is True


def test_simple_project_json_golden(project):
    assert json.loads(pages.simple_project_json(project)) == {
        "meta": {"api-version": "1.1"},
        "name": "demo-pkg",
        "versions": ["1.0", "2.0rc1"],
        "files": [
            {"filename": "demo_pkg-1.0-cp311-cp311-linux_armv7l.whl",
             "url": "demo_pkg-1.0-cp311-cp311-linux_armv7l.whl",
             "hashes": {"sha256": SHA}, "requires-python": ">=3.9,<4", "size": 2048,
             "upload-time": "2024-05-01T12:00:00Z", "yanked": False,
             "core-metadata": {"sha256": META}},
            {"filename": "demo_pkg-2.0rc1-py3-none-any.whl", "url": "demo_pkg-2.0rc1-py3-none-any.whl",
             "hashes": {"sha256": SHA}, "size": 2048, "upload-time": "2024-06-01T09:00:00Z",
             "yanked": 'broken "<script>" & more', "core-metadata": False},
        ],
    }


def test_file_names_are_url_quoted_in_links():
    local = Release(version="1.0+pi", released="2024-01-01T00:00:00Z", prerelease=False, yanked=False,
                    yanked_reason=None, requires_python=None, skip_reason=None,
                    files=[wheel("x-1.0+pi-py3-none-any.whl", "1.0+pi")])
    p = Project(package="x", display_name="x", summary=None, skip_reason=None, releases=[local])
    assert 'href="x-1.0%2Bpi-py3-none-any.whl#sha256=' in pages.simple_project_html(p).decode()
    assert json.loads(pages.simple_project_json(p))["files"][0]["url"] == "x-1.0%2Bpi-py3-none-any.whl"


def test_root_pages_golden():
    names = [("demo-pkg", "Demo.Pkg"), ("evil", "<evil>")]
    assert pages.simple_root_html(names).decode() == (
        '<!DOCTYPE html>\n<html>\n  <head>\n'
        '    <meta name="pypi:repository-version" content="1.1">\n'
        '    <title>Simple index</title>\n  </head>\n  <body>\n'
        '    <a href="demo-pkg/">Demo.Pkg</a><br>\n'
        '    <a href="evil/">&lt;evil&gt;</a><br>\n'
        '  </body>\n</html>\n')
    assert json.loads(pages.simple_root_json(names)) == {
        "meta": {"api-version": "1.1"}, "projects": [{"name": "Demo.Pkg"}, {"name": "<evil>"}]}


def test_packages_json_keeps_piwheels_order_with_the_download_counts_first():
    rows = [("demo-pkg", "Demo.Pkg", "A demo", 12, 340), ("bare", "bare", None, 0, 0)]
    data = json.loads(pages.packages_json(rows))
    assert data == [["demo-pkg", 12, 340, "Demo.Pkg", "A demo"], ["bare", 0, 0, "bare", ""]]
    # how piwheels documents reading it
    assert {pkg: (month, total) for pkg, month, total, *_ in data} == {"demo-pkg": (12, 340), "bare": (0, 0)}


def test_project_json_golden(project):
    data = json.loads(pages.project_json(project, site_url="https://pi.example.org/"))
    assert list(data["releases"]) == ["2.0rc1", "1.0"], "newest first"
    assert data["package"] == "demo-pkg" and data["name"] == "Demo.Pkg"
    assert data["summary"] == "A <b>demo</b> & friends"
    assert data["aliases"] == ["Demo.Pkg"]
    assert data["pypi_url"] == "https://pypi.org/project/demo-pkg/"
    assert data["url"] == "https://pi.example.org/project/demo-pkg/"
    assert data["downloads"] == {"last_30_days": 5, "total": 40, "through": "2024-06-30"}
    assert data["build_settings"] is None
    assert data["releases"]["1.0"] == {
        "released": "2024-05-01T12:00:00Z", "prerelease": False, "yanked": False, "yanked_reason": None,
        "requires_python": ">=3.9,<4", "skip_reason": "", "removed_reason": None,
        "pip_dependencies": ["numpy>=1.20", 'pytest; extra == "test"'],
        "apt_dependencies_by_distro": {"bookworm": ["libxml2"]},
        "downloads": {"last_30_days": 5, "total": 40},
        "files": {"demo_pkg-1.0-cp311-cp311-linux_armv7l.whl": {
            "file_url": "/simple/demo-pkg/demo_pkg-1.0-cp311-cp311-linux_armv7l.whl",
            "filehash": SHA, "filesize": 2048, "builder_abi": "cp311", "target": "cp311",
            "file_abi_tag": "cp311", "platform": "linux_armv7l", "requires_python": ">=3.9,<4",
            "apt_dependencies": ["libxml2"], "pip_dependencies": ["numpy>=1.20", 'pytest; extra == "test"'],
            "unowned_libraries": [], "uploaded": "2024-05-01T12:00:00Z", "glibc_floor": None, "tested": None,
            "test_detail": None}},
        "targets": [
            {"target": "cp311", "state": "built", "reason": None, "build_id": 7,
             "log_url": "/logs/0000/0000/0007.txt.gz"},
            {"target": "cp313", "state": "queued", "reason": None, "build_id": None, "log_url": None}],
        "builds": [{"build_id": 7, "abi": "cp311", "target": "cp311", "status": "success",
                    "builder": "pi-1", "duration": 75.0, "log_url": "/logs/0000/0000/0007.txt.gz",
                    "reason": None, "imported_by": None}],
    }
    rc = data["releases"]["2.0rc1"]
    assert rc["yanked"] is True and rc["prerelease"] is True
    assert rc["pip_dependencies"] is None, "no wheel recorded it and PyPI did not say: unknown, not none"
    assert [(t["target"], t["state"]) for t in rc["targets"]] == [("cp311", "built"), ("cp313", "not-needed")]


def test_project_json_keeps_every_field_piwheels_clients_read(project):
    """piwheels' JSON API page documents these; clients index them directly."""
    data = json.loads(pages.project_json(project))
    assert {"package", "summary", "pypi_url", "releases"} <= set(data)
    for release in data["releases"].values():
        assert {"skip_reason", "prerelease", "released", "yanked", "files"} <= set(release)
        for f in release["files"].values():
            assert {"filesize", "apt_dependencies", "filehash", "platform", "builder_abi", "file_abi_tag",
                    "file_url", "requires_python", "pip_dependencies"} <= set(f)


def test_the_glibc_floor_the_install_test_and_the_build_settings_are_shown_where_people_look(project):
    from dataclasses import replace
    release = project.releases[1]
    release.files[0] = replace(release.files[0], glibc_floor="2.36",
                               tested=pages.tested_sentence("imports", "bookworm armhf"))
    release.targets = target_rows(release, TARGETS)     # the page shows each file on its target's row
    project.build_settings = {"apt_packages": ["libcups2-dev"], "timeout": 21600.0,
                              "environment": {"NPY_NUM_BUILD_JOBS": "1"}, "changed_by": "ops"}
    data = json.loads(pages.project_json(project))
    file = data["releases"]["1.0"]["files"]["demo_pkg-1.0-cp311-cp311-linux_armv7l.whl"]
    assert (file["glibc_floor"], file["tested"]) == ("2.36", "imports on bookworm armhf")
    assert data["build_settings"]["apt_packages"] == ["libcups2-dev"]
    html = pages.project_html(project).decode()
    assert "glibc ≥ 2.36" in html and "imports on bookworm armhf" in html
    assert "build settings: apt libcups2-dev; timeout 6h 00m" in html and "NPY_NUM_BUILD_JOBS=1" in html
    assert pages.tested_sentence("needs-a-pi", "bookworm armhf") == \
        "built, not importable off a Pi (tested on bookworm armhf)"


def test_project_page_shows_what_people_need_and_escapes_pypi_text(project):
    html = pages.project_html(project).decode()
    assert "<title>Demo.Pkg · wheelwright</title>" in html
    assert "A &lt;b&gt;demo&lt;/b&gt; &amp; friends" in html
    assert "<b>demo</b>" not in html
    assert html.index("2.0rc1") < html.index('id="v1.0"'), "releases newest first"
    assert '<span class="badge yanked"' in html and '<span class="badge prerelease">' in html
    assert "&lt;script&gt;" in html and "<script>" not in html.split("</head>")[1]
    assert "2.0 KiB" in html
    assert "&gt;=3.9,&lt;4" in html
    assert 'href="../../logs/0000/0000/0007.txt.gz"' in html
    assert 'href="../../simple/demo-pkg/demo_pkg-1.0-cp311-cp311-linux_armv7l.whl"' in html
    assert '<link rel="stylesheet" href="../../static/site.css">' in html, "the site's one look"
    assert "<b>5</b> downloads in 30 days · <b>40</b> in all" in html
    assert "5 downloads in 30 days, 40 in all" in html, "per release too"


def test_the_top_of_a_project_page_speaks_for_its_newest_stable_release(project):
    html = pages.project_html(project, index_url="https://pi.example.org/simple/").decode()
    top = html.split("<h2>Releases</h2>")[0]
    assert "pip3 install Demo.Pkg --extra-index-url https://pi.example.org/simple/" in top
    assert "uv pip install Demo.Pkg --extra-index-url https://pi.example.org/simple/" in top
    assert "data-origin" not in top, "the site's URL is known: nothing to fill in"
    assert 'latest <a href="#v1.0">1.0</a>' in top, "the yanked pre-release is not the one to install"
    assert "sudo apt install libxml2" in top
    assert "<code>numpy&gt;=1.20</code>" in top and "<code>pytest; extra == &quot;test&quot;</code>" in top


def test_without_the_site_url_the_page_fills_in_its_own_origin(project):
    html = pages.project_html(project).decode()
    assert '<pre class="command" data-origin=""><code>pip3 install Demo.Pkg --extra-index-url ' \
           f'{pages.SITE_PLACEHOLDER}/simple/</code></pre>' in html
    assert '../../static/site.js' in html


def test_each_release_has_a_row_per_target_saying_where_it_stands(project):
    html = pages.project_html(project).decode()
    old = html[html.index('id="v1.0"'):]
    assert '<span class="state built">built</span>' in old
    assert '<tr data-queue="cp313">' in old and '<span class="state queued">queued</span>' in old
    rc = html[html.index('id="v2.0rc1"'):html.index('id="v1.0"')]
    assert '<span class="state not-needed">not needed</span>' in rc
    assert "the pure wheel built on cp311 serves every target" in rc


def test_project_page_shows_skip_reasons_and_failures():
    release = Release(version="1.0", released="2024-01-01T00:00:00Z", prerelease=False, yanked=False,
                      yanked_reason=None, requires_python=None, skip_reason="needs CUDA",
                      builds=[Build(build_id=9, version="1.0", abi="cp39", status="failure", builder="pi-2",
                                    duration=3700.0, log_path="logs/0000/0000/0009.txt.gz",
                                    reason="pip wheel exited with 1", target="cp39")])
    release.targets = target_rows(release, [TargetInfo("cp39", "cp39", "linux_armv7l", "bullseye", 0)])
    p = Project(package="gpu", display_name="gpu", summary=None, skip_reason="binary only <sorry>",
                releases=[release])
    html = pages.project_html(p).decode()
    assert "not built: needs CUDA" in html
    assert "binary only &lt;sorry&gt;" in html
    assert '<span class="state failed">failed</span> <span class="detail">pip wheel exited with 1</span>' in html
    assert "1h 01m" in html


def test_older_releases_fold_away():
    releases = [Release(version=f"1.{n}", released="2024-01-01T00:00:00Z", prerelease=False, yanked=False,
                        yanked_reason=None, requires_python=None, skip_reason=None) for n in range(25, 0, -1)]
    html = pages.project_html(Project(package="many", display_name="many", summary=None, skip_reason=None,
                                      releases=releases)).decode()
    folded = html[html.index('<details class="older">'):]
    assert "<summary>15 older releases</summary>" in folded
    assert 'id="v1.15"' in folded and 'id="v1.16"' not in folded


def test_build_settings_are_escaped_on_the_page(project):
    project.build_settings = {"apt_packages": ["libfoo-dev<x>"], "environment": {"A": "<b>"},
                              "changed_by": "<script>"}
    html = pages.project_html(project).decode()
    assert "apt libfoo-dev&lt;x&gt;; env A=&lt;b&gt; (set by &lt;script&gt;)" in html and "<script>" not in html
    assert json.loads(pages.project_json(project))["build_settings"] == project.build_settings


@pytest.mark.parametrize("log, found", [
    ("x.c:1:10: fatal error: ffi.h: No such file or directory",
     {("header", "ffi.h")}),
    ("In file included from a.c:2:\nsrc/lxml.c:4:10: fatal error: libxml/xmlversion.h: No such file or directory",
     {("header", "libxml/xmlversion.h")}),
    ("a.cpp:1:10: fatal error: 'boost/shared_ptr.hpp' file not found", {("header", "boost/shared_ptr.hpp")}),
    ("/usr/bin/ld: cannot find -lxml2: No such file or directory\n/usr/bin/ld: cannot find -lz",
     {("library", "xml2"), ("library", "z")}),
    ("Package libffi was not found in the pkg-config search path.", {("pkg-config", "libffi")}),
    ("error: command 'gcc' failed: No such file or directory", set()),
    ("FileNotFoundError: [Errno 2] No such file or directory: 'curl-config'", {("tool", "curl-config")}),
    ("sh: 1: pg_config: not found", {("tool", "pg_config")}),
])
def test_missing_headers_and_libraries_are_found_in_logs(log, found):
    assert missing_in_log(log) == found


@pytest.mark.parametrize("reason, log, cause, detail", [
    ("timed out after 3600 s; the build and everything it started were killed", "", "timed out", None),
    ("does not load on bookworm armhf: import x: ImportError: libfoo.so.1", "", "does not load", None),
    ("pip wheel exited with status 1", "error: package `pyo3 v0.25` cannot be built because it requires "
     "rustc 1.74 or newer, while the currently active rustc version is 1.63.0", "needs a newer Rust", None),
    ("pip wheel exited with status 1", "error: can't find Rust compiler", "needs Rust", None),
    ("pip wheel exited with status 1", "  error: Rust 1.63.0 does not match extension requirement >=1.64.0",
     "needs a newer Rust", "Rust 1.63.0 does not match extension requirement >=1.64.0"),
    ("pip wheel exited with status 1", "this version of Cargo is older than the `2024` edition, and only "
     "supports `2015`, `2018`, and `2021` editions.", "needs a newer Rust", None),
    ("pip wheel exited with status 1", "lock file version `4` was found, but this version of Cargo does not "
     "understand this lock file, perhaps Cargo needs to be updated?", "needs a newer Rust", None),
    ("pip wheel exited with status 1", "error: failed to get `pyo3` as a dependency of package `x v0.1.0`",
     "needs Rust crates from crates.io", None),
    ("pip wheel exited with status 1", "Could not detect if running on the Raspberry Pi or Beaglebone Black.",
     "needs a Pi to build", None),
    ("pip wheel exited with status 1", "x.c:1:10: fatal error: sql.h: No such file or directory",
     "missing header", "sql.h -> unixodbc-dev"),
    ("pip wheel exited with status 1", "No such file or directory: 'curl-config'", "missing build tool",
     "curl-config -> libcurl4-openssl-dev"),
    ("pip wheel exited with status 1", "something else", "other", "pip wheel exited with status 1"),
])
def test_every_failure_is_given_its_cause(reason, log, cause, detail):
    from wheelwright.publish.reports import classify_failure
    found, words = classify_failure(reason, log)
    assert found == cause and (detail is None or words == detail)


def test_missing_files_map_to_debian_packages():
    assert provider("header", "ffi.h") == "libffi-dev"
    assert provider("header", "libxml/xmlversion.h") == "libxml2-dev"
    assert provider("header", "openssl/ssl.h") == "libssl-dev"
    assert provider("library", "z") == "zlib1g-dev"
    assert provider("pkg-config", "libffi") == "libffi-dev"
    assert provider("header", "nothing-like-it.h") is None


def test_preinstalled_packages_are_left_out_per_distro():
    assert needed_apt(["libc6", "libssl3", "libxml2"], "bookworm") == ("libxml2",)
    assert needed_apt(["libc6", "libssl3t64", "libxml2"], "trixie") == ("libxml2",)
    assert needed_apt(["libc6", "libxml2"], "no-such-distro") == ("libc6", "libxml2")


class Balance(HTMLParser):
    """Checks that every element the page opens is closed, in order (void elements aside)."""

    VOID = {"meta", "br", "link", "img", "input", "hr"}

    def __init__(self):
        super().__init__()
        self.open, self.errors, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.errors.append(tag)

    def handle_data(self, data):
        self.text.append(data)


@pytest.mark.parametrize("hostile", ["<td>", "</div></table>", '"><script>x</script>', "a & b"])
def test_project_page_is_well_formed_whatever_pypi_sends(project, hostile):
    failed = Build(build_id=9, version="1.0", abi="cp39", status="failure", builder="pi-2", duration=None,
                   log_path=None, reason=hostile, target="cp39")
    project.summary = project.skip_reason = hostile
    project.releases[0].yanked_reason = project.releases[0].skip_reason = hostile
    project.releases[1].builds.append(failed)
    project.releases.append(Release(version=hostile, released="2020-01-01T00:00:00Z", prerelease=False,
                                    yanked=False, yanked_reason=None, requires_python=hostile,
                                    skip_reason=None))
    checker = Balance()
    checker.feed(pages.project_html(project).decode())
    checker.close()
    assert checker.errors == [] and checker.open == []
    assert "".join(checker.text).count(hostile) >= 5, "hostile text shows as text, never as markup"
