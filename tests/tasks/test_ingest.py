"""The ingest stage: a source read, split and sharded into the track table, and what changed since the last one."""

from __future__ import annotations

import math
from pathlib import Path

from genreflow.storage.root import QUARANTINE_COLUMNS
from genreflow.tasks.ingest import ingest
from genreflow.tasks.sources import TRACK_COLUMNS
from genreflow.tasks.sources.fma import FmaSource
from genreflow.tasks.sources.folder import FolderSource
from genreflow.tasks.sources.label_csv import CsvSource
from tests.tasks.collection_files import assert_no_leakage, touch, write_text

# --------------------------------------------------------------------------- ingest


def test_ingest_folder_end_to_end(tmp_path: Path) -> None:
    for genre in ("rock", "jazz", "pop"):
        for i in range(10):
            touch(tmp_path / genre / f"song{i:02d}.wav")
    tracks, skipped = ingest(FolderSource(tmp_path), 0.1, 0.1, 42, shard_size=4)
    assert list(tracks.columns) == list(TRACK_COLUMNS)
    assert list(skipped.columns) == list(QUARANTINE_COLUMNS)
    assert skipped.empty
    assert len(tracks) == 30
    counts = tracks["split"].value_counts().to_dict()
    assert counts == {"train": 23, "val": 2, "test": 5}  # a hash split of 30 tracks, seed 42
    expected = [f"{split}-{i:04d}" for split in ("train", "val", "test") for i in range(math.ceil(counts[split] / 4))]
    assert list(tracks["shard"].unique()) == expected
    assert tracks["path"].map(lambda p: Path(p).is_absolute() and Path(p).is_file()).all()


def test_ingest_fma_keeps_official_split_and_reports_skipped(fma_root: Path) -> None:
    tracks, skipped = ingest(FmaSource(fma_root), 0.1, 0.1, 42, shard_size=2)
    assert list(tracks["track_id"]) == ["000002", "000003", "000140", "000005", "000010"]
    assert list(tracks["shard"]) == ["train-0000", "train-0000", "train-0001", "val-0000", "test-0000"]
    assert list(skipped.columns) == ["track_id", "path", "genre", "reason"]
    assert set(skipped["reason"]) == {"no genre", "audio file missing"}


def test_ingest_has_no_leakage_between_splits(tmp_path: Path) -> None:
    lines = ["path,genre,artist"]
    for genre in ("rock", "jazz", "folk"):
        for i in range(40):
            touch(tmp_path / genre / f"{i:02d}.mp3")
            lines.append(f"{genre}/{i:02d}.mp3,{genre},{genre}-artist{i % 11}")
    csv_path = write_text(tmp_path / "labels.csv", "\n".join(lines) + "\n")
    tracks, _ = ingest(CsvSource(csv_path, None), 0.1, 0.1, 42, shard_size=16)
    assert_no_leakage(tracks)
    assert set(tracks["split"]) == {"train", "val", "test"}
    splits_per_track = tracks.groupby("track_id")["split"].nunique()
    assert (splits_per_track == 1).all()
    assert (tracks.groupby("shard")["split"].nunique() == 1).all()


def test_changes_since_the_last_ingest(tmp_path: Path) -> None:
    from genreflow.tasks.ingest import evaluation_set_id, track_changes

    for genre in ("rock", "jazz"):
        for i in range(30):
            touch(tmp_path / genre / f"song{i:02d}.wav")
    first, _ = ingest(FolderSource(tmp_path), 0.1, 0.1, 42, shard_size=8)
    assert track_changes(None, first) | {"examples": None} == {
        "first_ingest": True, "tracks": 60, "added": 60, "removed": 0, "modified": 0, "examples": None,
        "removed_by_split": {}, "test_set": evaluation_set_id(first), "test_set_same": False}
    (tmp_path / "rock" / "song00.wav").unlink()
    touch(tmp_path / "pop" / "new.wav")
    gone = first.set_index("track_id").loc["rock/song00"]
    second, _ = ingest(FolderSource(tmp_path), 0.1, 0.1, 42, shard_size=8, previous=first)
    changes = track_changes(first, second)
    assert (changes["added"], changes["removed"], changes["modified"]) == (1, 1, 0)
    assert changes["examples"]["added"] == ["pop/new"] and changes["removed_by_split"] == {gone["split"]: 1}
    assert changes["test_set_same"] == (gone["split"] != "test" and second.set_index("track_id").loc[
        "pop/new", "split"] != "test")
    retagged = second.copy()
    retagged.loc[retagged["track_id"] == "jazz/song03", "genre"] = "blues"
    assert track_changes(second, retagged)["examples"]["modified"] == ["jazz/song03"]
