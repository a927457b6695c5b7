"""Hostile wheels against the worker's files: what a wheel's ELF headers name is never opened as it is.

A wheel's compiled members say which folders to search (``RUNPATH``) and which libraries they need
(``NEEDED``). Analysis used to open what they named as the worker: ``RUNPATH=/proc`` with
``NEEDED=kmsg`` read ``/proc/kmsg`` as root (blocking for the task's whole timeout and eating the
kernel's log). Here hostile objects, compiled with gcc, meet an image root full of traps (a FIFO, a
device, a file past the size cap, links climbing out or pointing at the image's ``/etc``, a loop, a
``/proc`` of the image) and the worker's own ``/``. A spy on ``os.open`` shows every descriptor
analysis opened for reading: each a regular file or folder, none under ``/proc``, ``/sys``, ``/dev``,
none outside the image. Last, a real sandboxed build of such a wheel goes through ``wheelwright
build`` (the builder, the hand-over and intake): recorded, with its libraries unresolved.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.build_world import PYPROJECT, add_release, make_sdist, make_wheel, open_folder, setup_py
from wheelwright.builds import analysis
from wheelwright.builds.analysis import RootFiles, WheelRefused, analyse_wheel, read_elf, resolve_library

TRIPLET = "x86_64-linux-gnu"
LIB = f"usr/lib/{TRIPLET}"
METADATA = b"Metadata-Version: 2.1\nName: ext\nVersion: 1.0\n"

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                       reason="the hostile objects are compiled for this x86_64 worker"),
]


def gcc(*args: str) -> None:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is missing (the worker's own target builds C extensions with it)")
    subprocess.run(["gcc", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> Path:
    """Stub libraries named as the traps are, and ``evil.so`` needing them all, its RUNPATH aimed at
    /proc, /sys, /dev and a climb out of the library folder."""
    folder = tmp_path_factory.mktemp("objects")
    (folder / "stub.c").write_text("int stub(void) { return 0; }\n")
    names = ["kmsg", "libfifo.so", "libdev.so", "libhuge.so", "libescape.so", "libsneaky.so",
             "libetc.so", "libloop.so", "libdir.so", "libgood.so", "libproc.so"]
    for name in names:
        gcc("-shared", f"-Wl,-soname,{name}", "-o", str(folder / name), str(folder / "stub.c"))
    (folder / "evil.c").write_text("int evil(void) { return 1; }\n")
    gcc("-shared", "-o", str(folder / "evil.so"), str(folder / "evil.c"), "-Wl,--no-as-needed",
        f"-L{folder}", *[f"-l:{name}" for name in names],
        f"-Wl,-rpath,/proc:/sys/kernel:/dev:/{LIB}/../../../proc:/run")
    return folder


@pytest.fixture
def image(objects, tmp_path) -> Path:
    """An image root whose library folder is full of traps."""
    root = tmp_path / "image"
    lib = root / LIB
    lib.mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "etc").mkdir()
    (root / "etc" / "ld.so.conf").write_text("include /proc/self/*\n/dev\n/sys\n")
    (root / "proc").mkdir()
    shutil.copy(objects / "libproc.so", root / "proc" / "kmsg")          # the image's /proc: never entered
    os.mkfifo(lib / "libfifo.so")                                         # would block a plain open()
    if os.geteuid() == 0:
        os.mknod(lib / "libdev.so", stat.S_IFCHR | 0o644, os.makedev(1, 5))  # /dev/zero
    huge = lib / "libhuge.so"
    shutil.copy(objects / "libhuge.so", huge)                            # a real library ...
    os.truncate(huge, analysis.MAX_LIBRARY_BYTES + 1)                    # ... past the size cap
    (lib / "libescape.so").symlink_to("../" * 12 + f"{LIB}/libc.so.6")   # climbs out: the host's libc
    (lib / "libsneaky.so").symlink_to(f"/{LIB}/libc.so.6")               # absolute: the image's, none
    shutil.copy(objects / "libetc.so", root / "etc" / "libetc.so")
    (lib / "libetc.so").symlink_to("/etc/libetc.so")                     # leads out of library folders
    (lib / "libloop.so").symlink_to("libloop.so")
    (lib / "libdir.so").mkdir()
    shutil.copy(objects / "libgood.so", lib / "libgood.so")              # the one honest library
    return root


class OpenSpy:
    """Every descriptor opened for reading (not ``O_PATH``) while active: its real path and mode."""

    def __init__(self, monkeypatch):
        self.opened: list[tuple[str, int]] = []
        real_open = os.open

        def spy(path, flags, mode=0o777, *, dir_fd=None):
            fd = real_open(path, flags, mode, dir_fd=dir_fd)
            if not flags & os.O_PATH:
                self.opened.append((os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_mode))
            return fd
        monkeypatch.setattr(os, "open", spy)

    def check(self, inside: Path | None = None) -> None:
        for path, mode in self.opened:
            assert stat.S_ISREG(mode) or stat.S_ISDIR(mode), f"opened {path}, which is no file"
            assert not path.startswith(("/proc", "/sys", "/dev", "/run")), f"opened {path}"
            if inside is not None:
                assert path == str(inside) or path.startswith(f"{inside}/"), f"opened {path} outside the image"


def evil_wheel(objects: Path, folder: Path) -> Path:
    return make_wheel(folder, "ext-1.0-cp311-cp311-linux_x86_64.whl", {
        "ext/_evil.so": (objects / "evil.so").read_bytes(), "ext-1.0.dist-info/METADATA": METADATA})


def test_an_image_full_of_traps_gives_unresolved_libraries_and_opens_only_its_own_files(
        objects, image, tmp_path, monkeypatch):
    wheel = evil_wheel(objects, tmp_path)
    spy = OpenSpy(monkeypatch)
    info = analyse_wheel(wheel, "ext", "1.0", root=image)
    monkeypatch.undo()
    spy.check(inside=image)
    assert ("unowned", f"/lib/{TRIPLET}/libgood.so") in info.dependencies, "the honest library is found"
    for name in ("kmsg", "libfifo.so", "libdev.so", "libhuge.so", "libescape.so", "libsneaky.so",
                 "libetc.so", "libloop.so", "libdir.so", "libproc.so"):
        assert ("unowned", name) in info.dependencies, (name, info.dependencies)
    assert not any(path.endswith(("libfifo.so", "libdev.so", "libhuge.so", "/etc/libetc.so", "/proc/kmsg"))
                   for path, _ in spy.opened), spy.opened


def test_runpath_proc_and_needed_kmsg_on_the_worker_s_own_system_open_nothing_there(
        objects, tmp_path, monkeypatch):
    wheel = evil_wheel(objects, tmp_path)
    spy = OpenSpy(monkeypatch)
    info = analyse_wheel(wheel, "ext", "1.0", root="/")
    monkeypatch.undo()
    spy.check()
    assert ("unowned", "kmsg") in info.dependencies
    assert ("unowned", "libfifo.so") in info.dependencies


def test_a_library_name_that_is_no_name_refuses_the_wheel(objects, tmp_path):
    gcc("-shared", "-Wl,-soname,lib\x1b[2Jx.so", "-o", str(tmp_path / "weird.so"), str(objects / "stub.c"))
    gcc("-shared", "-o", str(tmp_path / "ext.so"), str(objects / "evil.c"), "-Wl,--no-as-needed",
        str(tmp_path / "weird.so"))
    wheel = make_wheel(tmp_path, "ext-1.0-cp311-cp311-linux_x86_64.whl", {
        "ext/_ext.so": (tmp_path / "ext.so").read_bytes(), "ext-1.0.dist-info/METADATA": METADATA})
    with pytest.raises(WheelRefused, match="which is no library name"):
        analyse_wheel(wheel, "ext", "1.0", root="/")


# --- any links an image may hold ------------------------------------------------------------------------

COMPONENTS = st.sampled_from(["..", ".", "usr", "lib", TRIPLET, "etc", "proc", "libx.so", "liby.so",
                              "dir", "", "..."])
targets = st.lists(COMPONENTS, min_size=1, max_size=6).map("/".join)
entries = st.dictionaries(
    st.sampled_from([f"{LIB}/libx.so", f"{LIB}/liby.so", f"{LIB}/dir", "etc/libx.so", "usr/lib",
                     "lib", "proc/libx.so", f"{LIB}/dir/libx.so"]),
    st.one_of(st.tuples(st.just("link"), st.booleans(), targets),
              st.tuples(st.just("library")), st.tuples(st.just("junk")), st.tuples(st.just("fifo")),
              st.tuples(st.just("dir"))),
    max_size=6)


def make_in(root: Path, relative: str, what: tuple, library: bytes) -> None:
    """Make ``relative`` inside ``root`` through folder descriptors that never follow a link: a
    layout's links point anywhere (the host's /etc, /usr), and nothing may be made there."""
    *parents, name = relative.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parents:
            try:
                os.mkdir(part, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:  # a link or a file stands there: this entry is not made
                return
            os.close(fd)
            fd = below
        try:
            if what[0] == "link":
                os.symlink(("/" if what[1] else "") + what[2], name, dir_fd=fd)
            elif what[0] == "fifo":
                os.mkfifo(name, dir_fd=fd)
            elif what[0] == "dir":
                os.mkdir(name, dir_fd=fd)
            else:
                data = library if what[0] == "library" else b"\x7fELF" + b"\0" * 60
                out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755, dir_fd=fd)
                with open(out, "wb") as f:
                    f.write(data)
        except OSError:  # already there, or an empty link target
            return
    finally:
        os.close(fd)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=entries)
def test_whatever_links_an_image_holds_resolution_stays_inside_it(layout, objects, tmp_path_factory,
                                                                   monkeypatch):
    root = tmp_path_factory.mktemp("image")
    library = (objects / "libgood.so").read_bytes()
    for relative, what in sorted(layout.items()):
        make_in(root, relative, what, library)
    with open(objects / "evil.so", "rb") as f:
        elf = read_elf(f)
    spy = OpenSpy(monkeypatch)
    with RootFiles(root) as files:
        found = {name: resolve_library(files, name, elf) for name in ("libx.so", "liby.so", f"/{LIB}/libx.so")}
        real = {name: files.real_path(path) for name, path in found.items() if path is not None}
        # the image's library folders, as its own links place them (its /lib may be anywhere in it)
        folders = [f for f in (analysis._real_folder(files, f) for f in analysis.library_folders(files, elf)) if f]
    monkeypatch.undo()
    spy.check(inside=root)
    for name, path in real.items():
        # (a path without links, inside the image: joined to the root it is the file itself)
        assert path is not None and stat.S_ISREG(os.lstat(root / path.lstrip("/")).st_mode), (name, path)
        assert analysis._inside(os.path.dirname(path), folders), (name, path, folders)
        assert not path.startswith(("/proc/", "/sys/", "/dev/", "/run/")), (name, path)


# --- through the builder and intake ---------------------------------------------------------------------

EVIL_SETUP = """
import os, subprocess
os.makedirs("stubs", exist_ok=True)
open("stub.c", "w").write("int stub(void) { return 0; }\\n")
open("evil.c", "w").write("int evil(void) { return 1; }\\n")
subprocess.run(["gcc", "-shared", "-Wl,-soname,kmsg", "-o", "stubs/kmsg", "stub.c"], check=True)
subprocess.run(["gcc", "-shared", "-o", "elfy/evil.so", "evil.c", "-Wl,--no-as-needed", "-Lstubs",
                "-l:kmsg", "-Wl,-rpath,/proc:/sys/kernel"], check=True)
"""


@pytest.fixture
def elfy_index(tmp_path_factory):
    from support.build_world import backend_wheels
    from wheelwright.testing.pypi_double import PyPIDouble
    files = tmp_path_factory.mktemp("files")
    for wheel in backend_wheels().glob("*.whl"):
        shutil.copy(wheel, files)
    make_sdist(files, "elfy", "1.0", {
        "pyproject.toml": PYPROJECT, "elfy/__init__.py": "",
        "setup.py": setup_py("elfy", "1.0", body=EVIL_SETUP, packages="['elfy']",
                             package_data="{'elfy': ['evil.so']}")})
    with PyPIDouble([], files_dir=files) as double:
        yield double.simple_url


def test_a_real_hostile_wheel_through_the_builder_and_intake_is_recorded_unresolved(
        catalog, settings, elfy_index):
    from wheelwright.builds.local_build import build_release
    from wheelwright.builds.targets import parse_targets
    targets = parse_targets('[[target]]\nname = "cp311-x86_64"\nabi = "cp311"\nplatform = "linux_x86_64"\n'
                            'distro = "bookworm"\nimage = false\nenabled = true\n')
    add_release(catalog, "elfy", "1.0")
    home = open_folder("wheelwright-hostile-wheels-")
    try:
        result = build_release(catalog, "elfy", "1.0", index_url=elfy_index, workdir=home / "builds",
                               incoming=home / "incoming", output=settings.output, targets=targets,
                               root="/", timeout=300)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert result.status == "success", result.reason
    [wheel] = result.wheels
    recorded = catalog.execute("SELECT tool, dependency FROM wheel_dependencies WHERE filename = %s "
                               "ORDER BY 1, 2", (wheel,)).fetchall()
    assert ("unowned", "kmsg") in recorded, recorded
    assert ("apt", "libc6") in recorded, "the libraries of the system are still found"
