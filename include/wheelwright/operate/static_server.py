"""A small static server for the published tree, for where nginx is not installed.

Production serves the tree with nginx (``nginx/wheelwright.conf``). This server does the same things
the same way, so a developer machine or a test run without nginx still gets a faithful index: PEP 691
content negotiation on ``Accept`` between ``index.json`` and ``index.html`` (406 when nothing fits),
the same refusals and redirects of request targets (:mod:`wheelwright.publish.request_paths`),
the same content types and cache lifetimes, gzip-encoded build logs, no dot-files, the site's 404 page
for what is missing, and the same access-log line (with ``format=json|html``) so tests can see which
representation pip chose.

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
from urllib.parse import quote

from wheelwright.publish import cdn, request_paths
from wheelwright.publish.negotiation import content_type, negotiate

_SIMPLE_PAGE = re.compile(r"/simple/(?:[^/]+/)?\Z")
_NOT_PRINTABLE_ASCII = re.compile(rb"[^\x20-\x7e]")
_HTTP_VERSION = re.compile(rb" HTTP/[0-9]\.[0-9]\Z")
_VARIES = re.compile(r"/simple/(?:[^/]+/)?(?:index\.(?:json|html))?\Z")


class IndexRequestHandler(SimpleHTTPRequestHandler):
    server_version = "wheelwright-static"
    log_lock = threading.Lock()
    timeout = 30   # seconds a client may stay silent: an idle connection must not hold a thread for ever

    def __init__(self, *args, access_log: Path | None = None, **kwargs):
        self.access_log = access_log
        self.format_chosen = ""
        super().__init__(*args, **kwargs)

    # -- routing -------------------------------------------------------------------------------------

    def parse_request(self):
        # http.server splits the request line on *Unicode* white space: a target holding NEL (0x85)
        # or NBSP (0xa0) would be cut short there and served, where nginx and Varnish refuse it.
        # A request line is printable ASCII; anything else is refused before it is split.
        line = self.raw_requestline.rstrip(b"\r\n")
        # A line without its HTTP version (a bare LF inside the target ends the line early) would be
        # an HTTP/0.9 request, answered with a body and no status line: refused (nginx closes it unanswered).
        if _NOT_PRINTABLE_ASCII.search(line) or not _HTTP_VERSION.search(line):
            self.command, self.request_version = None, "HTTP/1.0"  # (not 0.9: a status line and headers)
            self.close_connection = True
            self.requestline = line.decode("latin-1")
            self.send_error(HTTPStatus.BAD_REQUEST, None, "No URL of this index looks like that.")
            return False
        return super().parse_request()

    def send_head(self):
        verdict = request_paths.judge(self.path)
        path = self.header_path = verdict.path
        if verdict.status == request_paths.TOO_LONG:
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return None
        if verdict.status == request_paths.BAD_REQUEST:
            self.send_error(HTTPStatus.BAD_REQUEST, None, "No URL of this index looks like that.")
            return None
        if verdict.status == request_paths.REDIRECT:
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", verdict.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
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
            return self._send_file(path + f"index.{chosen}", content_type(chosen))
        if path.endswith("/") and os.path.isfile(self._local(path + "index.json")) and not \
                os.path.isfile(self._local(path + "index.html")):
            return self._send_file(path + "index.json")  # project/<name>/json/
        return super().send_head()

    def _send_file(self, path: str, kind: str | None = None):
        local = self._local(path)
        try:
            f = open(local, "rb")
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        size = os.fstat(f.fileno()).st_size
        self.header_path = path
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", kind or self.guess_type(path))
        self.send_header("Content-Length", str(size))
        self.end_headers()
        return f

    def _local(self, path: str) -> str:
        """The file for a decoded URL path (translate_path decodes once more: encode it back first)."""
        return self.translate_path(quote(path))

    def send_response(self, code, message=None):
        self.status_sent = int(code)
        super().send_response(code, message)

    def end_headers(self):
        """Every response, errors included, gets the headers nginx/wheelwright.conf adds."""
        if self.command in ("GET", "HEAD"):
            path = getattr(self, "header_path", "")
            status = getattr(self, "status_sent", 200)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", cdn.cache_control(status, path))
            if _VARIES.match(path):
                self.send_header("Vary", "Accept")
            for name, value in cdn.key_headers(cdn.keys_for_path(path)).items():
                self.send_header(name, value)
            if status == 200 and path.startswith("/logs/") and path.endswith(".txt.gz"):
                self.send_header("Content-Encoding", "gzip")
        super().end_headers()

    def guess_type(self, path):
        path = str(path)
        if re.search(r"/simple/(?:[^/]+/)?index\.json\Z", path):
            return content_type("json")
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
        if path.endswith(".css"):
            return "text/css"
        if path.endswith(".js"):
            return "application/javascript"
        if path.endswith(".xml"):
            return "application/xml"
        if path.endswith(".atom"):
            return "application/atom+xml"
        return super().guess_type(path)

    def send_error(self, code, message=None, explain=None):
        """A 404 gets the site's 404 page (as nginx's ``error_page``), with the headers of the URL
        that was asked for."""
        if code == HTTPStatus.NOT_FOUND and self.command in ("GET", "HEAD"):
            try:
                with open(os.path.join(self.directory, "404.html"), "rb") as f:
                    page = f.read()
            except OSError:
                page = None
            if page is not None:
                self.send_response(HTTPStatus.NOT_FOUND)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(page)
                return
        super().send_error(code, message, explain)

    def list_directory(self, path):
        self.send_error(HTTPStatus.NOT_FOUND)
        return None

    def log_request(self, code="-", size="-"):
        if self.access_log is None:
            return
        if isinstance(code, HTTPStatus):
            code = code.value
        headers = getattr(self, "headers", None) or {}   # none yet when the request line was refused
        line = (f'{self.client_address[0]} [{time.strftime("%d/%b/%Y:%H:%M:%S %z")}] '
                f'"{_logged(self.requestline)}" {code} {size} format={self.format_chosen} '
                f'accept="{_logged(headers.get("Accept", ""))}" ua="{_logged(headers.get("User-Agent", ""))}"\n')
        with self.log_lock, open(self.access_log, "a") as f:
            f.write(line)

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        pass


def _logged(text: str) -> str:
    """A client's text as nginx logs it: quotes, backslashes and bytes outside printable ASCII as \\xHH,
    so one request is one line whatever it holds (a bare CR or an obs-folded header cannot add one)."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else f"\\x{ord(c):02X}" for c in text)


def make_server(root: Path, port: int = 0, access_log: Path | None = None,
                idle_timeout: float = IndexRequestHandler.timeout) -> ThreadingHTTPServer:
    handler = type("Handler", (IndexRequestHandler,), {"timeout": idle_timeout})
    return ThreadingHTTPServer(("127.0.0.1", port), partial(handler, directory=str(root), access_log=access_log))


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
