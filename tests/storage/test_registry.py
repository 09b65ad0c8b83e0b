"""The model registry: the promoted run, the history of decisions, and data roots of genreflow 0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from genreflow.storage.registry import PromotionRecord, Registry, read_registry, record_decision
from genreflow.storage.root import DataRoot, StorageError


def test_decisions_are_kept_and_only_a_promotion_moves_the_alias(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    assert read_registry(root) == Registry()
    record_decision(root, PromotionRecord(run="run-1", decision="promoted", reason="first", policy="if-better"))
    record_decision(root, PromotionRecord(run="run-2", decision="rejected", reason="worse", policy="if-better",
                                          previous="run-1", run_track_accuracy=0.5, previous_track_accuracy=0.8))
    registry = read_registry(root)
    assert registry.promoted == "run-1" and [r.run for r in registry.history] == ["run-1", "run-2"]
    assert registry.last_decision("run-2").decision == "rejected"  # type: ignore[union-attr]
    assert registry.last_decision("run-3") is None
    assert not list(tmp_path.rglob("*.tmp*"))


def test_a_0_1_data_root_promotes_its_latest_run_until_the_first_decision(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "LATEST").write_text("run-old\n")
    assert read_registry(root).promoted == "run-old"
    record_decision(root, PromotionRecord(run="run-new", decision="rejected", reason="worse", policy="if-better",
                                          previous="run-old"))
    assert read_registry(root).promoted == "run-old"  # carried into the registry by the first decision


def test_a_damaged_registry_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "registry.json").write_text("{not json")
    with pytest.raises(StorageError, match=r"not a genreflow model registry.*genreflow promote RUN"):
        read_registry(DataRoot(str(tmp_path)))
