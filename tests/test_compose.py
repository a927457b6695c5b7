"""The production stack as an operator reads it, checked where Docker has no daemon.

docker-compose.yaml is generated from data/targets.toml (``python -m wheelwright.operate.stack compose``):
the committed file must be exactly what the targets make, Debian's ``docker-compose config`` must accept
it with a complete .env and refuse it, naming the variable, when a secret is missing; and the file must
keep the stack's rules: a worker on every enabled target's queue and a pool for it, one broker (with a
password), one set of secrets and one API URL for every Airflow process, no database credentials on a
builder, only the edge and the UI published (on configurable addresses), health checks and ready-waits.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from wheelwright.builds.targets import enabled_targets, load_targets, parse_targets
from wheelwright.errors import ConfigError
from wheelwright.operate import stack

from support.catalog import REPO

COMPOSE = REPO / "docker-compose.yaml"
DOCKER_COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"

TEST_ENV = {
    "POSTGRES_PASSWORD": "0a" * 16,
    "WHEELWRIGHT_DB_PASSWORD": "1b" * 16,
    "AIRFLOW_DB_PASSWORD": "2c" * 16,
    "WHEELWRIGHT_REDIS_PASSWORD": "3d" * 16,
    "WHEELWRIGHT_JWT_SECRET": "4e" * 16,
    "WHEELWRIGHT_API_SECRET_KEY": "5f" * 16,
    "WHEELWRIGHT_SFTP_HOST_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPinnedHostKeyForTheTests",
}

THREE_TARGETS = """
[[target]]
name = "cp311-x86_64"
abi = "cp311"
platform = "linux_x86_64"
distro = "bookworm"

[[target]]
name = "cp311-armv7l"
abi = "cp311"
platform = "linux_armv7l"
distro = "bookworm"

[[target]]
name = "cp313-aarch64"
abi = "cp313"
platform = "linux_aarch64"
distro = "trixie"
queue = "pi64"

[[target]]
name = "cp39-retired"
abi = "cp39"
platform = "linux_armv6l"
distro = "bullseye"
enabled = false
"""


def compose_config(compose_file: Path, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`docker-compose config` of ``compose_file`` with exactly ``env`` as its .env (nothing inherited)."""
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return subprocess.run(
        [DOCKER_COMPOSE, "--project-directory", str(REPO), "-f", str(compose_file),
         "--env-file", str(env_file), "config"],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})


@pytest.fixture(scope="module")
def committed() -> tuple[dict, str]:
    text = COMPOSE.read_text()
    return yaml.safe_load(text), text


def test_the_committed_compose_file_is_what_the_targets_make():
    assert COMPOSE.read_text() == stack.render(enabled_targets()), \
        "docker-compose.yaml is stale: run `python -m wheelwright.operate.stack compose > docker-compose.yaml`"


def test_the_committed_file_keeps_every_rule_of_the_stack(committed):
    document, text = committed
    assert stack.check_compose(document, load_targets(), text) == []


def test_docker_compose_accepts_the_file_with_a_complete_env(tmp_path):
    result = compose_config(COMPOSE, TEST_ENV, tmp_path)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    # what compose will really run: merged environments, secrets filled in, nothing left unresolved
    assert "${" not in result.stdout.replace("$${HOSTNAME}", "")
    assert resolved["services"]["worker-index"]["environment"]["AIRFLOW__CELERY__BROKER_URL"] \
        == f"redis://:{TEST_ENV['WHEELWRIGHT_REDIS_PASSWORD']}@redis:6379/0"
    assert stack.check_compose(resolved, load_targets()) == []


@pytest.mark.parametrize("missing", sorted(stack.SECRETS))
def test_a_missing_secret_stops_the_stack_naming_it(tmp_path, missing):
    env = {k: v for k, v in TEST_ENV.items() if k != missing}
    result = compose_config(COMPOSE, env, tmp_path)
    assert result.returncode != 0, f"compose started without {missing}"
    assert f"set {missing} in .env" in result.stderr


def test_an_empty_secret_is_as_missing_as_an_absent_one(tmp_path):
    result = compose_config(COMPOSE, {**TEST_ENV, "WHEELWRIGHT_JWT_SECRET": ""}, tmp_path)
    assert result.returncode != 0 and "WHEELWRIGHT_JWT_SECRET" in result.stderr


def test_every_enabled_target_gets_a_worker_on_its_queue_a_pool_an_account_and_a_key(tmp_path):
    targets = parse_targets(THREE_TARGETS)
    text = stack.render(targets)
    compose_file = tmp_path / "docker-compose.yaml"
    compose_file.write_text(text)
    result = compose_config(compose_file, TEST_ENV, tmp_path)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    workers = {name: spec for name, spec in services.items() if "worker" in spec.get("command", [])}
    queues = {name: spec["command"][spec["command"].index("--queues") + 1] for name, spec in workers.items()}
    assert queues == {"worker-index": "default", "worker-cp311-x86-64": "cp311-x86_64",
                      "worker-cp311-armv7l": "cp311-armv7l", "worker-cp313-aarch64": "pi64"}
    assert [p[0] for p in stack.pools(targets)] == ["build_cp311-x86_64", "build_cp311-armv7l",
                                                   "build_cp313-aarch64"], "no pool for a retired target"
    for name in ("worker-cp311-x86-64", "worker-cp311-armv7l", "worker-cp313-aarch64"):
        connection = services[name]["environment"]["AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST"]
        assert f'"login": "{name}"' in connection, "each builder logs in with its own account"
        assert f'"key_file": "/run/secrets/{name}"' in connection
        assert TEST_ENV["WHEELWRIGHT_SFTP_HOST_KEY"] in connection and '"no_host_key_check": false' in connection
        assert [s["source"] for s in services[name]["secrets"]] == [name], "a builder sees only its own key"
    assert stack.check_compose(yaml.safe_load(text), targets, text) == []


def test_a_target_added_to_the_file_but_not_to_compose_is_reported():
    two = parse_targets(THREE_TARGETS)
    document = yaml.safe_load(stack.render([t for t in two if t.name != "cp311-armv7l"]))
    assert stack.check_compose(document, two) == ["no worker serves queue 'cp311-armv7l'"]


def test_builders_get_neither_database_credentials_nor_the_jwt_secret(committed):
    document, _ = committed
    for name, spec in document["services"].items():
        env = spec.get("environment", {})
        if name.startswith("worker-") and name != "worker-index":
            assert "WHEELWRIGHT_DSN" not in env and "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env
            assert "AIRFLOW__API_AUTH__JWT_SECRET" not in env, "a builder never holds the key that mints tokens"
            assert not any("PASSWORD" in k for k in env)
    index_side = {"airflow-init", "api-server", "scheduler", "dag-processor", "triggerer", "worker-index"}
    for name in index_side:
        env = document["services"][name]["environment"]
        assert env["WHEELWRIGHT_DSN"].startswith("postgresql://wheelwright:")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
        assert env["WHEELWRIGHT_DSN"].endswith("@postgres/wheelwright")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres/airflow")
    assert document["services"]["postgres"]["environment"] == {
        "POSTGRES_PASSWORD": stack.required("POSTGRES_PASSWORD")}, "the superuser password stays with postgres"
    holders = [n for n, s in document["services"].items() if "POSTGRES_PASSWORD" in s.get("environment", {})]
    assert sorted(holders) == ["airflow-init", "postgres"]


def test_only_the_edge_and_the_ui_publish_ports_on_configurable_addresses(committed, tmp_path):
    document, _ = committed
    published = {n: s["ports"] for n, s in document["services"].items() if s.get("ports")}
    assert published == {
        "api-server": ["${WHEELWRIGHT_UI_BIND:-127.0.0.1}:${WHEELWRIGHT_UI_PORT:-8080}:8080"],
        "varnish": ["${WHEELWRIGHT_EDGE_BIND:-0.0.0.0}:${WHEELWRIGHT_EDGE_PORT:-80}:80"]}
    result = compose_config(COMPOSE, {**TEST_ENV, "WHEELWRIGHT_UI_BIND": "10.0.0.5"}, tmp_path)
    ports = yaml.safe_load(result.stdout)["services"]["api-server"]["ports"]
    assert str(ports[0]).startswith("10.0.0.5:") or ports[0].get("host_ip") == "10.0.0.5"


def test_the_broker_needs_its_password_and_everybody_uses_the_same_one(committed):
    document, _ = committed
    redis = document["services"]["redis"]
    assert "requirepass" in " ".join(redis["command"]) and "REDIS_PASSWORD" in redis["environment"]
    urls = {s["environment"]["AIRFLOW__CELERY__BROKER_URL"] for s in document["services"].values()
            if "AIRFLOW__CELERY__BROKER_URL" in s.get("environment", {})}
    assert urls == {f"redis://:{stack.required('WHEELWRIGHT_REDIS_PASSWORD')}@redis:6379/0"}


def test_services_wait_for_what_they_need_to_be_ready(committed):
    services = committed[0]["services"]
    assert services["airflow-init"]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                                      "redis": {"condition": "service_healthy"}}
    for name in ("api-server", "scheduler", "dag-processor", "triggerer", "worker-index",
                 "worker-cp311-x86-64"):
        assert services[name]["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}
        assert "healthcheck" in services[name]
    assert services["worker-index"]["depends_on"]["sftp"] == {"condition": "service_healthy"}
    assert services["nginx"]["depends_on"] == {"airflow-init": {"condition": "service_completed_successfully"}}, \
        "airflow-init mounts the published tree first, so the publisher owns it"
    assert services["varnish"]["depends_on"] == {"nginx": {"condition": "service_healthy"},
                                                 "worker-index": {"condition": "service_started"}}, \
        "the edge's VCL names the publisher, resolved when it loads"


def test_volumes_hold_the_catalog_the_tree_the_home_and_the_logs(committed):
    services = committed[0]["services"]
    assert "catalog:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert f"www:{stack.WWW}" in services["worker-index"]["volumes"]
    assert f"www:{stack.WWW}:ro" in services["nginx"]["volumes"]
    assert "origin-logs:/var/log/nginx" in services["nginx"]["volumes"]
    assert "origin-logs:/var/log/nginx:ro" in services["worker-index"]["volumes"]
    assert {f"www:{stack.WWW}", f"incoming:{stack.INCOMING}", f"logs:{stack.LOGS}"} \
        <= set(services["airflow-init"]["volumes"]), "the image's owners reach the shared volumes first"
    assert f"home-index:{stack.HOME}" in services["scheduler"]["volumes"]
    assert f"logs:{stack.LOGS}" in services["worker-cp311-x86-64"]["volumes"]
    # the index host's worker and the SFTP endpoint see one incoming folder
    assert f"incoming:{stack.INCOMING}" in services["worker-index"]["volumes"]
    assert f"incoming:{stack.SFTP_INCOMING}" in services["sftp"]["volumes"]
    assert services["varnish"]["volumes"] == ["./varnish/wheelwright.vcl:/etc/wheelwright/wheelwright.vcl:ro"]


def test_the_edge_runs_the_repositorys_vcl_with_its_deploy_lines_set_for_the_stack(committed, tmp_path):
    vcl = REPO / stack.VCL
    command = committed[0]["services"]["varnish"]["command"][2]
    sed = command.split(" > ")[0].replace("/etc/wheelwright/wheelwright.vcl", str(vcl))
    deployed = subprocess.run(["sh", "-c", sed], capture_output=True, text=True, check=True).stdout
    assert re.search(r'\.host = "nginx";\s*# DEPLOY', deployed), "the origin is the nginx service"
    assert re.search(r'\.port = "80";\s*# DEPLOY', deployed)
    assert re.search(r'"worker-index";\s*# DEPLOY: who may purge', deployed), "the publisher may purge"
    assert deployed.count("\n") == vcl.read_text().count("\n"), "nothing else changes"
    worker_env = committed[0]["services"]["worker-index"]["environment"]
    assert worker_env["WHEELWRIGHT_CDN"] == "varnish:http://varnish:80", "the publisher purges this edge"


def test_a_builder_given_the_index_hosts_secrets_is_reported():
    targets = enabled_targets()
    document = yaml.safe_load(stack.render(targets))
    builder = stack.builder_account(targets[0])
    document["services"][builder]["environment"]["WHEELWRIGHT_DSN"] = "postgresql://wheelwright:x@postgres/wheelwright"
    assert stack.check_compose(document, targets) == [
        f"builder {builder} is given the index host's secrets (WHEELWRIGHT_DSN)"]


def test_a_secret_with_a_default_is_reported():
    text = stack.render(enabled_targets()).replace(
        "${WHEELWRIGHT_JWT_SECRET:?set WHEELWRIGHT_JWT_SECRET in .env (see .env.example)}",
        "${WHEELWRIGHT_JWT_SECRET:-changeme}")
    problems = stack.check_compose(yaml.safe_load(text), enabled_targets(), text)
    assert "secret ${WHEELWRIGHT_JWT_SECRET} is not required (`:?`) but has a default" in problems


def test_the_env_example_names_every_secret_without_a_value():
    example = (REPO / ".env.example").read_text()
    for secret in stack.SECRETS:
        assert re.search(rf"^{secret}=$", example, re.M), f"{secret} missing (or given a value) in .env.example"


def test_the_image_installs_the_package_once_and_runs_unprivileged():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim-bookworm" in dockerfile
    assert "build-essential" in dockerfile and "openssh-server" in dockerfile
    assert "RUN pip install -r requirements.txt" in dockerfile and "RUN pip install --no-deps ." in dockerfile
    assert re.findall(r"^USER (\S+)", dockerfile, re.M) == ["wheelwright"]
    for folder in (stack.HOME, stack.WWW, stack.LOGS, stack.INCOMING, stack.SFTP_ROOT, stack.SFTP_INCOMING):
        assert folder in dockerfile, f"the image does not prepare {folder}"
    compose = COMPOSE.read_text()
    assert "pip install" not in compose, "no container installs anything when it starts"


# --- the SFTP endpoint ---------------------------------------------------------------------------

def test_the_sftp_endpoint_takes_keys_only_from_builders_and_confines_them(tmp_path):
    host_key = tmp_path / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    config = stack.sshd_config(str(host_key))
    lines = {line.split()[0]: line.split(None, 1)[1] for line in config.splitlines()
             if line and not line.startswith("#")}
    assert lines["PasswordAuthentication"] == "no" and lines["PermitRootLogin"] == "no"
    assert lines["AllowGroups"] == "wheelwright-builders"
    assert lines["ChrootDirectory"] == stack.SFTP_ROOT
    assert lines["ForceCommand"] == ("internal-sftp -u 0007 -d /incoming/%u -p " + ",".join(stack.SFTP_REQUESTS))
    assert not {"symlink", "hardlink", "setstat", "fsetstat", "lsetstat"} & set(stack.SFTP_REQUESTS), \
        "builders make no links and set no modes"
    assert lines["DisableForwarding"] == "yes"
    (tmp_path / "sshd_config").write_text(config)
    try:  # sshd -t wants its privilege separation folder, which Debian makes when the service starts
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    except PermissionError:
        pytest.skip("sshd -t needs /run/sshd, which only root can make")
    check = subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(tmp_path / "sshd_config")],
                           capture_output=True, text=True)
    assert check.returncode == 0, f"OpenSSH's sshd refuses the configuration: {check.stderr}"


def test_builder_keys_are_one_valid_account_and_one_key_each(tmp_path):
    (tmp_path / "worker-cp311-x86-64.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA pi@kitchen\n")
    (tmp_path / "pi-garage.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAB\n")
    (tmp_path / "notes.txt").write_text("not a key")
    assert stack.builder_keys(tmp_path) == {
        "pi-garage": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAB",
        "worker-cp311-x86-64": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA pi@kitchen"}
    (tmp_path / "root;rm.pub").write_text("ssh-ed25519 AAAA\n")
    with pytest.raises(ConfigError, match="not an account name"):
        stack.builder_keys(tmp_path)
    (tmp_path / "root;rm.pub").unlink()
    (tmp_path / "two.pub").write_text("ssh-ed25519 AAAA\nssh-ed25519 BBBB\n")
    with pytest.raises(ConfigError, match="one public key line"):
        stack.builder_keys(tmp_path)


def test_a_builder_whose_key_is_removed_is_locked_out_at_the_next_start(tmp_path):
    keys = tmp_path / "authorized"
    stack.install_keys({"pi-kitchen": "ssh-ed25519 AAAA", "pi-garage": "ssh-ed25519 BBBB"}, keys)
    stack.install_keys({"pi-garage": "ssh-ed25519 BBBB"}, keys)
    assert {p.name: p.read_text() for p in keys.iterdir()} == {"pi-garage": "ssh-ed25519 BBBB\n"}


def test_keys_are_made_once_per_builder_and_the_host_key_is_printed(tmp_path):
    targets = parse_targets(THREE_TARGETS)
    host_line = stack.make_keys(tmp_path, targets)
    assert host_line.startswith("ssh-ed25519 ")
    assert sorted(p.name for p in (tmp_path / "builders").iterdir()) == [
        "worker-cp311-armv7l", "worker-cp311-x86-64", "worker-cp313-aarch64"]
    assert all(p.stat().st_mode & 0o077 == 0 for p in (tmp_path / "builders").iterdir())
    assert set(stack.builder_keys(tmp_path / "builder-keys")) == {
        "worker-cp311-armv7l", "worker-cp311-x86-64", "worker-cp313-aarch64"}
    assert stack.make_keys(tmp_path, targets) == host_line, "existing keys are kept"


def test_a_target_name_that_makes_no_account_is_refused():
    target = parse_targets('[[target]]\nname = "cp311-' + "x" * 40 + '"\nabi = "cp311"\n'
                           'platform = "linux_x86_64"\ndistro = "bookworm"\n')[0]
    with pytest.raises(ConfigError, match="shorter name"):
        stack.builder_account(target)


# --- airflow-init's databases --------------------------------------------------------------------

def test_init_makes_two_private_databases_with_their_own_roles(pg_server):
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    suffix = str(abs(hash(pg_server)) % 10_000)
    catalog, metadata = f"compose_catalog_{suffix}", f"compose_airflow_{suffix}"
    databases = {catalog: (f"ww_{suffix}", "first"), metadata: (f"af_{suffix}", "second")}
    try:
        stack.prepare_databases(pg_server, databases)
        stack.prepare_databases(pg_server, {**databases, catalog: (f"ww_{suffix}", "rotated")})  # again
        with psycopg.connect(pg_server) as admin:
            owners = dict(admin.execute(
                "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ANY(%s)",
                ([catalog, metadata],)).fetchall())
            public = admin.execute(
                "SELECT has_database_privilege('public', %s, 'CONNECT')", (catalog,)).fetchone()[0]
            other = admin.execute(
                "SELECT has_database_privilege(%s, %s, 'CONNECT')", (f"af_{suffix}", catalog)).fetchone()[0]
            powers = admin.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
                                   "WHERE rolname = %s", (f"ww_{suffix}",)).fetchone()
        assert owners == {catalog: f"ww_{suffix}", metadata: f"af_{suffix}"}
        assert public is False and other is False, "only its own role may connect to a database"
        assert powers == (False, False, False)
        params = conninfo_to_dict(pg_server)
        with psycopg.connect(make_conninfo(**{**params, "dbname": catalog, "user": f"ww_{suffix}",
                                              "password": "rotated"})) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == f"ww_{suffix}"
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            for database, (role, _) in databases.items():
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                admin.execute(f'DROP ROLE IF EXISTS "{role}"')
