"""Target images for the tests: small ones, built once per machine and kept across test runs.

An image takes minutes to build (mmdebstrap from Debian's archive, its packages configured under
qemu), so the tests never build one twice: they live in ``$WHEELWRIGHT_TEST_IMAGES`` (by default
``/var/tmp/wheelwright-test-images`` for root, ``~/.cache/wheelwright-test-images`` otherwise), named
by their recipe hash like any image, so a changed recipe builds a new one and an unchanged one is
reused by every later run. The tests' targets carry only what the tests compile: gcc, the C library's
headers and libyaml's (a Debian library a wheel can link), not the whole ``data/build-packages.txt``.
A fresh machine pays about 4-8 minutes per image (bench/bench_images.py); CI builds each once.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from wheelwright.builds import images
from wheelwright.builds.targets import parse_targets

TEST_TARGETS = """
[[target]]
name = "cp311-armv7l"
abi = "cp311"
platform = "linux_armv7l"
distro = "bookworm"
image = true
package_lists = []
packages = ["gcc", "libc6-dev", "libyaml-dev"]

[[target]]
name = "cp313-aarch64"
abi = "cp313"
platform = "linux_aarch64"
distro = "trixie"
image = true
package_lists = []
packages = ["gcc", "libc6-dev", "libyaml-dev"]

[[target]]
name = "cp311-aarch64"         # bookworm on a 64-bit Pi: where a trixie-built wheel must not land
abi = "cp311"
platform = "linux_aarch64"
distro = "bookworm"
image = true
package_lists = []
packages = []
"""


def image_targets():
    return {t.name: t for t in parse_targets(TEST_TARGETS)}


def image_store() -> Path:
    """``$WHEELWRIGHT_TEST_IMAGES``; else, when the tests run as root (builds then run as an
    unprivileged user, who must reach the image), /var/tmp/wheelwright-test-images; else
    ~/.cache/wheelwright-test-images."""
    given = os.environ.get("WHEELWRIGHT_TEST_IMAGES")
    if given:
        return Path(given)
    if os.geteuid() == 0:
        return Path("/var/tmp/wheelwright-test-images")
    return Path.home() / ".cache" / "wheelwright-test-images"


# Images this run had to build, with the seconds each took (the suite's summary reports them).
BUILT_THIS_RUN: dict[str, float] = {}


def built_image(name: str) -> images.Image:
    """The image of test target ``name``, built now if this machine has never built it."""
    recipe = images.recipe_for(image_targets()[name])
    store = image_store()
    found = images.find_image(recipe, store)
    if found is None:
        print(f"\nbuilding the test image {recipe.folder_name} into {store} (once per machine)",
              file=sys.stderr)
        started = time.monotonic()
        found = images.build_image(recipe, store, progress=lambda line: print(line, file=sys.stderr))
        BUILT_THIS_RUN[recipe.folder_name] = time.monotonic() - started
    images.ensure_emulation(recipe.arch)
    return found
