"""evaluate stage: score a trained model on the test clips (genreflow.model.metrics does the scoring).

evaluate_task at the end is the thin wrapper that reads shards and writes
results; model_scorer (score_model, scores_with_validation) is shared with
cross-validation and the promotion gate.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from prefect import task

from genreflow.model.files import EMBEDDING_FILE
from genreflow.model.metrics import evaluate_predictions
from genreflow.storage.outputs import OutputSpec, open_output, output_location, output_path
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import open_shard_array, read_shard_index

PREDICTIONS_FILE = "predictions.parquet"  # one row a test clip: its probabilities and the prediction
EVALUATION_FILE = "evaluation.json"  # the metrics
ModelFamily = Literal["cnn", "embedding"]
INPUT_STAGES: dict[str, str] = {"cnn": "mel", "embedding": "embed"}  # the shards each family's model reads
VALIDATION_METRICS = ("track_accuracy", "clip_accuracy", "macro_f1", "log_loss", "n_tracks")


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


def model_family(root: DataRoot, name: str) -> ModelFamily:
    """"embedding" for a run of the embedding family (its folder has embedding.json), else "cnn"."""
    return "embedding" if root.exists(output_path(root, "train", name, EMBEDDING_FILE)) else "cnn"


Scorer = Callable[[list[str], Collection[str] | None], tuple[pd.DataFrame, dict[str, Any]]]


def model_scorer(root: DataRoot, name: str) -> Scorer:
    """The model models/<name>/, loaded once, as a function of (shards, tracks or None) giving its predictions
    and metrics on the original clips of those shards (of those tracks).

    Each family reads its own shards of the same clips: the CNN the mel
    shards, the embedding model the embed shards, through its head only.
    """
    from genreflow.model.predict import load_classifier, predict_clips

    family = model_family(root, name)
    classifier = load_classifier(Path(root.local_path(output_location(root, "train", name)[0])))
    if family == "embedding":
        from genreflow.model.embedding import head_model

        head = head_model(classifier.model)

        def predict(x: np.ndarray) -> np.ndarray:
            return np.asarray(head.predict_on_batch(np.asarray(x, np.float32)))
    else:
        def predict(x: np.ndarray) -> np.ndarray:
            return predict_clips(classifier.model, x)

    def score(shards: list[str], tracks: Collection[str] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
        clips = original_clips(root, [(INPUT_STAGES[family], shard) for shard in shards], tracks)
        if not clips:
            raise ValueError("no clips to evaluate: the split left no tracks")
        probs = [predict(array[index["row"].to_numpy()]) for index, array in clips]
        return evaluate_predictions(pd.concat([index for index, _ in clips], ignore_index=True),
                                    np.concatenate(probs), list(classifier.genres))

    return score


def score_model(root: DataRoot, name: str, shards: list[str], tracks: Collection[str] | None = None
                ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Predictions and metrics of the model models/<name>/ on the original clips of ``shards`` (of ``tracks``)."""
    return model_scorer(root, name)(shards, tracks)


def scores_with_validation(root: DataRoot, name: str, shards: list[str], test: Collection[str] | None,
                           val_shards: list[str], val: Collection[str] | None
                           ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The model's test predictions and metrics, the metrics with ``validation``: its VALIDATION_METRICS on the
    validation clips (None without any), what the families are compared on (tasks/select.py). One load."""
    score = model_scorer(root, name)
    predictions, metrics = score(shards, test)
    metrics["validation"] = None
    if val_shards and (val is None or len(val)):
        metrics["validation"] = {key: value for key, value in score(val_shards, val)[1].items()
                                 if key in VALIDATION_METRICS}
    return predictions, metrics


# ---- Prefect task ---------------------------------------------------------------------------


@task(name="evaluate")
def evaluate_task(root_url: str, test_shards: list[str], val_shards: list[str], spec: OutputSpec, force: bool
                  ) -> dict[str, Any]:
    """Predict every test clip with the model ``spec.key``: reports/<run>/predictions.parquet and evaluation.json.

    The validation tracks are scored too (``validation`` in the metrics): the
    model families are compared there, so the test split stays unseen by the choice.
    """
    root = DataRoot(root_url)
    with open_output(root, spec, force) as out:
        if out.done:
            return out.read_json(EVALUATION_FILE)
        predictions, metrics = scores_with_validation(root, spec.key, test_shards, None, val_shards, None)
        metrics["family"] = model_family(root, spec.key)
        out.write_parquet(PREDICTIONS_FILE, predictions)
        out.write_json(EVALUATION_FILE, metrics)
        out.rows = len(predictions)
    return metrics
