"""Wheel analysis: names checked against what was built, metadata kept, apt dependencies found."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from support.build_world import make_wheel, open_folder
from support.tools import require
from wheelwright.builds.analysis import (WheelInfo, WheelRefused, analyse_wheel, build_number,
                                        check_received_wheel, check_target_tags, check_wheel_filename,
                                        parse_dpkg_list, parse_ld_so_conf, parse_metadata, path_aliases,
                                        real_path_in, safe_member_path, with_build_number)

METADATA = b"""Metadata-Version: 2.1
Name: Foo-Bar
Version: 1.0
Requires-Python: >=3.9
Requires-Dist: requests (>=2)
Requires-Dist: tomli; python_version < "3.11"

A description that mentions Requires-Dist: nothing.
"""



@pytest.fixture
def gcc():
    require("gcc")


needs_gcc = pytest.mark.usefixtures("gcc")


# --- file names -------------------------------------------------------------------------------------

def test_a_wheel_name_gives_its_tags():
    assert check_wheel_filename("Foo_Bar-1.0-cp311-cp311-linux_armv7l.whl", "foo-bar", "1.0") == (
        "cp311", "cp311", "linux_armv7l")
    assert check_wheel_filename("foo-1.0-1-py2.py3-none-any.whl", "foo", "1.0") == ("py2.py3", "none", "any")


def test_a_wheel_of_another_package_is_refused_the_gsas_ii_wonder_case():
    with pytest.raises(WheelRefused, match="wheel of gsas-ii-wonder-linux, not of gsas-ii-wonder-mac"):
        check_wheel_filename("GSAS_II_WONDER_linux-1.0.0-py3-none-any.whl", "GSAS_II_WONDER_mac", "1.0.0")


def test_a_wheel_of_another_version_is_refused():
    with pytest.raises(WheelRefused, match="version 2.0, not 1.0"):
        check_wheel_filename("foo-2.0-py3-none-any.whl", "foo", "1.0")
    assert check_wheel_filename("foo-1.0.0-py3-none-any.whl", "foo", "1.0"), "1.0.0 is 1.0"


@pytest.mark.parametrize("name", ["foo-1.0.tar.gz", "foo-1.0-py3-none.whl", "foo.whl", "",
                                  "foo-1.0-py3-none-any.whl.metadata"])
def test_an_invalid_wheel_name_is_refused(name):
    with pytest.raises(WheelRefused):
        check_wheel_filename(name, "foo", "1.0")


@pytest.mark.parametrize("name", ["../foo-1.0-py3-none-any.whl", "dir/foo-1.0-py3-none-any.whl",
                                  "..\\foo-1.0-py3-none-any.whl", "/tmp/foo-1.0-py3-none-any.whl",
                                  "foo-1.0-py3-none-any.whl\x00.txt", "foo\n-1.0-py3-none-any.whl",
                                  "foo\x1b[2J-1.0-py3-none-any.whl"])
def test_a_wheel_name_with_a_path_is_refused(name):
    with pytest.raises(WheelRefused, match="not a plain file name"):
        check_wheel_filename(name, "foo", "1.0")


@pytest.mark.parametrize("member, safe", [("pkg/mod.so", "pkg/mod.so"), ("../../etc/x.so", None),
                                          ("/etc/x.so", None), ("a/../../x.so", None)])
def test_zip_members_never_extract_outside_the_scratch_folder(member, safe):
    assert safe_member_path(member) == safe


@pytest.mark.parametrize("filename", [
    "foo-1.0-cp311-cp311-linux_armv7l.whl", "foo-1.0-cp311-abi3-linux_armv7l.whl",
    "foo-1.0-cp38-abi3-linux_armv7l.whl", "foo-1.0-py3-none-any.whl", "foo-1.0-py2.py3-none-any.whl",
    "foo-1.0-cp311-none-linux_armv7l.whl", "foo-1.0-py3-none-linux_armv7l.whl", "foo-1.0-2-py3-none-any.whl",
    # the target's architecture under a manylinux tag: whether the wheel meets it is read from its ELF
    # files (check_received_wheel, builds/wheel_abi.py)
    "foo-1.0-cp311-cp311-manylinux_2_17_armv7l.whl",
])
def test_tags_that_fit_the_target_or_are_pure_are_accepted(filename):
    assert check_target_tags(filename, "cp311", "linux_armv7l")


@pytest.mark.parametrize("filename, says", [
    ("foo-1.0-cp311-cp311-linux_x86_64.whl", "it is for linux_x86_64"),
    ("foo-1.0-cp311-cp311-linux_armv7l.linux_x86_64.whl", "it is for linux_x86_64"),  # one tag too many
    ("foo-1.0-cp311-cp311-manylinux_2_17_aarch64.whl", "it is for manylinux_2_17_aarch64"),
    ("foo-1.0-cp312-cp312-linux_armv7l.whl", "it is for cp312"),
    ("foo-1.0-cp312-abi3-linux_armv7l.whl", "none of its tags"),   # abi3 from a newer Python
    ("foo-1.0-cp312-none-any.whl", "none of its tags"),
    ("foo-1.0-py2-none-any.whl", "none of its tags"),
])
def test_tags_for_another_target_are_refused(filename, says):
    with pytest.raises(WheelRefused, match=says):
        check_target_tags(filename, "cp311", "linux_armv7l")


def test_a_build_number_is_set_in_the_file_name_alone():
    assert with_build_number("Foo_Bar-1.0-cp311-cp311-linux_armv7l.whl", 1) == (
        "Foo_Bar-1.0-1-cp311-cp311-linux_armv7l.whl")
    assert with_build_number("foo-1.0-3-py3-none-any.whl", 4) == "foo-1.0-4-py3-none-any.whl"
    assert [build_number(n) for n in ("foo-1.0-py3-none-any.whl", "foo-1.0-7-py3-none-any.whl",
                                      "foo-1.0-12abc-py3-none-any.whl")] == [0, 7, 12]
    with pytest.raises(ValueError):
        with_build_number("foo-1.0-py3-none-any.whl", 0)


def test_the_index_host_reads_name_version_and_requires_python_from_the_wheel_itself(tmp_path):
    wheel = make_wheel(tmp_path, "Foo_Bar-1.0-py3-none-any.whl", {
        "foo_bar/__init__.py": b"", "Foo_Bar-1.0.dist-info/METADATA": METADATA})
    checked = check_received_wheel(wheel, package="foo-bar", version="1.0", abi="cp311", platform="linux_armv7l")
    assert (checked.python_tag, checked.abi_tag, checked.platform_tag, checked.pure) == ("py3", "none", "any", True)
    assert checked.requires_python == ">=3.9" and checked.metadata == METADATA
    assert checked.metadata_sha256 == hashlib.sha256(METADATA).hexdigest()
    assert not (tmp_path / "Foo_Bar-1.0-py3-none-any.whl.metadata").exists(), "the index host writes nothing"


# --- metadata and tool output ------------------------------------------------------------------------

def test_metadata_gives_name_requires_python_and_requires_dist():
    assert parse_metadata(METADATA) == ("Foo-Bar", ">=3.9", ("requests (>=2)",
                                                              'tomli; python_version < "3.11"'))
    assert parse_metadata(b"Metadata-Version: 2.1\nName: x\nVersion: 1\n") == ("x", None, ())


def test_a_dpkg_list_file_gives_every_path_of_its_package_without_the_architecture():
    text = "/.\n/usr\n/usr/lib/arm-linux-gnueabihf/libyaml-0.so.2\n/usr/lib/arm-linux-gnueabihf/libyaml-0.so.2.0.9\n"
    assert parse_dpkg_list("libyaml-0-2:armhf", text) == {
        "/.": "libyaml-0-2", "/usr": "libyaml-0-2",
        "/usr/lib/arm-linux-gnueabihf/libyaml-0.so.2": "libyaml-0-2",
        "/usr/lib/arm-linux-gnueabihf/libyaml-0.so.2.0.9": "libyaml-0-2"}


def test_ld_so_conf_gives_folders_and_includes():
    assert parse_ld_so_conf("# multiarch\ninclude /etc/ld.so.conf.d/*.conf\n/opt/vc/lib  # firmware\n") == (
        ["/opt/vc/lib"], ["/etc/ld.so.conf.d/*.conf"])


def test_links_in_an_image_are_followed_inside_the_image_never_into_the_host(tmp_path):
    root = tmp_path / "image"
    (root / "usr/lib/arm-linux-gnueabihf").mkdir(parents=True)
    (root / "usr/lib/arm-linux-gnueabihf/libfoo.so.1.2").write_bytes(b"x")
    (root / "usr/lib/arm-linux-gnueabihf/libfoo.so.1").symlink_to("libfoo.so.1.2")
    (root / "lib").symlink_to("usr/lib")                   # merged /usr
    (root / "usr/lib/arm-linux-gnueabihf/libc.so.6").symlink_to("/etc/hostname")  # absolute: the image's
    (root / "usr/lib/arm-linux-gnueabihf/loop").symlink_to("loop")
    assert real_path_in(root, "/lib/arm-linux-gnueabihf/libfoo.so.1") == "/usr/lib/arm-linux-gnueabihf/libfoo.so.1.2"
    assert real_path_in(root, "/usr/lib/arm-linux-gnueabihf/libc.so.6") is None, "the host's /etc is not the image's"
    assert real_path_in(root, "/usr/lib/arm-linux-gnueabihf/loop") is None


def test_merged_usr_paths_are_looked_up_both_ways():
    assert path_aliases("/usr/lib/x86_64-linux-gnu/libz.so.1") == [
        "/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1"]
    assert path_aliases("/lib64/ld.so") == ["/lib64/ld.so", "/usr/lib64/ld.so"]


# --- whole wheels ------------------------------------------------------------------------------------

def test_a_pure_wheel_is_described_and_its_metadata_kept_beside_it(tmp_path):
    wheel = make_wheel(tmp_path, "Foo_Bar-1.0-py3-none-any.whl", {
        "foo_bar/__init__.py": b"", "Foo_Bar-1.0.dist-info/METADATA": METADATA,
        "Foo_Bar-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\n"})
    info = analyse_wheel(wheel, "foo-bar", "1.0")
    data = wheel.read_bytes()
    assert (info.sha256, info.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert (info.python_tag, info.abi_tag, info.platform_tag, info.pure) == ("py3", "none", "any", True)
    assert info.requires_python == ">=3.9" and info.requires_dist[0] == "requests (>=2)"
    sidecar = tmp_path / "Foo_Bar-1.0-py3-none-any.whl.metadata"
    assert sidecar.read_bytes() == METADATA
    assert info.metadata.sha256 == hashlib.sha256(METADATA).hexdigest()
    assert info.dependencies == ()
    assert WheelInfo.from_dict(info.to_dict()) == info


def test_a_wheel_whose_metadata_names_another_package_is_refused(tmp_path):
    wheel = make_wheel(tmp_path, "foo-1.0-py3-none-any.whl", {
        "foo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: bar\nVersion: 1.0\n"})
    with pytest.raises(WheelRefused, match="METADATA names 'bar'"):
        analyse_wheel(wheel, "foo", "1.0")


def test_a_wheel_without_metadata_is_refused(tmp_path):
    wheel = make_wheel(tmp_path, "foo-1.0-py3-none-any.whl", {"foo.py": b""})
    with pytest.raises(WheelRefused, match="expected one .dist-info/METADATA, found 0"):
        analyse_wheel(wheel, "foo", "1.0")


def test_a_wheel_that_is_not_a_zip_is_refused(tmp_path):
    wheel = tmp_path / "foo-1.0-py3-none-any.whl"
    wheel.write_bytes(b"not a zip")
    with pytest.raises(WheelRefused, match="not a readable zip"):
        analyse_wheel(wheel, "foo", "1.0")


@pytest.fixture
def open_tmp():
    path = open_folder("wheelwright-analysis-")
    yield path
    shutil.rmtree(path)


@needs_gcc
def test_compiled_objects_give_apt_packages_and_unowned_libraries(open_tmp):
    tmp_path = open_tmp
    libdir = tmp_path / "libs"
    libdir.mkdir()
    (tmp_path / "helper.c").write_text("int helper(void) { return 1; }\n")
    (tmp_path / "gone.c").write_text("int gone(void) { return 2; }\n")
    (tmp_path / "ext.c").write_text(
        "#include <unistd.h>\nint helper(void); int gone(void);\n"
        "int entry(void) { return (int)getpid() + helper() + gone(); }\n")
    for lib in ("helper", "gone"):
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(libdir / f"lib{lib}.so"),
                        str(tmp_path / f"{lib}.c")], check=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "ext.so"), str(tmp_path / "ext.c"),
                    f"-L{libdir}", "-lhelper", "-lgone", f"-Wl,-rpath,{libdir}", "-Wl,--no-as-needed"],
                   check=True)
    (libdir / "libgone.so").unlink()  # a library the worker no longer has
    wheel = make_wheel(tmp_path, "ext-1.0-cp311-cp311-linux_x86_64.whl", {
        "ext/_ext.so": (tmp_path / "ext.so").read_bytes(),
        "ext-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: ext\nVersion: 1.0\n"})
    info = analyse_wheel(wheel, "ext", "1.0")  # built on this system: its libraries, its dpkg database
    assert ("apt", "libc6") in info.dependencies
    # its RUNPATH is a folder of the worker, no library folder: the library there is not looked at
    assert ("unowned", "libhelper.so") in info.dependencies
    assert ("unowned", "libgone.so") in info.dependencies


@needs_gcc
def test_a_library_the_wheel_bundles_is_its_own_not_a_dependency(open_tmp):
    (open_tmp / "helper.c").write_text("int helper(void) { return 1; }\n")
    (open_tmp / "ext.c").write_text("int helper(void);\nint entry(void) { return helper(); }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libhelper-1a2b.so", "-o",
                    str(open_tmp / "libhelper-1a2b.so"), str(open_tmp / "helper.c")], check=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(open_tmp / "ext.so"), str(open_tmp / "ext.c"),
                    "-Wl,--no-as-needed", f"-L{open_tmp}", "-l:libhelper-1a2b.so", "-lc",
                    "-Wl,-rpath,$ORIGIN/../ext.libs"], check=True)
    wheel = make_wheel(open_tmp, "ext-1.0-cp311-cp311-linux_x86_64.whl", {
        "ext/_ext.so": (open_tmp / "ext.so").read_bytes(),
        "ext.libs/libhelper-1a2b.so": (open_tmp / "libhelper-1a2b.so").read_bytes(),
        "ext-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: ext\nVersion: 1.0\n"})
    info = analyse_wheel(wheel, "ext", "1.0")
    assert not [d for d in info.dependencies if "helper" in d[1]], info.dependencies
    assert ("apt", "libc6") in info.dependencies


def test_a_file_that_only_looks_like_elf_is_read_without_harm(tmp_path):
    wheel = make_wheel(tmp_path, "ext-1.0-cp311-cp311-linux_x86_64.whl", {
        "ext/_ext.so": b"\x7fELF" + b"\xff" * 200,
        "ext-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: ext\nVersion: 1.0\n"})
    assert analyse_wheel(wheel, "ext", "1.0").dependencies == ()


# --- what a wheel may not hold ----------------------------------------------------------------------------

def _record_wheel(tmp_path, record: bytes, extra: dict | None = None):
    return make_wheel(tmp_path, "foo-1.0-py3-none-any.whl", {
        "foo.py": b"", "foo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: foo\nVersion: 1.0\n",
        "foo-1.0.dist-info/RECORD": record, **(extra or {})})


@pytest.mark.parametrize("record, says", [
    (b"foo.py,sha256=x,0\n../../../bin/python,,\n", "its RECORD lists '../../../bin/python'"),
    (b"foo.py,,\n/etc/passwd,,\n", "its RECORD lists '/etc/passwd'"),
    (b"foo.py,,\nbar.py,,\n", "its RECORD lists 'bar.py'"),
    (b"\xff\xfe not text", "its RECORD is not a CSV file of paths"),
])
def test_a_record_listing_what_the_wheel_does_not_hold_is_refused_on_both_sides(tmp_path, record, says):
    """An installer uninstalls what RECORD lists: a path outside the wheel would go with it."""
    from wheelwright.builds.builder import check_archive
    wheel = _record_wheel(tmp_path, record)
    with pytest.raises(WheelRefused, match=says):
        check_received_wheel(wheel, package="foo", version="1.0", abi="cp311", platform="linux_armv7l")
    with pytest.raises(WheelRefused, match=says):
        check_archive(wheel)


def test_an_honest_record_is_accepted(tmp_path):
    wheel = _record_wheel(tmp_path, b"foo.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n"
                                    b"foo-1.0.dist-info/METADATA,,\nfoo-1.0.dist-info/RECORD,,\n")
    assert check_received_wheel(wheel, package="foo", version="1.0", abi="cp311", platform="linux_armv7l")


def test_a_member_named_twice_is_refused(tmp_path):
    """Installers disagree on which of two members of one name counts: pip could install another
    METADATA than the one published beside the wheel."""
    import warnings
    import zipfile
    wheel = tmp_path / "foo-1.0-py3-none-any.whl"
    with warnings.catch_warnings(), zipfile.ZipFile(wheel, "w") as zf:
        warnings.simplefilter("ignore")
        zf.writestr("foo-1.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: foo\nVersion: 1.0\n")
        zf.writestr("foo-1.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: foo\nVersion: 1.0\n"
                                                  b"Requires-Dist: evil\n")
    with pytest.raises(WheelRefused, match="more than once"):
        check_received_wheel(wheel, package="foo", version="1.0", abi="cp311", platform="linux_armv7l")


def test_a_log_shows_control_characters_instead_of_acting_on_them(tmp_path):
    import gzip
    from wheelwright.builds.builder import CappedLog
    log = CappedLog(tmp_path / "1.txt.gz", 10_000)
    log.write(b"\x1b]52;c;ZXZpbA==\x07 \x1b[2J safe\rforged\n\xc2")   # clipboard, clear screen, overwrite
    log.write(b"\x9b6n caf\xc3\xa9\ttab\n")                           # C1 CSI split over two chunks
    log.close()
    text = gzip.decompress((tmp_path / "1.txt.gz").read_bytes())
    assert text == b"^[]52;c;ZXZpbA==^G ^[[2J safe^Mforged\n\\x9b6n caf\xc3\xa9\ttab\n"


def test_a_reason_is_one_line_of_visible_characters_whatever_it_quotes():
    from wheelwright.builds.builder import one_line
    assert one_line("refused evil\n[wheelwright: success]\x1b[2J") == "refused evil\\x0a[wheelwright: success]\\x1b[2J"
    assert len(one_line("x" * 10_000)) == 500
