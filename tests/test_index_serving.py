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
    (root / "packages.json").write_text('[["demo", 0, 0, "Demo", ""]]')
    # the site around the project pages (wheelwright.publish.site)
    (root / "index.html").write_text("<html>home</html>")
    (root / "404.html").write_text("<html>the site's 404 page</html>")
    for page in ("packages.html", "faq.html", "json.html"):
        (root / page).write_text(f"<html>{page}</html>")
    (root / "static").mkdir()
    (root / "static" / "site.css").write_text("body { color: #222; }\n" * 100)
    (root / "static" / "site.js").write_text("(function () {})();\n" * 100)
    (root / "search").mkdir()
    (root / "search" / "de.json").write_text(json.dumps({"prefix": "de", "split": False,
                                                          "entries": [["demo", 0]] * 200}))
    (root / "queue.json").write_text('{"targets": {}}')
    (root / "sitemap.xml").write_text("<sitemapindex/>")
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
    ("/search/de.json", None, 200, "search all"),
    ("/", None, 200, "site all"),
    ("/index.html", None, 200, "site all"),
    ("/packages.html", None, 200, "site all"),
    ("/faq.html", None, 200, "site all"),
    ("/json.html", None, 200, "site all"),
    ("/static/site.css", None, 200, "site all"),
    ("/sitemap.xml", None, 200, "site all"),
    ("/queue.json", None, 200, "queue all"),
    ("/project/nonexistent/", None, 404, "project/nonexistent all"),
    ("/no/such/page", None, 404, "all"),
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
    assert status == 200 and json.loads(body) == [["demo", 0, 0, "Demo", ""]]
    assert headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("path", ["/project/nonexistent/", "/simple/nonexistent/", "/no/such/page",
                                  "/simple/demo/.ww-tmp.index.html"])
def test_what_is_missing_gets_the_sites_404_page_with_status_404(server, path):
    status, headers, body = server.get(path, "text/html")
    assert (status, body) == (404, b"<html>the site's 404 page</html>"), f"{server.kind}: {path}"
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == cdn.ERROR, "a 404 must not outlive its cause"


@pytest.mark.parametrize("path, content_type", [
    ("/", "text/html"), ("/faq.html", "text/html"), ("/static/site.css", "text/css"),
    ("/static/site.js", "application/javascript"), ("/search/de.json", "application/json"),
    ("/queue.json", "application/json"), ("/sitemap.xml", "application/xml"),
])
def test_the_sites_files_have_their_content_types(server, path, content_type):
    status, headers, _ = server.get(path)
    assert status == 200 and headers["Content-Type"].startswith(content_type), f"{server.kind}: {path}"
    assert headers["Cache-Control"] == cdn.PAGE


def test_nginx_compresses_the_sites_text_files(tree, tmp_path):
    """The search shards and the stylesheet travel compressed (the development server sends them plain)."""
    server = serve(tree, tmp_path, "nginx")
    try:
        _compressed(server)
    finally:
        server.stop()


def _compressed(server):
    import urllib.request
    for path in ("/search/de.json", "/static/site.css"):
        request = urllib.request.Request(server.url + path, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Encoding"] == "gzip", path
            assert gzip.decompress(response.read()) == (server.root / path.lstrip("/")).read_bytes()
