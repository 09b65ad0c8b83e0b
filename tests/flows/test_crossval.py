"""``genreflow evaluate --folds K``: K folds on the existing shards, CNN beside baseline, no track across folds."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from genreflow.flows.config import Config
from genreflow.flows.rebuild import run_command
from genreflow.storage.root import DataRoot
from genreflow.tasks.train import clip_sources
from tests.flows.conftest import small_config

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

FOLDS = 3


def crossval_config(root: Path, demo: Path, **overrides: object) -> Config:
    return small_config(root, demo, clips_per_track=1, time_stretch=[], pitch_shift=[2.0], epochs=2, patience=2,
                        batch_size=8, folds=FOLDS, **overrides)


@pytest.fixture(scope="module")
def crossvalidated(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> tuple[Config, dict]:
    config = crossval_config(tmp_path_factory.mktemp("root"), demo_dir)
    run_command("preprocess", config)
    return config, run_command("evaluate", config)


def test_every_track_is_tested_in_exactly_one_fold(crossvalidated: tuple[Config, dict]) -> None:
    config, outcome = crossvalidated
    report = Path(outcome["report"]["dir"])
    folds = [json.loads((report / f"fold-{n}.json").read_text()) for n in range(1, FOLDS + 1)]
    tracks = pd.read_parquet(Path(config.run.data_root) / "tracks.parquet")
    tested = [t for fold in folds for t in fold["test_tracks"]]
    assert sorted(tested) == sorted(tracks["track_id"])
    for fold in folds:
        assert fold["cnn"]["n_tracks"] == len(fold["test_tracks"]) == fold["tracks"]["test"]
        assert fold["baseline"]["n_tracks"] == fold["cnn"]["n_tracks"]


def test_no_clip_or_augmented_copy_of_a_test_track_is_trained_on(crossvalidated: tuple[Config, dict]) -> None:
    config, outcome = crossvalidated
    root = DataRoot(config.run.data_root)
    report = Path(outcome["report"]["dir"])
    shards = [(stage, p.stem) for stage in ("mel", "augment")
              for p in sorted((Path(config.run.data_root) / stage).glob("*.npy"))]
    assert any(stage == "augment" for stage, _ in shards), "the check needs augmented copies to exist"
    for n in range(1, FOLDS + 1):
        fold = json.loads((report / f"fold-{n}.json").read_text())
        trained = {t for source in clip_sources(root, shards, tracks=fold["train_tracks"])
                   for t in source.index["track_id"]}
        assert trained and not trained & set(fold["test_tracks"]) and not trained & set(fold["val_tracks"])


def test_report_gives_mean_and_std_for_cnn_and_baseline(crossvalidated: tuple[Config, dict]) -> None:
    _, outcome = crossvalidated
    report = Path(outcome["report"]["dir"])
    text = (report / "crossval.md").read_text()
    assert "| Metric (mean ± std over folds) | CNN | MFCC + SVM |" in text
    summary = json.loads((report / "crossval.json").read_text())["summary"]
    for model in ("cnn", "baseline"):
        values = summary[model]["track_accuracy"]["values"]
        assert len(values) == FOLDS and all(0 <= v <= 1 for v in values)
        assert summary[model]["track_accuracy"]["mean"] == pytest.approx(sum(values) / FOLDS)
        assert f"{summary[model]['track_accuracy']['mean']:.3f} ± " in text
    assert (report / "crossval.html").read_text().startswith("<!DOCTYPE html>")


def test_rerun_reuses_the_fold_models(crossvalidated: tuple[Config, dict]) -> None:
    config, first = crossvalidated
    again = run_command("evaluate", config)
    assert again["crossval"] == first["crossval"]
    folds = again["report"]["summary"]
    assert folds["cnn"] == first["report"]["summary"]["cnn"]
    report = Path(again["report"]["dir"])
    for n in range(1, FOLDS + 1):
        assert json.loads((report / f"fold-{n}.json").read_text())["training"]["skipped"] is True
