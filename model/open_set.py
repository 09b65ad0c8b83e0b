"""The open-set decision: ``unknown`` where the model's top probability is under a threshold (issue 23).

Why: a library holds speech, silence, sound effects and genres the model never
saw, and a softmax must still give one of its genres to each. Here a file whose
(calibrated) top probability is under a threshold is ``unknown`` instead.

The default threshold is chosen on the validation tracks when the model is
trained (:func:`choose_threshold`): the largest one that keeps
:data:`KEEP_CORRECT` (95 %) of the correctly classified validation tracks, that
is the 5th percentile of their top probabilities. It is saved beside the model
as ``open_set.json`` (model/files.py OPEN_SET_FILE); a model saved without one
(before issue 23) gives no ``unknown``, as before. ``--min-confidence P``
overrides it for one run.

Plain numpy, no TensorFlow and no Prefect: the train stages, evaluate, predict
and tag call these.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genreflow.model.files import OPEN_SET_FILE

UNKNOWN = "unknown"  # the decision for a file under the threshold (tasks/playlists.py files it so)
KEEP_CORRECT = 0.95  # the default threshold keeps this share of the correctly classified validation tracks
# The thresholds the report's coverage/accuracy table steps through (the chosen one is added to them).
CURVE_THRESHOLDS: tuple[float, ...] = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def choose_threshold(probs: np.ndarray, labels: np.ndarray, keep: float = KEEP_CORRECT) -> float | None:
    """The largest threshold that keeps at least ``keep`` of the correctly classified tracks; None without any.

    probs : np.ndarray [shape=(tracks, genres)], the model's (calibrated) probabilities of the validation
    tracks; labels : np.ndarray [shape=(tracks,)], their genre indices. With ``c`` the sorted top
    probabilities of the correct tracks, it is ``c[floor((1 - keep) * len(c))]``: a track is kept when its
    top probability is at least the threshold, so at most ``1 - keep`` of them fall under it.
    """
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"expected probabilities (tracks, genres) and one label a track, got {probs.shape} "
                         f"and {np.shape(labels)}")
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    correct = np.sort(probs.max(axis=1)[probs.argmax(axis=1) == np.asarray(labels)])
    if not len(correct):
        return None
    return float(correct[math.floor((1.0 - keep) * len(correct) + 1e-9)])


def coverage_curve(probs: np.ndarray, labels: np.ndarray, thresholds: Sequence[float] = CURVE_THRESHOLDS
                   ) -> list[dict[str, float]]:
    """Per threshold: coverage (share of tracks not ``unknown``) and the accuracy of those covered.

    What a user trades when moving ``--min-confidence``: a higher threshold answers for fewer tracks, and
    (for a useful model) is right more often when it does. Accuracy is None where no track is covered.
    """
    probs = np.asarray(probs, np.float64)
    top = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = probs.argmax(axis=1) == np.asarray(labels) if len(probs) else np.zeros(0, bool)
    rows = []
    for t in sorted({float(t) for t in thresholds}):
        kept = top >= t
        rows.append({"threshold": t, "coverage": float(kept.mean()) if len(top) else 0.0,
                     "accuracy": float(correct[kept].mean()) if kept.any() else None, "tracks": int(kept.sum())})
    return rows


def decide(top_genres: Sequence[Any], top_probs: Sequence[float], threshold: float | None) -> list[Any]:
    """Each file's decision: its top genre, or ``unknown`` where its top probability is under ``threshold``.

    None (a failed file) stays None; no threshold (an older model, nothing given) keeps every top genre.
    """
    out = []
    for genre, prob in zip(top_genres, top_probs, strict=True):
        if genre is None or (isinstance(genre, float) and genre != genre) or genre == "":
            out.append(None)
        elif threshold is not None and not float(prob) >= threshold:
            out.append(UNKNOWN)
        else:
            out.append(genre)
    return out


def open_set_record(probs: np.ndarray, labels: np.ndarray, keep: float = KEEP_CORRECT) -> dict[str, Any]:
    """What ``open_set.json`` holds: the threshold chosen on these validation tracks, and how."""
    probs = np.asarray(probs, np.float64)
    correct = int((probs.argmax(axis=1) == np.asarray(labels)).sum()) if len(probs) else 0
    threshold = choose_threshold(probs, labels, keep) if len(probs) else None
    return {"threshold": threshold, "keep_correct": keep, "chosen_on": "validation",
            "rule": f"the {round((1 - keep) * 100)}th percentile of the top probability of the correctly "
                    "classified validation tracks",
            "validation_tracks": len(probs), "validation_correct": correct}


def model_threshold(folder: str | os.PathLike[str]) -> float | None:
    """The threshold saved with the model in ``folder``; None for a model without one (no ``unknown``)."""
    path = Path(folder) / OPEN_SET_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("threshold")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def effective_threshold(min_confidence: float | None, folder: str | os.PathLike[str]) -> float | None:
    """``--min-confidence`` where given, else the model's own threshold (None: no ``unknown``)."""
    return min_confidence if min_confidence is not None else model_threshold(folder)
