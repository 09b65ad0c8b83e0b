"""The classical baseline: MFCC statistics of log-mel clips into an RBF SVM, scored as the CNN is scored.

Shown beside the model families in every report, so that a user sees at a
glance what they add. Its features are computed from the mel clips (the MFCCs
are the DCT of the log-mel bands), so it needs no preprocessing of its own;
its C is picked on the validation tracks, and it is scored by the evaluation's
own metrics (model/metrics.py), track votes included. Plain functions on
arrays and clip indexes: the baseline stage (tasks/baseline.py) reads the mel
shards' original clips and writes the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import librosa
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from genreflow.model.metrics import evaluate_predictions, track_probabilities

NAME = "MFCC + SVM"
N_MFCC = 20  # coefficients kept, as in most MFCC genre baselines
DELTA_WIDTH = 9  # frames of librosa's delta filter (its default)
C_GRID: tuple[float, ...] = (1.0, 10.0, 100.0)  # SVM C values tried on the validation tracks
DEFAULT_C = 10.0  # when there are no validation tracks to choose with
# An RBF SVM's training grows with the square of its samples; beyond this many clips it is
# fitted on a stratified sample of them (fma_small has about 19,000 original training clips).
MAX_TRAIN_CLIPS = 20_000
FEATURE_CHUNK = 256  # clips turned into features at once


def mfcc_features(mel_db: np.ndarray) -> np.ndarray:
    """Mean and std over time of N_MFCC MFCCs and of their deltas.

    mel_db : np.ndarray [shape=(clips, n_mels, frames)], log-mel in dB (any float dtype)
    Returns np.ndarray [shape=(clips, 4 * N_MFCC)], float32.
    """
    mel_db = np.asarray(mel_db, dtype=np.float32)
    if mel_db.ndim != 3:
        raise ValueError(f"mel_db must be (clips, n_mels, frames), got shape {mel_db.shape}")
    if mel_db.shape[-1] < DELTA_WIDTH:
        raise ValueError(f"clips of {mel_db.shape[-1]} frames are too short for MFCC deltas ({DELTA_WIDTH})")
    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=N_MFCC)
    delta = librosa.feature.delta(mfcc, width=DELTA_WIDTH, axis=-1)
    parts = [mfcc.mean(axis=-1), mfcc.std(axis=-1), delta.mean(axis=-1), delta.std(axis=-1)]
    return np.concatenate(parts, axis=1).astype(np.float32)


def features_of(clips: Sequence[tuple[pd.DataFrame, np.ndarray]]) -> tuple[np.ndarray, pd.DataFrame]:
    """Features of the indexed rows of each (clip index, mel array) pair, and the indexes concatenated."""
    features, frames = [], []
    for index, array in clips:
        index = index.sort_values("row", kind="stable")  # memory-mapped rows read in file order
        rows = index["row"].to_numpy()
        for start in range(0, len(rows), FEATURE_CHUNK):
            features.append(mfcc_features(array[rows[start : start + FEATURE_CHUNK]]))
        frames.append(index)
    if not frames:
        return np.zeros((0, 4 * N_MFCC), np.float32), pd.DataFrame()
    return np.concatenate(features), pd.concat(frames, ignore_index=True)


def fit_svm(x: np.ndarray, genres: Sequence[str], labels: Sequence[str], c: float, seed: int) -> Pipeline:
    """Standardised features into an RBF SVM (one-vs-rest decision values, see :func:`probabilities`)."""
    model = make_pipeline(StandardScaler(), SVC(C=c, kernel="rbf", gamma="scale", decision_function_shape="ovr",
                                                random_state=seed))
    x, labels = _capped(x, np.asarray(labels, dtype=object), seed)
    model.fit(x, labels)
    missing = sorted(set(genres) - set(model.classes_))
    if missing:
        raise ValueError(f"no training clips of genre(s) {missing}: the baseline cannot learn them")
    return model


def _capped(x: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_TRAIN_CLIPS rows, the same share of each genre."""
    if len(x) <= MAX_TRAIN_CLIPS:
        return x, labels
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(labels == g))[: max(1, round(
        MAX_TRAIN_CLIPS * np.mean(labels == g)))] for g in np.unique(labels)])
    return x[np.sort(keep)], labels[np.sort(keep)]


def probabilities(model: Pipeline, x: np.ndarray, genres: Sequence[str]) -> np.ndarray:
    """Clip scores [shape=(clips, genres)] in the order of ``genres``: a softmax of the decision values.

    Not calibrated probabilities (Platt scaling fits them by an inner
    cross-validation, which on the few hundred clips of a small set gave
    rankings that disagreed with the SVM's own predictions), but positive,
    summing to one and ranked as the SVM ranks the genres, which is what the
    track vote and top-2 need.
    """
    scores = model.decision_function(x)
    if scores.ndim == 1:  # two genres: one decision value, for the second class
        scores = np.stack([-scores, scores], axis=1)
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    scores /= scores.sum(axis=1, keepdims=True)
    order = [list(model.classes_).index(g) for g in genres]
    return scores[:, order]


def run_baseline(train: tuple[np.ndarray, pd.DataFrame], val: tuple[np.ndarray, pd.DataFrame],
                 test: tuple[np.ndarray, pd.DataFrame], genres: Sequence[str], seed: int = 0
                 ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit on ``train`` (features, index), pick C on ``val``'s track accuracy, score ``test``.

    Returns the evaluation's (predictions, metrics), metrics with ``name`` and ``C`` added.
    """
    genres = list(genres)
    x_train, train_index = train
    if len(x_train) == 0:
        raise ValueError("no training clips for the baseline")
    labels = train_index["genre"].astype(str).to_numpy()
    x_val, val_index = val
    best_c, best_score = DEFAULT_C, -1.0
    if len(x_val):
        for c in C_GRID:
            tracks = track_probabilities(val_index, probabilities(fit_svm(x_train, genres, labels, c, seed), x_val,
                                                                  genres), genres)
            score = float(tracks["correct"].mean())
            if score > best_score:
                best_c, best_score = c, score
    model = fit_svm(x_train, genres, labels, best_c, seed)
    x_test, test_index = test
    predictions, metrics = evaluate_predictions(test_index, probabilities(model, x_test, genres), genres)
    metrics.update(name=NAME, C=best_c, val_track_accuracy=best_score if len(x_val) else None,
                   n_train_clips=int(min(len(x_train), MAX_TRAIN_CLIPS)))
    return predictions, metrics
