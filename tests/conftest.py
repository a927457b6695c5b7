"""Fixtures in layers, each naming the world a test needs.

airflow_env    a migrated Airflow metadata database and the environment to run `dag.test()` in

pg_server      one real PostgreSQL for the whole run: the embedded one, or any server given by
               WHEELWRIGHT_TEST_DSN (a maintenance DSN with rights to create databases)
catalog_dsn    a fresh database with the current schema, made from a migrated template (fast)
settings       Settings pointing at that database, with a private home and output folder
catalog        an open connection to it
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings

from wheelwright.catalog import db
from wheelwright.config import Settings

from support.catalog import database_dsn

_counter = itertools.count()

# Prepared build environments (wheelwright.builds.buildenvs) live beside the test images and are kept
# across runs like them: the same pinned wheels make the same environment, so a run reuses what the
# last one made. Every test run shares them; they are made under a lock.
if "WHEELWRIGHT_BUILDENVS" not in os.environ:
    from support.images import image_store
    os.environ["WHEELWRIGHT_BUILDENVS"] = str(image_store().with_name(image_store().name + "-buildenvs"))

# CI gates a submission on one run: there the property tests replay the same examples every time
# (still hundreds of them); elsewhere each run explores new ones.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory) -> str:
    """Maintenance DSN of a real PostgreSQL server for this test run."""
    given = os.environ.get("WHEELWRIGHT_TEST_DSN")
    if given:
        yield given
        return
    # Not under pytest's tmp: as root the server runs as another user, who must reach its folder, and
    # every pytest run on the machine makes /tmp/pytest-of-root private again.
    import shutil
    import tempfile
    home = Path(tempfile.mkdtemp(prefix="wheelwright-pg-"))
    home.chmod(0o755)
    # the product's own way: scram authentication, the password in a 0600 file beside it
    server, uri = db.start_embedded(home / "pgdata", home / db.PASSWORD_FILE, cleanup_mode="delete")
    yield uri
    server.cleanup()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def catalog_template(pg_server) -> str:
    name = f"wheelwright_template_{os.getpid()}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(database_dsn(pg_server, name)) as conn:
        db.init_schema(conn)
    return name


@pytest.fixture
def catalog_dsn(pg_server, catalog_template) -> str:
    name = f"wheelwright_test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{catalog_template}"')
    yield database_dsn(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def catalog_home():
    """A folder for a catalog of its own. As root, the embedded server runs as another user, who must
    reach it: pytest's own tmp folders are private to root, and any other pytest run on the machine
    makes them private again while this one runs."""
    from support.build_world import open_folder
    path = open_folder("wheelwright-catalog-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def settings(tmp_path, catalog_dsn) -> Settings:
    return Settings(home=tmp_path / "home", dsn=catalog_dsn,
                    pypi_url="http://127.0.0.1:9/pypi", output=tmp_path / "www")


@pytest.fixture
def catalog(settings):
    with db.connect(settings) as conn:
        yield conn




@pytest.fixture(scope="session")
def airflow_env(pg_server, tmp_path_factory) -> dict:
    """A migrated Airflow metadata database (once per run) and the environment for `dag.test()`."""
    from wheelwright.operate.airflow_setup import airflow_environment, migrate_metadata, sqlalchemy_url
    name = f"airflow_dag_tests_{os.getpid()}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    home = tmp_path_factory.mktemp("airflow")
    settings = Settings(home=home, dsn=None, pypi_url="http://127.0.0.1:9/pypi", output=home / "www")
    env = airflow_environment(settings, home / "airflow",
                              metadata_url=sqlalchemy_url(database_dsn(pg_server, name)))
    migrate_metadata(env)
    return env


def pytest_terminal_summary(terminalreporter):
    """Say what of this run's time went to building the Pi test images (a new machine builds them)."""
    from support.images import BUILT_THIS_RUN
    for folder, seconds in BUILT_THIS_RUN.items():
        terminalreporter.write_line(f"built the test image {folder} in {seconds / 60:.1f} min")
