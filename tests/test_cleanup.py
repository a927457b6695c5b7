"""Removing trees from outside (``builds.cleanup.remove_tree``): whatever shape a build gave its tree,
the tree goes, nothing outside it is touched, and what cannot go is said rather than raised.

Property tests build random trees of folders, files, links (to files and folders outside the tree,
inside it, nowhere), FIFOs and modes of 000 beside a guarded folder outside; then the tree must be
gone and the guarded folder exactly as it was. Real depth (1,600 nested folders, where
``shutil.rmtree`` raises ``RecursionError``), a worker that is not root facing folders chmod'ed to 000,
and a file system mounted inside the tree are shown one by one.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.build_world import open_folder
from wheelwright.builds.cleanup import remove_tree

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every path under ``folder`` with its kind, mode and content (or link target)."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st_ = path.lstat()
            if stat.S_ISLNK(st_.st_mode):
                seen[str(path)] = ("link", os.readlink(path))
            elif stat.S_ISREG(st_.st_mode):
                seen[str(path)] = ("file", stat.S_IMODE(st_.st_mode), path.read_bytes())
            else:
                seen[str(path)] = ("other", stat.S_IFMT(st_.st_mode), stat.S_IMODE(st_.st_mode))
    return seen


def make_deep(top: Path, depth: int, name: str = "d") -> Path:
    """``depth`` nested folders under ``top`` (made relative to an open folder: the path would be
    longer than PATH_MAX)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
        with open(os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, 0o000, dir_fd=fd), "w") as leaf:
            leaf.write("the bottom")
    finally:
        os.close(fd)
    return top


# --- random trees -----------------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c", "..a", ".hidden", "sp ace", "x" * 200, "\udcff\udcfe", "nl\nin"])

# A node: ("dir", mode, {name: node}) | ("file", mode) | ("link", target kind) | ("fifo",)
nodes = st.recursive(
    st.one_of(
        st.tuples(st.just("file"), st.sampled_from([0o644, 0o000, 0o200, 0o4755])),
        st.tuples(st.just("link"), st.sampled_from(["outside-file", "outside-dir", "inside", "nowhere",
                                                    "self", "root", "parent"])),
        st.tuples(st.just("fifo")),
    ),
    lambda children: st.tuples(st.just("dir"), st.sampled_from([0o755, 0o000, 0o500, 0o100, 0o1777]),
                               st.dictionaries(NAMES, children, max_size=4)),
    max_leaves=25,
)


def build_tree(path: Path, node, guarded: Path, late_modes: list) -> None:
    kind = node[0]
    if kind == "file":
        path.write_bytes(b"data")
        path.chmod(node[1])
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "link":
        target = {"outside-file": guarded / "file.txt", "outside-dir": guarded / "folder",
                  "inside": path.parent, "nowhere": guarded / "missing" / "x", "self": path,
                  "root": Path("/"), "parent": Path("..")}[node[1]]
        path.symlink_to(target)
    else:
        path.mkdir()
        for name, child in node[2].items():
            build_tree(path / name, child, guarded, late_modes)
        late_modes.append((path, node[1]))  # set after its children are made


@pytest.fixture
def guarded():
    """A folder outside the trees that links in them point at; it must not change."""
    path = open_folder("wheelwright-guarded-")
    (path / "file.txt").write_text("keep me")
    (path / "folder").mkdir()
    (path / "folder" / "inner.txt").write_text("keep me too")
    (path / "folder").chmod(0o555)
    yield path
    (path / "folder").chmod(0o755)
    shutil.rmtree(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.dictionaries(NAMES, nodes, max_size=5))
def test_any_tree_is_removed_and_nothing_outside_it_changes(tree, guarded, tmp_path_factory):
    base = tmp_path_factory.mktemp("trees")
    top = base / "work"
    late: list = []
    build_tree(top, ("dir", 0o755, tree), guarded, late)
    for path, mode in late:
        path.chmod(mode)
    before = snapshot(guarded)
    assert remove_tree(top) == []
    assert not os.path.lexists(top), "the tree is gone"
    assert snapshot(guarded) == before, "nothing outside the tree changed"
    assert list(base.iterdir()) == []


def test_a_link_or_a_file_in_place_of_the_tree_is_removed_itself(guarded, tmp_path):
    (tmp_path / "work").symlink_to(guarded / "folder")
    before = snapshot(guarded)
    assert remove_tree(tmp_path / "work") == []
    assert not os.path.lexists(tmp_path / "work") and snapshot(guarded) == before
    (tmp_path / "plain").write_text("x")
    assert remove_tree(tmp_path / "plain") == [] and not (tmp_path / "plain").exists()
    assert remove_tree(tmp_path / "never-there") == []


# --- depth, permissions, mounts ---------------------------------------------------------------------

def test_1600_nested_folders_are_removed_where_shutil_gives_up(tmp_path):
    (tmp_path / "deep").mkdir()
    make_deep(tmp_path / "deep", 1600)
    with pytest.raises(RecursionError):  # what the code did before, ignore_errors=True or not
        shutil.rmtree(tmp_path / "deep", ignore_errors=True)
    assert remove_tree(tmp_path / "deep") == []
    assert not (tmp_path / "deep").exists()


NOT_ROOT = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from wheelwright.builds.cleanup import remove_tree
top = sys.argv[2]
os.makedirs(top + "/a/b/c")
open(top + "/a/b/c/f", "w").close()
open(top + "/a/g", "w").close()
os.chmod(top + "/a/b/c/f", 0)
os.chmod(top + "/a/b/c", 0)
os.chmod(top + "/a/g", 0)
os.chmod(top + "/a/b", 0o100)
os.chmod(top + "/a", 0o500)
left = remove_tree(top)
print(json.dumps({"left": left, "exists": os.path.lexists(top)}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the test drops from root to an unprivileged worker")
def test_a_worker_that_is_not_root_removes_folders_the_build_chmod_ed_to_000():
    nobody = pwd.getpwnam("nobody")
    home = open_folder("wheelwright-cleanup-")
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    try:
        done = subprocess.run(["/usr/bin/python3", "-c", NOT_ROOT, str(REPO / "include"), str(home / "work")],
                              user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
                              capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"left": [], "exists": False}
    finally:
        shutil.rmtree(home)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a file system needs root")
def test_a_file_system_mounted_inside_the_tree_is_left_alone_and_said(tmp_path):
    top = tmp_path / "work"
    (top / "busy").mkdir(parents=True)
    (top / "other.txt").write_text("x")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(top / "busy")], check=True)
    try:
        (top / "busy" / "theirs.txt").write_text("not the tree's")
        left = remove_tree(top)
        assert left == [f"{top}/busy: another file system is mounted there; left as it is"]
        assert (top / "busy" / "theirs.txt").read_text() == "not the tree's"
        assert not (top / "other.txt").exists(), "the rest of the tree went"
    finally:
        subprocess.run(["umount", str(top / "busy")], check=True)
    assert remove_tree(top) == [] and not top.exists()


# --- where trees from outside are removed ---------------------------------------------------------------

def test_the_sweep_removes_a_builders_folder_however_deep(catalog, settings, tmp_path):
    from datetime import timedelta
    from support.build_world import add_build, add_release, use_targets
    from wheelwright.builds import incoming
    use_targets(catalog)
    add_release(catalog, "deep", "1.0")
    build_id = add_build(catalog, "deep", "1.0", "cp311-armv7l", "failure")  # no longer in flight
    folder = tmp_path / "incoming" / "pi-a" / str(build_id)      # a builder account's folder
    folder.mkdir(parents=True)
    make_deep(folder, 1600)
    (folder / "d").chmod(0)
    swept = incoming.sweep(catalog, tmp_path / "incoming", settings.output, settle=timedelta(0))
    assert swept.removed == [f"pi-a/{build_id}"]
    assert not folder.exists()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chattr") is None, reason="an immutable file needs root")
def test_what_cannot_be_removed_is_named_and_the_rest_goes(tmp_path):
    top = tmp_path / "work"
    (top / "sub" / "deeper").mkdir(parents=True)
    (top / "sub" / "locked").write_text("immutable")
    (top / "sub" / "deeper" / "plain").write_text("x")
    (top / "beside").write_text("x")
    subprocess.run(["chattr", "+i", str(top / "sub" / "locked")], check=True)
    try:
        left = remove_tree(top)
        assert left == [f"{top}/sub/locked: Operation not permitted"], left
        assert sorted(p.name for p in top.rglob("*")) == ["locked", "sub"], "everything else went"
    finally:
        subprocess.run(["chattr", "-i", str(top / "sub" / "locked")], check=True)
    assert remove_tree(top) == []
