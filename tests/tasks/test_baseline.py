"""The baseline stage: trained from the original clips of mel shards, cached; its place in the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from genreflow.model.baseline import NAME, features_of, run_baseline
from genreflow.model.metrics import evaluate_predictions
from genreflow.storage.outputs import OutputSpec, open_output
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import write_shard
from genreflow.tasks.baseline import baseline_task
from genreflow.tasks.reporting.render import render_report
from tests.model.test_baseline import GENRES, genre_clips


def write_split(root: DataRoot, split: str, per_genre: int, rng: np.random.Generator) -> tuple[str, str]:
    arrays, rows = [], []
    for genre in GENRES:
        arrays.append(genre_clips(genre, per_genre, rng))
        rows += [{"track_id": f"{split}-{genre}-{i}", "clip_index": 0, "split": split, "genre": genre,
                  "augmentation": "original"} for i in range(per_genre)]
    array = np.concatenate(arrays)
    # An augmented copy of every clip, which the baseline must leave out.
    index = pd.DataFrame(rows + [{**r, "augmentation": "pitch+2"} for r in rows])
    index["row"] = np.arange(len(index))
    with open_output(root, OutputSpec("mel", f"{split}-0000", inputs="fp")) as out:
        write_shard(out, array=np.concatenate([array, array]), index=index)
    return ("mel", f"{split}-0000")


def test_baseline_task_trains_on_original_training_clips_and_caches(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path / "root"))
    rng = np.random.default_rng(2)
    shards = [[write_split(root, split, n, rng)] for split, n in (("train", 10), ("val", 3), ("test", 4))]
    spec = OutputSpec("baseline", "f" * 12, inputs="f" * 32)
    metrics = baseline_task.fn(root.url, GENRES, *shards, spec=spec, force=False, seed=0)
    assert metrics["n_train_clips"] == 30, "augmented copies are left out"
    assert metrics["n_clips"] == 12 and metrics["track_accuracy"] == 1.0
    saved = tmp_path / "root" / "baseline" / ("f" * 12)
    assert {p.name for p in saved.iterdir()} == {"metrics.json", "predictions.parquet", "manifest.json"}
    before = (saved / "metrics.json").stat().st_mtime_ns
    assert baseline_task.fn(root.url, GENRES, *shards, spec=spec, force=False, seed=0) == metrics
    assert (saved / "metrics.json").stat().st_mtime_ns == before, "a finished baseline is not redone"


def test_report_shows_the_cnn_beside_the_baseline() -> None:
    rng = np.random.default_rng(3)
    clips = [(pd.DataFrame({"track_id": [f"{g}-{i}" for i in range(6)], "genre": g, "row": np.arange(6)}),
              genre_clips(g, 6, rng)) for g in GENRES]
    _, baseline = run_baseline(features_of(clips), features_of(clips[:0]), features_of(clips), GENRES, seed=0)
    index = pd.concat([c for c, _ in clips], ignore_index=True)
    _, cnn = evaluate_predictions(index, np.eye(3)[np.repeat([0, 1, 2], 6)] * 0.8 + 0.2 / 3, GENRES)
    history = pd.DataFrame({"epoch": [1], "accuracy": [0.5], "loss": [1.0], "val_accuracy": [0.5],
                            "val_loss": [1.0]})
    summary = {"tracks": 18, "tracks_per_genre_split": {}, "clips": {}, "augmentations": [], "quarantined": []}
    files = render_report("run-x", cnn, history, summary, {}, baseline=baseline)
    text = files["report.md"].decode()
    assert f"| Metric | CNN | {NAME} |" in text
    assert f"| Track accuracy (mean-probability vote) | 1.000 | {baseline['track_accuracy']:.3f} |" in text
    assert b"MFCC + SVM" in files["report.html"]
