"""Which representation of a simple-index page an ``Accept`` header gets: the one rule, written once.

PEP 691 lets a client ask for the JSON or the HTML form of ``/simple/`` and ``/simple/<project>/`` by
``Accept``. Three things answer that question and must agree: the nginx origin (maps in
``nginx/wheelwright.conf``), the Varnish edge (which normalises ``Accept`` to ``json`` or ``html`` so a
page has two cache entries, not one per spelling of the header: ``varnish/wheelwright.vcl``) and the
Python servers (:mod:`wheelwright.operate.static_server` and the PyPI double). This module is the Python
side; nginx and Varnish cannot import it, so the tests run one table of headers through all three and
hold them equal.

The rule: each format's quality is that of its most specific mention (an explicit media type beats a
wildcard: ``*/*`` and ``application/*`` for JSON, ``*/*`` and ``text/*`` for HTML); the higher quality
wins; a tie goes to JSON if JSON was named explicitly, else to HTML; both zero is "not acceptable"
(406). No ``Accept`` at all means HTML. Qualities compare to three decimals, as RFC 9110 writes them.

It must not do I/O: it is a pure function of one header.
"""

from __future__ import annotations

JSON = "json"
HTML = "html"
SIMPLE_JSON_TYPE = "application/vnd.pypi.simple.v1+json"
SIMPLE_HTML_TYPE = "application/vnd.pypi.simple.v1+html"
JSON_TYPES = (SIMPLE_JSON_TYPE, "application/vnd.pypi.simple.latest+json")
HTML_TYPES = ("text/html", SIMPLE_HTML_TYPE, "application/vnd.pypi.simple.latest+html")


def _q(params: list[str]) -> float:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                return max(0.0, min(1.0, float(value.strip())))
            except ValueError:
                return 0.0
    return 1.0


def negotiate(accept: str | None) -> str | None:
    """``"json"``, ``"html"`` or None (406 Not Acceptable) for an ``Accept`` header."""
    if accept is None or not accept.strip():
        return HTML
    json_q = html_q = None
    json_wild = html_wild = None
    for part in accept.split(","):
        media, *params = part.split(";")
        media = media.strip().lower()
        q = _q(params)
        if media in JSON_TYPES:
            json_q = q if json_q is None else max(json_q, q)
        elif media in HTML_TYPES:
            html_q = q if html_q is None else max(html_q, q)
        elif media in ("*/*", "application/*"):
            json_wild = q if json_wild is None else max(json_wild, q)
            if media == "*/*":
                html_wild = q if html_wild is None else max(html_wild, q)
        elif media == "text/*":
            html_wild = q if html_wild is None else max(html_wild, q)
    json_explicit = json_q is not None
    jq = round(json_q if json_q is not None else (json_wild or 0.0), 3)
    hq = round(html_q if html_q is not None else (html_wild or 0.0), 3)
    if jq == 0 and hq == 0:
        return None
    if jq > hq:
        return JSON
    if hq > jq:
        return HTML
    return JSON if json_explicit else HTML


def content_type(chosen: str) -> str:
    """The Content-Type a negotiated simple page goes out with."""
    return SIMPLE_JSON_TYPE if chosen == JSON else "text/html; charset=utf-8"
