"""evaluate stage: score a trained model on the test clips (genreflow.model.metrics does the scoring).

evaluate_task at the end is the thin wrapper that reads shards and writes
results; score_model is shared with cross-validation and the promotion gate.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from genreflow.model.metrics import evaluate_predictions
from genreflow.storage.outputs import OutputSpec, open_output, output_location
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import open_shard_array, read_shard_index

PREDICTIONS_FILE = "predictions.parquet"  # one row a test clip: its probabilities and the prediction
EVALUATION_FILE = "evaluation.json"  # the metrics


# ---- Prefect task ---------------------------------------------------------------------------


def original_clips(root: DataRoot, shards: list[tuple[str, str]], tracks: Collection[str] | None = None
               ) -> list[tuple[pd.DataFrame, np.ndarray]]:
    """(index, memory-mapped array) of the original clips in ``shards``, of ``tracks`` if given."""
    selected = []
    for stage, shard in shards:
        index = read_shard_index(root, stage, shard)
        keep = index["augmentation"] == "original"
        if tracks is not None:
            keep &= index["track_id"].isin(tracks)
        if keep.any():
            selected.append((index[keep], open_shard_array(root, stage, shard)))
    return selected


def score_model(root: DataRoot, name: str, clips: list[tuple[pd.DataFrame, np.ndarray]]
                ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Predictions and metrics of the model models/<name>/ on ``clips`` (see :func:`original_clips`)."""
    from genreflow.model.predict import load_classifier, predict_clips

    if not clips:
        raise ValueError("no test clips to evaluate: the split left no test tracks")
    classifier = load_classifier(Path(root.local_path(output_location(root, "train", name)[0])))
    probs = [predict_clips(classifier.model, mel[index["row"].to_numpy()]) for index, mel in clips]
    return evaluate_predictions(pd.concat([index for index, _ in clips], ignore_index=True), np.concatenate(probs),
                                list(classifier.genres))


@task(name="evaluate")
def evaluate_task(root_url: str, test_shards: list[tuple[str, str]], spec: OutputSpec, force: bool
                  ) -> dict[str, Any]:
    """Predict every test clip with the model ``spec.key``: reports/<run>/predictions.parquet and evaluation.json."""
    root = DataRoot(root_url)
    with open_output(root, spec, force) as out:
        if out.done:
            return out.read_json(EVALUATION_FILE)
        predictions, metrics = score_model(root, spec.key, original_clips(root, test_shards))
        out.write_parquet(PREDICTIONS_FILE, predictions)
        out.write_json(EVALUATION_FILE, metrics)
        out.rows = len(predictions)
    return metrics
