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
