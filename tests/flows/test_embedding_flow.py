"""The embedding family through the whole DAG: embed shards, the head, the choice on validation, the report.

musicnn's real weights are not needed: a stand-in cache holds random
checkpoints of the real network's shapes (tests/model/musicnn_tiny.py), which is
all the plumbing sees. What the real weights are worth is measured in
docs/model.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genreflow.flows.config import Config
from genreflow.flows.plan import embedding_model_spec, plan_shards
from genreflow.flows.rebuild import run_command
from genreflow.model.open_set import MIN_CORRECT
from genreflow.storage.outputs import state_of, tracks_path
from genreflow.storage.registry import read_registry
from genreflow.storage.root import DataRoot
from tests.flows.conftest import small_config
from tests.model.musicnn_tiny import stand_in_weights_cache

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

FEATURE_DIMS = 753 + 50  # the default feature: MSD max_pool and its 50 tag scores side by side


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stand_in_weights_cache(tmp_path_factory.mktemp("weights"))


def embedding_config(root: Path, demo: Path, weights: Path, **overrides: object) -> Config:
    values: dict[str, object] = {"weights_dir": str(weights), "epochs": 2, "shard_size": 6}
    return small_config(root, demo, **{**values, **overrides})


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path, weights: Path) -> tuple[Config, dict]:
    config = embedding_config(tmp_path_factory.mktemp("root"), demo_dir, weights)
    return config, run_command("rebuild", config)


def test_every_shard_gets_one_embedding_a_decoded_clip(rebuilt: tuple[Config, dict]) -> None:
    config, outcome = rebuilt
    root = DataRoot(config.run.data_root)
    plans = plan_shards(root.read_parquet(tracks_path(root)), config)
    assert all(p.embed is not None for p in plans) and {p.split for p in plans} == {"train", "val", "test"}
    for plan in plans:
        assert state_of(root, plan.embed) == "done"
        folder = Path(config.run.data_root)
        vectors = np.load(folder / "embed" / f"{plan.shard}.npy")
        index = pd.read_parquet(folder / "embed" / f"{plan.shard}.parquet")
        decoded = pd.read_parquet(folder / "decode" / f"{plan.shard}.parquet")
        assert vectors.dtype == np.float32 and vectors.shape == (len(decoded), FEATURE_DIMS)
        assert np.isfinite(vectors).all() and vectors.std() > 0
        assert index[["track_id", "clip_index", "row"]].equals(decoded[["track_id", "clip_index", "row"]])
        assert set(index["augmentation"]) == {"original"}
    assert outcome["changes"]["shards"]["embed"] == {"computed": len(plans), "reused": 0}


def test_both_families_are_trained_and_the_best_on_validation_is_promoted(rebuilt: tuple[Config, dict]) -> None:
    config, outcome = rebuilt
    root = DataRoot(config.run.data_root)
    trained = outcome["trained"]
    assert set(trained) == {"cnn", "embedding"}
    assert trained["cnn"]["run"].startswith("run-") and trained["embedding"]["run"].startswith("emb-")
    assert trained["embedding"]["dims"] == FEATURE_DIMS and trained["embedding"]["C"] in (0.01, 0.1, 1.0)
    selection = outcome["selection"]
    families = [row["family"] for row in selection["candidates"]]
    assert families == ["cnn", "embedding", "baseline"]
    chosen = next(row for row in selection["candidates"] if row["chosen"])
    best = max(row["val_track_accuracy"] for row in selection["candidates"] if row["promotable"])
    assert chosen["val_track_accuracy"] == best and chosen["family"] == selection["chosen"]
    assert outcome["train"]["run"] == selection["run"] == chosen["run"]
    assert outcome["metrics"]["family"] == selection["chosen"]
    assert outcome["promotion"]["run"] == selection["run"]
    assert read_registry(root).promoted == selection["run"]
    for family, summary in trained.items():  # each evaluated on both splits, by its own shards
        evaluation = json.loads((Path(config.run.data_root) / "reports" / summary["run"] / "evaluation.json")
                                .read_text())
        assert evaluation["family"] == family and evaluation["validation"]["n_tracks"] >= 1
        # Issue 23: both families save an open-set threshold chosen on the same validation tracks
        saved = json.loads((Path(config.run.data_root) / "models" / summary["run"] / "open_set.json").read_text())
        assert saved["validation_tracks"] == evaluation["validation"]["n_tracks"]
        assert (saved["threshold"] is None) == (saved["validation_correct"] < MIN_CORRECT), saved
        assert evaluation["open_set"]["threshold"] == saved["threshold"] and evaluation["open_set"]["curve"]
        # and a novelty reference of their training tracks, its cut chosen on them too; evaluate measures it
        novelty = saved["novelty"]
        assert novelty["validation_tracks"] == saved["validation_tracks"] and novelty["cut"] > 0
        assert novelty["reference_tracks"] >= 2 and novelty["dims"] == (FEATURE_DIMS if family == "embedding"
                                                                        else novelty["dims"])
        assert 0.0 <= evaluation["open_set"]["novelty"]["beyond"] <= 1.0


def test_the_report_sets_the_candidates_side_by_side(rebuilt: tuple[Config, dict]) -> None:
    _, outcome = rebuilt
    report = (Path(outcome["report"]["dir"]) / "report.md").read_text()
    assert "## Model candidates" in report
    for row in outcome["selection"]["candidates"]:
        assert row["name"] in report
    assert f"{outcome['trained']['cnn']['run']} |" in report and f"{outcome['trained']['embedding']['run']} |" in report
    assert "Chosen on the validation split" in report and outcome["selection"]["reason"] in report
    document = json.loads((Path(outcome["report"]["dir"]) / "metrics.json").read_text())
    assert document["selection"]["chosen"] == outcome["selection"]["chosen"]


def test_an_unchanged_rebuild_reuses_every_embedding_and_both_models(rebuilt: tuple[Config, dict]) -> None:
    config, first = rebuilt
    again = run_command("rebuild", config)
    assert again["changes"]["shards"]["embed"]["computed"] == 0
    assert all(summary["skipped"] for summary in again["trained"].values())
    assert again["selection"] == first["selection"]


def test_model_cnn_and_model_embedding_train_one_family(rebuilt: tuple[Config, dict]) -> None:
    config, first = rebuilt
    cnn_only = config.model_copy(update={"train": config.train.model_copy(update={"family": "cnn"})})
    root = DataRoot(config.run.data_root)
    assert all(p.embed is None for p in plan_shards(root.read_parquet(tracks_path(root)), cnn_only))
    embedding_only = config.model_copy(update={"train": config.train.model_copy(update={"family": "embedding"})})
    outcome = run_command("train", embedding_only)
    assert set(outcome["trained"]) == {"embedding"} and outcome["trained"]["embedding"]["skipped"]
    assert outcome["selection"]["reason"].startswith("the only model trained")
    assert outcome["train"]["run"] == first["trained"]["embedding"]["run"]


def test_best_without_weights_trains_the_cnn_alone(demo_dir: Path, tmp_path: Path) -> None:
    config = small_config(tmp_path / "root", demo_dir, weights_dir=str(tmp_path / "empty"))
    tracks = pd.DataFrame({"track_id": ["a"], "path": ["a.mp3"], "genre": ["rock"], "split": ["train"],
                           "shard": ["train-0000"]})
    plans = plan_shards(tracks, config)
    assert plans[0].embed is None and embedding_model_spec(plans, config) is None


def test_cross_validation_chooses_a_family_in_each_fold(rebuilt: tuple[Config, dict]) -> None:
    config, _ = rebuilt
    folded = config.model_copy(update={"train": config.train.model_copy(update={"folds": 3})})  # a train track
    # of every genre in each fold (3 a genre)
    outcome = run_command("evaluate", folded)
    summary = outcome["report"]["summary"]
    assert {"cnn", "embedding", "chosen", "baseline"} <= set(summary)
    report = Path(outcome["report"]["dir"])
    chosen_values = []
    for n in (1, 2, 3):
        fold = json.loads((report / f"fold-{n}.json").read_text())
        family = fold["selection"]["chosen"]
        others = [f for f in ("cnn", "embedding") if f != family]
        assert fold[family]["validation"]["track_accuracy"] >= max(fold[f]["validation"]["track_accuracy"]
                                                                     for f in others)
        assert fold["chosen"] == fold[family] and fold["run"].endswith("-embedding") == (family == "embedding")
        chosen_values.append(fold[family]["track_accuracy"])
    assert summary["chosen"]["track_accuracy"]["values"] == chosen_values
    assert "| Chosen on validation |" in (report / "crossval.md").read_text()


def test_status_counts_the_embed_shards_and_the_embedding_model(rebuilt: tuple[Config, dict]) -> None:
    from genreflow.flows.status import collect_status

    config, outcome = rebuilt
    status = collect_status(config)
    assert status["stages"]["embed"] == {"done": status["shards"]}
    assert status["embedding_run"] == outcome["trained"]["embedding"]["run"] and status["embedding_train"] == "done"
    cnn_only = config.model_copy(update={"train": config.train.model_copy(update={"family": "cnn"})})
    assert "embed" not in collect_status(cnn_only)["stages"] and collect_status(cnn_only)["embedding_run"] is None


def test_evaluate_scores_an_embedding_run_on_its_own_shards(rebuilt: tuple[Config, dict]) -> None:
    config, first = rebuilt
    run = first["trained"]["embedding"]["run"]
    chosen = config.model_copy(update={"run": config.run.model_copy(update={"evaluate_run": run})})
    outcome = run_command("evaluate", chosen)
    assert set(outcome["trained"]) == {"embedding"} and outcome["train"]["run"] == run
    assert outcome["metrics"]["family"] == "embedding"
    assert outcome["metrics"]["track_accuracy"] == first["selection"]["candidates"][1]["test_track_accuracy"]
    assert (Path(outcome["report"]["dir"]).name == run)


def test_model_embedding_fetches_the_weights_on_first_use_and_best_does_not(
        demo_dir: Path, weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from prefect import flow

    from genreflow.flows.plan import embedding_weights
    from genreflow.flows.preprocess import ensure_embedding_weights
    from genreflow.model import weights as weights_module

    fetched: list[str | None] = []

    def fetch(source: object, weights_dir: str | None = None, **_: object) -> Path:
        """What a successful `genreflow weights fetch` leaves: the cache folder, complete."""
        fetched.append(weights_dir)
        target = Path(str(weights_dir)) / weights_module.MUSICNN.folder
        shutil.copytree(weights / weights_module.MUSICNN.folder, target)
        return target

    monkeypatch.setattr(weights_module, "fetch_weights", fetch)
    empty = tmp_path / "cache"
    best = small_config(tmp_path / "root", demo_dir, weights_dir=str(empty))
    flow(ensure_embedding_weights)(best)
    assert fetched == [] and embedding_weights(best.train) is None  # best goes on without them
    embedding = best.model_copy(update={"train": best.train.model_copy(update={"family": "embedding"})})
    flow(ensure_embedding_weights)(embedding)
    assert fetched == [str(empty)] and embedding_weights(embedding.train) is not None
    flow(ensure_embedding_weights)(embedding)
    assert len(fetched) == 1  # only on first use


def test_model_embedding_without_embed_shards_is_one_clear_error(rebuilt: tuple[Config, dict],
                                                                  tmp_path: Path) -> None:
    from genreflow.flows.train import TrainingError

    config, _ = rebuilt
    blind = config.model_copy(update={"train": config.train.model_copy(
        update={"family": "embedding", "weights_dir": str(tmp_path / "none")})})
    with pytest.raises(TrainingError, match="--family embedding: musicnn's weights are not in the cache"):
        run_command("train", blind)
