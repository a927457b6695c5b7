"""The sandbox: one command run as hostile code, with nothing of the worker within its reach.

A build runs anybody's ``setup.py``. This room owns the walls around it, made of the field's tools
rather than process hunting:

- **bubblewrap** (``/usr/bin/bwrap``) gives the build its own user namespace (uid 65534 inside; outside
  the worker's build user when the worker is root, never root), its own pid namespace (ending the build
  ends everything it started, double-forked daemons included: ``--unshare-pid --die-with-parent``), its
  own network namespace (nothing but its own loopback), IPC and UTS namespaces, and a file system made
  of the system's ``/usr`` (and the ``/lib*``, ``/bin``, ``/sbin`` beside it) and a few files of
  ``/etc``, read-only, from ``root`` (``/`` today, a target image's root file system later), a fresh
  writable work folder at ``/build`` and a tmpfs ``/tmp``. The worker's home, ``WHEELWRIGHT_HOME``,
  ``AIRFLOW_HOME``, keys, ``/run/postgresql`` and the worker's ``/tmp`` are simply not there, and the
  environment is cleared (``--clearenv``) down to what the caller passes.
- **cgroups** limit memory and processes for the **whole** build (cgroup v2 where the host has it with
  the memory and pids controllers, as on a Pi with systemd; else the v1 memory and pids hierarchies, as
  on this kind of VM). Only when neither can be used do per-process rlimits (``RLIMIT_AS``,
  ``RLIMIT_NPROC``) stand in, and the log says so.
- **the index proxy** is the build's only way out: a forwarding proxy on the worker side, listening on
  a Unix socket bound into the sandbox, that forwards plain HTTP and ``CONNECT`` to the configured
  index hosts and ports only. Inside, a small forwarder (:data:`INIT_SCRIPT`, run by the target's own
  Python) listens on the sandbox's loopback and hands each connection to that socket; pip is pointed at
  it with ``--proxy`` and ``http(s)_proxy``. The broker, the API server, the catalog, SSH and any other
  host are unreachable: the proxy refuses them and says so.

What is missing is refused with a :class:`~wheelwright.errors.ConfigError` naming what to install,
unless the operator sets ``WHEELWRIGHT_UNSAFE_NO_SANDBOX=1`` (the builder then runs pip as before:
dropped to an unprivileged user when root, in its own session, under rlimits).

The room knows nothing of pip or wheels: it runs an argument list and reports how it ended
(:class:`Ran`). The builder (:mod:`wheelwright.builds.builder`) decides what to run and what the
result means.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import re
import resource
import secrets
import selectors
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from wheelwright.builds.cleanup import remove_tree
from wheelwright.errors import ConfigError

log = logging.getLogger(__name__)

BWRAP = "/usr/bin/bwrap"
UNSAFE_SETTING = "WHEELWRIGHT_UNSAFE_NO_SANDBOX"
INSIDE_UID = INSIDE_GID = 65534          # who the build is inside its namespace ("nobody")
WORK = "/build"                          # the writable work folder, inside
RUN = "/run/wheelwright"                 # the proxy's socket and the forwarder, inside, read-only
SOCKET_NAME = "index.sock"
INIT_NAME = "init.py"
# Read-only from the root: the system. /etc only in part: nothing of the worker's configuration.
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# Of /etc/ssl and /etc/pki only the public certificates and OpenSSL's configuration: never private/.
ETC_FILES = ("passwd", "group", "hosts", "nsswitch.conf", "host.conf", "ld.so.cache", "ld.so.conf",
             "ld.so.conf.d", "alternatives", "ssl/certs", "ssl/openssl.cnf", "ca-certificates",
             "ca-certificates.conf", "localtime", "timezone", "os-release", "debian_version", "mime.types",
             "protocols", "services", "python3", "python3.11", "python3.13", "gai.conf", "pki/tls/certs",
             "pki/ca-trust/extracted")
TMP_SIZE = 1 << 30                       # bytes of /tmp (memory: counted against the build's cgroup)
SHM_SIZE = 256 << 20                     # bytes of /dev/shm (idem)
DRAIN_GRACE = 5.0                        # seconds to wait for output once the sandbox ended
UPSTREAM_TIMEOUT = 30.0                  # seconds for the proxy to reach the index
MAX_HEAD = 64 * 1024                     # bytes of a request head the proxy reads before refusing
MAX_CONNECTIONS = 16                     # proxy connections one build may hold at once (pip uses a few)
HEAD_DEADLINE = 10.0                     # seconds for a whole request head to reach the proxy
IDLE_TIMEOUT = 60.0                      # seconds a proxied connection may stay silent both ways


def unsafe_opt_out(env=os.environ) -> bool:
    """True when the operator chose to build without a sandbox (the setting's name says what it is)."""
    return env.get(UNSAFE_SETTING, "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Bind:
    """A folder of the worker shown inside the sandbox at ``inside`` (outside the system's folders)."""

    host: Path
    inside: str
    writable: bool = False


# --- pure: the walls, as bubblewrap arguments -----------------------------------------------------------

def bwrap_arguments(root: Path, work: Path, run_dir: Path, env: dict[str, str], argv: list[str], *,
                    tmp_size: int = TMP_SIZE, info_fd: int | None = None,
                    bwrap: str | None = None, tmp: Path | None = None,
                    binds: tuple[Bind, ...] = ()) -> list[str]:
    """The full ``bwrap`` command running ``argv`` inside the walls described in the module docstring.

    ``root`` is the file system the build sees read-only (``/`` or an image's root); ``work`` the
    fresh folder it may write (``/build`` inside); ``run_dir`` holds the proxy socket and the
    forwarder (``/run/wheelwright`` inside, read-only). Besides ``/build``, only ``/tmp`` (``tmp``, a
    folder of the work folder, so on the build's disk and in its quota; else a tmpfs of ``tmp_size``)
    and ``/dev/shm`` (a small tmpfs) are writable; ``/`` (and with it ``/etc``) and ``/dev`` are made
    read-only once set up. ``binds`` add folders of the worker at paths of their own (a prepared build
    environment, read-only; a package's compiler cache, writable).
    """
    args = [bwrap or BWRAP, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--disable-userns",
            "--uid", str(INSIDE_UID), "--gid", str(INSIDE_GID), "--hostname", "build", "--clearenv"]
    for name in SYSTEM_DIRS:
        path = root / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir():
            args += ["--ro-bind", str(path), f"/{name}"]
    args += ["--dir", "/etc"]
    made = {"/etc"}
    for name in ETC_FILES:
        path = root / "etc" / name
        if not (path.is_symlink() or path.exists()):
            continue
        for parent in reversed(Path("/etc", name).parents[:-2]):  # /etc/ssl for ssl/certs (0755)
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--dir", str(parent)]
        if path.is_symlink():
            # e.g. /etc/ssl/certs links into /usr; keep the link as it is inside the image
            args += ["--symlink", os.readlink(path), f"/etc/{name}"]
        elif path.exists():
            args += ["--ro-bind", str(path), f"/etc/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(SHM_SIZE), "--tmpfs", "/dev/shm"]
    args += ["--bind", str(tmp), "/tmp"] if tmp is not None else ["--size", str(tmp_size), "--tmpfs", "/tmp"]
    args += ["--dir", "/run", "--ro-bind", str(run_dir), RUN]
    args += ["--bind", str(work), WORK]
    for bind in binds:
        args += ["--bind" if bind.writable else "--ro-bind", str(bind.host), bind.inside]
    args += ["--chdir", WORK]
    args += ["--remount-ro", "/dev", "--remount-ro", "/"]  # bwrap's own tmpfs root, writable until now
    for key, value in sorted(env.items()):
        args += ["--setenv", key, value]
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    return args + ["--", *argv]


def allowed_destinations(index_url: str, extra: tuple[str, ...] = ()) -> dict[tuple[str, int], str]:
    """The ``(host, port)`` pairs the build may reach, each with its scheme (``http`` or ``https``):
    the index's, and the file host PyPI serves from. A bare ``host:port`` of ``extra`` is HTTPS."""
    def pair(url_or_hostport: str) -> tuple[tuple[str, int], str]:
        if "://" not in url_or_hostport:
            url_or_hostport = "https://" + url_or_hostport
        parts = urlsplit(url_or_hostport)
        if not parts.hostname or parts.scheme not in ("http", "https"):
            raise ConfigError(f"no http(s) host in the index address {url_or_hostport!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return (parts.hostname.lower(), port), parts.scheme

    found = dict([pair(index_url)])
    if found == {("pypi.org", 443): "https"}:
        found[("files.pythonhosted.org", 443)] = "https"  # where pypi.org's simple pages link to
    for address in extra:
        destination, scheme = pair(address)
        found.setdefault(destination, scheme)
    return found


# --- the forwarder that runs inside (with the target's Python; standard library only) -------------------

INIT_SCRIPT = r'''
"""Inside the sandbox: hand loopback connections to the worker's index proxy, then run the command."""
import os, socket, subprocess, sys, threading

SOCK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "index.sock")

def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (dst,):
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass

def handle(client):
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(SOCK)
    except OSError:
        client.close()
        return
    threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
    pump(client, upstream)

def serve(listener):
    while True:
        client, _ = listener.accept()
        threading.Thread(target=handle, args=(client,), daemon=True).start()

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
proxy = "http://127.0.0.1:%d" % listener.getsockname()[1]
threading.Thread(target=serve, args=(listener,), daemon=True).start()
env = dict(os.environ)
for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
    env[key] = proxy
argv = [a.replace("@PROXY@", proxy) for a in sys.argv[1:]]
sys.stdout.flush()
sys.exit(subprocess.call(argv, env=env))
'''


# --- the index proxy (worker side) ----------------------------------------------------------------------

_REQUEST_LINE = re.compile(rb"([A-Z]{3,10}) ([!-~]+) HTTP/1\.[01]\r\n")
_HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t -~\x80-\xff]*?)[ \t]*\Z")
# What pip (and the pip installing build dependencies) sends that the index may need; nothing else of
# the build's request reaches the index. Host is the destination's, set by the proxy.
FORWARDED_HEADERS = frozenset({b"accept", b"accept-encoding", b"accept-language", b"user-agent",
                               b"cache-control", b"pragma", b"if-none-match", b"if-modified-since",
                               b"range", b"if-range"})
FORWARDED_METHODS = ("GET", "HEAD")
_TLS_HANDSHAKE = re.compile(rb"\x16\x03[\x00-\x04]")  # the first bytes of a TLS ClientHello record


@dataclass
class ProxyEvent:
    # 'refused' (not the index), 'denied' (a request of a form the proxy does not forward, or one
    # connection too many), 'unreachable' (index down), 'server-error' (5xx)
    kind: str
    destination: str
    detail: str

    def sentence(self) -> str:
        if self.kind == "refused":
            return f"the sandbox refused a connection to {self.destination} ({self.detail})"
        if self.kind == "denied":
            return f"the sandbox refused a request to {self.destination} ({self.detail})"
        if self.kind == "unreachable":
            return f"the index at {self.destination} could not be reached ({self.detail})"
        return f"the index at {self.destination} answered {self.detail}"


class _Refusal(Exception):
    """A request the proxy answers itself: ``code``, ``text``; an event of ``kind`` when given."""

    def __init__(self, code: int, text: str, kind: str | None = None, destination: str = "",
                 detail: str = ""):
        super().__init__(text)
        self.code, self.text, self.kind, self.destination, self.detail = code, text, kind, destination, detail


class IndexProxy:
    """A forwarding proxy on a Unix socket that reaches the allowed ``(host, port)`` pairs and nothing else.

    ``allowed`` maps each pair to its scheme (:func:`allowed_destinations`). To a plain-HTTP index it
    forwards ``GET`` and ``HEAD`` of an absolute URI, one per connection (``Connection: close``), with
    the index's own ``Host`` and only :data:`FORWARDED_HEADERS` of the build's: a ``PURGE`` (or any
    other method) is answered 405 here and never reaches an edge that would obey it, and no request
    rides behind the first. To an HTTPS index it opens a ``CONNECT`` tunnel, and only for TLS (the
    first bytes must be a TLS handshake): what the tunnel carries is then the index's to judge, as for
    any client on the internet. Each connection costs the worker one thread, and a build gets at most
    ``max_connections`` at once: the next ones are answered 503 and closed by the accepting thread.
    A request head must arrive whole within ``head_deadline`` seconds, and a connection silent both
    ways for ``idle_timeout`` seconds is closed. Every refusal, unreachable index and 5xx answer is
    kept in :attr:`events` for the builder to tell a transient failure from a failed build.
    """

    def __init__(self, path: Path, allowed: dict[tuple[str, int], str], *,
                 max_connections: int = MAX_CONNECTIONS, head_deadline: float = HEAD_DEADLINE,
                 idle_timeout: float = IDLE_TIMEOUT):
        self.path, self.allowed = path, dict(allowed)
        self.max_connections, self.head_deadline, self.idle_timeout = max_connections, head_deadline, idle_timeout
        self.events: list[ProxyEvent] = []
        self.denied_connections = 0
        self._clients = 0                       # connections from the build being served
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()  # every socket of a connection being served
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        os.chmod(path, 0o666)  # the sandbox's uid connects; only the sandbox sees this folder
        self._listener.listen(64)
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> "IndexProxy":
        self._thread = threading.Thread(target=self._serve, name="index-proxy", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting and end every connection still open (the build is over)."""
        self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            still_open = list(self._open)
        for sock in still_open:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _event(self, kind: str, destination: str, detail: str) -> None:
        with self._lock:
            if len(self.events) < 100:
                self.events.append(ProxyEvent(kind, destination, detail))
        log.info("index proxy: %s %s (%s)", kind, destination, detail)

    def _serve(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                admitted = self._clients < self.max_connections and not self._closed
                if admitted:
                    self._clients += 1
                    self._open.add(client)
            if admitted:
                threading.Thread(target=self._handle, args=(client,),
                                 name=f"index-proxy-connection {self.path}", daemon=True).start()
                continue
            # One connection too many: answered and closed right here, no thread, never blocking.
            self.denied_connections += 1
            if self.denied_connections == 1:
                self._event("denied", "the index proxy",
                            f"more than {self.max_connections} connections at once from one build")
            client.setblocking(False)
            self._answer(client, 503, "Service Unavailable: too many connections from this build")
            client.close()

    def _handle(self, client: socket.socket) -> None:
        upstream = None
        try:
            head, rest = self._read_head(client)
            m = _REQUEST_LINE.match(head)
            if not m:
                raise _Refusal(400, "Bad Request")
            method, target = m[1].decode(), m[2].decode("ascii")
            headers = self._headers(head[m.end():])
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                destination = self._allowed(host, port)
                if self.allowed[destination] != "https":
                    raise _Refusal(405, "Method Not Allowed: the index speaks plain HTTP here, no tunnel",
                                   "denied", _name(destination), "CONNECT to a plain-HTTP index")
                upstream = self._connect(destination)
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                first = self._read_at_least(client, rest, 3)
                if not _TLS_HANDSHAKE.match(first):
                    self._event("denied", _name(destination), "a tunnel that does not start with TLS")
                    return
                upstream.sendall(first)
                self._splice(client, upstream, watch=None)
                return
            if rest:
                raise _Refusal(400, "Bad Request: a GET or HEAD of the index carries no body", "denied",
                               target[:100], "bytes after the request head")
            destination, request = self.request_for_index(method, target, headers)
            upstream = self._connect(destination)
            upstream.sendall(request)
            self._splice(client, upstream, watch=_name(destination))
        except _Refusal as refusal:
            if refusal.kind:
                self._event(refusal.kind, refusal.destination, refusal.detail)
            self._answer(client, refusal.code, refusal.text)
        except OSError:
            pass
        finally:
            with self._lock:
                self._clients -= 1
                self._open.discard(client)
                if upstream is not None:
                    self._open.discard(upstream)
            if upstream is not None:
                upstream.close()
            client.close()

    def request_for_index(self, method: str, target: str,
                          headers: list[tuple[bytes, bytes]]) -> tuple[tuple[str, int], bytes]:
        """The destination and the request the proxy sends it for the build's plain-HTTP request
        (``method``, absolute-URI ``target``, parsed ``headers``), or a :class:`_Refusal`. No I/O."""
        if method not in FORWARDED_METHODS:
            raise _Refusal(405, "Method Not Allowed: builds may only GET and HEAD the index", "denied",
                           target[:100], f"{method} is not forwarded")
        if any(name in (b"content-length", b"transfer-encoding") for name, _ in headers):
            raise _Refusal(400, "Bad Request: a GET or HEAD of the index carries no body", "denied",
                           target[:100], "a request with a body")
        parts = urlsplit(target)
        try:
            port = parts.port or 80
        except ValueError:
            raise _Refusal(400, "Bad Request: not a port", "refused", target[:100], "a port that is none") from None
        if parts.scheme != "http" or not parts.hostname:
            raise _Refusal(403, "Forbidden", "refused", target[:100], f"{method} of something not an http:// URL")
        destination = self._allowed(parts.hostname, str(port))
        if self.allowed[destination] != "http":
            raise _Refusal(403, "Forbidden: this index is reached over HTTPS (CONNECT)", "denied",
                           _name(destination), "plain HTTP to an HTTPS index")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {path} HTTP/1.1".encode("ascii"), b"Host: " + _authority(destination).encode()]
        lines += [name + b": " + value for name, value in headers if name in FORWARDED_HEADERS]
        lines.append(b"Connection: close")
        return destination, b"\r\n".join(lines) + b"\r\n\r\n"

    def _read_head(self, client: socket.socket) -> tuple[bytes, bytes]:
        """The request head (up to its blank line) and what came after it, within one deadline."""
        deadline = time.monotonic() + self.head_deadline
        head = b""
        while b"\r\n\r\n" not in head:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Refusal(408, "Request Timeout: the request head took too long")
            client.settimeout(left)
            try:
                data = client.recv(65536)
            except TimeoutError:
                raise _Refusal(408, "Request Timeout: the request head took too long") from None
            if not data:
                raise OSError("the build closed the connection")
            head += data
            if len(head) > MAX_HEAD:
                raise _Refusal(431, "Request Header Fields Too Large")
        head, rest = head.split(b"\r\n\r\n", 1)
        return head + b"\r\n", rest

    def _read_at_least(self, client: socket.socket, have: bytes, count: int) -> bytes:
        deadline = time.monotonic() + self.head_deadline
        while len(have) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise OSError("nothing came through the tunnel")
            client.settimeout(left)
            data = client.recv(65536)
            if not data:
                raise OSError("the build closed the tunnel")
            have += data
        return have

    @staticmethod
    def _headers(block: bytes) -> list[tuple[bytes, bytes]]:
        """``(lower-case name, value)`` of each header line; a line that is not one is refused whole
        (a bare CR or LF, a control character, a folded line: what another parser could split)."""
        found = []
        for line in block.split(b"\r\n"):
            if not line:
                continue
            m = _HEADER.match(line)
            if not m:
                raise _Refusal(400, "Bad Request: a malformed header line", "denied", "the index proxy",
                               "a malformed header line")
            found.append((m[1].lower(), m[2]))
        return found

    def _allowed(self, host: str, port: str) -> tuple[str, int]:
        host = host.strip("[]").lower()
        try:
            destination = (host, int(port))
        except ValueError:
            destination = None
        if destination not in self.allowed:
            raise _Refusal(403, "Forbidden: only the package index is reachable from a build", "refused",
                           f"{host}:{port}"[:100], "not the package index")
        return destination

    def _connect(self, destination) -> socket.socket:
        try:
            upstream = socket.create_connection(destination, timeout=UPSTREAM_TIMEOUT)
        except OSError as exc:
            raise _Refusal(502, "Bad Gateway", "unreachable", _name(destination),
                           exc.strerror or str(exc)) from None
        with self._lock:
            self._open.add(upstream)
        return upstream

    @staticmethod
    def _answer(client, code: int, text: str) -> None:
        try:
            client.sendall(f"HTTP/1.1 {code} {text}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                           .encode())
        except OSError:
            pass

    def _splice(self, client: socket.socket, upstream: socket.socket, *, watch: str | None) -> None:
        """Copy between the two in this one thread until one side ends or both stay silent for
        ``idle_timeout``. Plain HTTP (``watch``: the index's name) copies only the answer back: the
        request went up whole, and nothing more of the build's goes with it. The index's first answer
        is watched for a 5xx, which makes a failure transient."""
        both = watch is None
        first = True
        with selectors.DefaultSelector() as selector:
            selector.register(upstream, selectors.EVENT_READ, client)
            if both:
                selector.register(client, selectors.EVENT_READ, upstream)
            for sock in (client, upstream):
                sock.settimeout(self.idle_timeout)  # a peer that stops reading stalls a send this long
            while True:
                ready = selector.select(self.idle_timeout)
                if not ready:
                    return
                for key, _ in ready:
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    if first and key.fileobj is upstream and watch is not None:
                        m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
                        if m and m[1].startswith(b"5"):
                            self._event("server-error", watch, f"HTTP {m[1].decode()}")
                        first = False
                    key.data.sendall(data)


def _name(destination: tuple[str, int]) -> str:
    return f"{destination[0]}:{destination[1]}"


def _authority(destination: tuple[str, int]) -> str:
    host, port = destination
    host = f"[{host}]" if ":" in host else host
    return host if port == 80 else f"{host}:{port}"


# --- limits for the whole build: cgroups -----------------------------------------------------------------

class Cgroup:
    """One build's cgroup (v1: a folder in the memory and in the pids hierarchy; v2: one folder)."""

    def __init__(self, version: int, folders: list[Path]):
        self.version, self.folders = version, folders

    @property
    def description(self) -> str:
        return f"cgroup v{self.version} " + ", ".join(str(f) for f in self.folders)

    def procs_files(self) -> list[str]:
        return [str(f / "cgroup.procs") for f in self.folders]

    def set_limits(self, memory: int, processes: int) -> None:
        if self.version == 2:
            [folder] = self.folders
            _write(folder / "memory.max", str(memory))
            if (folder / "memory.swap.max").exists():
                _write(folder / "memory.swap.max", "0")
            _write(folder / "pids.max", str(processes))
        else:
            mem, pids = self.folders
            _write(mem / "memory.limit_in_bytes", str(memory))
            if (mem / "memory.memsw.limit_in_bytes").exists():
                try:
                    _write(mem / "memory.memsw.limit_in_bytes", str(memory))
                except OSError:
                    pass  # swap accounting off
            _write(pids / "pids.max", str(processes))

    def oom_kills(self) -> int:
        if self.version == 2:
            return _counter(self.folders[0] / "memory.events", "oom_kill")
        return _counter(self.folders[0] / "memory.oom_control", "oom_kill")

    def process_limit_hits(self) -> int:
        return _counter(self.folders[-1] / "pids.events", "max")

    def kill_all(self) -> None:
        """Kill every process left in the cgroup and wait until it is empty (a last line of defence:
        the pid namespace already ended them all when the sandbox's first process died)."""
        if self.version == 2 and (self.folders[0] / "cgroup.kill").exists():
            try:
                _write(self.folders[0] / "cgroup.kill", "1")
            except OSError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)

    def pids(self) -> list[int]:
        found = set()
        for path in self.procs_files():
            try:
                found.update(int(p) for p in Path(path).read_text().split())
            except OSError:
                pass
        return sorted(found)

    def remove(self) -> None:
        self.kill_all()
        for folder in self.folders:
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _counter(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _mounts() -> list[tuple[str, str, set[str]]]:
    """``(mount point, fs type, super options)`` of every cgroup file system this process sees."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _source, options = (right.split() + ["", "", ""])[:3]
            if fstype in ("cgroup", "cgroup2"):
                found.append((left.split()[4], fstype, set(options.split(","))))
    return found


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per v1 controller, and ``''`` for the v2 one."""
    found = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                found[name] = path
    return found


DELEGATED = "wheelwright"  # a folder root made for a non-root worker (see delegate_cgroups)


def _creatable_parent(base: Path) -> Path | None:
    """``base`` or its delegated ``wheelwright`` folder, whichever we may make folders in."""
    for candidate in (base, base / DELEGATED):
        if candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return None


def _v1_parents() -> tuple[Path, Path] | None:
    mounts = {opt: point for point, fstype, opts in _mounts() if fstype == "cgroup"
              for opt in opts if opt in ("memory", "pids")}
    if "memory" not in mounts or "pids" not in mounts:
        return None
    own = _own_cgroups()
    parents = []
    for controller in ("memory", "pids"):
        base = Path(mounts[controller]) / own.get(controller, "/").lstrip("/")
        parent = _creatable_parent(base)
        if parent is None:
            return None
        parents.append(parent)
    return parents[0], parents[1]


def _v2_parent() -> Path | None:
    for point, fstype, _ in _mounts():
        if fstype != "cgroup2":
            continue
        base = Path(point) / _own_cgroups().get("", "/").lstrip("/")
        try:
            if not {"memory", "pids"} <= set((base / "cgroup.controllers").read_text().split()):
                continue
        except OSError:
            continue
        parent = _creatable_parent(base)
        if parent is None:
            continue
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        if {"memory", "pids"} <= enabled:
            return parent
        try:
            _write(parent / "cgroup.subtree_control", "+memory +pids")
            return parent
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                continue
        # "no internal processes": a delegated cgroup holding processes cannot enable controllers
        # for its children; build in a subtree of our own beside the worker's processes.
        sub = parent / "wheelwright-builds"
        try:
            sub.mkdir(exist_ok=True)
            _write(sub / "cgroup.subtree_control", "+memory +pids")
            return sub
        except OSError:
            continue
    return None


def open_cgroup(memory: int, processes: int, name: str) -> Cgroup | None:
    """A fresh cgroup for one build with its limits set, or None when this host offers none to us."""
    tries = []
    if parent := _v2_parent():
        tries.append((2, [parent / name]))
    if parents := _v1_parents():
        tries.append((1, [p / name for p in parents]))
    for version, folders in tries:
        made = []
        try:
            for folder in folders:
                folder.mkdir()
                made.append(folder)
            group = Cgroup(version, folders)
            group.set_limits(memory, processes)
            return group
        except OSError as exc:
            log.info("cgroup v%d not usable for builds: %s", version, exc)
            for folder in made:
                try:
                    folder.rmdir()
                except OSError:
                    pass
    return None


def delegate_cgroups(uid: int, gid: int) -> list[Path]:
    """As root: make a ``wheelwright`` cgroup (v1 memory and pids, or v2) beside this process's own,
    owned by ``uid``, so a worker running as that user can give each build its own limits.

    Returns the folders made (or found). ``make run`` and CI run as root and need none of this.
    """
    made = []
    own = _own_cgroups()
    for point, fstype, opts in _mounts():
        if fstype == "cgroup" and opts & {"memory", "pids"}:
            controller = "memory" if "memory" in opts else "pids"
            base = Path(point) / own.get(controller, "/").lstrip("/")
        elif fstype == "cgroup2":
            base = Path(point) / own.get("", "/").lstrip("/")
            try:
                if not {"memory", "pids"} <= set((base / "cgroup.controllers").read_text().split()):
                    continue
            except OSError:
                continue
        else:
            continue
        folder = base / DELEGATED
        folder.mkdir(exist_ok=True)
        for path in [folder, *folder.iterdir()]:
            if path.name in ("cgroup.procs", "tasks", "cgroup.subtree_control") or path == folder:
                os.chown(path, uid, gid)
        made.append(folder)
    return made


# --- checking the host ----------------------------------------------------------------------------------

def check_host() -> None:
    """Refuse to build, naming what to install or allow, when bubblewrap or user namespaces are missing,
    or when the worker is not root and holds supplementary groups (see :func:`check_groups`)."""
    bwrap = BWRAP
    if not (os.path.isfile(bwrap) and os.access(bwrap, os.X_OK)):
        raise ConfigError(f"builds run in a bubblewrap sandbox and {bwrap} is missing: install Debian's "
                          f"bubblewrap (apt-get install bubblewrap), or set {UNSAFE_SETTING}=1 to build "
                          "without a sandbox (unsafe: setup.py then runs with the worker's reach)")
    if _userns_ok(bwrap):
        check_groups()
        return
    raise ConfigError(
        "builds run in their own user namespace and this host does not allow unprivileged ones: "
        "allow them (sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0; on "
        "Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0), or set "
        f"{UNSAFE_SETTING}=1 to build without a sandbox (unsafe)")


def check_groups(euid: int | None = None, groups: list[int] | None = None, egid: int | None = None) -> None:
    """Refuse to build when the worker is not root and belongs to supplementary groups.

    A user namespace maps one uid and one gid; the worker's other groups show as ``65534`` inside but
    still open whatever those groups may read or write (``ssl-cert``'s keys, ``adm``'s logs), and a
    process that is not root cannot drop them: the kernel refuses ``setgroups`` in a namespace made
    without privilege. A root worker drops them itself before starting the sandbox (:func:`_enter`).
    """
    euid = os.geteuid() if euid is None else euid
    if euid == 0:
        return
    egid = os.getegid() if egid is None else egid
    extra = sorted(set(os.getgroups() if groups is None else groups) - {egid})
    if not extra:
        return
    names = []
    for gid in extra:
        try:
            names.append(f"{grp.getgrgid(gid).gr_name} ({gid})")
        except KeyError:
            names.append(str(gid))
    raise ConfigError(
        f"the worker runs with the supplementary groups {', '.join(names)}, which a sandbox started by a "
        "user that is not root cannot drop (the build would keep their access): run the worker as a "
        "user of no other group (usermod -G '' USER; systemd: a dedicated User= without "
        "SupplementaryGroups=), or as root (builds then run as the build user, without them)")


_USERNS_CHECKED: dict[tuple[str, int], bool] = {}


def _userns_ok(bwrap: str) -> bool:
    key = (bwrap, os.geteuid())
    if key not in _USERNS_CHECKED:
        probe = [bwrap, "--unshare-all", "--ro-bind", "/", "/", "--uid", str(INSIDE_UID), "true"]
        kwargs = {}
        if os.geteuid() == 0:  # the worker never runs bwrap as root: probe as the build user would be
            kwargs = {"user": INSIDE_UID, "group": INSIDE_GID, "extra_groups": []}
        try:
            ok = subprocess.run(probe, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, timeout=30, cwd="/", **kwargs).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        _USERNS_CHECKED[key] = ok
    return _USERNS_CHECKED[key]


# --- running one command inside -----------------------------------------------------------------------

@dataclass
class Ran:
    """How a sandboxed command ended."""

    status: int | None                   # exit status; None when it was stopped (deadline, watch)
    timed_out: bool
    out_of_memory: bool                  # the cgroup's OOM killer ended a process of the build
    hit_process_limit: bool              # a fork was refused at the process limit
    limits: str                          # how memory and processes were limited, in words
    proxy_events: list[ProxyEvent] = field(default_factory=list)
    stopped: str | None = None           # why ``watch`` stopped it (e.g. past its disk quota)


def build_identity(run_as: str) -> tuple[str, int, int] | None:
    """``(name, uid, gid)`` the worker drops to before starting the sandbox when it runs as root;
    None when it is not root (bwrap then maps the sandbox's uid onto the worker's own)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(run_as)
    except KeyError:
        raise ConfigError(f"the build user {run_as!r} does not exist on this worker") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise ConfigError(f"the build user {run_as!r} is root: builds never run as root")
    return entry.pw_name, entry.pw_uid, entry.pw_gid


def _enter(cgroup_procs: list[str], identity, rlimits: dict[int, int]):
    """What the child does between fork and exec: join the build's cgroup while it still may, set the
    fallback rlimits, and drop to the build user. Only system calls: the worker may have threads."""
    def apply():
        pid = str(os.getpid()).encode()
        for path in cgroup_procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        for which, value in rlimits.items():
            resource.setrlimit(which, (value, value))
        if identity is not None:
            _, uid, gid = identity
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
    return apply


def run(argv: list[str], *, root: Path, work: Path, env: dict[str, str], index_url: str,
        timeout: float, memory_limit: int, process_limit: int, output, identity=None,
        allow: tuple[str, ...] = (), name: str | None = None, python: str = "/usr/bin/python3",
        watch=None, tmp: Path | None = None, binds: tuple[Bind, ...] = (), on_start=None) -> Ran:
    """Run ``argv`` (``@PROXY@`` in it becomes the proxy's address) in the sandbox, output into
    ``output`` (a callable taking bytes), ``work`` bound writable at ``/build``; return how it ended.
    ``watch``, asked often while it runs, stops it when it returns a reason (its disk quota:
    :mod:`wheelwright.builds.workspace`); ``tmp``, a folder of ``work``, is bound at ``/tmp``.

    ``python`` is the interpreter inside that runs the forwarder before ``argv``. ``on_start(pid)`` is
    told the pid of the sandbox's session leader once it runs (killing that session ends the build).
    """
    check_host()
    root = Path(root)
    name = name or f"build-{secrets.token_hex(4)}"
    run_dir = work.parent / f"{work.name}.run"
    if len(str(run_dir / SOCKET_NAME)) > 100:  # a Unix socket's path has room for 107 bytes
        import tempfile
        run_dir = Path(tempfile.mkdtemp(prefix="wheelwright-run-"))
        run_dir.chmod(0o755)
    else:
        run_dir.mkdir(mode=0o755)
    cgroup = None
    proxy = None
    try:
        (run_dir / INIT_NAME).write_text(INIT_SCRIPT)
        proxy = IndexProxy(run_dir / SOCKET_NAME, allowed_destinations(index_url, allow))
        cgroup = open_cgroup(memory_limit, process_limit, name)
        rlimits = {}
        if cgroup is not None:
            limits = (f"{cgroup.description}: {memory_limit // (1 << 20)} MiB of memory and "
                      f"{process_limit} processes for the whole build")
        else:
            rlimits = {resource.RLIMIT_AS: memory_limit, resource.RLIMIT_NPROC: process_limit}
            limits = (f"no cgroup with the memory and pids controllers is open to this worker: "
                      f"per-process limits only (RLIMIT_AS {memory_limit // (1 << 20)} MiB, "
                      f"RLIMIT_NPROC {process_limit})")
        inner = [python, f"{RUN}/{INIT_NAME}", *argv]
        info_read, info_write = os.pipe()  # bwrap writes to it once the walls stand
        command = bwrap_arguments(root, work, run_dir, env, inner, info_fd=info_write, tmp=tmp, binds=binds)
        output(f"[wheelwright: sandbox: bubblewrap, root {root}, no network but "
               f"{', '.join(f'{h}:{p}' for h, p in sorted(proxy.allowed))}; {limits}]\n".encode())
        try:
            proc = subprocess.Popen(command, cwd="/", env={"PATH": "/usr/bin:/bin"},
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                    pass_fds=(info_write,),
                                    preexec_fn=_enter(cgroup.procs_files() if cgroup else [], identity,
                                                      rlimits))
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(info_read)
            raise ConfigError(f"cannot start the build sandbox ({BWRAP}): {exc}") from exc
        finally:
            os.close(info_write)
        if on_start is not None:
            on_start(proc.pid)
        proxy.start()
        said = bytearray()  # the first words: bwrap's own complaint when it could not start

        def copy(chunk: bytes) -> None:
            if len(said) < 4096:
                said.extend(chunk[:4096])
            output(chunk)
        status, timed_out, stopped = _pump(proc, timeout, copy, watch)
        with open(info_read, "rb") as info:
            started = bool(info.read())
        if not started and not timed_out and not stopped:
            message = bytes(said[:2000]).decode("utf-8", "replace").strip()
            raise ConfigError(f"the build sandbox could not be set up on this worker: {message}")
        return Ran(status=status, timed_out=timed_out,
                   out_of_memory=bool(cgroup and cgroup.oom_kills()),
                   hit_process_limit=bool(cgroup and cgroup.process_limit_hits()),
                   limits=limits, proxy_events=list(proxy.events), stopped=stopped)
    finally:
        if cgroup is not None:
            cgroup.remove()
        if proxy is not None:
            proxy.close()
        remove_tree(run_dir)


def _pump(proc: subprocess.Popen, timeout: float, output, watch=None) -> tuple[int | None, bool, str | None]:
    """Copy the output until the sandbox ends, the deadline passes or ``watch`` gives a reason to stop;
    then make sure it has ended. ``(status, timed out, why watch stopped it)``."""
    deadline = time.monotonic() + timeout
    exited_at = None
    timed_out = False
    stopped = None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                if now >= deadline:
                    timed_out = True
                    break
                if watch is not None and proc.poll() is None and (stopped := watch()):
                    break
                if proc.poll() is not None:
                    exited_at = exited_at or now
                    if now - exited_at > DRAIN_GRACE:
                        break
                if selector.select(min(deadline - now, 0.2)):
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        break
                    output(chunk)
    finally:
        # bwrap's own session: killing it kills the sandbox's first process (--die-with-parent),
        # and with it the whole pid namespace.
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.wait()
        proc.stdout.close()
    return (None if timed_out or stopped else proc.returncode), timed_out, stopped
