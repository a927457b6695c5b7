"""What the index's web servers do with a request target before they look for a file: refuse, redirect
or go on. The one rule, written once.

Three servers answer the internet for the published tree: the nginx origin (``nginx/wheelwright.conf``,
its perl block), the Varnish edge (``varnish/wheelwright.vcl``) and wheelwright's own static server
(:mod:`wheelwright.operate.static_server`). The request target is the one thing a client writes freely,
and one rule of ours puts part of it into a response header: PEP 503's redirect of a non-canonical
project name, whose ``Location`` keeps the rest of the path. This module is the Python side of that
rule; nginx and Varnish cannot import it, so the tests run one table of targets
(``tests/support/edge_cases.py``) through all three servers and this module and hold them equal.

The rule, on the target as sent (path and query; percent-escapes decoded once):

- longer than :data:`MAX_TARGET` bytes: **414**. No URL of the index comes near it.
- a ``%`` that does not start an escape (two hex digits), or a byte no URL of the index has: C0
  controls (NUL, CR, LF, ...), DEL, the backslash and anything outside ASCII: **400**. Every URL the publisher writes is ASCII (canonical names, wheel file names,
  numbered logs), so this refuses nothing real, and CR/LF/NUL can never reach a header or a log line.
- a ``.`` or ``..`` segment in the path (``%2e`` too): **400**. No index client sends one (browsers
  resolve them before asking), and a redirect that kept one could leave its prefix.
- ``/simple/<Name>/...`` or ``/project/<Name>/...`` whose name is spelled plainly
  (``[A-Za-z0-9._-]``) and whose canonical form is a name we accept (:func:`wheelwright.names.
  canonical_or_none`) but differs: **301** to ``/<room>/<canonical>`` followed by the rest of the path
  *re-encoded*: every byte outside RFC 3986's unreserved characters, its sub-delimiters, ``:``, ``@``
  and ``/`` is percent-encoded again, so a decoded ``?`` or ``#`` stays part of the path and nothing
  decoded is copied into the header. The query is dropped. The target is a relative path under the same
  prefix.
- anything else goes on to the server's own rules (content negotiation, files, 404).

It must not do I/O: it is a pure function of one request target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from wheelwright.names import canonical_or_none

MAX_TARGET = 2048          # bytes of path and query, as sent
GO_ON, REDIRECT, BAD_REQUEST, TOO_LONG = 0, 301, 400, 414

_MALFORMED_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_REFUSED_BYTES = re.compile(rb"[\x00-\x1f\x7f-\xff\\]")
_DOT_SEGMENT = re.compile(rb"(?:\A|/)\.\.?(?:/|\Z)")
_ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
_PROJECT = re.compile(r"/(simple|project)/([A-Za-z0-9._-]+)(/.*)?\Z", re.S)
# What a path may hold unencoded in a Location: RFC 3986's pchar (less "%") and "/".
_LOCATION_SAFE = "/!$&'()*+,;=:@~"


@dataclass(frozen=True)
class Verdict:
    """``status`` is GO_ON (serve by the server's own rules), REDIRECT (to ``location``), BAD_REQUEST
    or TOO_LONG; ``path`` is the decoded path the server goes on with."""

    status: int
    location: str | None = None
    path: str = ""


def judge(target: str | bytes) -> Verdict:
    """The verdict on one request target (origin-form ``/path?query``, or absolute-form)."""
    raw = target.encode("latin-1") if isinstance(target, str) else target
    if len(raw) > MAX_TARGET:
        return Verdict(TOO_LONG)
    if raw[:1] != b"/":      # absolute-form (http://host/path?query): the server acts on the rest
        m = _ABSOLUTE.match(raw)
        if not m:
            return Verdict(BAD_REQUEST)
        raw = raw[m.end():]
    raw = b"/" + raw.lstrip(b"/")   # //x is /x (as http.server and nginx take it), never a host
    if _MALFORMED_ESCAPE.search(raw):
        return Verdict(BAD_REQUEST)
    path_raw, _, query_raw = raw.partition(b"?")
    path = unquote_to_bytes(path_raw)
    if _REFUSED_BYTES.search(path) or _REFUSED_BYTES.search(unquote_to_bytes(query_raw)):
        return Verdict(BAD_REQUEST)
    if _DOT_SEGMENT.search(path):
        return Verdict(BAD_REQUEST)
    text = path.decode("ascii")
    location = canonical_location(text)
    if location is not None:
        return Verdict(REDIRECT, location, text)
    return Verdict(GO_ON, None, text)


def canonical_location(path: str) -> str | None:
    """Where a non-canonical ``/simple/<Name>/...`` or ``/project/<Name>/...`` lives (PEP 503 says to
    redirect), or None when ``path`` (decoded) names no project or its canonical one."""
    m = _PROJECT.match(path)
    if not m:
        return None
    canon = canonical_or_none(m[2])
    if canon is None or canon == m[2]:
        return None
    return f"/{m[1]}/{canon}" + quote(m[3] or "/", safe=_LOCATION_SAFE)
