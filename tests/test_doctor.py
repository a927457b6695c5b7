"""`wheelwright doctor`: this machine, after `make setup`, can play every role; each thing a machine can
lack is said, with the command that fixes it, when it is really missing.

The checks run for real: the CLI on this machine, and each failure made real where it can be (a PATH
without arch-test, a binfmt_misc folder without the F flag, a real Redis refusing a password, a real
PostgreSQL database without the schema, a real SFTP server with another host key, nginx and varnishd
refusing a broken configuration). `wheelwright run` and `wheelwright worker` refuse to start on a
failing machine (tests/test_doctor_wiring.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.airflow_processes import create_database, drop_database, free_port, start_redis
from support.build_world import open_folder
from support.catalog import REPO
from wheelwright.builds import images
from wheelwright.builds.targets import load_targets
from wheelwright.config import Settings
from wheelwright.operate import doctor

EVERY_ROLE = ["catalog", "published-tree", "broker", "nginx", "catalog-credentials", "sandbox", "cgroups",
              "build-folder", "interpreter:cp311", "emulation:armhf", "mmdebstrap", "image:cp311-armv7l",
              "emulation:arm64", "image:cp313-aarch64", "index-host-sftp", "varnish"]
PI = next(t for t in load_targets() if t.name == "cp311-armv7l")


def wheelwright(*args, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    """The CLI as an operator runs it, with exactly the WHEELWRIGHT_* and AIRFLOW* settings of ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WHEELWRIGHT", "AIRFLOW"))}
    return subprocess.run([str(Path(sys.executable).parent / "wheelwright"), *args], env={**base, **env},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def home():
    """WHEELWRIGHT_HOME where the build user (nobody, when the tests run as root) reaches the builds."""
    path = open_folder("wheelwright-doctor-home-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def machine_env(home, catalog_dsn, tmp_path) -> dict:
    return {"WHEELWRIGHT_HOME": str(home), "WHEELWRIGHT_DSN": catalog_dsn,
            "WHEELWRIGHT_OUTPUT": str(tmp_path / "www"), "WHEELWRIGHT_IMAGES": str(tmp_path / "images")}


def machine(env: dict, **changes) -> doctor.Machine:
    return doctor.Machine(Settings.from_env(env), env, **changes)


def by_name(findings) -> dict[str, doctor.Finding]:
    return {f.name: f for f in findings}


# --- this machine ------------------------------------------------------------------------------------

def test_this_machine_after_make_setup_plays_every_role(machine_env):
    result = wheelwright("doctor", env=machine_env)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines and all(line.startswith("ok  ") for line in lines), result.stdout
    assert f"all {len(EVERY_ROLE)} checks hold" in result.stderr

    found = json.loads(wheelwright("doctor", "--json", env=machine_env).stdout)
    assert [f["name"] for f in found] == EVERY_ROLE, "every role of `make run`, each check once"
    assert {f["status"] for f in found} == {"ok"}, [f for f in found if f["status"] != "ok"]
    assert {f["role"] for f in found} == set(doctor.ROLES)
    facts = {f["name"]: f["detail"] for f in found}
    assert "namespaces" in facts["sandbox"] and "arch-test armhf: ok" in facts["emulation:armhf"]
    assert "wheelwright image build cp311-armv7l" in facts["image:cp311-armv7l"], "not built here: say how"


def test_one_role_and_one_target_can_be_asked_for(machine_env):
    found = json.loads(wheelwright("doctor", "--json", "--target", "cp311-armv7l", env=machine_env).stdout)
    assert [f["name"] for f in found] == ["sandbox", "cgroups", "build-folder", "emulation:armhf", "mmdebstrap",
                                          "image:cp311-armv7l", "index-host-sftp", "catalog-credentials"]
    found = json.loads(wheelwright("doctor", "--json", "--role", "edge", env=machine_env).stdout)
    assert [f["name"] for f in found] == ["varnish", "nginx"]


def test_usage_and_configuration_errors_exit_2(machine_env):
    assert wheelwright("doctor", "--target", "cp99-nowhere", env=machine_env).returncode == 2
    assert wheelwright("doctor", "--role", "edge", "--target", "cp311-armv7l", env=machine_env).returncode == 2
    assert wheelwright("doctor", "--role", "gardener", env=machine_env).returncode == 2


def test_a_machine_reaching_a_remote_index_host_without_a_catalog_is_a_builder():
    assert doctor.implied_roles({"AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST": "{}"}) == ["builder"]
    assert doctor.implied_roles({"AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST": "{}", "WHEELWRIGHT_DSN": "x"}) == \
        list(doctor.ROLES)
    assert doctor.implied_roles({}) == list(doctor.ROLES), "one machine (make run) plays them all"


# --- index host ---------------------------------------------------------------------------------------

def test_a_catalog_without_the_schema_fails_with_db_init_as_the_fix(machine_env, pg_server):
    name, bare = create_database(pg_server, "doctor_bare")
    try:
        result = wheelwright("doctor", "--role", "index-host", env={**machine_env, "WHEELWRIGHT_DSN": bare})
        assert result.returncode == 1
        line = next(line for line in result.stdout.splitlines() if line.startswith("FAIL catalog"))
        assert "schema is at version 0, this code needs" in line and line.endswith("— fix: wheelwright db init")
        launching = doctor.check_catalog(machine({**machine_env, "WHEELWRIGHT_DSN": bare}, launching=True))
        assert launching.status == "ok" and "`wheelwright run` applies" in launching.detail
    finally:
        drop_database(pg_server, name)


def test_a_new_embedded_catalog_without_its_schema_is_a_warning(home):
    home = home / "new"   # not under pytest's tmp: the server runs as its own user, who must reach it
    finding = doctor.check_catalog(machine({"WHEELWRIGHT_HOME": str(home)}))
    try:
        assert finding.status == "warn" and "a new catalog without its schema" in finding.detail
        assert finding.fix.startswith("wheelwright db init")
    finally:
        from wheelwright.catalog import db
        db.stop_embedded(Settings.from_env({"WHEELWRIGHT_HOME": str(home)}))


@pytest.mark.timeout(120)  # a doctor that waited on a dead catalog would hang here
def test_a_catalog_that_does_not_answer_fails(machine_env):
    dead = f"postgresql://nobody:nothing@127.0.0.1:{free_port()}/nothing"
    finding = doctor.check_catalog(machine({**machine_env, "WHEELWRIGHT_DSN": dead}))
    assert finding.status == "FAIL" and "does not answer" in finding.detail and "WHEELWRIGHT_DSN" in finding.fix
    assert "nothing@" not in finding.line(), "no password is ever printed"


def test_a_published_tree_that_takes_no_file_fails(machine_env, tmp_path):
    (tmp_path / "a-file").write_text("")
    finding = doctor.check_published_tree(machine({**machine_env, "WHEELWRIGHT_OUTPUT": str(tmp_path / "a-file" / "www")}))
    assert finding.status == "FAIL" and "cannot be written" in finding.detail and "install -d" in finding.fix
    assert doctor.check_published_tree(machine(machine_env)).status == "ok"
    assert list(Path(machine_env["WHEELWRIGHT_OUTPUT"]).iterdir()) == [], "the probe leaves nothing behind"


def test_the_broker_must_answer_with_its_password(machine_env, tmp_path):
    url, redis = start_redis(tmp_path, password="the-right-one")
    try:
        wrong = url.replace("the-right-one", "a-wrong-one")
        result = wheelwright("doctor", "--role", "index-host", env={**machine_env, "AIRFLOW__CELERY__BROKER_URL": wrong})
        assert result.returncode == 1
        line = next(line for line in result.stdout.splitlines() if line.startswith("FAIL broker"))
        assert "refused the password" in line and "fix: put the broker's password in AIRFLOW__CELERY__BROKER_URL" in line
        assert "a-wrong-one" not in result.stdout + result.stderr, "no password is ever printed"

        none = url.replace(":the-right-one@", "")
        finding = doctor.check_broker(machine({**machine_env, "AIRFLOW__CELERY__BROKER_URL": none}))
        assert finding.status == "FAIL" and "asks for a password and the URL gives none" in finding.detail
        finding = doctor.check_broker(machine({**machine_env, "AIRFLOW__CELERY__BROKER_URL": url}))
        assert (finding.status, finding.detail) == ("ok", "answers with its password")
    finally:
        redis.popen.terminate()
        redis.popen.wait(timeout=10)
    finding = doctor.check_broker(machine({**machine_env, "AIRFLOW__CELERY__BROKER_URL": url}))
    assert finding.status == "FAIL" and "does not answer" in finding.detail


def test_a_broker_without_a_password_is_a_warning(machine_env, tmp_path):
    url, redis = start_redis(tmp_path)
    try:
        finding = doctor.check_broker(machine({**machine_env, "AIRFLOW__CELERY__BROKER_URL": url}))
    finally:
        redis.popen.terminate()
        redis.popen.wait(timeout=10)
    assert finding.status == "warn" and "without a password" in finding.detail and "requirepass" in finding.fix


def test_airflow_metadata_database_must_be_migrated(machine_env, pg_server, airflow_env):
    from wheelwright.operate.airflow_setup import sqlalchemy_url
    name, bare = create_database(pg_server, "doctor_airflow")
    try:
        env = {**machine_env, "WHEELWRIGHT_AIRFLOW_DB": sqlalchemy_url(bare)}
        finding = doctor.check_airflow_db(machine(env))
        assert finding.status == "FAIL" and finding.fix == "airflow db migrate"
        assert doctor.check_airflow_db(machine(env, launching=True)).status == "ok", "wheelwright run migrates it"
    finally:
        drop_database(pg_server, name)
    migrated = {**machine_env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]}
    finding = doctor.check_airflow_db(machine(migrated))
    assert finding.status == "ok" and "migrated" in finding.detail
    assert doctor.plan(machine(migrated), ["index-host"], [])[3][1] == "airflow-db", "checked when configured"
    assert "airflow-db" not in [n for _, n, _ in doctor.plan(machine(machine_env), ["index-host"], [])]


def test_catalog_credentials_in_an_airflow_connection_are_a_warning(machine_env, airflow_env):
    finding = doctor.check_catalog_credentials(machine(machine_env))
    assert finding.status == "ok"
    env = {**machine_env, "AIRFLOW_CONN_WHEELWRIGHT_DB": "postgresql://wheelwright:secret@db/wheelwright"}
    finding = doctor.check_catalog_credentials(machine(env))
    assert finding.status == "warn" and "AIRFLOW_CONN_WHEELWRIGHT_DB" in finding.detail
    assert "secret" not in finding.line()
    builder = doctor.check_catalog_credentials(machine(machine_env), roles=("builder",))
    assert builder.status == "warn" and "this builder holds database credentials (WHEELWRIGHT_DSN)" in builder.detail
    beside = {**machine_env, "AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST": json.dumps({"conn_type": "ssh", "host": "127.0.0.1"})}
    assert doctor.check_catalog_credentials(machine(beside), roles=("builder",)).status == "ok", \
        "make run's builder shares the index host's machine and environment"

    airflow = [str(Path(sys.executable).parent / "airflow"), "connections"]
    metadata = {**machine_env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]}
    subprocess.run([*airflow, "add", "wheelwright_db", "--conn-uri", "postgresql://wheelwright:secret@db/wheelwright"],
                   env=airflow_env, check=True, capture_output=True, timeout=120)
    try:
        finding = doctor.check_catalog_credentials(machine(metadata))
        assert finding.status == "warn" and "stored in Airflow's metadata database" in finding.detail
        assert "airflow connections delete wheelwright_db" in finding.fix
    finally:
        subprocess.run([*airflow, "delete", "wheelwright_db"], env=airflow_env, check=True, capture_output=True,
                       timeout=120)
    assert doctor.check_catalog_credentials(machine(metadata)).status == "ok"


def test_nginx_and_varnish_refusing_the_shipped_configuration_fail_with_their_words(machine_env, tmp_path):
    repo = tmp_path / "repo"
    for folder in ("nginx", "varnish"):
        shutil.copytree(REPO / folder, repo / folder)
    assert doctor.check_nginx(machine(machine_env, repo=repo)).status == "ok"
    assert doctor.check_varnish(machine(machine_env, repo=repo)).status == "ok"

    conf = repo / "nginx" / "wheelwright.conf"
    conf.write_text(conf.read_text().replace("server {", "server {\n    no_such_directive on;", 1))
    finding = doctor.check_nginx(machine(machine_env, repo=repo))
    assert finding.status == "FAIL" and 'unknown directive "no_such_directive"' in finding.detail
    conf.write_text("\n".join(line for line in conf.read_text().splitlines() if "# DEPLOY: WHEELWRIGHT_OUTPUT" not in line))
    finding = doctor.check_nginx(machine(machine_env, repo=repo))
    assert finding.status == "FAIL" and "exactly one root line" in finding.detail

    vcl = repo / "varnish" / "wheelwright.vcl"
    vcl.write_text(vcl.read_text().replace("import xkey;", "import xkey;\nimport no_such_vmod;", 1))
    finding = doctor.check_varnish(machine(machine_env, repo=repo))
    assert finding.status == "FAIL" and "no_such_vmod" in finding.detail
    assert finding.fix == "apt-get install varnish-modules"


# --- builder -----------------------------------------------------------------------------------------

def test_without_arch_test_on_the_path_no_foreign_image_can_be_built(machine_env, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mmdebstrap").symlink_to(shutil.which("mmdebstrap", path=doctor.SYSTEM_PATH))
    m = machine(machine_env, path=str(bin_dir))
    finding = doctor.check_emulation(m, "armhf")
    assert finding.status == "FAIL" and "arch-test is not installed" in finding.detail
    assert finding.fix == "apt-get install arch-test"
    image = doctor.check_image(m, PI)
    assert image.status == "FAIL" and "not built, and it cannot be: arch-test is not installed" in image.detail
    assert doctor.check_mmdebstrap(m).status == "ok"
    assert doctor.check_mmdebstrap(machine(machine_env, path=str(tmp_path / "empty"))).status == "FAIL"


QEMU_ARM = "enabled\ninterpreter {interpreter}\nflags: {flags}\noffset 0\nmagic 7f454c46\nmask ffffffff\n"


def test_binfmt_misc_without_the_f_flag_or_unmounted_fails_with_the_command_that_fixes_it(machine_env, tmp_path):
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    finding = doctor.check_emulation(machine(machine_env, binfmt=binfmt), "armhf")
    assert finding.status == "FAIL" and "not mounted" in finding.detail
    assert finding.fix.startswith(f"mount -t binfmt_misc binfmt_misc {binfmt}")
    (binfmt / "register").write_text("")
    interpreter = tmp_path / "qemu-arm-static"
    interpreter.write_text("")
    (binfmt / "qemu-arm").write_text(QEMU_ARM.format(interpreter=interpreter, flags="P"))
    finding = doctor.check_emulation(machine(machine_env, binfmt=binfmt), "armhf")
    assert finding.status == "FAIL" and "lacks the F (fix binary) flag" in finding.detail
    assert "update-binfmts --enable qemu-arm" in finding.fix
    (binfmt / "qemu-arm").write_text(QEMU_ARM.format(interpreter=interpreter, flags="PF"))
    assert doctor.check_emulation(machine(machine_env, binfmt=binfmt), "armhf").status == "ok"


def fake_built_image(store: Path, target, *, days_old: float, size: int = 300 * 2**20) -> Path:
    """An image entry as images.py leaves a finished build (root/ and image.json), without its minutes."""
    recipe = images.recipe_for(target)
    folder = store / recipe.folder_name
    (folder / "root").mkdir(parents=True)
    (folder / "image.json").write_text(json.dumps({
        "recipe": {"distro": recipe.distro, "arch": recipe.arch, "packages": list(recipe.packages)},
        "built_at": time.time() - days_old * 86400, "size": size, "seconds": 480.0, "python": "3.11"}))
    return folder


def test_an_image_is_built_with_its_size_and_age_or_can_be_built_or_cannot(machine_env, tmp_path):
    store = Path(machine_env["WHEELWRIGHT_IMAGES"])
    fake_built_image(store, PI, days_old=2.5)
    finding = doctor.check_image(machine(machine_env), PI)
    assert (finding.status, finding.detail) == ("ok", "built, 300 MiB, 2.5 days old")

    shutil.rmtree(store)
    fake_built_image(store, PI, days_old=45)
    finding = doctor.check_image(machine(machine_env), PI)
    assert finding.status == "warn" and "45.0 days old" in finding.detail and finding.fix == "wheelwright image update"

    shutil.rmtree(store)
    dead_mirror = {**machine_env, "WHEELWRIGHT_DEBIAN_MIRROR": f"http://127.0.0.1:{free_port()}/debian"}
    finding = doctor.check_image(machine(dead_mirror), PI)
    assert finding.status == "FAIL" and "the Debian mirror" in finding.detail and "does not answer" in finding.detail
    assert "WHEELWRIGHT_DEBIAN_MIRROR" in finding.fix


def test_an_image_build_estimate_comes_from_the_last_build_of_the_same_system(tmp_path):
    recipe = images.recipe_for(PI)
    assert doctor.image_estimate_minutes(recipe, tmp_path) == doctor.TYPICAL_IMAGE_MINUTES["emulated"]
    fake_built_image(tmp_path, PI, days_old=1)          # 480 s
    assert doctor.image_estimate_minutes(recipe, tmp_path) == 8


def test_a_build_folder_the_build_user_cannot_reach_fails(machine_env, tmp_path):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    finding = doctor.check_build_folder(machine({**machine_env, "WHEELWRIGHT_HOME": str(closed / "home")}))
    if os.geteuid() == 0:   # builds then run as nobody, who must reach the folder
        assert finding.status == "FAIL" and "the build user nobody cannot reach it" in finding.detail
        assert "chmod o+x" in finding.fix
    else:
        assert finding.status == "ok" and "reachable by" not in finding.detail
    (tmp_path / "a-file").write_text("")
    finding = doctor.check_build_folder(machine({**machine_env, "WHEELWRIGHT_HOME": str(tmp_path / "a-file")}))
    assert finding.status == "FAIL" and "cannot be made" in finding.detail


def test_building_without_a_sandbox_is_a_warning(machine_env):
    finding = doctor.check_sandbox(machine({**machine_env, "WHEELWRIGHT_UNSAFE_NO_SANDBOX": "1"}))
    assert finding.status == "warn" and "WITHOUT a sandbox" in finding.detail


def test_a_target_on_the_workers_own_system_needs_its_interpreter(machine_env):
    assert doctor.check_interpreter(machine(machine_env), "cp311").status == "ok"
    finding = doctor.check_interpreter(machine(machine_env), "cp38")
    assert finding.status == "FAIL" and finding.fix == "apt-get install python3.8 python3.8-dev"


# --- the index host's SFTP endpoint, as a builder reaches it ---------------------------------------------

@pytest.fixture
def sftp(tmp_path):
    from wheelwright.operate.sftp_server import SFTPServer
    (tmp_path / "index-host" / "incoming").mkdir(parents=True)
    server = SFTPServer(tmp_path / "index-host", tmp_path / "keys", accounts=("builder", "stranger")).start()
    yield server
    server.stop()


def connection(server, *, host_key: str | None = None, key_file: Path | None = None, pinned: bool = True) -> str:
    extra = {"key_file": str(key_file or server.client_key_file), "look_for_keys": False}
    if pinned:
        extra.update(host_key=host_key or server.host_key_line, no_host_key_check=False)
    else:
        extra.update(no_host_key_check=True)
    return json.dumps({"conn_type": "ssh", "host": "127.0.0.1", "port": server.port, "login": "builder",
                       "extra": extra})


def builder_env(machine_env, tmp_path, conn: str) -> dict:
    env = {k: v for k, v in machine_env.items() if k != "WHEELWRIGHT_DSN"}
    return {**env, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST": conn,
            "AIRFLOW_VAR_WHEELWRIGHT_REMOTE_INCOMING": "/incoming"}


def sftp_line(result) -> str:
    return next(line for line in result.stdout.splitlines() if "SFTP endpoint" in line)


def test_a_builder_reaches_the_index_host_only_with_its_pinned_key(machine_env, tmp_path, sftp):
    args = ("doctor", "--target", "cp311-x86_64")
    result = wheelwright(*args, env=builder_env(machine_env, tmp_path, connection(sftp)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert sftp_line(result) == (f"ok  index host's SFTP endpoint (builder@127.0.0.1:{sftp.port}): answers "
                                 "with the pinned host key; /incoming/builder is there")
    assert all(line.startswith(("ok  ", "warn ")) for line in result.stdout.splitlines()), \
        "Airflow's own logging stays out of the doctor's output"

    from wheelwright.operate.sftp_server import SFTPServer
    other = SFTPServer(tmp_path / "other", tmp_path / "other-keys")
    result = wheelwright(*args, env=builder_env(machine_env, tmp_path, connection(sftp, host_key=other.host_key_line)))
    assert result.returncode == 1 and sftp_line(result).startswith("FAIL")
    assert "another host key than the pinned one" in sftp_line(result) and "ssh-keyscan" in sftp_line(result)

    stranger = sftp.client_key_files["stranger"]
    result = wheelwright(*args, env=builder_env(machine_env, tmp_path, connection(sftp, key_file=stranger)))
    assert result.returncode == 1 and "refused this builder's key" in sftp_line(result)

    result = wheelwright(*args, env=builder_env(machine_env, tmp_path, connection(sftp, pinned=False)))
    assert result.returncode == 1 and "host key is not pinned" in sftp_line(result)
    assert sftp.logins == ["builder"], "only the right key with the pinned host logged in"


def test_without_the_connection_a_builder_only_machine_is_warned(machine_env):
    finding = doctor.check_index_host_sftp(machine(machine_env), roles=("builder",))
    assert finding.status == "warn" and "AIRFLOW_CONN_WHEELWRIGHT_INDEX_HOST" in finding.detail
    assert doctor.check_index_host_sftp(machine(machine_env)).status == "ok", "make run is its own index host"


def test_a_broken_check_is_a_failed_check_never_a_crash(machine_env, monkeypatch):
    def broken(m):
        raise RuntimeError("surprise")
    monkeypatch.setattr(doctor, "check_cgroups", broken)
    [finding] = [f for f in doctor.examine(machine(machine_env), ["builder"], []) if f.name == "cgroups"]
    assert finding.status == "FAIL" and "RuntimeError: surprise" in finding.detail


def test_findings_read_as_the_issue_asks():
    assert doctor.Finding("x", "arch-test", "FAIL", "missing", "apt-get install arch-test").line() == \
        "FAIL arch-test: missing — fix: apt-get install arch-test"
    assert doctor.Finding("x", "catalog", "ok", "answers").line() == "ok  catalog: answers"
    assert doctor.exit_code([doctor.Finding("x", "a", "warn", "w")]) == 0
    assert doctor.exit_code([doctor.Finding("x", "a", "FAIL", "f")]) == 1
