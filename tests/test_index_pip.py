"""A real pip against a published tree served on 127.0.0.1: by wheelwright's static server, and by nginx
with the shipped config where nginx is installed (each test runs against each; the test id names it).

One small catalog is published once for the module: RPi.GPIO (two releases, wheels with PEP 658
metadata), yankee (2.0 yanked), futurist (2.0 needs Python 4). pip runs isolated from this machine's
pip configuration, so only our index is used.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg
import pytest

from support.catalog import database_dsn
from support.serving import NGINX, serve
from support.index_world import World
from wheelwright.publish.writer import publish

PIP_TIMEOUT = 120
SERVERS = ["python"] + (["nginx"] if NGINX else [])


@pytest.fixture(scope="module")
def module_catalog(pg_server, catalog_template):
    name = f"wheelwright_pip_{os.getpid()}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{catalog_template}"')
    with psycopg.connect(database_dsn(pg_server, name)) as conn:
        yield conn
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def published(module_catalog, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("www")
    world = World(module_catalog, output)
    world.target()
    rpi = world.package("RPi.GPIO", summary="A module to control Raspberry Pi GPIO channels")
    for version in ("0.7.0", "0.7.1"):
        world.release(rpi, version)
        world.wheel(rpi, version)
    yankee = world.package("yankee")
    world.release(yankee, "1.0")
    world.wheel(yankee, "1.0")
    world.release(yankee, "2.0", yanked=True, yanked_reason="broken <build>")
    world.wheel(yankee, "2.0")
    futurist = world.package("futurist")
    world.release(futurist, "1.0", requires_python=">=3.8,<4")
    world.wheel(futurist, "1.0", requires_python=">=3.8,<4")
    world.release(futurist, "2.0", requires_python=">=4")
    world.wheel(futurist, "2.0", requires_python=">=4")
    publish(module_catalog, output)
    return output


@pytest.fixture(scope="module", params=SERVERS)
def index(published, tmp_path_factory, request):
    served = serve(published, tmp_path_factory.mktemp(f"server-{request.param}"), request.param)
    assert served.kind == request.param
    yield served
    served.stop()


def pip(index, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LANG": "C.UTF-8"}
    command = [sys.executable, "-m", "pip", *args[:1], "--isolated", "--disable-pip-version-check",
               "--no-cache-dir", "--retries", "0", "--timeout", "10", "--index-url",
               f"{index.url}/simple/", *args[1:]]
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    assert result.returncode == 0, f"{' '.join(command)} failed ({index.kind}):\n{result.stdout}\n{result.stderr}"
    return result


def downloaded(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_pip_install_finds_a_project_by_any_spelling(index, tmp_path):
    target = tmp_path / "site"
    pip(index, "install", "--target", str(target), "RPi.GPIO", cwd=tmp_path)
    assert (target / "rpi_gpio_mod.py").read_text() == "VERSION = '0.7.1'\n"
    assert ("/simple/rpi-gpio/", 200, "json") in index.requests(), index.log_lines()


def test_pip_chooses_the_json_api_by_its_accept_header(index, tmp_path):
    pip(index, "download", "--no-deps", "-d", str(tmp_path / "d"), "rpi-gpio==0.7.0", cwd=tmp_path)
    pages = [r for r in index.requests() if r[0] == "/simple/rpi-gpio/"]
    assert pages and all(fmt == "json" for _path, _status, fmt in pages), index.log_lines()


def test_pip_uses_pep658_metadata(index, tmp_path):
    pip(index, "download", "--no-deps", "-d", str(tmp_path / "d"), "rpi-gpio==0.7.0", cwd=tmp_path)
    fetched = [path for path, status, _fmt in index.requests() if status == 200]
    assert "/simple/rpi-gpio/rpi_gpio-0.7.0-py3-none-any.whl.metadata" in fetched, index.log_lines()
    assert downloaded(tmp_path / "d") == ["rpi_gpio-0.7.0-py3-none-any.whl"]


def test_a_yanked_release_is_skipped(index, tmp_path):
    pip(index, "download", "--no-deps", "-d", str(tmp_path / "d"), "yankee", cwd=tmp_path)
    assert downloaded(tmp_path / "d") == ["yankee-1.0-py3-none-any.whl"]


def test_a_yanked_release_is_installed_when_pinned(index, tmp_path):
    result = pip(index, "download", "--no-deps", "-d", str(tmp_path / "d"), "yankee==2.0", cwd=tmp_path)
    assert downloaded(tmp_path / "d") == ["yankee-2.0-py3-none-any.whl"]
    assert "broken <build>" in result.stdout + result.stderr  # pip shows the reason it was yanked


def test_requires_python_excludes_files_for_this_interpreter(index, tmp_path):
    pip(index, "download", "--no-deps", "-d", str(tmp_path / "d"), "futurist", cwd=tmp_path)
    assert downloaded(tmp_path / "d") == ["futurist-1.0-py3-none-any.whl"]
    with zipfile.ZipFile(tmp_path / "d" / "futurist-1.0-py3-none-any.whl") as zf:
        assert "Requires-Python: >=3.8,<4" in zf.read("futurist-1.0.dist-info/METADATA").decode()

