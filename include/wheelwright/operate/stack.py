"""The production stack: which service runs what, derived from the targets so no name is typed twice.

In production one machine, the index host, runs PostgreSQL (the catalog and Airflow's metadata, as two
databases owned by two roles), Redis (the Celery broker, with a password), Airflow's API server,
scheduler, dag-processor and triggerer, the index host's worker (queue ``default``: sync, claim, record,
publish), its SFTP endpoint, the nginx origin and the Varnish edge. Builders are Celery workers of one
enabled target's queue each: one per target inside the compose stack, and any number of Pis (or ARM
servers) that join over the network; each starts through ``wheelwright worker`` (its doctor's checks,
then Airflow's Celery worker). This room owns that shape, as plain data first:

* :func:`topology` — the Airflow services (name, command, queues, which side they are on), read both by
  the compose file and by the test that runs the same topology without Docker (tests/test_topology.py);
* :func:`pools` — one pool per enabled target (a build task waits forever for a pool that is missing);
* :func:`compose_document` / :func:`render` — ``docker-compose.yaml``, generated from the two above
  (``python -m wheelwright.operate.stack compose > docker-compose.yaml``; a test holds the committed
  file equal to it, so a target added to targets.toml without regenerating fails the tests);
* :func:`check_compose` — what an operator would check by reading the file: a worker on every enabled
  target's queue, one broker, secret set and API URL for everybody, only the edge and the UI published
  (on configurable interfaces), no secret with a default;
* :func:`init` — what ``airflow-init`` does: roles and databases (``sql/compose-init.sql``), the catalog
  schema, Airflow's migration and the pools;
* :func:`sshd_config` / :func:`sftpd` — the index host's SFTP endpoint: one account per builder key,
  every account chrooted, SFTP only and only the requests an upload needs (no links, no modes), each
  account writing into its own folder of the incoming folder and seeing no other.

Two rules hold throughout. Secrets never have a default: every one is ``${VAR:?...}``, so a stack
started without them stops with a sentence instead of running with a password from a README. And
nothing that carries a credential or an index-side setting is stored in Airflow's metadata database: any
running task (a Pi's included) can read any Connection and write any Variable through the execution API,
so the catalog's password and every setting the index host trusts (PyPI's URL, the published tree, the
incoming folder, the CDN and its token) live only in the environment of the index host's services, and
each builder's SSH key only on that builder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from wheelwright import package_data
from wheelwright.builds.targets import Target, enabled_targets
from wheelwright.builds.transfer import is_account
from wheelwright.errors import ConfigError
from wheelwright.operate.dag_tasks import INDEX_HOST_CONN_ID, INDEX_HOST_QUEUE, build_pool


# Paths inside the image (Dockerfile creates them, owned by the unprivileged user `wheelwright`).
APP = "/opt/wheelwright"
HOME = "/var/lib/wheelwright"
WWW = "/srv/wheelwright/www"
LOGS = "/var/log/wheelwright"
SFTP_ROOT = "/srv/wheelwright/sftp"              # every builder account's chroot (root-owned, 0755)
SFTP_INCOMING = f"{SFTP_ROOT}/incoming"          # /incoming as SFTP sees it; each account writes only
                                                 # into its own /incoming/<account>
INCOMING = "/srv/wheelwright/incoming"           # the same volume, as the index host's worker sees it
# The only SFTP requests a builder's upload needs (internal-sftp -p): no symlink, hardlink, setstat.
SFTP_REQUESTS = ("open", "close", "read", "write", "lstat", "fstat", "stat", "opendir", "readdir",
                 "mkdir", "remove", "rename", "posix-rename", "realpath", "fsync")
BUILDER_KEYS = "/run/wheelwright/builder-keys"   # <account>.pub, one per builder (the sftp service)
API_PORT = 8080

# Secrets the stack needs, each from the environment or .env, never with a default.
SECRETS = {
    "POSTGRES_PASSWORD": "the PostgreSQL superuser's password (only postgres and airflow-init see it)",
    "WHEELWRIGHT_DB_PASSWORD": "the catalog role's password",
    "AIRFLOW_DB_PASSWORD": "the Airflow metadata role's password",
    "WHEELWRIGHT_REDIS_PASSWORD": "the broker's password (hex: it goes into a URL)",
    "WHEELWRIGHT_JWT_SECRET": "Airflow's JWT signing secret, shared by the API server and the scheduler",
    "WHEELWRIGHT_API_SECRET_KEY": "Airflow's API secret key, shared by every Airflow process",
    "WHEELWRIGHT_SFTP_HOST_KEY": "the SFTP host's public key line, pinned by every builder",
}


def required(variable: str) -> str:
    """``${VARIABLE:?...}``: compose refuses to start without it and says where it comes from."""
    return "${%s:?set %s in .env (see .env.example)}" % (variable, variable)


# --- the topology, as data ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Service:
    """An Airflow process of the stack. ``side`` is ``index`` for what runs on the index host with the
    catalog's and the metadata database's credentials, ``builder`` for a target's worker (no database)."""

    name: str
    argv: tuple[str, ...]
    side: str
    queues: tuple[str, ...] = ()
    target: Target | None = None
    health: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


def builder_account(target: Target) -> str:
    """The builder's service name, SFTP login and key name: ``worker-<target>``, a valid Unix user name."""
    account = "worker-" + re.sub(r"[^a-z0-9]+", "-", target.name.lower()).strip("-")
    if not is_account(account):
        raise ConfigError(f"target {target.name!r} makes the account name {account!r}, which is not a "
                          "Unix user name of at most 32 characters: give the target a shorter name")
    return account


def pool_name(target: Target) -> str:
    """The pool of the target's build tasks (build_wheels: ``pool=f"build_{target.name}"``)."""
    return build_pool(target.name)


def _celery_ping(service: str) -> tuple[str, ...]:
    return ("CMD-SHELL", "celery --app airflow.providers.celery.executors.celery_executor.app inspect "
            f"ping --timeout 10 -d {service}@$${{HOSTNAME}} | grep -q OK")


def _http_ok(url: str) -> tuple[str, ...]:
    return ("CMD", "python", "-c", f"import urllib.request; urllib.request.urlopen({url!r}, timeout=10)")


def _answers_http(port: int) -> tuple[str, ...]:
    """A probe for images without Python or curl (nginx, varnish: Debian, so bash): any HTTP answer."""
    return ("CMD", "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'HEAD / HTTP/1.0\\r\\n\\r\\n' >&3 "
            "&& head -c 5 <&3 | grep -q HTTP/")


def _job_alive(job: str) -> tuple[str, ...]:
    return ("CMD", "airflow", "jobs", "check", "--job-type", job, "--local")


def worker_argv(name: str, queues: tuple[str, ...], concurrency: str = "1", *,
                builder: bool = False) -> tuple[str, ...]:
    """A Celery worker on ``queues``; a builder's starts through `wheelwright worker`, which runs its
    doctor's part first and refuses its queues when a check fails (operate/worker.py)."""
    command = ("wheelwright", "worker") if builder else ("airflow", "celery", "worker")
    return (*command, "--queues", ",".join(queues), "--concurrency", concurrency,
            "--celery-hostname", f"{name}@%h")


def topology(targets: list[Target]) -> list[Service]:
    """Every Airflow service of the stack, in start order; one builder per enabled target."""
    services = [
        Service("airflow-init", ("python", "-m", "wheelwright.operate.stack", "init"), "index"),
        Service("api-server", ("airflow", "api-server", "--port", str(API_PORT)), "index",
                health=_http_ok(f"http://localhost:{API_PORT}/api/v2/monitor/health"),
                env={"WHEELWRIGHT_OUTPUT": WWW}),
        Service("scheduler", ("airflow", "scheduler"), "index",
                health=_http_ok("http://localhost:8974/health"),
                env={"AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True"}),
        Service("dag-processor", ("airflow", "dag-processor"), "index",
                health=_job_alive("DagProcessorJob")),
        Service("triggerer", ("airflow", "triggerer"), "index", health=_job_alive("TriggererJob")),
        Service("worker-index", worker_argv("worker-index", (INDEX_HOST_QUEUE,), "4"), "index",
                queues=(INDEX_HOST_QUEUE,), health=_celery_ping("worker-index"),
                env={"WHEELWRIGHT_OUTPUT": WWW, "WHEELWRIGHT_INCOMING": INCOMING,
                     "WHEELWRIGHT_CDN": "varnish:http://varnish:80",
                     # each builder answers only its own target's builds; Pis that join add theirs
                     "WHEELWRIGHT_BUILDER_ACCOUNTS": " ".join(
                         f"{builder_account(t)}:{t.name}" for t in targets if t.enabled)
                     + " ${WHEELWRIGHT_MORE_BUILDERS:-}"}),
    ]
    for target in targets:
        if not target.enabled:
            continue
        name = builder_account(target)
        services.append(Service(
            name, worker_argv(name, (target.queue,), builder=True), "builder", queues=(target.queue,), target=target,
            health=_celery_ping(name),
            env={f"AIRFLOW_CONN_{INDEX_HOST_CONN_ID.upper()}": index_host_connection(
                "sftp", 22, name, f"/run/secrets/{name}", required("WHEELWRIGHT_SFTP_HOST_KEY"))}))
    return services


def pools(targets: list[Target], slots: int = 1) -> list[tuple[str, int, str]]:
    """(name, slots, description) of the pool of every enabled target."""
    return [(pool_name(t), slots, f"builds for {t.name}") for t in targets if t.enabled]


def index_host_connection(host: str, port: int, login: str, key_file: str, host_key: str) -> str:
    """The ``wheelwright_index_host`` Connection of one builder (JSON for ``AIRFLOW_CONN_...``): its own
    login and key, the index host's key pinned (never ``no_host_key_check``)."""
    return json.dumps({"conn_type": "ssh", "host": host, "port": port, "login": login,
                       "extra": {"key_file": key_file, "host_key": host_key,
                                 "no_host_key_check": False, "look_for_keys": False}})


def airflow_environment(side: str, *, broker: str, result_backend: str, api_url: str,
                        jwt_secret: str, secret_key: str, metadata_url: str | None,
                        catalog_dsn: str | None) -> dict[str, str]:
    """The environment every Airflow process of the stack shares; the index side adds the databases.

    Builders get no database URL at all: they reach the broker (tasks and results both in Redis) and the
    API server, nothing else. Nor do they get the JWT secret: the scheduler signs each task's token and
    the workload carries it, so a builder (a Pi anywhere) never holds the key that mints tokens. Every
    process shares the API secret key (a worker's log server checks the API server's requests with it).
    """
    env = {
        "WHEELWRIGHT_HOME": HOME,
        "WHEELWRIGHT_PYPI_URL": "${WHEELWRIGHT_PYPI_URL:-https://pypi.org/pypi}",
        # our own published index, beside PyPI, for build dependencies (through the edge's cache)
        "WHEELWRIGHT_INDEX_URL": "http://varnish/simple/",
        "AIRFLOW_HOME": f"{HOME}/airflow",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__DAGS_FOLDER": f"{APP}/dags",
        "AIRFLOW__CORE__PLUGINS_FOLDER": f"{APP}/plugins",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__CELERY__BROKER_URL": broker,
        "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
        # Airflow's Celery defaults plus wheelwright's worker commands (which builds run, stop one)
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": CELERY_CONFIG_OPTIONS,
        "AIRFLOW__API__SECRET_KEY": secret_key,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": f"{LOGS}/airflow",
    }
    if side == "index":
        env["AIRFLOW__API_AUTH__JWT_SECRET"] = jwt_secret
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = metadata_url
        env["WHEELWRIGHT_DSN"] = catalog_dsn
    return env


CELERY_CONFIG_OPTIONS = "wheelwright.operate.celery_config.CELERY_CONFIG"


def compose_environment(side: str) -> dict[str, str]:
    redis = f"redis://:{required('WHEELWRIGHT_REDIS_PASSWORD')}@redis:6379"
    return airflow_environment(
        side, broker=f"{redis}/0", result_backend=f"{redis}/1", api_url=f"http://api-server:{API_PORT}",
        jwt_secret=required("WHEELWRIGHT_JWT_SECRET"), secret_key=required("WHEELWRIGHT_API_SECRET_KEY"),
        metadata_url=f"postgresql+psycopg2://airflow:{required('AIRFLOW_DB_PASSWORD')}@postgres/airflow",
        catalog_dsn=f"postgresql://wheelwright:{required('WHEELWRIGHT_DB_PASSWORD')}@postgres/wheelwright")


# --- the compose file --------------------------------------------------------------------------------

HEADER = """\
# The production stack of wheelwright on one Docker host: PostgreSQL (catalog and Airflow metadata, two
# databases, two roles), Redis with a password, airflow-init, the Airflow services, the index host's
# worker (queue default) and its SFTP endpoint, one builder worker per enabled target of
# data/targets.toml, the nginx origin and the Varnish edge. Only the edge and the UI publish ports.
# Secrets come from the environment or .env (see .env.example and README.md, "Production").
#
# GENERATED from data/targets.toml by `python -m wheelwright.operate.stack compose > docker-compose.yaml`:
# do not edit by hand; tests/test_compose.py fails when this file and the targets disagree.
"""


def _healthcheck(test: tuple[str, ...], interval: str = "30s", retries: int = 5,
                 start_period: str = "60s") -> dict:
    return {"test": list(test), "interval": interval, "timeout": "20s", "retries": retries,
            "start_period": start_period}


VCL = "varnish/wheelwright.vcl"
# The VCL's DEPLOY lines, as this stack fills them in: the origin is the nginx service, and the index
# host's worker (the publisher) is who may purge.
VCL_DEPLOY = (('"127.0.0.1";', "# DEPLOY: the nginx origin", '"nginx";'),
              ('"8080";', "# DEPLOY", '"80";'),
              ('"127.0.0.1";', "# DEPLOY: who may purge", '"worker-index";'))


def vcl_deploy_sed(path: str) -> str:
    """A sed command printing the VCL at ``path`` with VCL_DEPLOY's lines filled in (the edge's image
    has a shell and sed, not Python)."""
    rules = " ".join(f"-e 's/{old}\\( *{mark}\\)/{new}\\1/'" for old, mark, new in VCL_DEPLOY)
    return f"sed {rules} {path}"


def _ready(*names: str, completed: tuple[str, ...] = ()) -> dict:
    return {**{n: {"condition": "service_healthy"} for n in names},
            **{n: {"condition": "service_completed_successfully"} for n in completed}}


def compose_document(targets: list[Target]) -> dict:
    """docker-compose.yaml as data. The environment each side shares is one object, which the YAML
    dump writes once (``x-index-environment``, ``x-builder-environment``) and merges into each service."""
    builder_env = compose_environment("builder")
    index_env = compose_environment("index")
    shared = {"builder": builder_env,
              "index": {"<<": builder_env, **{k: v for k, v in index_env.items() if k not in builder_env}}}
    document: dict = {"x-builder-environment": shared["builder"], "x-index-environment": shared["index"]}
    services: dict[str, dict] = {}
    services["postgres"] = {
        "image": "postgres:17-bookworm",
        "environment": {"POSTGRES_PASSWORD": required("POSTGRES_PASSWORD")},
        "volumes": ["catalog:/var/lib/postgresql/data"],
        "healthcheck": _healthcheck(("CMD", "pg_isready", "-U", "postgres"), "10s", 10, "30s"),
        "restart": "unless-stopped",
    }
    # The password reaches redis-server through a file only it reads, not its command line (`ps`).
    services["redis"] = {
        "image": "redis:7-bookworm",
        "environment": {"REDIS_PASSWORD": required("WHEELWRIGHT_REDIS_PASSWORD")},
        "command": ["sh", "-c", "umask 077 && printf 'requirepass %s\\n' \"$$REDIS_PASSWORD\" "
                    "> /tmp/redis.conf && exec redis-server /tmp/redis.conf --appendonly yes"],
        "volumes": ["broker:/data"],
        "healthcheck": _healthcheck(("CMD-SHELL", "REDISCLI_AUTH=\"$$REDIS_PASSWORD\" redis-cli ping "
                                     "| grep -q PONG"), "10s", 10, "10s"),
        "restart": "unless-stopped",
    }
    for service in topology(targets):
        spec: dict = {
            "image": "wheelwright:${WHEELWRIGHT_IMAGE_TAG:-latest}",
            "build": ".",
            "command": list(service.argv),
            "environment": {"<<": shared[service.side], **service.env},
        }
        if service.name == "airflow-init":
            spec["environment"].update({
                "POSTGRES_PASSWORD": required("POSTGRES_PASSWORD"),
                "WHEELWRIGHT_POSTGRES_ADMIN": "postgresql://postgres@postgres/postgres",
            })
            spec["depends_on"] = _ready("postgres", "redis")
            # the first container to mount a fresh volume gives it its owner: this image's, so that
            # `wheelwright` (not root) owns the tree, the incoming folder and the logs
            spec["volumes"] = ["home-index:" + HOME, "www:" + WWW, "incoming:" + INCOMING, "logs:" + LOGS]
            spec["restart"] = "on-failure"
        else:
            spec["depends_on"] = _ready("postgres", "redis", completed=("airflow-init",))
            spec["restart"] = "unless-stopped"
            spec["healthcheck"] = _healthcheck(service.health)
        if service.side == "index" and service.name != "airflow-init":
            spec["volumes"] = ["home-index:" + HOME, "logs:" + LOGS]
        if service.name == "api-server":
            # the dashboard opens build logs from the tree, and its import action publishes into it
            spec["volumes"] += ["www:" + WWW]
            spec["ports"] = ["${WHEELWRIGHT_UI_BIND:-127.0.0.1}:${WHEELWRIGHT_UI_PORT:-8080}:%d" % API_PORT]
            spec["environment"]["AIRFLOW__API__BASE_URL"] = "${WHEELWRIGHT_UI_URL:-http://localhost:8080}"
        if service.name == "worker-index":
            # the origin's access log, read by the index host (downloads and searches)
            spec["volumes"] += ["www:" + WWW, "incoming:" + INCOMING, "origin-logs:/var/log/nginx:ro"]
            spec["depends_on"].update(_ready("sftp"))
            # its install tests import each compiled wheel in the build sandbox (builds/install_test.py),
            # which needs user namespaces, as on the builders
            spec["security_opt"] = ["seccomp=unconfined", "apparmor=unconfined"]
        if service.side == "builder":
            spec["volumes"] = [f"home-{service.name}:{HOME}", "logs:" + LOGS]
            spec["secrets"] = [service.name]
            spec["depends_on"].update(_ready("api-server", "sftp"))
            # bubblewrap needs user namespaces, which Docker's default seccomp profile forbids; the
            # build sandbox, not the container, is what confines setup.py.
            spec["security_opt"] = ["seccomp=unconfined", "apparmor=unconfined"]
        services[service.name] = spec
    services["sftp"] = {
        "image": "wheelwright:${WHEELWRIGHT_IMAGE_TAG:-latest}",
        "build": ".",
        "user": "root",       # sshd chroots and switches to each builder's account
        "command": ["python", "-m", "wheelwright.operate.stack", "sftpd"],
        "volumes": ["incoming:" + SFTP_INCOMING, f"./secrets/builder-keys:{BUILDER_KEYS}:ro"],
        "secrets": ["sftp_host_key"],
        "healthcheck": _healthcheck(("CMD", "python", "-c", "import socket; s = socket.create_connection("
                                     "('127.0.0.1', 22), 5); assert s.recv(4) == b'SSH-'"), "30s", 5, "10s"),
        "restart": "unless-stopped",
    }
    services["nginx"] = {
        "image": "nginx:stable-bookworm",
        "volumes": [f"www:{WWW}:ro", "./nginx/wheelwright.conf:/etc/nginx/conf.d/default.conf:ro",
                    "origin-logs:/var/log/nginx"],
        "depends_on": _ready(completed=("airflow-init",)),   # which made `www` the publisher's
        "healthcheck": _healthcheck(_answers_http(80), "30s", 5, "10s"),
        "restart": "unless-stopped",
    }
    # The edge: varnish/wheelwright.vcl with its DEPLOY lines set for this stack (the official image
    # carries varnish-modules, hence xkey). Its ACL names worker-index, resolved when the VCL loads.
    services["varnish"] = {
        "image": "varnish:7.6",
        "volumes": [f"./{VCL}:/etc/wheelwright/wheelwright.vcl:ro"],
        "environment": {"VARNISH_SIZE": "${WHEELWRIGHT_EDGE_CACHE:-1G}"},
        "command": ["sh", "-c", f"{vcl_deploy_sed('/etc/wheelwright/wheelwright.vcl')} > /tmp/wheelwright.vcl "
                    "&& exec varnishd -F -f /tmp/wheelwright.vcl -a http=:80,HTTP -s malloc,$$VARNISH_SIZE"],
        "ports": ["${WHEELWRIGHT_EDGE_BIND:-0.0.0.0}:${WHEELWRIGHT_EDGE_PORT:-80}:80"],
        "depends_on": {**_ready("nginx"), "worker-index": {"condition": "service_started"}},
        "healthcheck": _healthcheck(_answers_http(80), "30s", 5, "10s"),
        "restart": "unless-stopped",
    }
    builders = [s.name for s in topology(targets) if s.side == "builder"]
    document["services"] = services
    document["volumes"] = {v: {} for v in ["catalog", "broker", "www", "incoming", "logs", "origin-logs",
                                            "home-index",
                                            *(f"home-{b}" for b in builders)]}
    document["secrets"] = {"sftp_host_key": {"file": "./secrets/sftp_host_ed25519_key"},
                           **{b: {"file": f"./secrets/builders/{b}"} for b in builders}}
    return document


def render(targets: list[Target]) -> str:
    """The text of docker-compose.yaml: the shared environments written once, merged by alias."""
    import yaml

    document = compose_document(targets)
    names = {id(document["x-index-environment"]): "index-environment",
             id(document["x-builder-environment"]): "builder-environment"}

    class Dumper(yaml.SafeDumper):
        def generate_anchor(self, node):
            for oid, represented in self.represented_objects.items():
                if represented is node and oid in names:
                    return names[oid]
            raise ValueError("an object other than the shared environments appears twice")

    body = yaml.dump(document, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=200,
                     allow_unicode=True)
    # a merge key must be plain (`<<:`); the dumper quotes it as if it were an ordinary string
    return HEADER + "\n" + body.replace("'<<':", "<<:")


# --- the checks an operator would make by reading it -------------------------------------------------

_SHARED_KEYS = ("AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND",
                "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL")
_INDEX_ONLY_KEYS = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "WHEELWRIGHT_DSN")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY\b|HOST_KEY")
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _queues_of(command) -> tuple[str, ...]:
    argv = command if isinstance(command, list) else str(command).split()
    if "worker" not in argv or "--queues" not in argv:
        return ()
    return tuple(argv[argv.index("--queues") + 1].split(","))


def check_compose(document: dict, targets: list[Target], text: str | None = None) -> list[str]:
    """Every way ``document`` (the parsed compose file; ``text``: its source) disagrees with the targets
    or with the stack's rules, as sentences; empty when it is right."""
    problems = []
    services = document.get("services", {})
    served: dict[str, list[str]] = {}
    for name, spec in services.items():
        for queue in _queues_of(spec.get("command", [])):
            served.setdefault(queue, []).append(name)
    wanted = {t.queue for t in targets if t.enabled} | {INDEX_HOST_QUEUE}
    for queue in sorted(wanted):
        if queue not in served:
            problems.append(f"no worker serves queue {queue!r}")
    for queue in sorted(set(served) - wanted):
        problems.append(f"{', '.join(served[queue])} serves queue {queue!r}, which no enabled target has")
    init = services.get("airflow-init", {})
    if init.get("command") != ["python", "-m", "wheelwright.operate.stack", "init"]:
        problems.append("airflow-init does not run `python -m wheelwright.operate.stack init` "
                        "(which creates the pools from the targets)")
    airflow = {n: s for n, s in services.items() if "AIRFLOW__CORE__EXECUTOR" in s.get("environment", {})}
    builders = {n for n, s in airflow.items() if any(q != INDEX_HOST_QUEUE for q in _queues_of(s.get("command", [])))}
    for key in _SHARED_KEYS + _INDEX_ONLY_KEYS:
        among = [s for n, s in airflow.items() if key in _SHARED_KEYS or n not in builders]
        values = {s["environment"].get(key) for s in among}
        if len(values) != 1 or None in values:
            problems.append(f"the Airflow services disagree on {key}: {sorted(map(str, values))}")
    broker = next(iter(airflow.values()), {}).get("environment", {}).get("AIRFLOW__CELERY__BROKER_URL", "")
    if not re.match(r"rediss?://:[^@]+@", broker):
        problems.append("the broker URL carries no password")
    for name, spec in services.items():
        env = spec.get("environment", {})
        if spec.get("command", [None])[0] == "airflow" or name == "airflow-init":
            if name not in airflow:
                problems.append(f"{name} runs Airflow without the stack's environment")
        if name in builders:
            leaked = [k for k in env if k in _INDEX_ONLY_KEYS]
            if leaked:
                problems.append(f"builder {name} is given the index host's secrets ({', '.join(leaked)})")
        for port in spec.get("ports", []):
            if name not in ("api-server", "varnish"):
                problems.append(f"{name} publishes port {port}: only the edge and the UI may")
            elif not str(port).startswith("${") and len(str(port).split(":")) < 3:
                problems.append(f"{name} publishes {port} on every interface: make the address configurable")
        if name != "airflow-init" and "healthcheck" not in spec and name != "varnish":
            problems.append(f"{name} has no healthcheck")
        for dependency, condition in (spec.get("depends_on") or {}).items():
            if not isinstance(condition, dict) or "condition" not in condition:
                problems.append(f"{name} starts after {dependency} without waiting for it to be ready")
    for volume in ("catalog", "www", "logs", "incoming", "home-index"):
        if volume not in document.get("volumes", {}):
            problems.append(f"no volume {volume!r}")
    if text is not None:
        for variable, how, default in _INTERPOLATION.findall(text):
            if _SECRET_NAME.search(variable) and how.lstrip(":") != "?":
                problems.append(f"secret ${{{variable}}} is not required (`:?`) but "
                                + ("has a default" if how else "may be empty"))
    return problems


# --- airflow-init ------------------------------------------------------------------------------------

def _sections(text: str) -> dict[str, str]:
    """``-- name: X`` sections of an SQL file."""
    found, name = {}, None
    for line in text.splitlines():
        if m := re.match(r"--\s*name:\s*(\S+)", line):
            name = m[1]
            found[name] = ""
        elif name:
            found[name] += line + "\n"
    return found


def prepare_databases(admin_dsn: str, databases: dict[str, tuple[str, str]]) -> None:
    """For each ``database: (role, password)``: the role exists with that password (set again on every
    run, so rotating it in .env is a restart), the database exists and belongs to it, and nobody else
    may connect to it. Statements in ``sql/compose-init.sql``."""
    import psycopg
    from psycopg import sql
    statements = _sections(package_data.sql("compose-init.sql").read_text())
    with psycopg.connect(admin_dsn, autocommit=True, cursor_factory=psycopg.ClientCursor) as admin:
        for database, (role, password) in databases.items():
            names = {"role": sql.Identifier(role), "database": sql.Identifier(database)}
            exists = admin.execute(statements["role_exists"], {"role": role}).fetchone()
            admin.execute(sql.SQL(statements["role_alter" if exists else "role_create"]).format(**names),
                          {"password": password})
            if not admin.execute(statements["database_exists"], {"database": database}).fetchone():
                admin.execute(sql.SQL(statements["database_create"]).format(**names))
            admin.execute(sql.SQL(statements["database_private"]).format(**names))


def init(environ=None, *, airflow: str = "airflow") -> None:
    """airflow-init: databases and roles, the catalog schema, Airflow's migration, pools.

    Idempotent: every start of the stack runs it, and a pool an operator resized (more Pis joined)
    keeps its size.
    """
    from psycopg.conninfo import conninfo_to_dict

    from wheelwright.catalog import db
    from wheelwright.config import Settings
    env = dict(os.environ if environ is None else environ)
    admin = env.get("WHEELWRIGHT_POSTGRES_ADMIN")
    if admin:
        catalog = conninfo_to_dict(env["WHEELWRIGHT_DSN"])
        metadata = conninfo_to_dict(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", ""))
        if env.get("POSTGRES_PASSWORD"):
            admin = _with_password(admin, env["POSTGRES_PASSWORD"])
        prepare_databases(admin, {catalog["dbname"]: (catalog["user"], catalog["password"]),
                                  metadata["dbname"]: (metadata["user"], metadata["password"])})
    settings = Settings.from_env(env)
    with db.connect(settings) as conn:
        db.init_schema(conn)
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    existing = {p["pool"] for p in json.loads(subprocess.run(
        [airflow, "pools", "list", "--output", "json"], env=env, check=True, capture_output=True,
        text=True).stdout or "[]")}
    for name, slots, description in pools(enabled_targets(env.get("WHEELWRIGHT_TARGETS"))):
        if name not in existing:
            subprocess.run([airflow, "pools", "set", name, str(slots), description], env=env, check=True,
                           stdout=subprocess.DEVNULL)


def _with_password(dsn: str, password: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    return make_conninfo(**{**conninfo_to_dict(dsn), "password": password})


# --- the SFTP endpoint -------------------------------------------------------------------------------

def builder_keys(folder: Path) -> dict[str, str]:
    """``account: public key line`` of every ``<account>.pub`` in ``folder`` (the operator's list of
    builders); a file whose name is no valid account or whose content is no single public key is refused."""
    accounts = {}
    for path in sorted(Path(folder).glob("*.pub")):
        account = path.name[:-len(".pub")]
        if not is_account(account):
            raise ConfigError(f"{path}: {account!r} is not an account name (a-z, 0-9, '-', at most 32)")
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        if len(lines) != 1 or not re.match(r"(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa) [A-Za-z0-9+/=]+( |$)",
                                           lines[0]):
            raise ConfigError(f"{path}: expected one public key line (ssh-ed25519 AAAA...)")
        accounts[account] = lines[0].strip()
    return accounts


def sshd_config(host_key: str, keys_dir: str = "/etc/ssh/wheelwright-keys", *, port: int = 22,
                root: str = SFTP_ROOT) -> str:
    """sshd_config of the index host's SFTP endpoint: keys only, builders only, SFTP only, each session
    chrooted to ``root`` (which holds ``incoming/``), starting in its own ``/incoming/<account>``, the
    one folder it can write and list, and allowed only the requests an upload needs."""
    return f"""\
# wheelwright's SFTP endpoint (written by `python -m wheelwright.operate.stack sftpd`)
Port {port}
HostKey {host_key}
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile {keys_dir}/%u
AllowGroups wheelwright-builders
DisableForwarding yes
PermitTTY no
PermitUserRC no
# Builders may only put plain files into their own {root}/incoming/<account>: chrooted, SFTP only,
# no links, no modes or owners set, and what they make is group-readable by the index host only
# (umask 0007 under a setgid folder of group wheelwright), never by another builder.
ChrootDirectory {root}
ForceCommand internal-sftp -u 0007 -d /incoming/%u -p {",".join(SFTP_REQUESTS)}
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


def prepare_incoming(incoming: Path, accounts: list[str], *, index_gid: int, account_uid) -> None:
    """The incoming folder as the SFTP endpoint needs it: the folder itself root's and group
    ``index_gid``'s, mode 0751 (builders may pass through it, not list it), ``.intake`` the index
    host's own (its copies of what it checks), and one folder per account, ``account``-owned, group
    ``index_gid``, mode 2770 (setgid: what the builder makes there belongs to the index host's group).
    Modes are set again on every start: a volume made by an older version is brought in line."""
    incoming.mkdir(parents=True, exist_ok=True)
    os.chown(incoming, 0, index_gid)
    os.chmod(incoming, 0o751)
    intake = incoming / ".intake"
    intake.mkdir(exist_ok=True)
    os.chown(intake, index_gid, index_gid)
    os.chmod(intake, 0o700)
    for account in accounts:
        folder = incoming / account
        folder.mkdir(exist_ok=True)
        os.chown(folder, account_uid(account), index_gid)
        os.chmod(folder, 0o2770)


def install_keys(accounts: dict[str, str], folder: Path) -> None:
    """sshd's AuthorizedKeysFile folder: one file per account, exactly the accounts given. A restarted
    container keeps its files, so a builder whose .pub was removed must lose its file here too."""
    folder.mkdir(mode=0o755, exist_ok=True)
    for stale in folder.iterdir():
        if stale.name not in accounts:
            stale.unlink()
    for account, line in accounts.items():
        (folder / account).write_text(line + "\n")
        (folder / account).chmod(0o644)


def sftpd(keys_folder: str = BUILDER_KEYS, host_key_secret: str = "/run/secrets/sftp_host_key") -> None:
    """The sftp service (as root in its container): one account per builder key, then sshd."""
    accounts = builder_keys(Path(keys_folder))
    if not accounts:
        raise ConfigError(f"no builder keys in {keys_folder}: `python -m wheelwright.operate.stack keys` "
                          "makes one per builder of the stack")
    subprocess.run(["groupadd", "--force", "--system", "wheelwright-builders"], check=True)
    for account in accounts:
        if subprocess.run(["id", "-u", account], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "--gid", "wheelwright-builders", "--no-create-home",
                            "--home-dir", f"/incoming/{account}", "--shell", "/usr/sbin/nologin", account],
                           check=True)
    import grp
    import pwd
    prepare_incoming(Path(SFTP_INCOMING), sorted(accounts), index_gid=grp.getgrnam("wheelwright").gr_gid,
                     account_uid=lambda account: pwd.getpwnam(account).pw_uid)
    install_keys(accounts, Path("/etc/ssh/wheelwright-keys"))
    host_key = Path("/etc/ssh/ssh_host_ed25519_key")
    shutil.copyfile(host_key_secret, host_key)    # sshd wants it owned by root, mode 0600
    host_key.chmod(0o600)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    config = Path("/etc/ssh/wheelwright_sshd_config")
    config.write_text(sshd_config(str(host_key)))
    os.execv("/usr/sbin/sshd", ["sshd", "-D", "-e", "-f", str(config)])


def make_keys(root: Path, targets: list[Target]) -> str:
    """Make what is missing under ``root`` (the repository's ``secrets/``): the SFTP host key and one key
    pair per builder of the stack; return the host key's public line (WHEELWRIGHT_SFTP_HOST_KEY)."""
    import asyncssh

    def pair(private: Path):
        if private.exists():
            return asyncssh.read_private_key(str(private))
        private.parent.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519")
        private.write_bytes(key.export_private_key("openssh"))
        private.chmod(0o600)
        return key

    host = pair(root / "sftp_host_ed25519_key")
    for service in topology(targets):
        if service.side == "builder":
            key = pair(root / "builders" / service.name)
            public = root / "builder-keys" / f"{service.name}.pub"
            public.parent.mkdir(parents=True, exist_ok=True)
            public.write_bytes(key.export_public_key("openssh"))
    return host.export_public_key("openssh").decode().strip()


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m wheelwright.operate.stack",
                                     description="wheelwright's production stack, derived from the targets")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("compose", help="print docker-compose.yaml for the targets")
    check = sub.add_parser("check", help="check a compose file against the targets")
    check.add_argument("file", nargs="?", default="docker-compose.yaml")
    keys = sub.add_parser("keys", help="make missing SSH keys under secrets/ and print the host key line")
    keys.add_argument("--root", default="secrets")
    sub.add_parser("init", help="airflow-init: databases, catalog schema, Airflow migration, pools")
    sub.add_parser("sftpd", help="the sftp service: builder accounts, then sshd (as root)")
    args = parser.parse_args(argv)
    try:
        targets = enabled_targets()
        if args.command == "compose":
            sys.stdout.write(render(targets))
        elif args.command == "check":
            import yaml
            text = Path(args.file).read_text()
            problems = check_compose(yaml.safe_load(text), targets, text)
            for problem in problems:
                print(f"{args.file}: {problem}", file=sys.stderr)
            return 1 if problems else 0
        elif args.command == "keys":
            print(f"WHEELWRIGHT_SFTP_HOST_KEY={make_keys(Path(args.root), targets)}")
        elif args.command == "init":
            init()
        elif args.command == "sftpd":
            sftpd()
    except ConfigError as exc:
        print(f"wheelwright: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
