"""Serving a published tree on 127.0.0.1 for the tests: nginx with the shipped config where nginx is
installed, otherwise wheelwright's own static server (which applies the same rules); and a real Varnish
with the shipped VCL (``varnish/wheelwright.vcl``) in front of either, as the edge.

Both write one access-log line per request with ``format=json|html`` (the negotiated representation),
so tests can tell what pip asked for and what it got.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from support.waiting import scaled

REPO = Path(__file__).resolve().parents[2]

PIP_ACCEPT = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
              "text/html; q=0.01")
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

# (Accept header, the representation it must get: "json", "html" or None for 406)
NEGOTIATION = [
    (PIP_ACCEPT, "json"),
    (BROWSER_ACCEPT, "html"),
    ("*/*", "html"),
    (None, "html"),
    ("application/vnd.pypi.simple.v1+json", "json"),
    ("application/vnd.pypi.simple.latest+json", "json"),
    ("application/vnd.pypi.simple.v1+html", "html"),
    ("text/html", "html"),
    ("application/vnd.pypi.simple.v1+json;q=0.2, text/html", "html"),
    ("text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.55", "json"),
    ("text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.5", "json"),
    ("application/vnd.pypi.simple.v1+json;q=0, text/html;q=0.1", "html"),
    ("application/vnd.pypi.simple.v1+json;q=0, */*", "html"),
    ("application/vnd.pypi.simple.v1+json, */*;q=0.1", "json"),
    ("application/json", None),
    ("text/plain", None),
    ("application/vnd.pypi.simple.v1+json;q=0", None),
    ("text/html;q=0.0, application/vnd.pypi.simple.v1+json;q=0.000", None),
    ("APPLICATION/VND.PYPI.SIMPLE.V1+JSON", "json"),
]

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
# The shipped config canonicalises project names with nginx's perl module (libnginx-mod-http-perl).
NGINX_PERL = Path("/usr/lib/nginx/modules/ngx_http_perl_module.so")
if NGINX and not NGINX_PERL.exists():
    NGINX = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A running server over ``root``; ``kind`` says which ("nginx" or "python")."""

    kind = ""

    def __init__(self, root: Path, workdir: Path):
        self.root = root
        self.workdir = workdir
        self.access_log = workdir / "access.log"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[str]:
        try:
            return self.access_log.read_text().splitlines()
        except FileNotFoundError:
            return []

    def requests(self) -> list[tuple[str, int, str]]:
        """(path, status, negotiated format) of every request so far."""
        out = []
        for line in self.log_lines():
            m = re.search(r'"(?:GET|HEAD) (\S+) [^"]*" (\d+) \S+ format=(\w*)', line)
            if m:
                out.append((m[1], int(m[2]), m[3]))
        return out

    def get(self, path: str, accept: str | None = None) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(self.url + path)
        if accept is not None:
            request.add_header("Accept", accept)
        else:
            request.add_header("Accept", "")  # urllib adds none by default, but be explicit
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def stop(self) -> None:
        raise NotImplementedError


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class NginxServed(Served):
    kind = "nginx"

    def start(self) -> "NginxServed":
        shipped = (REPO / "nginx" / "wheelwright.conf").read_text()
        site, n = re.subn(r"^\s*listen\s+[^;]*;.*$", f"    listen 127.0.0.1:{self.port};", shipped,
                          flags=re.M)
        assert n == 1, "the shipped config must have exactly one listen line"
        site, n = re.subn(r"^\s*root\s+[^;]*;.*$", f"    root {self.root};", site, flags=re.M)
        assert n == 1, "the shipped config must have exactly one root line"
        site, n = re.subn(r"^\s*access_log\s+[^;]*;.*$", f"    access_log {self.access_log} wheelwright;",
                          site, flags=re.M)
        assert n == 1, "the shipped config must have exactly one access_log line"
        (self.workdir / "wheelwright.conf").write_text(site)
        for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.workdir / folder).mkdir(exist_ok=True)
        # As root, nginx's workers switch to an unprivileged user that could not read pytest's private
        # tmp folders; keep them as the user running the test.
        user = "user root;" if os.geteuid() == 0 else ""
        (self.workdir / "nginx.conf").write_text(f"""
load_module {NGINX_PERL};
{user}
daemon off;
worker_processes 1;
pid {self.workdir}/nginx.pid;
error_log {self.workdir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path {self.workdir}/client_body;
    proxy_temp_path {self.workdir}/proxy;
    fastcgi_temp_path {self.workdir}/fastcgi;
    uwsgi_temp_path {self.workdir}/uwsgi;
    scgi_temp_path {self.workdir}/scgi;
    include {self.workdir}/wheelwright.conf;
}}
""")
        self.process = subprocess.Popen([NGINX, "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf")],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        _wait_for_port(self.port, self.process, self.workdir / "error.log")
        return self

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class PythonServed(Served):
    kind = "python"

    def start(self) -> "PythonServed":
        from wheelwright.operate.static_server import make_server
        self.server = make_server(self.root, self.port, self.access_log)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait_for_port(port: int, process: subprocess.Popen, error_log: Path, name: str = "nginx") -> None:
    deadline = time.monotonic() + scaled(15)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            errors = error_log.read_text() if error_log.exists() else ""
            raise RuntimeError(f"{name} exited with {process.returncode}: {output}\n{errors}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {scaled(15):.0f} s")


VARNISHD = shutil.which("varnishd") or ("/usr/sbin/varnishd" if Path("/usr/sbin/varnishd").exists() else None)


class VarnishServed(Served):
    """varnishd with the shipped VCL, only its DEPLOY lines replaced, in front of ``origin``."""

    kind = "varnish"

    def __init__(self, origin: Served, workdir: Path, purgers: tuple[str, ...] | None = None):
        super().__init__(origin.root, workdir)
        self.origin = origin
        self.purgers = purgers

    def start(self) -> "VarnishServed":
        shipped = (REPO / "varnish" / "wheelwright.vcl").read_text()
        vcl, n = re.subn(r'^(\s*\.host\s*=\s*)"[^"]*";.*$', rf'\1"127.0.0.1";', shipped, flags=re.M)
        assert n == 1, "the shipped VCL must have exactly one backend host line"
        vcl, n = re.subn(r'^(\s*\.port\s*=\s*)"[^"]*";.*$', rf'\1"{self.origin.port}";', vcl, flags=re.M)
        assert n == 1, "the shipped VCL must have exactly one backend port line"
        if self.purgers is not None:
            entries = "".join(f'    "{address}";\n' for address in self.purgers)
            vcl, n = re.subn(r"^acl purgers \{.*?^\}", "acl purgers {\n" + entries + "}", vcl,
                             flags=re.M | re.S)
            assert n == 1, "the shipped VCL must have one purgers ACL"
        (self.workdir / "wheelwright.vcl").write_text(vcl)
        command = [VARNISHD, "-F", "-a", f"127.0.0.1:{self.port}", "-n", str(self.workdir / "state"),
                   "-f", str(self.workdir / "wheelwright.vcl"), "-s", "malloc,64m", "-T", "none",
                   "-p", "default_grace=0", "-p", "default_keep=0"]
        if os.geteuid() == 0:
            command += ["-j", "none"]   # no jail: as root its workers could not read pytest's tmp folders
        self.log = open(self.workdir / "varnishd.log", "w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        _wait_for_port(self.port, self.process, self.workdir / "varnishd.log", "varnishd")
        return self

    def requests(self):
        return self.origin.requests()

    def purge(self, *keys: str) -> int:
        request = urllib.request.Request(self.url + "/", method="PURGE", headers={"xkey-purge": " ".join(keys)})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def edge(origin: Served, workdir: Path, purgers: tuple[str, ...] | None = None) -> VarnishServed:
    """Start Varnish with the shipped VCL in front of a running origin (``purgers``: replace its ACL)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return VarnishServed(origin, workdir, purgers).start()


def serve(root: Path, workdir: Path, kind: str | None = None) -> Served:
    """Start a server over ``root``: ``kind``, or $WHEELWRIGHT_TEST_SERVER, or nginx if installed, or
    the Python one."""
    workdir.mkdir(parents=True, exist_ok=True)
    kind = kind or os.environ.get("WHEELWRIGHT_TEST_SERVER") or ("nginx" if NGINX else "python")
    if kind == "nginx":
        return NginxServed(root, workdir).start()
    return PythonServed(root, workdir).start()
