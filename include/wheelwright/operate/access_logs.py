"""Downloads and searches, counted from the web servers' access logs, each line exactly once.

piwheels learnt what people use from its logs (download statistics, its issues 82 and 376) and missed
what they asked for and did not get (404s on ``/simple/<pkg>/``, its issue 247). This room reads the
origin's log (nginx, in the ``wheelwright`` format of ``nginx/wheelwright.conf``) and the edge's (the
``combined`` format nginx and varnishncsa write) and keeps, per day:

- downloads: successful GETs of a wheel under ``/simple/<project>/``, by file (hence package, ABI and
  platform), Python version and installer (pip's user agent is ``pip/X.Y {json}``, the JSON saying
  which Python asks; uv's is alike);
- searches: requests for ``/simple/<project>/`` that found no page — wanted but not built (or deleted);
- refusals: lines that do not parse, by reason, with one sample. Every line is untrusted input (the
  user agent, the path and the Accept header are whatever a client sent): :func:`parse_line` reads it
  strictly into our own types or refuses it with a reason; nothing else looks at raw text.

Reading is incremental. Each source's position is (device, inode, byte offset after the last whole
line), moved in the same transaction as the counts it covers: a crash re-reads nothing already counted
and skips nothing. A different inode at the log's path means logrotate moved the file away: the rotated
file (found beside it by its inode, e.g. ``access.log.1`` — Debian's ``delaycompress`` keeps it plain)
is read to its end first, then the new file from its start. A file shorter than the offset was
truncated in place (``copytruncate``): it is read from the start. A line not yet ended by a newline is
left for the next run.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import psycopg
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from wheelwright.catalog import db
from wheelwright.errors import ConfigError
from wheelwright.names import canonical_or_none

log = logging.getLogger(__name__)

MAX_LINE = 16 * 1024          # longer lines are refused, not read (a client can send a huge user agent)
CHUNK = 4 * 1024 * 1024       # bytes read and committed at a time
_LOCK = "wheelwright.access_logs:"

# nginx escapes '"' and non-printable bytes in variables as \xHH, so a quoted field has no raw quote.
_Q = r'"((?:[^"\\]|\\.)*)"'
_TIME = r"\[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\]"
_ADDR = r"([0-9A-Fa-f.:]{2,45})"
# log_format wheelwright (nginx/wheelwright.conf)
_WHEELWRIGHT = re.compile(
    _ADDR + r" " + _TIME + r" " + _Q + r" (\d{3}) (\d+) format=(json|html|) accept=" + _Q
    + r" ua=" + _Q + r" rt=(\d+\.\d+)\Z")
# the combined format (nginx's default, varnishncsa's default)
_COMBINED = re.compile(
    _ADDR + r" \S+ \S+ " + _TIME + r" " + _Q + r" (\d{3}) (\d+|-) " + _Q + r" " + _Q + r"\Z")
_REQUEST = re.compile(r"([A-Z]{3,7}) (/[!-~]*) HTTP/\d(?:\.\d)?\Z")
_INSTALLER = re.compile(r"(pip|uv)/([0-9A-Za-z.+!-]{1,32})(?: (.*))?\Z")
_PYTHON = re.compile(r"(\d{1,2})\.(\d{1,3})(?:[.+a-z0-9]*)\Z")


@dataclass(frozen=True)
class Download:
    day: date
    filename: str
    package: str
    version: str
    abi_tag: str
    platform_tag: str
    python: str             # "3.11" or ""
    installer: str          # "pip", "uv" or ""
    installer_version: str


@dataclass(frozen=True)
class Search:
    day: date
    package: str


@dataclass(frozen=True)
class Refusal:
    reason: str
    day: date | None = None


def sources_from_env(environ=None) -> dict[str, Path]:
    """The logs to read, from ``WHEELWRIGHT_ACCESS_LOGS`` (JSON: source name -> log file) in the index
    host's own environment; none when unset."""
    text = (os.environ if environ is None else environ).get("WHEELWRIGHT_ACCESS_LOGS") or "{}"
    try:
        sources = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"WHEELWRIGHT_ACCESS_LOGS is not JSON: {exc}") from None
    if not isinstance(sources, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                for k, v in sources.items()):
        raise ConfigError('WHEELWRIGHT_ACCESS_LOGS must map source names to log files: '
                          '{"origin": "/var/log/nginx/wheelwright.access.log"}')
    return {name: Path(path) for name, path in sources.items()}


def parse_line(line: str) -> Download | Search | Refusal | None:
    """One access-log line as what it means to us; None when it is neither a download nor a search."""
    m = _WHEELWRIGHT.match(line)
    if m:
        _, when, request, status, _, _, _, agent, _ = m.groups()
    else:
        m = _COMBINED.match(line)
        if not m:
            return Refusal("not an access-log line in the wheelwright or combined format")
        _, when, request, status, _, _, agent = m.groups()
    try:
        day = datetime.strptime(when, "%d/%b/%Y:%H:%M:%S %z").date()
    except ValueError:
        return Refusal("a timestamp that is not a date")
    r = _REQUEST.match(request)
    if not r:
        return Refusal("a request line that is not METHOD /path HTTP/x", day)
    method, target = r.groups()
    if method not in ("GET", "HEAD"):
        return None
    path = target.split("?", 1)[0]
    if path.startswith("/simple/"):
        parts = path[len("/simple/"):].split("/")
    else:
        return None
    status = int(status)
    if len(parts) in (1, 2) and (len(parts) == 1 or parts[1] == "") and parts[0]:
        # /simple/<project>/ (or without its slash): a page, found or not
        if status != 404:
            return None
        package = canonical_or_none(parts[0])
        if package is None:
            return Refusal("a searched project name that is not a valid name", day)
        return Search(day, package)
    if len(parts) != 2 or not parts[1].endswith(".whl") or method != "GET" or status != 200:
        return None  # .metadata, sdists, index pages, HEAD, 304s, partial content: not a download
    project, filename = parts
    try:
        name, version, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return Refusal("a wheel file name that does not parse", day)
    if canonical_or_none(project) != name:
        return Refusal("a wheel under another project's folder", day)
    tag = sorted(tags, key=str)[0]
    installer = _installer(agent)
    if isinstance(installer, Refusal):
        return Refusal(installer.reason, day)
    python, who, who_version = installer
    return Download(day, filename, name, str(version), tag.abi, tag.platform, python, who, who_version)


def _installer(agent: str) -> tuple[str, str, str] | Refusal:
    """(python "3.11", installer, its version) from a user agent; empty strings when it does not say."""
    m = _INSTALLER.match(agent)
    if not m:
        return "", "", ""
    who, version, rest = m.groups()
    python = ""
    if rest and rest.startswith("{"):
        try:
            # nginx writes a quote as \x22, varnishncsa as \"
            data = json.loads(rest.replace("\\x22", '"').replace('\\"', '"'))
        except ValueError:
            return Refusal(f"a {who} user agent whose JSON does not parse")
        if not isinstance(data, dict):
            return Refusal(f"a {who} user agent whose JSON is not an object")
        given = data.get("python")
        if given is None and isinstance(data.get("implementation"), dict):
            given = data["implementation"].get("version")
        if given is not None:
            p = _PYTHON.match(given) if isinstance(given, str) else None
            if not p:
                return Refusal(f"a {who} user agent with an unreadable Python version")
            python = f"{int(p[1])}.{int(p[2])}"
    return python, who, version


def _printable(line: str) -> str:
    """A refused line as a sample fit to store and show: cut, control characters escaped."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line[:300])


@dataclass
class Tally:
    """What a run of lines adds up to: counts per key, refusals with their first sample."""

    downloads: Counter
    searches: Counter
    refusals: Counter
    samples: dict
    lines: int = 0

    @classmethod
    def empty(cls) -> "Tally":
        return cls(Counter(), Counter(), Counter(), {})

    def add(self, line: str, today: date) -> None:
        self.lines += 1
        outcome = parse_line(line) if len(line) <= MAX_LINE else Refusal("a line longer than 16 KiB")
        if isinstance(outcome, Download):
            self.downloads[outcome] += 1
        elif isinstance(outcome, Search):
            self.searches[outcome] += 1
        elif isinstance(outcome, Refusal):
            key = (outcome.day or today, outcome.reason)
            self.refusals[key] += 1
            self.samples.setdefault(key, _printable(line))


@dataclass
class IngestResult:
    source: str
    lines: int = 0
    downloads: int = 0
    searches: int = 0
    refused: int = 0
    rotated: bool = False


def ingest(conn: psycopg.Connection, source: str, path: Path, *, today: date | None = None,
           chunk: int = CHUNK) -> IngestResult:
    """Count the lines of ``path`` not counted yet under ``source``'s position; return what was added.

    A second ingest of the same source running at the same time returns at once, having done nothing.
    """
    today = today or date.today()
    result = IngestResult(source)
    locked = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (_LOCK + source,)).fetchone()[0]
    if not locked:
        log.info("access log %s is being read by someone else", source)
        return result
    try:
        for file, ident, offset in _files_to_read(conn, source, path, result):
            _read_file(conn, source, path, file, ident, offset, today, chunk, result)
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_LOCK + source,))
    log.info("access log %s: %d lines, %d downloads, %d searches, %d refused%s", source, result.lines,
             result.downloads, result.searches, result.refused, " (rotated)" if result.rotated else "")
    return result


def _files_to_read(conn, source: str, path: Path, result: IngestResult):
    row = conn.execute('SELECT device, inode, "offset" FROM access_log_positions WHERE source = %s',
                       (source,)).fetchone()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    current = (st.st_dev, st.st_ino) if st else None
    if row is None:
        return [(path, current, 0)] if st else []
    device, inode, offset = row
    if current == (device, inode):
        if st.st_size < offset:
            log.warning("access log %s was truncated in place: reading it from its start", path)
            return [(path, current, 0)]
        return [(path, current, offset)]
    # The file we were reading is no longer at the path: it was rotated. Finish it if it is still here.
    result.rotated = True
    files = []
    rotated = _find_by_inode(path, device, inode)
    if rotated is not None:
        files.append((rotated, (device, inode), offset))
    else:
        log.warning("access log %s was rotated and its old file is gone: its unread tail is lost", path)
    if st:
        files.append((path, current, 0))
    return files


def _find_by_inode(path: Path, device: int, inode: int) -> Path | None:
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return None
    for candidate in sorted(siblings):
        if candidate.name.startswith(path.name) and candidate != path and not candidate.name.endswith(".gz"):
            try:
                st = candidate.stat()
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (device, inode):
                return candidate
    return None


def _read_file(conn, source, path, file: Path, ident, offset: int, today, chunk: int,
               result: IngestResult) -> None:
    try:
        fh = open(file, "rb")
    except FileNotFoundError:
        return
    with fh:
        st = os.fstat(fh.fileno())
        if (st.st_dev, st.st_ino) != ident:
            return  # replaced between stat and open: the next run sees the new state
        fh.seek(offset)
        carry = b""
        while True:
            data = fh.read(chunk)
            if not data:
                break
            data = carry + data
            end = data.rfind(b"\n")
            if end < 0:
                if len(data) > MAX_LINE:  # a run-on line: refuse what we have and skip to its end
                    carry, offset = b"", offset + len(data)
                    _commit(conn, source, path, ident, offset, _refused_run_on(today), result)
                else:
                    carry = data
                continue
            whole, carry = data[:end + 1], data[end + 1:]
            tally = Tally.empty()
            for raw in whole.split(b"\n")[:-1]:
                try:
                    line = raw.decode("utf-8").rstrip("\r")
                except UnicodeDecodeError:
                    tally.lines += 1
                    key = (today, "a line that is not UTF-8")
                    tally.refusals[key] += 1
                    tally.samples.setdefault(key, _printable(raw.decode("utf-8", "replace")))
                    continue
                tally.add(line, today)
            offset += len(whole)
            _commit(conn, source, path, ident, offset, tally, result)
        if offset == 0 and st.st_size == 0:
            _commit(conn, source, path, ident, 0, Tally.empty(), result)  # remember an empty new file


def _refused_run_on(today) -> Tally:
    tally = Tally.empty()
    key = (today, "a line longer than 16 KiB")
    tally.refusals[key] += 1
    tally.samples[key] = ""
    return tally


def _commit(conn, source: str, path: Path, ident, offset: int, tally: Tally, result: IngestResult) -> None:
    """Add ``tally`` and move the position to ``offset`` of ``ident``, in one transaction."""
    downloads = list(tally.downloads.items())
    searches = list(tally.searches.items())
    refusals = list(tally.refusals.items())
    with conn.transaction():
        if downloads:
            conn.execute(db.query("access_logs_add_downloads"), {
                "day": [d.day for d, _ in downloads], "filename": [d.filename for d, _ in downloads],
                "package": [d.package for d, _ in downloads], "version": [d.version for d, _ in downloads],
                "abi": [d.abi_tag for d, _ in downloads], "platform": [d.platform_tag for d, _ in downloads],
                "python": [d.python for d, _ in downloads], "installer": [d.installer for d, _ in downloads],
                "installer_version": [d.installer_version for d, _ in downloads],
                "count": [n for _, n in downloads]})
        if searches:
            conn.execute(db.query("access_logs_add_searches"), {
                "day": [s.day for s, _ in searches], "package": [s.package for s, _ in searches],
                "count": [n for _, n in searches]})
        if refusals:
            conn.execute(db.query("access_logs_add_refusals"), {
                "source": source, "day": [day for (day, _), _ in refusals],
                "reason": [reason for (_, reason), _ in refusals], "count": [n for _, n in refusals],
                "sample": [tally.samples[key] for key, _ in refusals]})
        conn.execute(db.query("access_logs_move_position"), {
            "source": source, "path": str(path), "device": ident[0], "inode": ident[1], "offset": offset,
            "lines": tally.lines})
    result.lines += tally.lines
    result.downloads += sum(tally.downloads.values())
    result.searches += sum(tally.searches.values())
    result.refused += sum(tally.refusals.values())


# --- the figures on the pages ---------------------------------------------------------------------

@dataclass(frozen=True)
class CountsRefresh:
    through: date | None      # the last whole day the figures cover (None: nothing was due)
    rows: int = 0             # package releases whose figures moved
    packages: int = 0         # packages to publish again


def refresh_download_counts(conn: psycopg.Connection, *, today: date | None = None) -> CountsRefresh:
    """Bring the download figures of the project pages and ``packages.json`` to the end of yesterday.

    Once a day: figures cover whole days only, so they change once a day and a page is rewritten for
    them at most daily (a 30-day figure moves every day for every package downloaded lately; every
    10 minutes would rewrite most pages all day long). A second call on the same day does nothing.
    Lines of yesterday read after the refresh (the ingest runs every 10 minutes) are counted in the
    all-time figure by the next day's refresh, which recomputes everything from the downloads table.
    """
    from wheelwright.catalog.store import CHANGE_LOCK

    through = (today or date.today()) - timedelta(days=1)

    def done() -> bool:
        row = conn.execute("SELECT through FROM download_counts_state").fetchone()
        return row is not None and row[0] >= through

    if done():  # the usual case: no need to wait for the change lock
        return CountsRefresh(None)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (CHANGE_LOCK,))
        if done():
            return CountsRefresh(None)
        rows, packages = conn.execute(db.query("downloads_refresh"), {"through": through}).fetchone()
    log.info("download figures through %s: %d releases moved, %d packages to publish", through, rows, packages)
    return CountsRefresh(through, rows, packages)
