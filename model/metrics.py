"""Score a classifier's predictions, per clip and per track.

A track is what a listener labels, so the headline numbers are track-level: a
track's clips vote by their mean softmax probability. Clip-level numbers are
kept beside them because they are what the network was trained on.

Plain functions: a clip table and an array of probabilities in, a predictions
table and a JSON-serialisable metrics dict out, knowing nothing of models,
paths or Prefect, so that every model family (the CNN, the baseline, ...) is
scored by the same code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from genreflow.model.params import ACCURACY_TOP_K

PROB_PREFIX = "prob_"
LOG_LOSS_FLOOR = 1e-7  # a probability of 0 for the true genre counts as this, so one clip cannot make it infinite


def prob_columns(genres: list[str]) -> list[str]:
    """Column names of the per-genre probabilities, in label order: prob_<genre>."""
    return [f"{PROB_PREFIX}{genre}" for genre in genres]


def _check_inputs(clips: pd.DataFrame, probs: np.ndarray, genres: list[str]) -> np.ndarray:
    """Fail early with a message that says what is wrong, before any metric is computed."""
    genres = list(genres)
    if not genres:
        raise ValueError("no genres given: pass the model's label order, e.g. ['Electronic', 'Rock']")
    if len(set(genres)) != len(genres):
        raise ValueError(f"genres must be unique, got {genres}")
    if len(clips) == 0:
        raise ValueError(
            "no test clips to evaluate: the test split is empty (check the split fractions "
            "and that the mel stage produced clips for the test tracks)"
        )
    missing = [column for column in ("track_id", "genre") if column not in clips.columns]
    if missing:
        raise ValueError(f"clips table lacks column(s) {missing}; it has {list(clips.columns)}")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(clips), len(genres)):
        raise ValueError(
            f"probs has shape {probs.shape}, expected (n_clips, n_genres) = ({len(clips)}, {len(genres)})"
        )
    if not np.isfinite(probs).all():
        raise ValueError("probs contains NaN or infinite values: the model diverged or the input was bad")
    unknown = sorted(set(clips["genre"].astype(str)) - set(genres))
    if unknown:
        raise ValueError(f"test clips carry genre(s) {unknown} that the model does not know: {genres}")
    return probs


def _top_k_hits(true_idx: np.ndarray, probs: np.ndarray, k: int) -> np.ndarray:
    """Whether each true label is among the k most probable.

    A stable sort breaks ties towards the earlier genre, as argmax does, so top-1
    here always equals accuracy.
    """
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return (top == true_idx[:, None]).any(axis=1)


def track_probabilities(clips: pd.DataFrame, probs: np.ndarray, genres: list[str]) -> pd.DataFrame:
    """One row per track: its clips' mean probabilities and the genre they vote for.

    Returns columns track_id, genre, n_clips, prob_<genre>..., predicted, correct,
    sorted by track_id. Mean probability rather than majority vote: it keeps the
    confidence of each clip and never ties on an even number of clips.
    """
    genres = list(genres)
    probs = _check_inputs(clips, probs, genres)
    columns = prob_columns(genres)
    frame = pd.DataFrame(probs, columns=columns)
    frame.insert(0, "track_id", clips["track_id"].to_numpy())
    frame.insert(1, "genre", clips["genre"].astype(str).to_numpy())

    labels_per_track = frame.groupby("track_id", sort=True)["genre"].nunique()
    mixed = labels_per_track[labels_per_track > 1]
    if len(mixed):
        raise ValueError(f"track(s) {list(mixed.index[:5])} have clips with different genre labels")

    grouped = frame.groupby("track_id", sort=True)
    tracks = grouped[columns].mean()
    tracks.insert(0, "genre", grouped["genre"].first())
    tracks.insert(1, "n_clips", grouped.size().astype("int64"))
    tracks = tracks.reset_index()
    tracks["predicted"] = np.asarray(genres, dtype=object)[tracks[columns].to_numpy().argmax(axis=1)]
    tracks["correct"] = tracks["predicted"] == tracks["genre"]
    return tracks


def _per_genre(y_true: np.ndarray, y_pred: np.ndarray, genres: list[str]) -> dict[str, dict[str, Any]]:
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=genres, zero_division=0
    )
    return {
        genre: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, genre in enumerate(genres)
    }


def evaluate_predictions(
    clips: pd.DataFrame, probs: np.ndarray, genres: list[str]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Predictions table and metrics for the test clips.

    clips : one row per test clip (track_id, clip_index, genre, any others),
        aligned row for row with probs.
    probs : np.ndarray [shape=(n_clips, n_genres)], softmax outputs.
    genres : the label order of probs' columns.

    Returns (predictions, metrics). predictions is clips plus predicted, one
    prob_<genre> column per genre and correct. metrics holds clip_accuracy,
    clip_top2_accuracy, track_accuracy, top2_accuracy, macro_f1, log_loss (the
    clips' mean negative log-probability of their genre), per_genre,
    confusion, n_clips, n_tracks, n_genres, genres, absent_genres and chance;
    all but the clip-level ones are track-level.

    macro_f1 averages over the genres present in the test labels or the
    predictions: a genre with no test track that is never predicted has no F1
    to speak of (it still appears in per_genre with support 0), while one that
    is wrongly predicted counts as 0.
    """
    genres = list(genres)
    probs = _check_inputs(clips, probs, genres)
    genre_index = {genre: i for i, genre in enumerate(genres)}
    columns = prob_columns(genres)

    clip_true = clips["genre"].astype(str).to_numpy()
    clip_true_idx = np.array([genre_index[g] for g in clip_true])
    clip_pred = np.asarray(genres, dtype=object)[probs.argmax(axis=1)]
    predictions = clips.reset_index(drop=True).copy()
    predictions["predicted"] = clip_pred
    # One block of columns, not one insert a genre: 161 inserts fragment the frame (a PerformanceWarning each).
    # Columns the clips already have are overwritten in place, as one insert a genre did.
    block = pd.DataFrame(probs, columns=columns, index=predictions.index)
    existing = [column for column in columns if column in predictions.columns]
    predictions[existing] = block[existing]
    predictions = pd.concat([predictions, block.drop(columns=existing)], axis=1)
    predictions["correct"] = predictions["predicted"].to_numpy() == clip_true

    tracks = track_probabilities(clips, probs, genres)
    track_true = tracks["genre"].to_numpy(dtype=object)
    track_pred = tracks["predicted"].to_numpy(dtype=object)
    track_true_idx = np.array([genre_index[g] for g in track_true])
    track_probs = tracks[columns].to_numpy()

    absent = [genre for genre in genres if genre not in set(track_true)]
    seen = [genre for genre in genres if genre in set(track_true) | set(track_pred)]
    macro_f1 = f1_score(track_true, track_pred, labels=seen, average="macro", zero_division=0)
    matrix = confusion_matrix(track_true, track_pred, labels=genres)

    metrics: dict[str, Any] = {
        "clip_accuracy": float(predictions["correct"].mean()),
        "clip_top2_accuracy": float(_top_k_hits(clip_true_idx, probs, ACCURACY_TOP_K).mean()),
        "track_accuracy": float(tracks["correct"].mean()),
        "top2_accuracy": float(_top_k_hits(track_true_idx, track_probs, ACCURACY_TOP_K).mean()),
        "macro_f1": float(macro_f1),
        "log_loss": float(-np.log(np.clip(probs[np.arange(len(probs)), clip_true_idx], LOG_LOSS_FLOOR, 1.0)).mean()),
        "per_genre": _per_genre(track_true, track_pred, genres),
        "confusion": {"labels": genres, "matrix": matrix.astype(int).tolist()},
        "n_clips": len(predictions),
        "n_tracks": len(tracks),
        "n_genres": len(genres),
        "genres": genres,
        "absent_genres": absent,
        "chance": 1.0 / len(genres),
    }
    return predictions, metrics
