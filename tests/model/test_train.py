"""Training: learns a separable toy problem, writes its files, and resumes after being killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from genreflow.model.dataset import ClipSource
from genreflow.model.train import HISTORY_COLUMNS, TrainResult, train_model

# Tiny clips: the seed CNN needs (n_mels - 4) >= 8 for its valid conv and three 2x2 pools.
N_MELS, FRAMES = 16, 32
INPUT_SHAPE = (N_MELS, FRAMES, 1)
GENRES = ["blues", "jazz", "rock"]
REPO = Path(__file__).resolve().parents[2]


def toy_shard(directory: Path, name: str, n: int, seed: int, split: str) -> ClipSource:
    """Log-mel-like clips whose genre k is a loud band at mel rows 5k..5k+3 over a noisy floor."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(GENRES), n)
    clips = rng.normal(-60.0, 5.0, (n, N_MELS, FRAMES))
    for i, label in enumerate(labels):
        clips[i, 5 * label : 5 * label + 4] += 45.0
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / f"{name}.npy", clips.astype(np.float16))
    index = pd.DataFrame(
        {
            "track_id": [f"{name}-{i}" for i in range(n)],
            "clip_index": 0,
            "augmentation": "original",
            "split": split,
            "genre": [GENRES[k] for k in labels],
            "row": np.arange(n),
        }
    )
    return ClipSource(directory / f"{name}.npy", index)


def toy_data(directory: Path) -> tuple[list[ClipSource], list[ClipSource], dict[str, list[float]]]:
    train = [toy_shard(directory, f"train-{i}", 24, seed=i, split="train") for i in range(3)]
    val = [toy_shard(directory, "val-0", 12, seed=99, split="val")]
    clips = np.concatenate([np.load(s.path).astype(np.float64) for s in train])
    stats = {"mean": clips.mean(axis=(0, 2)).tolist(), "std": clips.std(axis=(0, 2)).tolist()}
    return train, val, stats


def run_training(data_dir: Path, out_dir: Path, epochs: int = 8, **kwargs) -> TrainResult:
    train, val, stats = toy_data(data_dir)
    settings = {"batch_size": 16, "learning_rate": 3e-3, "patience": 50, "seed": 0, **kwargs}
    return train_model(train, val, GENRES, stats, out_dir, epochs=epochs, input_shape=INPUT_SHAPE, **settings)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, Path]:
    base = tmp_path_factory.mktemp("trained")
    return run_training(base / "data", base / "run"), base


def test_learns_a_separable_problem(trained: tuple[TrainResult, Path]) -> None:
    result, base = trained
    model = keras.saving.load_model(result.model_path, safe_mode=True)
    val = toy_data(base / "data")[1][0]
    x = np.load(val.path).astype(np.float32)[..., None]
    predicted = model.predict_on_batch(x).argmax(axis=1)
    expected = val.index["genre"].map({g: i for i, g in enumerate(GENRES)}).to_numpy()
    assert (predicted == expected).mean() >= 0.9
    assert result.history["val_accuracy"].max() >= 0.9
    assert result.history["loss"].iloc[-1] < result.history["loss"].iloc[0]


def test_writes_model_history_and_labels(trained: tuple[TrainResult, Path]) -> None:
    result, base = trained
    run = base / "run"
    assert result.model_path == run / "model.keras"
    assert sorted(p.name for p in run.iterdir()) == ["history.csv", "labels.json", "model.keras"]
    assert json.loads((run / "labels.json").read_text()) == GENRES
    history = pd.read_csv(run / "history.csv")
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert history["epoch"].tolist() == list(range(1, 9))
    assert result.epochs_run == 8 and result.resumed_from_epoch is None
    # The saved weights are the best epoch's by validation loss.
    assert result.best_epoch == int(history.loc[history["val_loss"].idxmin(), "epoch"])


def test_saved_model_predicts_like_the_trained_one(trained: tuple[TrainResult, Path], tmp_path: Path) -> None:
    result, base = trained
    model = keras.saving.load_model(result.model_path, safe_mode=True)
    x = np.load(toy_data(base / "data")[1][0].path)[..., None]
    # A second save/load round trip of the loaded model keeps the predictions exactly.
    model.save(tmp_path / "again.keras")
    again = keras.saving.load_model(tmp_path / "again.keras", safe_mode=True)
    np.testing.assert_allclose(again.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-6)
    best = result.history.loc[result.history["epoch"] == result.best_epoch, "val_loss"].item()
    evaluated = model.evaluate(x.astype(np.float32), _labels(base), verbose=0, return_dict=True)
    assert evaluated["loss"] == pytest.approx(best, rel=1e-3)


def _labels(base: Path) -> np.ndarray:
    return toy_data(base / "data")[1][0].index["genre"].map({g: i for i, g in enumerate(GENRES)}).to_numpy()


def test_same_seed_gives_identical_weights(tmp_path: Path) -> None:
    first = run_training(tmp_path / "data", tmp_path / "a", epochs=2)
    second = run_training(tmp_path / "data", tmp_path / "b", epochs=2)
    a = keras.saving.load_model(first.model_path, safe_mode=True).get_weights()
    b = keras.saving.load_model(second.model_path, safe_mode=True).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    pd.testing.assert_frame_equal(first.history, second.history)


def test_progress_and_no_validation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    train, _, stats = toy_data(tmp_path / "data")
    seen: list[tuple[int, int, dict]] = []
    with caplog.at_level("WARNING", logger="genreflow.model.train"):
        result = train_model(
            train, [], GENRES, stats, tmp_path / "run", epochs=2, batch_size=32, learning_rate=1e-3,
            patience=5, seed=1, progress=lambda e, n, logs: seen.append((e, n, logs)),
        )  # fmt: skip
    assert [(e, n) for e, n, _ in seen] == [(1, 2), (2, 2)]
    assert {"loss", "accuracy"} <= set(seen[0][2])
    assert "no validation clips" in caplog.text
    assert result.history["val_loss"].isna().all() and result.history["loss"].notna().all()


RESUME_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {tests!r})
    from test_train import run_training

    def die_after_two(epoch, epochs, logs):
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    run_training(Path({data!r}), Path({out!r}), epochs=5, progress=die_after_two)
    """
)


def test_resumes_after_being_killed(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "run"
    script = RESUME_SCRIPT.format(repo=str(REPO), tests=str(Path(__file__).parent), data=str(data), out=str(out))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "model.keras").exists()
    assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [1, 2]
    before = pd.read_csv(out / "history.csv")

    epochs_seen: list[int] = []
    result = run_training(data, out, epochs=5, progress=lambda e, n, logs: epochs_seen.append(e))
    assert result.resumed_from_epoch == 3
    assert epochs_seen == [3, 4, 5]
    assert result.history["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert result.epochs_run == 5
    pd.testing.assert_frame_equal(result.history.iloc[:2], before)
    assert not (out / "backup").exists()
    assert keras.saving.load_model(result.model_path, safe_mode=True) is not None


def test_resume_drops_rows_after_the_backup_and_keeps_the_best_weights(tmp_path: Path) -> None:
    """A kill between an epoch's history row and its backup leaves a row the rerun must redo.

    The rerun must also take the early-stopping state (best loss and its weights)
    from before the kill: history.csv is edited so that an epoch before the kill
    looks unbeatable, and the saved model must then hold that epoch's weights.
    """
    data, out = tmp_path / "data", tmp_path / "run"

    def stop_after_two(epoch: int, epochs: int, logs: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt  # stands in for a kill: the backup of epoch 2 is on disk

    with pytest.raises(KeyboardInterrupt):
        run_training(data, out, epochs=4, progress=stop_after_two)
    history = pd.read_csv(out / "history.csv")
    best = int(history.loc[history["val_loss"].idxmin(), "epoch"])
    true_best_loss = float(history.loc[best - 1, "val_loss"])
    history.loc[best - 1, "val_loss"] = -1.0  # no real loss is negative
    history.to_csv(out / "history.csv", index=False)
    with open(out / "history.csv", "a") as handle:
        handle.write("3,1.0,-2.0,1.0,-2.0\n")  # epoch 3 finished, killed before its backup

    result = run_training(data, out, epochs=4)
    assert result.resumed_from_epoch == 3
    assert result.history["epoch"].tolist() == [1, 2, 3, 4]
    assert result.history.loc[2, "loss"] > 0
    assert result.best_epoch == best
    model = keras.saving.load_model(result.model_path, safe_mode=True)
    x = np.load(toy_data(data)[1][0].path).astype(np.float32)[..., None]
    loss = model.evaluate(x, _labels(tmp_path), verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(true_best_loss, rel=1e-3)


def test_resume_after_early_stopping_trains_no_further(tmp_path: Path) -> None:
    """Killed after early stopping ended training but before the model was saved."""
    data, out = tmp_path / "data", tmp_path / "run"

    def stop_after_two(epoch: int, epochs: int, logs: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(data, out, epochs=6, patience=1, progress=stop_after_two)
    history = pd.read_csv(out / "history.csv")
    true_loss = float(history.loc[0, "val_loss"])
    history.loc[0, "val_loss"] = -1.0  # epoch 1 best, epoch 2 no better: patience 1 is used up
    history.to_csv(out / "history.csv", index=False)

    trained: list[int] = []
    result = run_training(data, out, epochs=6, patience=1, progress=lambda e, n, logs: trained.append(e))
    assert trained == []
    assert result.history["epoch"].tolist() == [1, 2] and result.best_epoch == 1
    model = keras.saving.load_model(result.model_path, safe_mode=True)
    x = np.load(toy_data(data)[1][0].path).astype(np.float32)[..., None]
    loss = model.evaluate(x, _labels(tmp_path), verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(true_loss, rel=1e-3)


def test_rerun_after_success_starts_afresh(tmp_path: Path) -> None:
    run_training(tmp_path / "data", tmp_path / "run", epochs=2)
    again = run_training(tmp_path / "data", tmp_path / "run", epochs=2)
    assert again.resumed_from_epoch is None
    assert again.history["epoch"].tolist() == [1, 2]


GENREFLOW_KNOBS = {"batch_norm": True, "time_pooling": True, "spec_augment": True, "mixup": 0.3,
                   "label_smoothing": 0.1, "lr_schedule": "cosine", "class_weights": True}


def test_every_recipe_knob_trains_and_a_resume_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    """Masks, mixes and the schedule are functions of (seed, epoch, batch): a resumed run ends identical."""
    data = tmp_path / "data"
    whole = run_training(data, tmp_path / "whole", epochs=3, knobs=GENREFLOW_KNOBS)

    def stop_after_one(epoch: int, epochs: int, logs: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt  # stands in for a kill: the backup of epoch 1 is on disk

    with pytest.raises(KeyboardInterrupt):
        run_training(data, tmp_path / "resumed", epochs=3, knobs=GENREFLOW_KNOBS, progress=stop_after_one)
    resumed = run_training(data, tmp_path / "resumed", epochs=3, knobs=GENREFLOW_KNOBS)
    assert resumed.resumed_from_epoch == 2
    model = keras.saving.load_model(resumed.model_path, safe_mode=True)
    reference = keras.saving.load_model(whole.model_path, safe_mode=True)
    assert model.input_shape == (None, N_MELS, None, 1), "time pooling takes any number of frames"
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), reference.get_weights(), strict=True))
    pd.testing.assert_frame_equal(resumed.history, whole.history)
    assert whole.history["loss"].notna().all()


def test_class_weights_make_every_genre_weigh_the_same(tmp_path: Path) -> None:
    from genreflow.model.train import class_weights

    np.save(tmp_path / "a.npy", np.zeros((6, 4, 4), np.float16))
    index = pd.DataFrame({"row": np.arange(6), "genre": ["blues"] * 4 + ["jazz"] * 2})
    weights = class_weights([ClipSource(tmp_path / "a.npy", index)], {"blues": 0, "jazz": 1, "rock": 2})
    assert weights[0] * 4 == pytest.approx(weights[1] * 2) == pytest.approx(6 / 3)
    assert weights[0] == pytest.approx(6 / (3 * 4))
