"""A small static server for the published tree, for where nginx is not installed.

Production serves the tree with nginx (``nginx/wheelwright.conf``). This server does the same things
the same way, so a developer machine or a test run without nginx still gets a faithful index: PEP 691
content negotiation on ``Accept`` between ``index.json`` and ``index.html`` (406 when nothing fits),
the same content types and cache lifetimes, gzip-encoded build logs, no dot-files, and the same
access-log line (with ``format=json|html``) so tests can see which representation pip chose.

Run it with ``python -m wheelwright.operate.static_server DIR [--port N]``; it binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import re
import threading
import time
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

JSON_TYPES = ("application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.latest+json")
HTML_TYPES = ("text/html", "application/vnd.pypi.simple.v1+html", "application/vnd.pypi.simple.latest+html")
SIMPLE_JSON_TYPE = "application/vnd.pypi.simple.v1+json"

_SIMPLE_PAGE = re.compile(r"/simple/(?:[^/]+/)?\Z")


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
    """"json", "html" or None (406) for an Accept header, by the rules nginx/wheelwright.conf applies.

    Each format's quality is that of its most specific mention (an explicit type beats a wildcard);
    the higher quality wins; a tie goes to JSON if JSON was named explicitly, else to HTML. No Accept
    header at all means HTML.
    """
    if accept is None or not accept.strip():
        return "html"
    json_q = html_q = None        # (quality, explicit)
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
    jq = json_q if json_q is not None else (json_wild or 0.0)
    hq = html_q if html_q is not None else (html_wild or 0.0)
    # nginx compares qualities to three decimals
    jq, hq = round(jq, 3), round(hq, 3)
    if jq == 0 and hq == 0:
        return None
    if jq > hq:
        return "json"
    if hq > jq:
        return "html"
    return "json" if json_explicit else "html"


class IndexRequestHandler(SimpleHTTPRequestHandler):
    server_version = "wheelwright-static"
    log_lock = threading.Lock()

    def __init__(self, *args, access_log: Path | None = None, **kwargs):
        self.access_log = access_log
        self.format_chosen = ""
        super().__init__(*args, **kwargs)

    # -- routing -------------------------------------------------------------------------------------

    def send_head(self):
        path = unquote(urlsplit(self.path).path)
        if any(part.startswith(".") for part in path.split("/")):
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        if _SIMPLE_PAGE.match(path):
            chosen = negotiate(self.headers.get("Accept"))
            self.format_chosen = chosen or ""
            if chosen is None:
                self.send_error(HTTPStatus.NOT_ACCEPTABLE,
                                "this index serves application/vnd.pypi.simple.v1+json and text/html")
                return None
            return self._send_file(path + f"index.{chosen}")
        if path.endswith("/") and os.path.isfile(self.translate_path(path + "index.json")) and not \
                os.path.isfile(self.translate_path(path + "index.html")):
            return self._send_file(path + "index.json")  # project/<name>/json/
        return super().send_head()

    def _send_file(self, path: str):
        local = self.translate_path(path)
        try:
            f = open(local, "rb")
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        size = os.fstat(f.fileno()).st_size
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Length", str(size))
        self._extra_headers(path)
        self.end_headers()
        return f

    def end_headers(self):
        if not getattr(self, "_headers_added", False) and self.command in ("GET", "HEAD"):
            path = unquote(urlsplit(self.path).path)
            if not _SIMPLE_PAGE.match(path):
                self._extra_headers(path)
        super().end_headers()

    def _extra_headers(self, path: str) -> None:
        self._headers_added = True
        self.send_header("X-Content-Type-Options", "nosniff")
        if path.endswith((".whl", ".metadata")) or path.startswith("/logs/"):
            self.send_header("Cache-Control", "public, max-age=31536000")
        elif path.startswith("/simple/"):
            self.send_header("Cache-Control", "public, max-age=60")
        else:
            self.send_header("Cache-Control", "public, max-age=300")
        if re.match(r"/simple/(?:[^/]+/)?(?:index\.(?:json|html))?\Z", path):
            self.send_header("Vary", "Accept")
        if path.startswith("/logs/") and path.endswith(".txt.gz"):
            self.send_header("Content-Encoding", "gzip")

    def guess_type(self, path):
        path = str(path)
        if re.search(r"/simple/(?:[^/]+/)?index\.json\Z", path):
            return SIMPLE_JSON_TYPE
        if path.endswith(".html"):
            return "text/html; charset=utf-8"
        if path.endswith(".json"):
            return "application/json"
        if path.endswith(".whl"):
            return "application/octet-stream"
        if path.endswith(".metadata"):
            return "text/plain; charset=utf-8"
        if path.endswith(".txt.gz"):
            return "text/plain; charset=utf-8"
        return super().guess_type(path)

    def list_directory(self, path):
        self.send_error(HTTPStatus.NOT_FOUND)
        return None

    def log_request(self, code="-", size="-"):
        if self.access_log is None:
            return
        if isinstance(code, HTTPStatus):
            code = code.value
        line = (f'{self.client_address[0]} [{time.strftime("%d/%b/%Y:%H:%M:%S %z")}] '
                f'"{self.requestline}" {code} {size} format={self.format_chosen} '
                f'accept="{self.headers.get("Accept", "")}" ua="{self.headers.get("User-Agent", "")}"\n')
        with self.log_lock, open(self.access_log, "a") as f:
            f.write(line)

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        pass


def make_server(root: Path, port: int = 0, access_log: Path | None = None) -> ThreadingHTTPServer:
    handler = partial(IndexRequestHandler, directory=str(root), access_log=access_log)
    return ThreadingHTTPServer(("127.0.0.1", port), handler)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Serve a published wheelwright tree on 127.0.0.1.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--access-log", type=Path)
    args = parser.parse_args(argv)
    server = make_server(args.root, args.port, args.access_log)
    print(f"serving {args.root} on http://127.0.0.1:{server.server_address[1]}/simple/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
