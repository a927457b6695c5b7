"""How files land in the tree: a folder that does not exist yet is built hidden and appears whole.

Plain folders, no catalog: the StagedTree on its own, the way the publisher drives it.
"""

from __future__ import annotations

import os

from wheelwright.publish.tree import StagedTree, is_temp


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_new_folder_is_invisible_until_it_is_complete(tmp_path):
    tree = StagedTree(tmp_path)
    target = tmp_path / "simple" / "demo"
    folder = tree.stage_dir(str(target))
    assert is_temp(os.path.basename(folder)), "a new folder is built under a hidden name"
    tree.write_in(folder, "index.html", b"<html>")
    tree.write_in(folder + "/json", "index.json", b"{}")
    assert not target.exists(), "nothing is visible before the commit"
    tree.commit()
    assert names(target) == ["index.html", "json"]
    assert (target / "json" / "index.json").read_bytes() == b"{}"
    assert names(tmp_path / "simple") == ["demo"], "the hidden folder is gone: it was renamed"
    assert tree.written == 2
    tree.finish()


def test_an_existing_folder_gets_its_files_replaced_one_by_one(tmp_path):
    target = tmp_path / "simple" / "demo"
    target.mkdir(parents=True)
    (target / "demo-1.0-py3-none-any.whl").write_bytes(b"PK")
    tree = StagedTree(tmp_path)
    folder = tree.stage_dir(str(target))
    assert folder == str(target)
    tree.write_in(folder, "index.html", b"<html>")
    tree.commit()
    assert names(target) == ["demo-1.0-py3-none-any.whl", "index.html"]


def test_a_folder_that_appears_meanwhile_gets_the_pages_moved_in(tmp_path):
    """The build side moves a package's first wheel in while the publisher builds its folder."""
    tree = StagedTree(tmp_path)
    target = tmp_path / "simple" / "demo"
    folder = tree.stage_dir(str(target))
    tree.write_in(folder, "index.html", b"<html>")
    tree.write_in(folder, "index.json", b"{}")
    target.mkdir()
    (target / "demo-1.0-py3-none-any.whl").write_bytes(b"PK")
    tree.commit()
    assert names(target) == ["demo-1.0-py3-none-any.whl", "index.html", "index.json"], \
        "the wheel stays and the pages join it"
    assert names(tmp_path / "simple") == ["demo"]
    assert tree.written == 2


def test_a_hidden_folder_left_by_a_killed_run_is_rebuilt(tmp_path):
    stale = tmp_path / "simple" / ".ww-tmp.demo"
    stale.mkdir(parents=True)
    (stale / "index.html").write_bytes(b"half")
    (stale / "junk").write_bytes(b"junk")
    tree = StagedTree(tmp_path)
    folder = tree.stage_dir(str(tmp_path / "simple" / "demo"))
    tree.write_in(folder, "index.html", b"<html>")
    tree.commit()
    assert names(tmp_path / "simple") == ["demo"]
    assert names(tmp_path / "simple" / "demo") == ["index.html"], "nothing of the killed run is kept"
    assert (tmp_path / "simple" / "demo" / "index.html").read_bytes() == b"<html>"


def test_a_hidden_folder_left_beside_an_existing_one_is_removed(tmp_path):
    (tmp_path / "simple" / "demo").mkdir(parents=True)
    (tmp_path / "simple" / ".ww-tmp.demo").mkdir()
    tree = StagedTree(tmp_path)
    tree.stage_dir(str(tmp_path / "simple" / "demo"))
    assert names(tmp_path / "simple") == ["demo"]


def test_abandoning_drops_staged_folders(tmp_path):
    tree = StagedTree(tmp_path)
    folder = tree.stage_dir(str(tmp_path / "simple" / "demo"))
    tree.write_in(folder, "index.html", b"<html>")
    tree.abandon()
    assert names(tmp_path / "simple") == []
    tree.commit()
    assert names(tmp_path / "simple") == []


def test_a_big_batch_commits_only_when_asked(tmp_path):
    """A commit never happens behind the caller's back, so no folder is renamed half-written."""
    tree = StagedTree(tmp_path, batch=3)
    folder = tree.stage_dir(str(tmp_path / "demo"))
    for n in range(5):
        tree.write_in(folder, f"page{n}", b"x")
    assert not (tmp_path / "demo").exists()
    tree.commit_if_full()
    assert len(names(tmp_path / "demo")) == 5
