"""The web server in front of the tree: content negotiation, content types, cache rules, surrogate keys.

Every behaviour is checked against both servers the tests can run: nginx with the shipped
``nginx/wheelwright.conf`` (where nginx is installed) and wheelwright's own static server, which must
apply the same rules.
"""

from __future__ import annotations

import gzip
import json

import pytest

from support.serving import BROWSER_ACCEPT, NEGOTIATION, NGINX, PIP_ACCEPT, serve
from wheelwright.publish import cdn, request_paths
from wheelwright.publish.negotiation import negotiate

SERVERS = ["python"] + (["nginx"] if NGINX else [])


@pytest.mark.parametrize("accept, expected", NEGOTIATION)
def test_negotiation_rules(accept, expected):
    assert negotiate(accept) == expected, f"Accept: {accept!r}"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    simple = root / "simple"
    (simple / "demo").mkdir(parents=True)
    (simple / "index.html").write_text("<html>root</html>")
    (simple / "index.json").write_text('{"meta": {"api-version": "1.1"}, "projects": []}')
    (simple / "demo" / "index.html").write_text("<html>demo</html>")
    (simple / "demo" / "index.json").write_text('{"meta": {"api-version": "1.1"}, "name": "demo"}')
    (simple / "demo" / ".ww-tmp.index.html").write_text("half-written")
    (simple / "demo" / "demo-1.0-py3-none-any.whl").write_bytes(b"PK\x03\x04wheel")
    (simple / "demo" / "demo-1.0-py3-none-any.whl.metadata").write_text("Name: demo\n")
    (simple / "hidden").mkdir()  # a quarantined project: its folder stays for its files, no pages
    (root / "project" / "demo" / "json").mkdir(parents=True)
    (root / "project" / "demo" / "index.html").write_text("<html>project demo</html>")
    (root / "project" / "demo" / "json" / "index.json").write_text('{"package": "demo"}')
    (root / "project" / "Demo").symlink_to("demo")
    (root / "logs" / "0000" / "0000").mkdir(parents=True)
    (root / "logs" / "0000" / "0000" / "0001.txt.gz").write_bytes(gzip.compress(b"the log\n"))
    (root / "packages.json").write_text('[["demo", "Demo", ""]]')
    return root


@pytest.fixture(scope="module", params=SERVERS)
def server(request, tree, tmp_path_factory):
    served = serve(tree, tmp_path_factory.mktemp(f"serve-{request.param}"), request.param)
    yield served
    served.stop()


@pytest.mark.parametrize("accept, expected", NEGOTIATION)
@pytest.mark.parametrize("path", ["/simple/", "/simple/demo/"])
def test_simple_pages_are_negotiated_on_accept(server, path, accept, expected):
    status, headers, body = server.get(path, accept)
    if expected is None:
        assert status == 406, f"{server.kind}: Accept {accept!r} should be refused, got {status}"
        return
    assert status == 200, f"{server.kind}: {path} with Accept {accept!r}: {status}"
    content_type = headers["Content-Type"]
    if expected == "json":
        assert content_type == "application/vnd.pypi.simple.v1+json"
        json.loads(body)
    else:
        assert content_type.startswith("text/html")
        assert body.startswith(b"<html>")
    assert "Accept" in headers.get("Vary", "")
    assert headers["Cache-Control"] == cdn.PAGE


def test_a_project_without_pages_is_not_found(server):
    assert server.get("/simple/hidden/", PIP_ACCEPT)[0] == 404
    assert server.get("/simple/nonexistent/", PIP_ACCEPT)[0] == 404


def test_a_project_url_without_slash_redirects(server):
    status, headers, _ = server.get("/simple/demo")
    assert status == 301
    assert headers["Location"].endswith("/simple/demo/")


def test_wheels_are_binary_and_cached_long(server):
    status, headers, body = server.get("/simple/demo/demo-1.0-py3-none-any.whl")
    assert status == 200 and body == b"PK\x03\x04wheel"
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Cache-Control"] == cdn.IMMUTABLE


def test_core_metadata_is_text(server):
    status, headers, body = server.get("/simple/demo/demo-1.0-py3-none-any.whl.metadata")
    assert status == 200 and body == b"Name: demo\n"
    assert headers["Content-Type"].startswith("text/plain")


def test_build_logs_are_gzip_encoded_text(server):
    status, headers, body = server.get("/logs/0000/0000/0001.txt.gz")
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"].startswith("text/plain")
    assert gzip.decompress(body) == b"the log\n"


def test_temporary_files_are_never_served(server):
    assert server.get("/simple/demo/.ww-tmp.index.html")[0] == 404


def test_project_pages_and_their_json(server):
    status, headers, body = server.get("/project/demo/")
    assert status == 200 and b"project demo" in body
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == cdn.PAGE
    status, headers, body = server.get("/project/demo/json/")
    assert status == 200 and json.loads(body) == {"package": "demo"}
    assert headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("path, location", [
    ("/simple/Demo/", "/simple/demo/"),
    ("/simple/DEMO", "/simple/demo/"),
    ("/simple/De_mo.-x/", "/simple/de-mo-x/"),
    ("/project/Demo/", "/project/demo/"),
    ("/project/Demo/json/", "/project/demo/json/"),
])
def test_a_name_that_is_not_canonical_redirects_to_the_canonical_url(server, path, location):
    status, headers, _ = server.get(path, PIP_ACCEPT)
    assert (status, headers["Location"]) == (301, location), f"{server.kind}: {path}"
    assert request_paths.judge(path).location == location


# (path, Accept, expected status, the keys every CDN must see)
KEYED = [
    ("/simple/", PIP_ACCEPT, 200, "root all"),
    ("/simple/", "text/html", 200, "root all"),
    ("/simple/demo/", PIP_ACCEPT, 200, "project/demo all"),
    ("/simple/demo/", "text/html", 200, "project/demo all"),
    ("/simple/demo/demo-1.0-py3-none-any.whl", None, 200, "project/demo all"),
    ("/simple/demo/demo-1.0-py3-none-any.whl.metadata", None, 200, "project/demo all"),
    ("/simple/demo/demo-2.0-py3-none-any.whl", None, 404, "project/demo all"),
    ("/simple/nonexistent/", PIP_ACCEPT, 404, "project/nonexistent all"),
    ("/project/demo/", None, 200, "project/demo all"),
    ("/project/demo/json/", None, 200, "project/demo all"),
    ("/packages.json", None, 200, "search all"),
    ("/logs/0000/0000/0001.txt.gz", None, 200, "logs all"),
]


@pytest.mark.parametrize("path, accept, status, keys", KEYED)
def test_every_response_carries_its_surrogate_keys_in_three_spellings(server, path, accept, status, keys):
    got, headers, _ = server.get(path, accept)
    assert got == status, f"{server.kind}: {path}"
    assert tuple(keys.split()) == cdn.keys_for_path(path)
    assert headers["Surrogate-Key"] == keys, f"{server.kind}: {path}"
    assert headers["xkey"] == keys
    assert headers["Cache-Tag"] == keys.replace(" ", ",")
    assert headers["Cache-Control"] == cdn.cache_control(status, path), f"{server.kind}: {path}"


def test_cache_rules_files_are_immutable_pages_revalidate_errors_are_brief(server):
    assert server.get("/simple/demo/demo-1.0-py3-none-any.whl")[1]["Cache-Control"] == cdn.IMMUTABLE
    assert server.get("/logs/0000/0000/0001.txt.gz")[1]["Cache-Control"] == cdn.IMMUTABLE
    page = server.get("/simple/demo/", PIP_ACCEPT)[1]["Cache-Control"]
    assert "stale-while-revalidate" in page and "stale-if-error" in page and "s-maxage" in page
    missing = server.get("/simple/demo/demo-9.0-py3-none-any.whl")[1]
    assert "immutable" not in missing["Cache-Control"]
    assert "Content-Encoding" not in server.get("/logs/0000/0000/0009.txt.gz")[1]


def test_packages_json(server):
    status, headers, body = server.get("/packages.json")
    assert status == 200 and json.loads(body) == [["demo", "Demo", ""]]
    assert headers["Content-Type"].startswith("application/json")
