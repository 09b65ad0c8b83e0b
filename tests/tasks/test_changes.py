"""What a rebuild changed: the summary, its sentences, and the stages whose code changed since the last one."""

from __future__ import annotations

from pathlib import Path

import pytest

from genreflow.storage.root import DataRoot
from genreflow.tasks.changes import (
    changes_lines,
    code_changes,
    code_versions,
    dependency_changes,
    library_versions,
    read_last_rebuild,
    rebuild_changes,
    write_last_rebuild,
)
from genreflow.tasks.workers import ShardResult

TRACKS = {"first_ingest": False, "tracks": 105, "added": 5, "removed": 2, "modified": 1,
          "removed_by_split": {"train": 2}, "test_set_same": True}


def test_summary_counts_shards_per_stage_and_says_it_in_order() -> None:
    results = [ShardResult("decode", "train-0000", True, 50, 50), ShardResult("decode", "train-0003", False, 5, 5),
               ShardResult("mel", "train-0003", False, 5, 5), ShardResult("augment", "train-0003", False, 5, 20)]
    changes = rebuild_changes(TRACKS, results, None)
    assert changes["shards"] == {"decode": {"computed": 1, "reused": 1}, "mel": {"computed": 1, "reused": 0},
                                 "augment": {"computed": 1, "reused": 0}}
    assert changes["code_changed"] == [] and changes["test_set_same"]
    assert changes_lines(changes) == [
        "Tracks: 5 added, 2 removed (train 2), 1 modified (re-tagged, moved or re-split); 105 now.",
        "Shards: decode 1 recomputed, 1 reused; mel 1 recomputed, 0 reused; augment 1 recomputed, 0 reused.",
        "Stages whose code changed: none.",
        "Dependencies changed: none.",
        "Test set: the same tracks as the previous rebuild.",
    ]
    del changes["dependencies_changed"]  # the record of a genreflow that compared no versions
    assert "Dependencies changed: none." not in changes_lines(changes)


def test_the_next_rebuild_compares_code_with_the_last_one(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    assert read_last_rebuild(root) is None and code_changes(None) == []
    record = write_last_rebuild(root, rebuild_changes(TRACKS, [], None), {"train": {"run": "run-1"}})
    assert read_last_rebuild(root) == record and record["run"] == "run-1"
    assert code_changes(record) == []
    older = {**record, "codes": {**record["codes"], "mel": "0000", "train": "1111"}}
    assert code_changes(older) == ["mel", "train"]
    assert set(code_versions()) >= {"ingest", "decode", "mel", "augment", "stats", "train", "evaluate", "report"}
    (tmp_path / "rebuilds" / "last.json").write_text("{not json")
    assert read_last_rebuild(root) is None  # unreadable: as if there were none


def test_the_next_rebuild_says_which_dependencies_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genreflow.tasks import stages

    root = DataRoot(str(tmp_path))
    record = write_last_rebuild(root, rebuild_changes(TRACKS, [], None), {})
    assert record["libraries"] == library_versions() and {"librosa", "soxr", "libsndfile", "keras"} <= set(
        record["libraries"])
    assert dependency_changes(record) == {} and dependency_changes({"codes": {}}) == {}  # none recorded: none compared
    installed = stages.library_version
    monkeypatch.setattr(stages, "library_version", lambda name: "9.9.9" if name == "librosa" else installed(name))
    before = record["libraries"]["librosa"]
    changes = rebuild_changes(TRACKS, [], read_last_rebuild(root))
    assert changes["dependencies_changed"] == {"librosa": [before, "9.9.9"]}
    assert f"Dependencies changed: librosa {before} → 9.9.9 (used by mel, augment, embed, baseline, predict)." in (
        changes_lines(changes))
