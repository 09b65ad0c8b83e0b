"""evaluate stage: score a trained model on the test clips (genreflow.model.metrics does the scoring).

evaluate_task at the end is the thin wrapper that reads shards and writes
results; model_scorer (score_model, scores_with_validation) is shared with
cross-validation and the promotion gate.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from prefect import task

from genreflow.model.files import EMBEDDING_FILE, OPEN_SET_FILE
from genreflow.model.metrics import evaluate_predictions, prob_columns, track_probabilities
from genreflow.storage.outputs import OutputSpec, open_output, output_location, output_path
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import open_shard_array, read_shard_index

if TYPE_CHECKING:
    from genreflow.model.open_set import NoveltyReference

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
    shards, the embedding model the embed shards, through its head only. A
    track-level head (issue 22) decides a track from the mean of its clips'
    embeddings, as prediction decides a file: each clip's row carries its
    track's probabilities, so the track vote is that decision. The metrics add
    ``ece`` (10 bins, over the tracks, of the probabilities the model gives)
    with its bins (``reliability``) and, for a track-level head,
    ``ece_uncalibrated`` and ``reliability_uncalibrated`` (its temperature left out). A model saved with a
    novelty reference (model/open_set.py) gives each clip's row its track's ``novelty``: the track's pooled
    representation (the CNN's last hidden layer, the embedding head's input) against the training tracks'.
    """
    from genreflow.model.predict import load_classifier, predict_clips, predict_windows

    family = model_family(root, name)
    classifier = load_classifier(Path(root.local_path(output_location(root, "train", name)[0])))
    track_heads = None  # a track-level head: (calibrated, logits)
    if family == "embedding" and classifier.is_track_level:
        from genreflow.model.embedding import track_head_model

        track_heads = (track_head_model(classifier.model), track_head_model(classifier.model, calibrated=False))
    elif family == "embedding":
        from genreflow.model.embedding import head_model

        head = head_model(classifier.model)

        def predict(x: np.ndarray) -> np.ndarray:
            return np.asarray(head.predict_on_batch(np.asarray(x, np.float32)))
    elif classifier.novelty_reference is not None:  # the CNN's probabilities and representations, one pass
        def predict(x: np.ndarray) -> np.ndarray:
            probs, representations = predict_windows(classifier, np.asarray(x))
            seen.append(representations)
            return probs
    else:
        def predict(x: np.ndarray) -> np.ndarray:
            return predict_clips(classifier.model, x)
    seen: list[np.ndarray] = []  # the CNN's representations of the clips predicted, for their novelty

    def score(shards: list[str], tracks: Collection[str] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
        clips = original_clips(root, [(INPUT_STAGES[family], shard) for shard in shards], tracks)
        if not clips:
            raise ValueError("no clips to evaluate: the split left no tracks")
        if family == "embedding":
            takes, holds = int(classifier.embedding_model.output_shape[-1]), int(clips[0][1].shape[-1])
            if takes != holds:  # an embedding model of an earlier embedding feature, scored by the gate
                raise ValueError(f"the embed shards hold {holds} numbers a clip and {name} takes {takes}: it was "
                                 "trained on another embedding feature or weights")
        index = pd.concat([index for index, _ in clips], ignore_index=True)
        genres = list(classifier.genres)
        if track_heads is None:  # clip by clip, a shard at a time
            seen.clear()
            probs = np.concatenate([predict(array[part["row"].to_numpy()]) for part, array in clips])
            predictions, metrics = evaluate_predictions(index, probs, genres)
            metrics["ece"], metrics["reliability"] = track_calibration(index, probs, genres)
            if seen:
                predictions["novelty"] = track_novelty(classifier.novelty_reference, np.concatenate(seen), index)
            return predictions, metrics
        from genreflow.model.embedding import track_decision
        from genreflow.model.track_head import softmax

        x = np.concatenate([np.asarray(array[part["row"].to_numpy()]) for part, array in clips])  # small: embeddings
        track_ids = index["track_id"].astype(str).to_numpy()
        probs = track_decision(track_heads[0], x, track_ids)
        predictions, metrics = evaluate_predictions(index, probs, genres)
        metrics["ece"], metrics["reliability"] = track_calibration(index, probs, genres)
        metrics["ece_uncalibrated"], metrics["reliability_uncalibrated"] = track_calibration(
            index, softmax(track_decision(track_heads[1], x, track_ids)), genres)
        if classifier.novelty_reference is not None:
            predictions["novelty"] = track_novelty(classifier.novelty_reference, x, index)
        return predictions, metrics

    return score


def track_novelty(reference: NoveltyReference, representations: np.ndarray, clips: pd.DataFrame) -> np.ndarray:
    """Each clip's row of its track's novelty: the mean of the track's clip representations against the
    training tracks', as predict pools a file's windows. [shape=(clips,)], float32."""
    from genreflow.model.track_head import pool_clips

    track_ids = clips["track_id"].astype(str).to_numpy()
    keys, pooled = pool_clips(np.asarray(representations, np.float64), track_ids)
    return reference.novelty(pooled).astype(np.float32)[np.searchsorted(keys, track_ids)]


def track_calibration(clips: pd.DataFrame, probs: np.ndarray, genres: list[str]
                      ) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error (10 bins) of the tracks' probabilities (their clips' mean, as the vote), and
    the bins it sums (the report's reliability diagram): count, mean top probability and accuracy of each."""
    from genreflow.model.track_head import expected_calibration_error, reliability_table

    tracks = track_probabilities(clips, probs, genres)
    labels = np.array([genres.index(g) for g in tracks["genre"].astype(str)])
    track_probs = tracks[prob_columns(genres)].to_numpy(np.float64)
    return expected_calibration_error(track_probs, labels), reliability_table(track_probs, labels)


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


def open_set_metrics(predictions: pd.DataFrame, genres: list[str], record: dict[str, Any] | None
                     ) -> dict[str, Any]:
    """Coverage against accuracy of the test tracks as the open-set threshold moves (model/open_set.py), and
    at the threshold saved with the model (``record``, its open_set.json; None for a model without one).

    Coverage: the share of test tracks not ``unknown``; accuracy: of those. The report's table and plot. Where
    the predictions have a ``novelty`` column (a model with a novelty reference), ``novelty`` adds the share of
    test tracks past the saved cut and the coverage and accuracy of predict's whole rule (either half).
    """
    from genreflow.model.open_set import CURVE_THRESHOLDS, OpenSetRule, coverage_curve

    columns = prob_columns(genres)
    tracks = track_probabilities(predictions, predictions[columns].to_numpy(np.float64), genres)
    probs = tracks[columns].to_numpy(np.float64)
    labels = np.array([genres.index(g) for g in tracks["genre"].astype(str)])
    threshold = None if record is None else record.get("threshold")
    chosen = coverage_curve(probs, labels, [threshold])[0] if threshold is not None else None
    result = {"threshold": threshold, "chosen_on": (record or {}).get("rule"),
            "validation_tracks": (record or {}).get("validation_tracks"), "at_threshold": chosen,
            "curve": coverage_curve(probs, labels, [*CURVE_THRESHOLDS, *([threshold] if threshold is not None
                                                                         else [])])}
    if "novelty" in predictions.columns:
        novelty = predictions.groupby("track_id")["novelty"].first().loc[tracks["track_id"]].to_numpy(np.float64)
        rule = OpenSetRule(threshold, 1.0)
        known = ~np.array([rule.rejects(float(p), float(n)) for p, n in zip(probs.max(axis=1), novelty, strict=True)])
        correct = probs.argmax(axis=1) == labels
        result["novelty"] = {"cut": ((record or {}).get("novelty") or {}).get("cut"),
                             "beyond": float((novelty > 1.0).mean()) if len(novelty) else None,
                             "rule_coverage": float(known.mean()) if len(known) else None,
                             "rule_accuracy": float(correct[known].mean()) if known.any() else None}
    return result


def saved_open_set(root: DataRoot, name: str) -> dict[str, Any] | None:
    """The open_set.json saved with the model models/<name>/, or None (a model from before issue 23)."""
    path = output_path(root, "train", name, OPEN_SET_FILE)
    return root.read_json(path) if root.exists(path) else None


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
        metrics["open_set"] = open_set_metrics(predictions, list(metrics["genres"]), saved_open_set(root, spec.key))
        out.write_parquet(PREDICTIONS_FILE, predictions)
        out.write_json(EVALUATION_FILE, metrics)
        out.rows = len(predictions)
    return metrics
