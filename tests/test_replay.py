"""The replay buffer: a bulk replay's events in memory, and past its bound on disk, in partitions."""

import logging

import polars as pl

from wheelwright.catalog import store as catalog
from wheelwright.catalog.bulk import replay
from wheelwright.catalog.bulk.replay import ReplayBuffer

# Eight packages, and a rename from "alpha" to "omega": its event belongs to both histories.
PAGES = [
    [[f"pkg{i}", None, i, "create", i] for i in range(1, 9)],
    [["pkg1", "1.0", 20, "new release", 20], ["alpha", None, 21, "create", 21],
     ["omega", None, 22, "rename from alpha", 22]],
    [["pkg2", "2.0", 30, "new release", 30], ["pkg8", "0.1", 31, "new release", 31]],
]


def filled(buffer: ReplayBuffer, redelivered: int | None = None) -> ReplayBuffer:
    for number, rows in enumerate(PAGES):
        page = catalog.prepare_page(rows)
        buffer.add(catalog.IngestResult(frame=page.frame, redelivered=number == redelivered))
    return buffer


def serials_by_package(frame: pl.DataFrame) -> dict[str, list[int]]:
    histories: dict[str, list[int]] = {}
    for row in frame.iter_rows(named=True):
        for name in {row["package"], row["other_package"]} - {None}:
            histories.setdefault(name, []).append(row["serial"])
    return {name: sorted(serials) for name, serials in histories.items()}


def test_a_buffer_within_its_bound_keeps_every_event_in_memory(tmp_path):
    with filled(ReplayBuffer(0, 100, spill_dir=tmp_path)) as buffer:
        assert not buffer.spilled and list(tmp_path.iterdir()) == []
        [(events, own)] = buffer.parts()
        assert events.height == 13 and buffer.end == 31
        assert own == {f"pkg{i}" for i in range(1, 9)} | {"alpha", "omega"}


def test_a_buffer_past_its_bound_holds_each_history_whole_in_one_partition(tmp_path, caplog):
    everything = pl.concat([catalog.prepare_page(rows).frame for rows in PAGES])
    caplog.set_level(logging.INFO, logger="wheelwright.catalog.bulk.replay")
    with filled(ReplayBuffer(0, 4, expected=13, spill_dir=tmp_path)) as buffer:
        assert buffer.spilled
        assert buffer.end == 31
        parts = list(buffer.parts())
        assert len(parts) > 1, "13 events with memory for 4 make several partitions"
        folding = [r.getMessage() for r in caplog.records if "folding partition" in r.getMessage()]
        assert len(folding) == len(parts) and folding[-1].endswith(f"{parts[-1][0].height} events"), \
            "a long replay says which partition it folds"
        owners: dict[str, int] = {}
        for number, (frame, own) in enumerate(parts):
            histories = serials_by_package(frame)
            for name in own:
                assert name not in owners, f"{name} is owned by one partition only"
                owners[name] = number
                assert histories[name] == serials_by_package(everything)[name], f"{name}'s history is whole"
            assert set(histories) >= own
        assert set(owners) == replay.packages_of(everything)
        assert not any(tmp_path.rglob("*.arrow")), "each partition's files are removed once read"
    assert list(tmp_path.iterdir()) == [], "closing the buffer removes its folder"


def test_a_rename_is_in_the_partitions_of_both_its_names(tmp_path, monkeypatch):
    # Two partitions, with "alpha" and "omega" in different ones whatever the hash.
    monkeypatch.setattr(replay, "_part", lambda name, parts: (name == "omega").cast(pl.UInt64))
    with filled(ReplayBuffer(0, 0, spill_dir=tmp_path)) as buffer:
        parts = {number: (frame, own) for number, (frame, own) in enumerate(buffer.parts())}
    assert "alpha" in parts[0][1] and "omega" in parts[1][1]
    assert 22 in parts[0][0].get_column("serial").to_list()
    assert parts[1][0].get_column("serial").to_list() == [22]


def test_a_spilled_buffer_still_knows_the_packages_of_redelivered_pages(tmp_path):
    with filled(ReplayBuffer(0, 0, spill_dir=tmp_path), redelivered=2) as buffer:
        assert buffer.spilled
        assert buffer.tainted == {"pkg2", "pkg8"}


def test_a_buffer_that_spills_removes_folders_left_by_replays_that_died_and_no_other(tmp_path):
    abandoned = tmp_path / f"{replay.SPILL_PREFIX}dead"
    abandoned.mkdir()
    (abandoned / "lock").touch()  # nobody holds it: its process is gone
    (abandoned / "0-0.arrow").write_bytes(b"events")
    unrelated = tmp_path / f"{replay.SPILL_PREFIX}without-lock"
    unrelated.mkdir()
    with filled(ReplayBuffer(0, 0, spill_dir=tmp_path)) as running:
        assert not abandoned.exists()
        assert unrelated.exists(), "a folder without a lock is not a buffer's, or not made yet"
        folders = set(tmp_path.iterdir())
        with filled(ReplayBuffer(0, 0, spill_dir=tmp_path)) as second:
            assert folders < set(tmp_path.iterdir()), "the folder of the buffer in use stays"
            assert len(list(second.parts())) > 0 and len(list(running.parts())) > 0
    assert list(tmp_path.iterdir()) == [unrelated]
