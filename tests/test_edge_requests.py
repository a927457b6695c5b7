"""The internet's side of the edge, in raw HTTP: what nginx (the shipped config), Varnish (the shipped
VCL, in front of that nginx) and the static server answer to targets and requests an attacker writes.

Every request goes out through a plain socket (tests/support/edge_cases.py), never through a client that
would normalise or refuse it first, and every answer's header block is checked byte by byte: a CR, LF
or NUL of the client's inside a header line is a split response. One table of cases holds the three
servers to the one rule (:mod:`wheelwright.publish.request_paths`); hypothesis then throws targets at
all three and holds each answer to that rule. The rest reads the edge as an attacker would: the cache
key (Host, query strings), requests smuggled in a body, and the access log.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import given, settings

from support.edge_cases import CASES, TARGETS, Answer, header_lines, make_tree, raw_get, raw_request
from support.serving import NGINX, VARNISHD, edge, serve
from wheelwright.operate.static_server import make_server
from wheelwright.publish import request_paths
from wheelwright.publish.negotiation import negotiate

pytestmark = pytest.mark.skipif(NGINX is None or VARNISHD is None,
                                reason="make setup installs nginx (with its perl module) and varnish")

SERVERS = ["python", "nginx", "varnish"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tree = make_tree(tmp_path_factory.mktemp("www"))
    started = {"python": serve(tree, tmp_path_factory.mktemp("python"), "python")}
    try:
        started["nginx"] = serve(tree, tmp_path_factory.mktemp("nginx"), "nginx")
        started["varnish"] = edge(started["nginx"], tmp_path_factory.mktemp("varnish"))
        yield started
    finally:
        for served in reversed(list(started.values())):
            served.stop()


def clean(answer: Answer) -> Answer:
    header_lines(answer.head)   # fails on a CR, LF or NUL inside a header line
    return answer


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("kind", SERVERS)
def test_every_server_answers_the_shared_table(servers, kind, case):
    answer = clean(raw_get(servers[kind].port, case.target))
    assert answer.status == case.status, f"{kind}: {case.target!r} answered {answer.status}"
    assert answer.header("Location") == case.location, f"{kind}: {case.target!r}"
    assert answer.header("Set-Cookie") is None and answer.header("X-Injected") is None


@settings(max_examples=150, deadline=None)
@given(TARGETS.filter(lambda t: not set(b" #\n") & set(t)))   # a raw space, # or LF is no target at all
def test_whatever_the_target_every_server_keeps_to_the_rule(servers, target):
    verdict = request_paths.judge(target)
    for kind in SERVERS:
        answer = clean(raw_get(servers[kind].port, target))
        location = answer.header("Location")
        if verdict.status in (request_paths.BAD_REQUEST, request_paths.TOO_LONG, request_paths.REDIRECT):
            assert (answer.status, location) == (verdict.status, verdict.location), f"{kind}: {target!r}"
        else:
            assert answer.status in (200, 301, 403, 404), f"{kind}: {target!r} answered {answer.status}"
            if answer.status == 301:   # the server's own /dir -> /dir/ redirect
                assert location.startswith(verdict.path) and location.rstrip("/") != "", f"{kind}: {target!r}"


def test_a_request_line_a_bare_lf_cuts_short_gets_no_answer_without_a_status_line(servers):
    """``GET /simple/0\n HTTP/1.1``: the line ends at the LF, so it reads as HTTP/0.9, whose answer is
    a body alone (no status, no headers): a client could not tell an error from a page."""
    request = b"GET /simple/0\n HTTP/1.1\r\nHost: wheelwright.test\r\nConnection: close\r\n\r\n"
    for kind in ("python", "varnish"):
        assert raw_request(servers[kind].port, request).startswith(b"HTTP/1."), kind
        assert clean(raw_get(servers[kind].port, b"/simple/0\n")).status == 400, kind
    assert raw_request(servers["nginx"].port, request) == b"", "nginx closes without a word (444)"


# -- the cache key: nothing a client invents splits a page at the edge --------------------------------

def test_the_edge_keys_its_cache_on_the_url_alone(servers):
    varnish = servers["varnish"]
    asked_before = len(varnish.requests())
    first = raw_get(varnish.port, b"/project/demo/", host=b"one.example")
    assert first.status == 200
    for host, extra in ((b"two.example", b""), (b"evil.example", b"X-Forwarded-Host: evil.example\r\n")):
        again = raw_get(varnish.port, b"/project/demo/", extra, host=host)
        assert (again.status, again.header("X-Cache")) == (200, "HIT"), "another Host must not be a new entry"
    for query in (b"?a=1", b"?cachebust=2", b"?"):
        again = raw_get(varnish.port, b"/project/demo/" + query)
        assert (again.status, again.header("X-Cache")) == (200, "HIT"), f"a query ({query!r}) must not be either"
    asked = [p for p, _s, _f in varnish.requests()[asked_before:] if p.startswith("/project/demo/")]
    assert len(asked) <= 1, f"the origin should have been asked once at most: {asked}"


# -- request smuggling: a request hidden in a body never reaches anyone ----------------------------------

SMUGGLED = b"GET /simple/smuggled/ HTTP/1.1\r\nHost: wheelwright.test\r\n\r\n"
SMUGGLING = {
    "a body on a GET": b"GET /simple/demo/ HTTP/1.1\r\nHost: wheelwright.test\r\nContent-Length: %d\r\n\r\n%s"
                       % (len(SMUGGLED), SMUGGLED),
    "Content-Length and chunked": b"GET /simple/demo/ HTTP/1.1\r\nHost: wheelwright.test\r\nContent-Length: 4\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "two Content-Lengths": b"GET /simple/demo/ HTTP/1.1\r\nHost: wheelwright.test\r\nContent-Length: 0\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED),
    "chunked, obfuscated": b"GET /simple/demo/ HTTP/1.1\r\nHost: wheelwright.test\r\nTransfer-Encoding: xchunked\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED),
}


@pytest.mark.parametrize("how", SMUGGLING)
@pytest.mark.parametrize("kind", SERVERS)
def test_a_request_smuggled_in_a_body_is_never_served(servers, kind, how):
    served = servers[kind]
    data = raw_request(served.port, SMUGGLING[how] + b"GET /simple/after/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"/simple/smuggled/" not in data
    time.sleep(0.2)   # nginx writes its access log line after the answer
    seen = [path for path, _status, _format in served.requests()]
    assert not any("smuggled" in path for path in seen), f"{kind} ({how}) served the hidden request: {seen}"


# -- the access log: one request is one line, whatever it holds -------------------------------------------

def test_the_static_server_logs_one_line_per_request_whatever_the_client_wrote(servers):
    python = servers["python"]
    before = len(python.log_lines())
    forged = (b'1.2.3.4 [01/Jan/2026:00:00:00 +0000] "GET /simple/numpy/numpy-2.0-cp311-cp311-linux_armv7l.whl '
              b'HTTP/1.1" 200 1 format= accept="" ua="pip/24.0"')
    answer = raw_get(python.port, b"/simple/demo/",
                     b'User-Agent: x"\r\n ' + forged + b'\r\nAccept: text/html\r\x0b"\r\n')
    assert answer.status == 200
    lines = python.log_lines()[before:]
    assert len(lines) == 1, f"one request, {len(lines)} log lines: {lines}"
    assert '\\x22' in lines[0] and '\\x0D\\x0A' in lines[0] and "\r" not in lines[0]
    assert lines[0].startswith("127.0.0.1 ")


@pytest.mark.parametrize("kind", SERVERS)
def test_methods_other_than_get_and_head_change_nothing(servers, kind):
    for method in (b"PUT", b"DELETE", b"POST", b"PATCH"):
        data = raw_request(servers[kind].port, method + b" /simple/demo/index.html HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: 5\r\nConnection: close\r\n\r\nowned")
        status = int(data.split(b" ", 2)[1])
        assert status in (403, 405, 501), f"{kind}: {method.decode()} answered {status}"
    assert raw_get(servers[kind].port, b"/simple/demo/index.html").body == b"<html>demo</html>"



# -- Accept: a header built to make the negotiation's regexes backtrack is answered like any other ------

PATHOLOGICAL_ACCEPT = [b"application/vnd.pypi.simple.v1+json" + b" " * 7000 + b"x",
                       b"text/html" + b" ;" * 3500 + b"x",
                       b"application/vnd.pypi.simple.v1+json;q=" + b"0." * 3500,
                       b"*/*" + b" " * 7000 + b";q=0.5"]


@pytest.mark.parametrize("accept", PATHOLOGICAL_ACCEPT, ids=lambda a: repr(a[:20] + a[-8:]))
@pytest.mark.parametrize("kind", SERVERS)
def test_a_pathological_accept_header_is_negotiated_not_failed(servers, kind, accept):
    expected = 406 if negotiate(accept.decode()) is None else 200
    answer = clean(raw_get(servers[kind].port, b"/simple/demo/", b"Accept: " + accept + b"\r\n"))
    assert answer.status == expected, f"{kind} answered {answer.status} (a regex that gave up is a 503)"


def test_the_static_server_hangs_up_on_a_client_that_says_nothing(tmp_path):
    server = make_server(make_tree(tmp_path / "www"), idle_timeout=0.5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with socket.create_connection(server.server_address, timeout=30) as idle:
            idle.sendall(b"GET /simple/demo/ HTTP/1.1\r\n")   # ... and never the rest (slowloris)
            assert idle.recv(1024) == b"", "the server should close the connection, not wait for ever"
    finally:
        server.shutdown()
        server.server_close()
