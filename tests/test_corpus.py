"""The corpus of real Pi packages: the pinned list, and fetching it into a cache outside the clone."""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from pathlib import Path

import pytest

from wheelwright.errors import ConfigError
from wheelwright.testing import corpus
from wheelwright.testing.corpus import CorpusError, Release, fetch, load_corpus

REPO = Path(__file__).resolve().parents[1]


def test_the_corpus_pins_at_least_60_real_releases_from_every_family():
    releases = load_corpus()
    assert len(releases) >= 60
    assert set(Counter(r.family for r in releases)) == set(corpus.FAMILIES)
    assert all(len(r.sha256) == 64 and r.size > 0 for r in releases)


def test_the_ci_slice_is_small_and_covers_a_system_library_a_kernel_header_abi3_and_a_pi_only_module():
    names = {r.package for r in load_corpus() if r.ci}
    assert names == {"pyyaml", "spidev", "psutil", "rpi-gpio"}


def test_the_cache_is_outside_the_clone_unless_told(monkeypatch):
    monkeypatch.delenv("WHEELWRIGHT_CORPUS_CACHE", raising=False)
    assert REPO not in corpus.default_cache().parents
    assert corpus.default_cache({"WHEELWRIGHT_CORPUS_CACHE": "/srv/c"}) == Path("/srv/c")


def _release(data: bytes, name="demo", version="1.0") -> Release:
    sdist = f"{name}-{version}.tar.gz"
    return Release(name, version, "numbers", sdist, f"https://files.pythonhosted.org/packages/aa/{sdist}",
                   hashlib.sha256(data).hexdigest(), len(data), "none", False, "")


def _opener(payload: bytes):
    calls = []

    def opener(url, timeout):
        calls.append(url)
        return io.BytesIO(payload)
    return opener, calls


def test_a_download_is_kept_only_when_it_is_the_pinned_file_and_not_fetched_twice(tmp_path):
    release = _release(b"the sdist")
    opener, calls = _opener(b"the sdist")
    [path] = fetch([release], tmp_path, opener=opener)
    assert path.read_bytes() == b"the sdist"
    fetch([release], tmp_path, opener=opener)
    assert len(calls) == 1, "a cached file whole is not fetched again"


@pytest.mark.parametrize("served", [b"other bytes", b"the sdist and more", b"the"])
def test_a_download_that_is_not_the_pinned_file_is_refused_and_leaves_nothing(tmp_path, served):
    release = _release(b"the sdist")
    opener, _ = _opener(served)
    with pytest.raises(CorpusError, match="demo-1.0.tar.gz"):
        fetch([release], tmp_path, opener=opener)
    assert list(tmp_path.iterdir()) == []


def test_a_corpus_file_with_a_wrong_row_is_refused_with_the_row_named(tmp_path):
    good = (REPO / "data" / "corpus.toml").read_text()
    bad = tmp_path / "corpus.toml"
    bad.write_text(good.replace('family = "hardware"', 'family = "toys"', 1))
    with pytest.raises(ConfigError, match="release #1: family 'toys'"):
        load_corpus(bad)
    bad.write_text(good.replace('url = "https://files.pythonhosted.org', 'url = "http://example.org', 1))
    with pytest.raises(ConfigError, match="release #1: url"):
        load_corpus(bad)


# --- the slice CI builds: real sdists, in the tests' bookworm armhf image, through the worker's path --------
# Four releases of the corpus (ci = true) that together exercise a Debian library (PyYAML links libyaml),
# a kernel header (spidev: linux/spi/spidev.h), abi3 (psutil) and a module that loads only on a Pi
# (RPi.GPIO). Built by `wheelwright build`'s path (claim, builder in the sandbox on the image, its install
# test, hand-over, the index host's checks and its own install test, recording), then published. On a
# machine whose test image exists this costs a few minutes of emulated builds (measured: see README).

import json  # noqa: E402
import shutil  # noqa: E402

from support.build_world import open_folder  # noqa: E402
from support.images import TEST_TARGETS, built_image, image_store  # noqa: E402

SLICE_TARGET = "cp311-armv7l"


@pytest.fixture(scope="module")
def slice_built(tmp_path_factory, pg_server, catalog_template):
    """The slice built for cp311-armv7l: {package: (LocalBuild, wheel row)}, and the published tree."""
    import os

    import psycopg

    from support.catalog import database_dsn
    from wheelwright.builds.local_build import build_release
    from wheelwright.publish.writer import publish
    from wheelwright.testing.pypi_double import PyPIDouble
    image = built_image(SLICE_TARGET)
    releases = [r for r in load_corpus() if r.ci]
    cache = corpus.default_cache()
    fetch(releases, cache)
    home = open_folder("wheelwright-corpus-slice-")
    targets_file = home / "targets.toml"
    targets_file.write_text(TEST_TARGETS)
    patch = pytest.MonkeyPatch()
    patch.setenv("WHEELWRIGHT_TARGETS", str(targets_file))
    patch.setenv("WHEELWRIGHT_IMAGES", str(image_store()))
    patch.setenv("WHEELWRIGHT_HOME", str(home))
    patch.delenv("WHEELWRIGHT_INSTALL_TEST", raising=False)
    output = home / "www"
    name = f"wheelwright_corpus_slice_{os.getpid()}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{catalog_template}"')
    try:
        with psycopg.connect(database_dsn(pg_server, name), autocommit=True) as conn, \
                PyPIDouble(corpus.changelog(releases), files_dir=cache) as pypi, \
                corpus.PyPIRelay(cache / "pypi-relay") as relay:
            corpus.load_catalog(conn, pypi, releases)
            built = {}
            for release in releases:
                result = build_release(conn, release.name, release.version, target=SLICE_TARGET,
                                       index_url=pypi.simple_url, workdir=home / "builds",
                                       incoming=home / "incoming", output=output, timeout=1800,
                                       extra_index_url=relay.simple_url)
                wheel = conn.execute("SELECT filename, glibc_floor, tested_on, test_result, test_detail "
                                     "FROM wheels WHERE build_id = %s", (result.build_id,)).fetchone()
                apt = [d for (d,) in conn.execute(
                    "SELECT dependency FROM wheel_dependencies d JOIN wheels w USING (filename) "
                    "WHERE w.build_id = %s AND tool = 'apt' ORDER BY 1", (result.build_id,))]
                built[release.package] = (result, wheel, apt)
            publish(conn, output)
            yield built, output, image
    finally:
        patch.undo()
        shutil.rmtree(home, ignore_errors=True)
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _built(slice_built, package):
    built, output, _image = slice_built
    result, wheel, apt = built[package]
    assert result.status == "success", (result.reason, result.log_path)
    return result, wheel, apt


@pytest.mark.timeout(3600)
def test_a_kernel_header_package_builds_and_imports_on_bookworm_armhf(slice_built):
    _result, (filename, floor, tested_on, test_result, _detail), _apt = _built(slice_built, "spidev")
    assert filename.startswith("spidev-3.8-cp311-cp311-") and filename.endswith("armv7l.whl")
    assert (tested_on, test_result) == ("bookworm armhf", "imports")
    assert floor is not None


@pytest.mark.timeout(3600)
def test_a_package_linking_a_debian_library_names_it_and_keeps_its_linux_tag(slice_built):
    _result, (filename, _floor, tested_on, test_result, _detail), apt = _built(slice_built, "pyyaml")
    assert filename.endswith("-cp311-cp311-linux_armv7l.whl"), "libyaml is outside the manylinux policy"
    assert "libyaml-0-2" in apt and (tested_on, test_result) == ("bookworm armhf", "imports")


@pytest.mark.timeout(3600)
def test_an_abi3_package_builds_an_abi3_wheel_that_imports(slice_built):
    _result, (filename, _floor, _on, test_result, _detail), _apt = _built(slice_built, "psutil")
    assert "-abi3-" in filename and test_result == "imports"


@pytest.mark.timeout(3600)
def test_rpi_gpio_is_built_and_recorded_as_not_importable_off_a_pi(slice_built):
    _result, (filename, _floor, tested_on, test_result, detail), _apt = _built(slice_built, "rpi-gpio")
    assert test_result == "needs-a-pi" and "can only be run on a Raspberry Pi" in detail
    _built_all, output, _image = slice_built
    data = json.loads((output / "project" / "rpi-gpio" / "json" / "index.json").read_text())
    file = data["releases"]["0.7.1"]["files"][filename]
    assert file["tested"] == "built, not importable off a Pi (tested on bookworm armhf)"
    assert "built, not importable off a Pi" in (output / "project" / "rpi-gpio" / "index.html").read_text()
