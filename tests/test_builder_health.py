"""Builder health: a real sshd, the ssh provider with the host key pinned, and holds the claim respects.

The builder is this machine, reached through an OpenSSH server the test starts on loopback (its own
host key, one authorised client key). The check goes through the product's path: the ssh provider's
``SSHHook`` built from an Airflow Connection in the environment (host key pinned, no key look-up), the
fixed health command, the strict parse, the decision, the catalog row the build queue's claim reads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from support.airflow_processes import free_port
from support.waiting import wait_until
from support.build_world import add_release, use_targets
from wheelwright.builds.queue import claim_wave
from wheelwright.operate import builder_health as bh
from wheelwright.operate.builder_health import BadHealth, Health, Limits, decide, parse_health

TARGET = "cp39-armv7l"
GOOD = """wheelwright-health 1
temp 54321
load 1.50 0.75 0.20
mem_total 4000000
mem_available 2000000
disk 61000000 20000000
images 1764740000.5
end
"""


def test_the_health_answer_is_read_into_numbers():
    h = parse_health(GOOD)
    assert h.temp_c == pytest.approx(54.321) and h.load == (1.5, 0.75, 0.2)
    assert (h.mem_total, h.mem_available) == (4_096_000_000, 2_048_000_000)
    assert (h.disk_total, h.disk_free) == (62_464_000_000, 20_480_000_000)
    assert h.images_newest == datetime.fromtimestamp(1764740000.5, timezone.utc)


def test_a_machine_without_a_thermal_zone_or_images_is_fine():
    h = parse_health(GOOD.replace("temp 54321", "temp none").replace("images 1764740000.5", "images none"))
    assert h.temp_c is None and h.images_newest is None


@pytest.mark.parametrize("change, why", [
    (lambda t: t.replace("temp 54321", "temp hot"), "not a number"),
    (lambda t: t.replace("temp 54321", "temp 9999999"), "out of range"),
    (lambda t: t.replace("load 1.50 0.75 0.20", "load 1.50"), "three values"),
    (lambda t: t.replace("end\n", "rm -rf /\nend\n"), "unexpected line"),
    (lambda t: t.replace("mem_total 4000000\n", ""), "missing mem_total"),
    (lambda t: t + "more\n", "health header"),
    (lambda t: t.replace("disk 61000000 20000000", "disk 61000000 20000000\ndisk 1 1"), "twice"),
    (lambda t: "x" * 70000, "longer"),
])
def test_an_answer_that_is_not_the_health_commands_is_refused(change, why):
    with pytest.raises(BadHealth, match=why):
        parse_health(change(GOOD))


def health(temp=50.0, free=10 * 1024**3) -> Health:
    return Health(temp, (1, 1, 1), 1, 1, 100 * 1024**3, free, None)


def test_a_hot_builder_rests_until_it_has_cooled_below_the_resume_temperature():
    limits = Limits(max_temp_c=80, resume_temp_c=70)
    assert "too hot" in decide(health(81), limits)
    assert "cooling" in decide(health(75), limits, held_for_heat=True), "no flapping at the limit"
    assert decide(health(75), limits) is None
    assert decide(health(69), limits, held_for_heat=True) is None


def test_a_builder_out_of_disk_or_unreachable_rests():
    assert "out of disk" in decide(health(free=1024**3), Limits(min_free_bytes=2 * 1024**3))
    assert decide(None, Limits(), error="timed out").startswith("unreachable: timed out")


# --- against a real sshd -------------------------------------------------------------------------

@pytest.fixture
def sshd(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    (keys / "authorized_keys").write_text((keys / "client.pub").read_text())
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {keys / 'host'}
AuthorizedKeysFile {keys / 'authorized_keys'}
PidFile {tmp_path / 'sshd.pid'}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers {os.environ.get('USER', 'root') if os.geteuid() else 'root'}
""")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege separation folder
    log = tmp_path / "sshd.log"
    process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=open(log, "wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)

    def listening():
        import socket
        if process.poll() is not None:
            raise RuntimeError(log.read_text())
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_until(listening, 20, "sshd to listen", interval=0.1)
    host_key = " ".join((keys / "host.pub").read_text().split()[:2])
    try:
        yield {"port": port, "host_key": host_key, "client_key": keys / "client",
               "login": "root" if os.geteuid() == 0 else os.environ["USER"]}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def connection(monkeypatch, conn_id: str, sshd: dict, host_key: str | None = None) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
        "conn_type": "ssh", "host": "127.0.0.1", "port": sshd["port"], "login": sshd["login"],
        "extra": {"key_file": str(sshd["client_key"]), "host_key": host_key or sshd["host_key"],
                  "no_host_key_check": False, "look_for_keys": False, "conn_timeout": 10}}))


def ssh_provider(conn_id: str):
    """What the builder_health DAG connects with: the ssh provider, through the Connection."""
    from wheelwright.operate.dag_tasks import builder_ssh_client
    return builder_ssh_client(conn_id)


def test_a_builder_is_checked_over_ssh_and_recorded(catalog, sshd, monkeypatch, tmp_path):
    use_targets(catalog)
    images = tmp_path / "images"
    images.mkdir()
    (images / "bookworm-armhf.tar").write_bytes(b"")
    os.utime(images / "bookworm-armhf.tar", (1764740000, 1764740000))
    connection(monkeypatch, "builder_pi_1", sshd)
    bh.register(catalog, "pi-1", TARGET, "builder_pi_1", str(tmp_path), str(images))
    assert bh.check_all(catalog, ssh_provider) == {"pi-1": None}
    row = catalog.execute("SELECT reachable, load1, mem_total > 0, disk_free > 0, images_newest, held, error"
                          " FROM builder_health WHERE builder = 'pi-1'").fetchone()
    assert row[0] and row[1] is not None and row[2] and row[3] and not row[5] and row[6] is None, row
    assert row[4] == datetime.fromtimestamp(1764740000, timezone.utc)
    thermal = Path("/sys/class/thermal/thermal_zone0/temp")
    temp = catalog.execute("SELECT temp_c FROM builder_health").fetchone()[0]
    assert (temp is None) == (not thermal.exists())


def test_a_builder_out_of_disk_stops_its_target_taking_builds_until_it_recovers(catalog, sshd, monkeypatch,
                                                                                 tmp_path):
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    connection(monkeypatch, "builder_pi_1", sshd)
    bh.register(catalog, "pi-1", TARGET, "builder_pi_1", str(tmp_path), None,
                Limits(min_free_bytes=2**60))     # no disk is that big
    assert "out of disk" in bh.check_all(catalog, ssh_provider)["pi-1"]
    assert claim_wave(catalog, TARGET, 10) == [], "a held builder's target claims nothing"
    bh.register(catalog, "pi-1", TARGET, "builder_pi_1", str(tmp_path), None, Limits(min_free_bytes=1))
    assert bh.check_all(catalog, ssh_provider) == {"pi-1": None}
    assert [r["package"] for r in claim_wave(catalog, TARGET, 10)] == ["foo"]


def test_a_builder_whose_host_key_does_not_match_is_unreachable_and_held(catalog, sshd, monkeypatch, tmp_path):
    use_targets(catalog)
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    connection(monkeypatch, "builder_pi_1", sshd, host_key=" ".join(other.with_suffix(".pub").read_text()
                                                                      .split()[:2]))
    bh.register(catalog, "pi-1", TARGET, "builder_pi_1", str(tmp_path))
    reason = bh.check_all(catalog, ssh_provider)["pi-1"]
    assert reason.startswith("unreachable:"), reason
    assert catalog.execute("SELECT reachable, held FROM builder_health").fetchone() == (False, True)


def test_a_connection_carrying_its_private_key_is_refused_and_the_builder_held(catalog, sshd, monkeypatch,
                                                                               tmp_path):
    """Any task (a builder's too) can read any Connection through the execution API: a key inside one
    would let every builder log in to every other. The index host refuses to use it, and says why."""
    use_targets(catalog)
    monkeypatch.setenv("AIRFLOW_CONN_BUILDER_PI_1", json.dumps({
        "conn_type": "ssh", "host": "127.0.0.1", "port": sshd["port"], "login": sshd["login"],
        "extra": {"private_key": sshd["client_key"].read_text(), "host_key": sshd["host_key"],
                  "no_host_key_check": False, "look_for_keys": False}}))
    bh.register(catalog, "pi-1", TARGET, "builder_pi_1", str(tmp_path))
    reason = bh.check_all(catalog, ssh_provider)["pi-1"]
    assert reason.startswith("unreachable:") and "key_file" in reason, reason
    assert catalog.execute("SELECT reachable, held FROM builder_health").fetchone() == (False, True)


def test_the_command_quotes_the_folders_it_is_given():
    command = bh.health_command("/srv/build; rm -rf /", "/srv/$(reboot)")
    assert "'/srv/build; rm -rf /'" in command.replace("'\"'\"'", "'")
    assert "'/srv/$(reboot)'" in command.replace("'\"'\"'", "'")


def test_builders_and_pauses_from_the_command_line(catalog, catalog_dsn, tmp_path):
    import sys
    use_targets(catalog)
    env = dict(os.environ, WHEELWRIGHT_DSN=catalog_dsn, WHEELWRIGHT_HOME=str(tmp_path))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "wheelwright", *args], env=env, capture_output=True,
                              text=True, timeout=60)
    added = cli("builder", "add", "pi-1", "--target", TARGET, "--ssh-conn-id", "builder_pi_1",
                "--build-dir", "/srv/build", "--min-free-gb", "4")
    assert added.returncode == 0, added.stderr
    assert "pi-1 (cp39-armv7l): not checked" in cli("builder", "list").stdout
    assert catalog.execute("SELECT min_free_bytes FROM builders").fetchone() == (4 * 1024**3,)
    wrong = cli("builder", "add", "pi-2", "--target", "nope", "--ssh-conn-id", "c", "--build-dir", "/b")
    assert wrong.returncode == 5 and "no target named 'nope'" in wrong.stderr
    assert cli("pause", TARGET, "--reason", "new fans").returncode == 0
    assert catalog.execute("SELECT paused, paused_reason FROM targets WHERE name = %s",
                           (TARGET,)).fetchone() == (True, "new fans")
    assert cli("resume", TARGET).returncode == 0
    assert catalog.execute("SELECT paused FROM targets WHERE name = %s", (TARGET,)).fetchone() == (False,)


def test_the_builder_health_dag_checks_builders_and_samples_the_dashboard(airflow_env, settings, catalog, sshd,
                                                                          tmp_path):
    import sys
    from support.catalog import REPO
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    bh.register(catalog, "pi-1", TARGET, "builder_pi_1", str(tmp_path))
    conn_json = json.dumps({
        "conn_type": "ssh", "host": "127.0.0.1", "port": sshd["port"], "login": sshd["login"],
        "extra": {"key_file": str(sshd["client_key"]), "host_key": sshd["host_key"],
                  "no_host_key_check": False, "look_for_keys": False}})
    script = ("import json, sys\nfrom airflow.dag_processing.dagbag import DagBag\n"
              "bag = DagBag(dag_folder=sys.argv[1])\nassert not bag.import_errors, bag.import_errors\n"
              "run = bag.get_dag('builder_health').test()\nprint(json.dumps({'state': str(run.state)}))\n")
    env = dict(airflow_env, WHEELWRIGHT_DSN=settings.dsn, AIRFLOW_CONN_BUILDER_PI_1=conn_json)
    result = subprocess.run([sys.executable, "-c", script, str(REPO / "dags")], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["state"] == "success"
    assert catalog.execute("SELECT reachable, held FROM builder_health WHERE builder = 'pi-1'").fetchone() == \
        (True, False)
    assert dict(catalog.execute("SELECT target, queue_depth FROM dashboard_samples").fetchall()) == \
        {TARGET: 1, "cp311-armv7l": 0}, "the second target waits for the first"
