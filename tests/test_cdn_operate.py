"""The purger as operators meet it: `wheelwright index` and the publish_index DAG purge after publishing
(and render the same bytes), `wheelwright purge` purges by hand, `wheelwright status` shows the lag.

The CDN is the Fastly double (tests/support/cdn_doubles.py), configured the way an operator would:
WHEELWRIGHT_CDN, WHEELWRIGHT_CDN_TOKEN, WHEELWRIGHT_CDN_API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from support.catalog import REPO
from support.cdn_doubles import FastlyDouble
from support.index_world import World

SERVICE, TOKEN = "SU1Z0isxPaozGVKXdv0eY", "fastly-token"
PYPI_URL = "http://pypi.example.org/pypi"


@pytest.fixture
def fastly():
    double = FastlyDouble(SERVICE, TOKEN)
    yield double
    double.stop()


@pytest.fixture
def world(catalog, settings):
    world = World(catalog, settings.output)
    world.target()
    p = world.package("RPi.GPIO", summary="GPIO")
    world.release(p, "0.7.1")
    world.wheel(p, "0.7.1")
    return world


def environment(settings, fastly=None, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHEELWRIGHT")}
    env.update(WHEELWRIGHT_DSN=settings.dsn, WHEELWRIGHT_HOME=str(settings.home),
               WHEELWRIGHT_OUTPUT=str(settings.output), WHEELWRIGHT_PYPI_URL=PYPI_URL)
    if fastly is not None:
        env.update(WHEELWRIGHT_CDN=f"fastly:{SERVICE}", WHEELWRIGHT_CDN_TOKEN=TOKEN,
                   WHEELWRIGHT_CDN_API=fastly.url)
    env.update(extra)
    return env


def wheelwright(env, *args):
    return subprocess.run([sys.executable, "-m", "wheelwright", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_wheelwright_index_purges_what_it_published(world, settings, fastly):
    done = wheelwright(environment(settings, fastly), "index")
    assert done.returncode == 0, done.stderr
    assert "CDN (fastly): purged 7 keys in 1 calls" in done.stdout
    assert sorted(fastly.calls[0].keys) == ["feeds", "project/rpi-gpio", "queue", "reports", "root", "search", "site"]
    again = wheelwright(environment(settings, fastly), "index")
    assert "purged 0 keys" in again.stdout and len(fastly.calls) == 1, "nothing changed, nothing purged"


def test_wheelwright_purge_by_package_or_everything(world, settings, fastly):
    env = environment(settings, fastly)
    done = wheelwright(env, "purge", "RPi_GPIO", "other")
    assert done.returncode == 0, done.stderr
    assert fastly.calls[-1].keys == ["project/other", "project/rpi-gpio"]
    done = wheelwright(env, "purge", "--all")
    assert done.returncode == 0 and fastly.calls[-1].keys == ["all"]
    refused = wheelwright(environment(settings), "purge", "--all")
    assert refused.returncode == 2 and "WHEELWRIGHT_CDN" in refused.stderr


def test_status_shows_the_purge_lag_and_purge_settles_it(world, settings, fastly):
    fastly.down = True
    env = environment(settings, fastly)
    published = wheelwright(env, "index")
    assert published.returncode == 0, "a CDN outage must not fail the publish"
    assert (settings.output / "simple/rpi-gpio/index.html").exists()
    status = json.loads(wheelwright(env, "status", "--offline", "--json").stdout)
    assert status["purges_owed"] == 7 and status["purge_lag_seconds"] >= 0
    assert "CDN purges owed   7" in wheelwright(env, "status", "--offline").stdout
    failed = wheelwright(env, "purge")
    assert failed.returncode == 7 and "7 keys still owed" in failed.stdout

    fastly.down = False
    delivered = wheelwright(env, "purge")
    assert delivered.returncode == 0 and "purged 7 keys" in delivered.stdout
    assert json.loads(wheelwright(env, "status", "--offline", "--json").stdout)["purges_owed"] == 0


RUN_DAG = textwrap.dedent("""
    import sys
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    run = bag.get_dag("publish_index").test()
    print(str(run.state))
""")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_dag_renders_what_the_cli_renders_and_purges(airflow_env, world, settings, fastly, tmp_path):
    cli_output = tmp_path / "cli-www"
    done = wheelwright(environment(settings, WHEELWRIGHT_OUTPUT=str(cli_output)), "index")
    assert done.returncode == 0, done.stderr
    world.conn.execute("DELETE FROM consumer_marks")
    world.conn.commit()

    env = dict(airflow_env, **{k: v for k, v in environment(settings, fastly).items()
                               if k.startswith("WHEELWRIGHT")})
    result = subprocess.run([sys.executable, "-c", RUN_DAG, str(REPO / "dags")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().splitlines()[-1].endswith("success")
    for page in ("project/rpi-gpio/index.html", "project/rpi-gpio/json/index.json"):
        assert (settings.output / page).read_bytes() == (cli_output / page).read_bytes(), \
            f"{page}: the DAG and the CLI must render the same bytes"
    assert b"pypi.example.org" in (settings.output / "project/rpi-gpio/index.html").read_bytes()
    assert sorted(fastly.calls[-1].keys) == ["feeds", "project/rpi-gpio", "queue", "reports", "root", "search", "site"]
