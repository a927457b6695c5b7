"""The build's index proxy, spoken to over its real Unix socket as a hostile build would.

An upstream on loopback records every byte it receives, standing for the index (or the edge in front
of it). Each test sends raw requests through the proxy and shows what the upstream got: only GET and
HEAD, only the headers pip needs, the index's own Host, one request per connection, tunnels only for
TLS; and what the worker paid: a bounded number of threads, a deadline for the request head. A real
sandboxed build doing the same against a real Varnish is in ``test_sandbox.py``.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.waiting import wait_until
from wheelwright.builds import sandbox
from wheelwright.builds.sandbox import IndexProxy, _Refusal


class Recorder:
    """A TCP server on loopback that records what each connection sent and answers ``answer``."""

    def __init__(self, answer: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"):
        self.answer = answer
        self.received: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        data = b""
        conn.settimeout(2)
        try:
            while b"\r\n\r\n" not in data and not data.startswith(b"\x16"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            conn.sendall(self.answer)
            time.sleep(0.3)  # anything riding behind the first request would arrive now
            conn.settimeout(0.2)
            while chunk := conn.recv(65536):
                data += chunk
        except OSError:
            pass
        finally:
            self.received.append(data)
            conn.close()

    def close(self):
        self.server.close()


@pytest.fixture
def index():
    server = Recorder()
    yield server
    server.close()


@pytest.fixture
def proxy_for(tmp_path):
    proxies = []

    def make(allowed, **options) -> IndexProxy:
        proxy = IndexProxy(tmp_path / f"p{len(proxies)}.sock", allowed, **options).start()
        proxies.append(proxy)
        return proxy
    yield make
    for proxy in proxies:
        proxy.close()


def ask(proxy: IndexProxy, request: bytes, *, then: bytes = b"") -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(15)
        s.connect(str(proxy.path))
        s.sendall(request)
        if then:
            time.sleep(0.1)
            try:
                s.sendall(then)
            except OSError:
                pass
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
        return data


def settle(index: Recorder, count: int) -> list[bytes]:
    deadline = time.monotonic() + 5
    while len(index.received) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    return index.received


# --- what reaches the index --------------------------------------------------------------------------

def test_a_get_reaches_the_index_with_its_own_host_and_only_the_headers_pip_needs(index, proxy_for):
    proxy = proxy_for({("127.0.0.1", index.port): "http"})
    answer = ask(proxy, (b"GET http://127.0.0.1:%d/simple/foo/?x=1 HTTP/1.1\r\n"
                         b"Host: admin.internal\r\nAccept: application/vnd.pypi.simple.v1+json\r\n"
                         b"User-Agent: pip/24\r\nAccept-Encoding: gzip\r\nxkey-purge: all\r\n"
                         b"X-Forwarded-For: 10.0.0.1\r\nAuthorization: Basic eDp5\r\nCookie: s=1\r\n"
                         b"Proxy-Connection: keep-alive\r\n\r\n") % index.port)
    assert answer.endswith(b"hello")
    [got] = settle(index, 1)
    assert got == (b"GET /simple/foo/?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                   b"accept: application/vnd.pypi.simple.v1+json\r\nuser-agent: pip/24\r\n"
                   b"accept-encoding: gzip\r\nConnection: close\r\n\r\n") % index.port


@pytest.mark.parametrize("method", ["PURGE", "DELETE", "POST", "PUT", "OPTIONS", "BAN", "TRACE"])
def test_any_method_but_get_and_head_is_answered_405_and_never_forwarded(index, proxy_for, method):
    proxy = proxy_for({("127.0.0.1", index.port): "http"})
    answer = ask(proxy, f"{method} http://127.0.0.1:{index.port}/ HTTP/1.1\r\nxkey-purge: all\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 405 ")
    assert settle(index, 0) == [], "the index saw nothing"
    assert [e.kind for e in proxy.events] == ["denied"]


def test_nothing_rides_behind_the_first_request(index, proxy_for):
    proxy = proxy_for({("127.0.0.1", index.port): "http"})
    purge = b"PURGE / HTTP/1.1\r\nHost: x\r\nxkey-purge: all\r\n\r\n"
    pipelined = ask(proxy, b"GET http://127.0.0.1:%d/ HTTP/1.1\r\n\r\n" % index.port + purge)
    assert pipelined.startswith(b"HTTP/1.1 400 ")
    later = ask(proxy, b"GET http://127.0.0.1:%d/ HTTP/1.1\r\n\r\n" % index.port, then=purge)
    assert later.endswith(b"hello")
    received = settle(index, 1)
    assert len(received) == 1 and b"PURGE" not in received[0], received


@pytest.mark.parametrize("head", [
    b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nAccept: a\nPURGE: x\r\n\r\n",      # a bare LF inside a line
    b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nAccept: a\rb\r\n\r\n",             # a bare CR
    b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nAccept: a\x00b\r\n\r\n",           # NUL
    b"GET http://127.0.0.1:%d/ HTTP/1.1\r\n Accept: folded\r\n\r\n",          # obs-fold
    b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n",        # a body
    b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET http://127.0.0.1:%d/\x1b[2J HTTP/1.1\r\n\r\n",                      # a control in the target
    b"GET https://127.0.0.1:%d/ HTTP/1.1\r\n\r\n",                            # not http://
    b"GET http://127.0.0.1:99999/ HTTP/1.1\r\nX-Meant: %d\r\n\r\n",          # not a port
])
def test_a_request_another_parser_could_read_differently_is_refused(index, proxy_for, head):
    proxy = proxy_for({("127.0.0.1", index.port): "http"})
    answer = ask(proxy, head % index.port)
    assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 403 ")), answer
    assert settle(index, 0) == []


# --- tunnels ------------------------------------------------------------------------------------------

def test_a_tunnel_to_a_plain_http_index_is_refused(index, proxy_for):
    proxy = proxy_for({("127.0.0.1", index.port): "http"})
    answer = ask(proxy, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\nPURGE / HTTP/1.1\r\n\r\n" % index.port)
    assert answer.startswith(b"HTTP/1.1 405 ")
    assert settle(index, 0) == []


def test_a_tunnel_to_an_https_index_carries_tls_and_nothing_else(index, proxy_for):
    proxy = proxy_for({("127.0.0.1", index.port): "https"})
    plain = ask(proxy, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\nPURGE / HTTP/1.1\r\nxkey-purge: all\r\n\r\n"
                % index.port)
    assert plain == b"HTTP/1.1 200 Connection established\r\n\r\n", "closed before anything went up"
    assert settle(index, 1) == [b""], "the index saw a connection and not one byte"
    hello = b"\x16\x03\x01\x00\x05hello"
    tls = ask(proxy, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % index.port + hello)
    assert tls.endswith(b"hello")
    assert settle(index, 2)[1] == hello
    assert ask(proxy, b"GET http://127.0.0.1:%d/ HTTP/1.1\r\n\r\n" % index.port).startswith(b"HTTP/1.1 403 ")


def test_the_proxy_forwards_to_the_index_only(index, proxy_for):
    proxy = proxy_for({("127.0.0.1", index.port): "https"})
    assert ask(proxy, b"CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 403")
    assert ask(proxy, b"GET http://10.0.0.1:8080/api HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 403")
    assert [e.destination for e in proxy.events] == ["127.0.0.1:22", "10.0.0.1:8080"]
    assert settle(index, 0) == []


def test_pypi_org_brings_its_file_host_and_nothing_else():
    assert sandbox.allowed_destinations("https://pypi.org/simple/") == {
        ("pypi.org", 443): "https", ("files.pythonhosted.org", 443): "https"}
    assert sandbox.allowed_destinations("http://127.0.0.1:8080/simple/", ("mirror.example:8443",)) == {
        ("127.0.0.1", 8080): "http", ("mirror.example", 8443): "https"}


# --- what the worker pays ---------------------------------------------------------------------------

def test_connections_past_the_cap_are_refused_without_a_thread_each(index, proxy_for):
    proxy = proxy_for({("127.0.0.1", index.port): "http"}, max_connections=8, head_deadline=30)
    held = []
    try:
        for _ in range(200):  # idle: never a whole request head
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(proxy.path))
            held.append(s)
            try:
                s.sendall(b"GET http://127.0.0.1")
            except BrokenPipeError:
                pass   # one past the cap may be answered and closed before it says anything
        wait_until(lambda: proxy.denied_connections == 192, 10, "the proxy to take every connection")
        serving = [t for t in threading.enumerate() if t.name == f"index-proxy-connection {proxy.path}"]
        assert len(serving) == 8, "one thread per admitted connection, no more"
        refused = 0
        for s in held[8:]:
            s.settimeout(5)
            refused += s.recv(100).startswith(b"HTTP/1.1 503 ")
        assert refused == 192
    finally:
        for s in held:
            s.close()
    assert proxy.denied_connections == 192
    assert [e.kind for e in proxy.events] == ["denied"], "said once, not 192 times"


def test_a_request_head_has_one_deadline_however_slowly_it_drips(index, proxy_for):
    proxy = proxy_for({("127.0.0.1", index.port): "http"}, head_deadline=1)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(proxy.path))
        s.settimeout(10)
        answer = b""
        for byte in b"GET http://127.0.0.1/ HTTP/1.1\r\nAccept: x\r\n":  # one byte every 0.2 s
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
        try:
            answer = s.recv(100)
        except OSError:
            pass
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert settle(index, 0) == []


def test_closing_the_proxy_ends_every_connection_it_serves(index, proxy_for):
    slow = Recorder(answer=b"")  # an index that never answers
    proxy = proxy_for({("127.0.0.1", slow.port): "http"})
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(proxy.path))
    s.sendall(b"GET http://127.0.0.1:%d/ HTTP/1.1\r\n\r\n" % slow.port)
    time.sleep(0.5)
    proxy.close()
    s.settimeout(5)
    assert s.recv(100) == b""
    s.close()
    slow.close()


# --- the request the index gets, for any headers ----------------------------------------------------

header_names = st.one_of(st.sampled_from([b"Accept", b"User-Agent", b"Host", b"xkey-purge", b"Range",
                                          b"Content-Length", b"X-Forwarded-For", b"Cache-Control"]),
                         st.binary(min_size=1, max_size=12))
header_values = st.binary(max_size=40)


@settings(max_examples=500, deadline=None)
@given(method=st.sampled_from(["GET", "HEAD", "PURGE", "POST"]),
       lines=st.lists(st.tuples(header_names, st.sampled_from([b": ", b":", b" : ", b""]), header_values),
                      max_size=8))
def test_whatever_headers_a_build_sends_the_index_gets_one_clean_request(method, lines, tmp_path_factory):
    proxy = IndexProxy(tmp_path_factory.mktemp("p") / "p.sock", {("127.0.0.1", 8080): "http"})
    try:
        block = b"\r\n".join(name + sep + value for name, sep, value in lines)
        try:
            destination, request = proxy.request_for_index(method, "http://127.0.0.1:8080/simple/",
                                                           proxy._headers(block))
        except _Refusal as refusal:
            assert refusal.code in (400, 405)
            return
        assert destination == ("127.0.0.1", 8080) and method in ("GET", "HEAD")
        head, blank, after = request.partition(b"\r\n\r\n")
        assert blank and after == b"", "exactly one request, ending in one blank line"
        first, *headers = head.split(b"\r\n")
        assert first == f"{method} /simple/ HTTP/1.1".encode()
        assert headers[0] == b"Host: 127.0.0.1:8080" and headers[-1] == b"Connection: close"
        for line in headers[1:-1]:
            name, _, value = line.partition(b": ")
            assert name in sandbox.FORWARDED_HEADERS
            assert not any(c < 0x20 and c != 0x09 or c == 0x7f for c in value), line
    finally:
        proxy.close()
