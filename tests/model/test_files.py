"""Which model ``genreflow predict`` and ``export`` use (model/files.py resolve_model_dir): --model, else the promoted
one, never merely the newest."""

from __future__ import annotations

from pathlib import Path

import pytest

from genreflow.model.files import ModelNotFound, resolve_model_dir
from genreflow.storage.registry import PromotionRecord, record_decision
from genreflow.storage.root import DataRoot


def finished(root: Path, run: str) -> Path:
    folder = root / "models" / run
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"weights")
    return folder


def test_the_promoted_model_not_the_newest(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no promoted model"):
        resolve_model_dir(None, str(tmp_path))
    good, worse = finished(tmp_path, "run-good"), finished(tmp_path, "run-worse")
    data_root = DataRoot(str(tmp_path))
    record_decision(data_root, PromotionRecord(run="run-good", decision="promoted", reason="first", policy="if-better"))
    record_decision(data_root, PromotionRecord(run="run-worse", decision="rejected", reason="worse",
                                               policy="if-better", previous="run-good"))
    assert worse.exists() and resolve_model_dir(None, str(tmp_path)) == good
    assert resolve_model_dir(worse / "model.keras", str(tmp_path)) == worse  # --model wins


def test_a_data_root_of_genreflow_0_1_uses_its_latest_model(tmp_path: Path) -> None:
    legacy = finished(tmp_path, "run-old")
    (tmp_path / "models" / "LATEST").write_text("run-old\n")
    assert resolve_model_dir(None, str(tmp_path)) == legacy


def test_a_promoted_model_that_is_gone_says_what_to_do(tmp_path: Path) -> None:
    record_decision(DataRoot(str(tmp_path)), PromotionRecord(run="run-gone", decision="promoted", reason="r",
                                                             policy="always"))
    with pytest.raises(ModelNotFound, match=r"run-gone has no model\.keras.*genreflow promote RUN"):
        resolve_model_dir(None, str(tmp_path))
