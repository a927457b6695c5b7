"""Local doubles of the two CDN purge APIs that cannot run here, speaking their documented protocols.

Fastly: ``POST /service/{service_id}/purge`` with the keys in a ``Surrogate-Key`` request header (at
most 256), authenticated by ``Fastly-Key``, soft when ``Fastly-Soft-Purge: 1``; answers 200 with a JSON
object mapping each key to a purge id. Cloudflare: ``POST /zones/{zone_id}/purge_cache`` with JSON
``{"tags": [...]}`` (at most 100 items), ``Authorization: Bearer <token>``; answers
``{"success": true, "errors": [], "messages": [], "result": {"id": ...}}``, or 429 with
``Retry-After`` when its token bucket (per account: e.g. Free 5 requests a minute, bucket 25) is empty.

Both keep a virtual clock (``advance``) so a test can let the purger "sleep" through a rate limit
without waiting, record every call, and can be switched ``down`` (503).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Call:
    path: str
    keys: list[str]
    soft: bool = False


@dataclass
class Bucket:
    """A token bucket: ``size`` requests at once, refilled at ``per_second``."""

    size: float
    per_second: float
    tokens: float = field(init=False)

    def __post_init__(self):
        self.tokens = self.size

    def take(self, now: float, last: float) -> float | None:
        """None if a request may go now, else the seconds until one may."""
        self.tokens = min(self.size, self.tokens + (now - last) * self.per_second)
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return (1 - self.tokens) / self.per_second


class _Double:
    vendor = ""

    def __init__(self, account: str, token: str, *, bucket: Bucket | None = None):
        self.account = account
        self.token = token
        self.bucket = bucket
        self.calls: list[Call] = []
        self.refused = 0            # calls answered 429
        self.down = False
        self.now = 0.0
        self._last = 0.0
        self._lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with double._lock:
                    status, headers, payload = double.answer(self.path, self.headers, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def advance(self, seconds: float) -> None:
        """The purger's sleep, in virtual time."""
        with self._lock:
            self.now += seconds

    def _rate_limited(self) -> float | None:
        if self.bucket is None:
            return None
        wait = self.bucket.take(self.now, self._last)
        self._last = self.now
        return wait

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path, headers, body):
        raise NotImplementedError


class FastlyDouble(_Double):
    vendor = "fastly"

    def answer(self, path, headers, body):
        if self.down:
            return 503, {}, {"msg": "Service Unavailable"}
        m = re.fullmatch(r"/service/([^/]+)/purge", path)
        if not m or m[1] != self.account:
            return 404, {}, {"msg": "Record not found"}
        if headers.get("Fastly-Key") != self.token:
            return 401, {}, {"msg": "Provided credentials are missing or invalid"}
        if (wait := self._rate_limited()) is not None:
            self.refused += 1
            return 429, {"Retry-After": f"{wait:.3f}", "Fastly-RateLimit-Remaining": "0"}, \
                {"msg": "Too many requests"}
        keys = (headers.get("Surrogate-Key") or "").split()
        if not keys and body:
            keys = json.loads(body).get("surrogate_keys", [])
        if not keys or len(keys) > 256:
            return 400, {}, {"msg": f"between 1 and 256 surrogate keys, got {len(keys)}"}
        self.calls.append(Call(path, keys, soft=headers.get("Fastly-Soft-Purge") == "1"))
        return 200, {}, {key: f"108-{uuid.uuid4().int % 10**10}-{i}" for i, key in enumerate(keys)}


class CloudflareDouble(_Double):
    vendor = "cloudflare"

    def answer(self, path, headers, body):
        if self.down:
            return 503, {}, {"success": False, "errors": [{"code": 503, "message": "unavailable"}]}
        m = re.fullmatch(r"/zones/([^/]+)/purge_cache", path)
        if not m or m[1] != self.account:
            return 404, {}, {"success": False, "errors": [{"code": 7003, "message": "Could not route"}]}
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 403, {}, {"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]}
        if (wait := self._rate_limited()) is not None:
            self.refused += 1
            return 429, {"Retry-After": str(max(1, round(wait)))}, \
                {"success": False, "errors": [{"code": 971, "message": "Please wait and consider "
                                               "throttling your request speed"}]}
        try:
            tags = json.loads(body)["tags"]
        except (ValueError, KeyError, TypeError):
            return 400, {}, {"success": False, "errors": [{"code": 1012, "message": "Request must contain "
                                                           "one of files, tags, hosts or prefixes"}]}
        if not tags or len(tags) > 100:
            return 400, {}, {"success": False, "errors": [{"code": 1018, "message": f"{len(tags)} tags: "
                                                           "at most 100 per request"}]}
        self.calls.append(Call(path, list(tags)))
        return 200, {}, {"success": True, "errors": [], "messages": [], "result": {"id": m[1]}}
