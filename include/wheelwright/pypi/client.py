"""The PyPI client: the only code that talks to PyPI (or to anything that speaks its protocol).

PyPI tells mirrors what happened through two XML-RPC methods, ``changelog_last_serial`` and
``changelog_since_serial``, and tells everyone what a project looks like through its JSON API. Both
are shared, rate-limited services that sometimes time out, answer 5xx, or send a proxy's error page.
This room owns being a good citizen there: one ``User-Agent``, a timeout on every request, retries with
exponential back-off and jitter on anything that may cure itself, and waiting exactly as long as PyPI
says when it rate-limits us (fault ``-32500`` "... reset in N seconds", HTTP 429 ``Retry-After``, or
``RateLimit`` headers announcing an empty budget). What retries cannot cure becomes a
:class:`~wheelwright.errors.PyPIError` with one clear sentence.

It knows nothing about the catalog: it hands out the changelog rows exactly as PyPI sent them (the
journal decides what a row means and rejects malformed ones) and the JSON document as parsed. A 404 from
the JSON API is ``None``, never "deleted": only journal events delete anything.

The same code talks to the real PyPI and to :mod:`wheelwright.testing.pypi_double`; nothing here knows which.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import TypeVar
from urllib.parse import quote

import requests

from wheelwright import config
from wheelwright.errors import PyPIError

log = logging.getLogger("wheelwright.pypi.client")

T = TypeVar("T")

# PyPI's fault code for "too many requests"; the same code also wraps other server errors, so the
# message decides which one it is.
RATE_LIMIT_FAULT = -32500
DEFAULT_RATE_LIMIT_WAIT = 60.0
# Never sleep longer than this on anyone's say-so: a wild header must not park the sync for a day.
MAX_WAIT = 900.0
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0

_RESET_IN = re.compile(r"reset in (\d+(?:\.\d+)?) seconds?", re.I)
_RATE_LIMIT_WORDS = re.compile(r"TooManyRequests|too many requests|rate.?limit", re.I)


class _Retryable(Exception):
    """One attempt failed in a way that may cure itself; ``wait`` is what the server asked for."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


class PyPI:
    """A client for PyPI's changelog (XML-RPC) and JSON API rooted at ``xmlrpc_url``."""

    def __init__(self, xmlrpc_url: str, *, timeout: float = 30.0, max_attempts: int = 6,
                 sleep: Callable[[float], object] = time.sleep,
                 user_agent: str = config.USER_AGENT):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.xmlrpc_url = xmlrpc_url
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.sleep = sleep
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        self._random = random.Random()
        # Set when a response said the rate-limit budget is spent: (monotonic time, seconds to wait).
        self._budget_empty: tuple[float, float] | None = None

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "PyPI":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the changelog ----------------------------------------------------------------------------

    def last_serial(self) -> int:
        """The serial of the newest event PyPI has."""
        serial = self._call("changelog_last_serial")
        if isinstance(serial, bool) or not isinstance(serial, int):
            raise PyPIError(f"PyPI answered changelog_last_serial with {serial!r:.100} "
                            "instead of an integer")
        return serial

    def changelog_since(self, serial: int) -> list:
        """One ``changelog_since_serial`` call: the raw rows after ``serial``, as PyPI sent them."""
        rows = self._call("changelog_since_serial", serial)
        if not isinstance(rows, list):
            raise PyPIError(f"PyPI answered changelog_since_serial({serial}) with "
                            f"{type(rows).__name__} instead of a list of rows")
        return rows

    def changelog_pages(self, since: int, until: int | None = None) -> Iterator[list]:
        """Pages of raw rows after serial ``since`` until caught up with ``until``.

        ``until`` defaults to PyPI's last serial when paging starts, so a busy PyPI cannot keep us
        paging forever. Paging stops on an empty page or once a page reaches ``until``; each next call
        starts from the highest integer serial seen so far (malformed rows are handed on, not used to
        steer). A page that does not move past the serial it was asked for is an error, not a loop.
        """
        if until is None:
            until = self.last_serial()
        current = since
        while current < until:
            rows = self.changelog_since(current)
            if not rows:
                return
            highest = max((serial for serial in map(_serial_of, rows) if serial is not None),
                          default=None)
            yield rows
            if highest is None or highest <= current:
                raise PyPIError(
                    f"PyPI's changelog after serial {current} made no progress: a page of "
                    f"{len(rows)} rows whose highest serial is {highest}; stopping rather than "
                    "asking again forever")
            current = highest

    # -- the JSON API -----------------------------------------------------------------------------

    def project_json(self, name: str) -> dict | None:
        """The JSON API document of project ``name``; ``None`` if PyPI has no visible release of it.

        ``None`` never means "deleted": a project whose releases are all quarantined or removed
        answers 404 too, and only journal events may delete anything.
        """
        url = config.json_api_url(self.xmlrpc_url, quote(name, safe=""))

        def attempt():
            response = self._send("GET", url, f"GET {url}", headers={"Accept": "application/json"})
            if response.status_code == 404:
                return None
            try:
                document = response.json()
            except ValueError as exc:
                raise _Retryable(f"the JSON API sent a body that is not JSON ({exc})") from None
            if not isinstance(document, dict):
                raise PyPIError(f"the JSON API at {url} sent {type(document).__name__}, "
                                "not an object")
            return document

        return self._with_retries(f"the JSON API for {name!r}", attempt)

    # -- plumbing ---------------------------------------------------------------------------------

    def _call(self, method: str, *params):
        body = xmlrpc.client.dumps(params, method, allow_none=True).encode("utf-8")
        what = f"{method}({', '.join(map(repr, params))})"

        def attempt():
            response = self._send("POST", self.xmlrpc_url, what, data=body,
                                  headers={"Content-Type": "text/xml"})
            try:
                (result,), _ = xmlrpc.client.loads(response.content, use_builtin_types=True)
            except xmlrpc.client.Fault as fault:
                wait = rate_limit_wait(fault)
                if wait is not None:
                    raise _Retryable(f"rate limited ({fault.faultString.strip()})", wait) from None
                raise PyPIError(f"PyPI refused {what}: fault {fault.faultCode}: "
                                f"{fault.faultString}") from None
            except Exception as exc:  # expat, ResponseError, wrong arity: anything not XML-RPC
                preview = response.content[:80]
                raise _Retryable(f"the answer is not XML-RPC ({type(exc).__name__}: {exc}; "
                                 f"body starts {preview!r})") from None
            return result

        return self._with_retries(what, attempt)

    def _send(self, http_method: str, url: str, what: str, **kwargs) -> requests.Response:
        """One HTTP request; raises _Retryable for what may cure itself, PyPIError for the rest."""
        try:
            response = self.session.request(http_method, url, timeout=self.timeout, **kwargs)
        except requests.Timeout:
            raise _Retryable(f"no answer within {self.timeout:g} s") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:
            raise _Retryable(f"connection failed ({_short(exc)})") from None
        except requests.RequestException as exc:
            raise PyPIError(f"cannot send {what} to {url}: {exc}") from None
        self._note_rate_limit(response.headers)
        status = response.status_code
        if status == 429:
            raise _Retryable("HTTP 429 Too Many Requests", retry_after(response.headers))
        if status >= 500:
            raise _Retryable(f"HTTP {status} {response.reason}")
        if status >= 400 and not (status == 404 and http_method == "GET"):
            raise PyPIError(f"{url} refused {what}: HTTP {status} {response.reason}")
        return response

    def _with_retries(self, what: str, attempt: Callable[[], T]) -> T:
        for number in range(1, self.max_attempts + 1):
            self._wait_for_budget()
            try:
                return attempt()
            except _Retryable as failure:
                if number == self.max_attempts:
                    raise PyPIError(
                        f"PyPI at {config.pypi_base(self.xmlrpc_url)} failed {what} "
                        f"{self.max_attempts} times; last: {failure.reason}") from None
                wait = failure.wait if failure.wait is not None else self._backoff(number)
                # One wait covers both what this failure asks for and a spent budget, not one each.
                wait = min(max(wait, self._take_budget_wait(), 0.0), MAX_WAIT)
                log.warning("PyPI %s failed (attempt %d/%d): %s; retrying in %.1f s",
                            what, number, self.max_attempts, failure.reason, wait)
                self.sleep(wait)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        """Exponential back-off with jitter: half the step fixed, half random."""
        step = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
        return step / 2 + self._random.uniform(0, step / 2)

    def _note_rate_limit(self, headers) -> None:
        reset = spent_budget_reset(headers)
        if reset is not None:
            self._budget_empty = (time.monotonic(), min(reset, MAX_WAIT))

    def _take_budget_wait(self) -> float:
        """Seconds still to wait for a spent budget to reset (0 if none), forgetting the note."""
        if self._budget_empty is None:
            return 0.0
        noted, reset = self._budget_empty
        self._budget_empty = None
        return reset - (time.monotonic() - noted)

    def _wait_for_budget(self) -> None:
        wait = self._take_budget_wait()
        if wait > 0:
            log.warning("PyPI rate-limit budget is spent; waiting %.1f s for it to reset", wait)
            self.sleep(wait)


def rate_limit_wait(fault: xmlrpc.client.Fault) -> float | None:
    """Seconds to wait if ``fault`` is PyPI's rate limit ("... reset in N seconds"), else None."""
    message = str(fault.faultString or "")
    if fault.faultCode != RATE_LIMIT_FAULT or not _RATE_LIMIT_WORDS.search(message):
        return None
    match = _RESET_IN.search(message)
    return float(match[1]) if match else DEFAULT_RATE_LIMIT_WAIT


def _serial_of(row) -> int | None:
    if isinstance(row, (list, tuple)) and len(row) >= 5:
        serial = row[4]
        if isinstance(serial, int) and not isinstance(serial, bool):
            return serial
    return None


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."


def retry_after(headers) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text.strip().strip('"'))
    except ValueError:
        return None


def spent_budget_reset(headers) -> float | None:
    """Seconds until the rate-limit budget resets, if the headers say it is spent; else None.

    Understands the IETF draft's shapes: one ``RateLimit: limit=100, remaining=0, reset=5`` header,
    the later ``RateLimit: "policy";r=0;t=5``, and separate ``RateLimit-Remaining`` /
    ``RateLimit-Reset`` (also with the ``X-`` prefix, where a reset this large is an epoch time).
    """
    remaining = reset = None
    combined = headers.get("RateLimit")
    if combined:
        fields = {}
        for part in re.split(r"[;,]", combined):
            key, sep, value = part.partition("=")
            if sep:
                fields[key.strip().lower()] = value
        remaining = _number(fields.get("remaining", fields.get("r")))
        reset = _number(fields.get("reset", fields.get("t")))
    for prefix in ("RateLimit-", "X-RateLimit-"):
        if remaining is None:
            remaining = _number(headers.get(prefix + "Remaining"))
        if reset is None:
            reset = _number(headers.get(prefix + "Reset"))
    if remaining is None or remaining > 0:
        return None
    if reset is None:
        return DEFAULT_RATE_LIMIT_WAIT
    if reset > 1_000_000_000:  # an epoch timestamp, not a delta
        reset -= time.time()
    return max(0.0, reset)
