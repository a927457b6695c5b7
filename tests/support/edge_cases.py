"""One table of request targets and what every web server of the index must answer, sent as raw bytes.

The rule is :mod:`wheelwright.publish.request_paths` (Python), the perl block of ``nginx/wheelwright.conf``
and the refusals of ``varnish/wheelwright.vcl``; this table is what holds the three (and the module)
equal. Targets are bytes and go out through a plain socket (:func:`raw_get`), never through an HTTP
client that would normalise or refuse them first; answers are read as bytes too, so a CR, LF or NUL that
reached a header cannot hide behind a parser (:func:`header_lines`).

The tree the table assumes (:func:`make_tree`): one project, ``demo``, with its pages, a wheel, a
publisher's temporary file and a project page.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

WHEEL = "demo-1.0-py3-none-any.whl"


@dataclass(frozen=True)
class Case:
    target: bytes
    status: int
    location: str | None = None

    def __str__(self) -> str:   # the test id
        return repr(self.target[:60])[2:-1]


def _long(n: int) -> bytes:
    return b"/simple/Demo/" + b"a" * (n - len(b"/simple/Demo/"))


CASES = [
    # the response splitting: a bare CR (and friends) after a non-canonical name
    Case(b"/simple/Demo/%0dSet-Cookie:%20pwned=1", 400),
    Case(b"/simple/Demo/%0d%0aSet-Cookie:%20pwned=1", 400),
    Case(b"/simple/Demo/%0aX-Injected:%201", 400),
    Case(b"/project/Demo/%0d%0aLocation:%20http://evil.example/", 400),
    Case(b"/simple/Demo/%00", 400),
    # control characters and other bytes no URL of the index has, anywhere in the target
    Case(b"/simple/demo/%0d", 400),
    Case(b"/simple/demo/?q=%0d%0aX:%201", 400),
    Case(b"/project/Demo/%09", 400),
    Case(b"/simple/Demo/%7f", 400),
    Case(b"/simple/Demo/%c2%85", 400),
    Case(b"/simple/Demo/%ff", 400),
    Case(b"/simple/Demo/%5cevil", 400),
    Case(b"/simple/Demo/\x01", 400),
    Case(b"/simple/Demo/\x7f", 400),
    Case(b"/simple/Demo/\xc3\xa9", 400),
    Case(b"/simple/0\x85", 400),        # NEL: Python's http.server once split the request line there
    Case(b"/simple/demo/\xa0x", 400),   # NBSP: likewise
    Case(b"/simple/0\r", 400),
    Case(b"/simple/Demo/\\x", 400),
    Case(b"/simple/Demo/%", 400),
    Case(b"/simple/demo/%zz", 400),
    Case(b"*", 400),
    # dot segments, encoded or not: never resolved, never kept in a Location
    Case(b"/simple/Demo/%2e%2e/%2e%2e/etc/passwd", 400),
    Case(b"/simple/demo/../demo/", 400),
    Case(b"/simple/Demo/./", 400),
    Case(b"/simple/Demo/.%2E/", 400),
    Case(b"/simple/demo/..%2fx", 400),
    Case(b"/%2e%2e/%2e%2e/etc/passwd", 400),
    Case(b"/logs/../../etc/passwd", 400),
    # overlong targets
    Case(_long(2049), 414),
    Case(_long(4000), 414),
    Case(_long(2048), 301, "/simple/demo/" + "a" * (2048 - len("/simple/Demo/"))),
    # PEP 503 redirects: the canonical name and the rest of the path encoded again, the query dropped
    Case(b"/simple/Demo/", 301, "/simple/demo/"),
    Case(b"/simple/DEMO", 301, "/simple/demo/"),
    Case(b"/simple/RPi.GPIO/", 301, "/simple/rpi-gpio/"),
    Case(b"/simple/De_mo.-x/", 301, "/simple/de-mo-x/"),
    Case(b"/simple/De%6Do/", 301, "/simple/demo/"),
    Case(b"/project/Demo/json/", 301, "/project/demo/json/"),
    Case(b"/project/Demo", 301, "/project/demo/"),
    Case(b"/simple/Demo/?q=1", 301, "/simple/demo/"),
    Case(b"//simple/Demo/", 301, "/simple/demo/"),
    Case(b"http://evil.example/simple/Demo/", 301, "/simple/demo/"),
    Case(b"/simple/Demo//evil.example/", 301, "/simple/demo//evil.example/"),
    Case(b"/simple/Demo/a%3fb%23c", 301, "/simple/demo/a%3Fb%23c"),
    Case(b"/simple/Demo/%22%3Cx%3E%20y", 301, "/simple/demo/%22%3Cx%3E%20y"),
    Case(b'/simple/Demo/"<x>', 301, "/simple/demo/%22%3Cx%3E"),
    Case(b"/simple/Demo/%250d%250a", 301, "/simple/demo/%250d%250a"),
    Case(b"/simple/Demo/" + WHEEL.encode(), 301, "/simple/demo/" + WHEEL),
    # served by the server's own rules
    Case(b"/simple/demo/", 200),
    Case(b"/simple/demo/?q=1", 200),
    Case(b"/simple/demo/" + WHEEL.encode(), 200),
    Case(b"/project/demo/", 200),
    Case(b"/simple/_demo/", 404),                      # its canonical form is no name: nothing to redirect to
    Case(b"/simple/" + b"A" * 201 + b"/", 404),       # nor is a name longer than any we accept
    Case(b"/simple/demo/.ww-tmp.index.html", 404),
    Case(b"/simple/demo/%2eww-tmp.index.html", 404),
    Case(b"/simple/demo/%250d", 404),                  # a literal "%0d": harmless, not found
]


# Targets as an attacker writes them, for hypothesis: a room, a name (plain, or with escapes), then
# pieces of paths, escapes of any byte and raw bytes.
_NAME_CHARS = "AZaz09._-"
_PIECES = st.one_of(
    st.sampled_from(["/", "//", ".", "..", "%2e", "%2E", "%2f", "?", "#", "%", "a", "Z", "-", "_", "~",
                     "+", "!", "'", "(", ";", "=", "@", ":", "index.html", "json/", "%25", "%3f", "%23"]),
    st.integers(0, 255).map(lambda b: f"%{b:02x}"),                 # any byte, escaped
    st.integers(0, 255).map(lambda b: bytes([b]).decode("latin-1")),  # any byte, raw
)
NAMES = st.text(alphabet=st.sampled_from(list("ABCXYZabcxyz0189._-")), min_size=1, max_size=12)
TARGETS = st.builds(
    lambda room, name, rest: f"/{room}/{name}{rest}".encode("latin-1"),
    st.sampled_from(["simple", "project", "logs", "reports", "Simple"]),
    st.one_of(NAMES, st.lists(st.sampled_from(list(_NAME_CHARS) + ["%41", "%2e", "%0d"]), max_size=8).map("".join)),
    st.lists(_PIECES, max_size=12).map("".join),
)


def make_tree(root: Path) -> Path:
    simple = root / "simple"
    (simple / "demo").mkdir(parents=True)
    (simple / "index.html").write_text("<html>root</html>")
    (simple / "index.json").write_text('{"meta": {"api-version": "1.1"}, "projects": []}')
    (simple / "demo" / "index.html").write_text("<html>demo</html>")
    (simple / "demo" / "index.json").write_text('{"meta": {"api-version": "1.1"}, "name": "demo"}')
    (simple / "demo" / ".ww-tmp.index.html").write_text("half-written")
    (simple / "demo" / WHEEL).write_bytes(b"PK\x03\x04wheel")
    (root / "project" / "demo").mkdir(parents=True)
    (root / "project" / "demo" / "index.html").write_text("<html>project demo</html>")
    return root


@dataclass
class Answer:
    status: int
    head: bytes                  # the status line and headers, as received
    body: bytes

    def header(self, name: str) -> str | None:
        for line in header_lines(self.head)[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None


def raw_request(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send ``request`` as it is and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
    return data


def raw_get(port: int, target: bytes, headers: bytes = b"", host: bytes = b"wheelwright.test") -> Answer:
    """``GET target`` in HTTP/1.1, one request per connection."""
    data = raw_request(port, b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + headers
                       + b"Connection: close\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1."), f"not an HTTP answer to {target!r}: {data[:200]!r}"
    return Answer(int(status_line.split()[1]), head, body)


def header_lines(head: bytes) -> list[bytes]:
    """The header block's lines; fails if any holds a CR, LF or NUL of its own (a split response)."""
    lines = head.split(b"\r\n")
    for line in lines:
        assert b"\r" not in line and b"\n" not in line and b"\0" not in line, \
            f"a header line carries a CR, LF or NUL: {line!r}"
    return lines
