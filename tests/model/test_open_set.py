"""The open-set decision (issue 23): the threshold chosen on validation, the coverage curve, ``unknown``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genreflow.model.files import OPEN_SET_FILE
from genreflow.model.open_set import (
    UNKNOWN,
    choose_threshold,
    coverage_curve,
    decide,
    effective_threshold,
    model_threshold,
    open_set_record,
)


def two_genre_probs(tops: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Tracks whose top probability is ``tops``, right or wrong as ``correct`` says (label 0 or 1)."""
    probs = np.array([[p, 1 - p] for p in tops])
    labels = np.array([0 if ok else 1 for ok in correct])
    return probs, labels


def test_the_threshold_keeps_95_percent_of_the_correct_tracks() -> None:
    # 40 correct tracks with top probabilities 0.51, 0.52, ..., 0.90; two wrong ones that are very sure.
    tops = [0.51 + i / 100 for i in range(40)] + [0.99, 0.98]
    probs, labels = two_genre_probs(tops, [True] * 40 + [False, False])
    threshold = choose_threshold(probs, labels)
    assert threshold == pytest.approx(0.53)  # floor(0.05 * 40) = 2 correct tracks fall under it
    kept = probs.max(axis=1)[:40] >= threshold
    assert kept.mean() == pytest.approx(0.95)
    assert choose_threshold(probs, labels, keep=1.0) == pytest.approx(0.51)  # keep all: the least sure correct one


def test_no_correct_track_gives_no_threshold() -> None:
    probs, labels = two_genre_probs([0.9, 0.8], [False, False])
    assert choose_threshold(probs, labels) is None
    record = open_set_record(probs, labels)
    assert record["threshold"] is None and record["validation_tracks"] == 2 and record["validation_correct"] == 0
    with pytest.raises(ValueError, match="one label a track"):
        choose_threshold(probs, labels[:1])


def test_coverage_falls_and_accuracy_rises_as_the_threshold_moves() -> None:
    probs, labels = two_genre_probs([0.95, 0.9, 0.7, 0.6, 0.55], [True, True, True, False, False])
    curve = {row["threshold"]: row for row in coverage_curve(probs, labels, [0.0, 0.65, 0.92, 0.99])}
    assert (curve[0.0]["coverage"], curve[0.0]["accuracy"]) == (1.0, pytest.approx(0.6))
    assert (curve[0.65]["coverage"], curve[0.65]["accuracy"], curve[0.65]["tracks"]) == (0.6, 1.0, 3)
    assert curve[0.92]["coverage"] == pytest.approx(0.2)
    assert curve[0.99]["coverage"] == 0.0 and curve[0.99]["accuracy"] is None


def test_decide_gives_unknown_under_the_threshold_and_keeps_failures() -> None:
    genres, probs = ["rock", "jazz", None, "pop"], [0.9, 0.3, float("nan"), 0.5]
    assert decide(genres, probs, 0.5) == ["rock", UNKNOWN, None, "pop"]  # at the threshold: kept
    assert decide(genres, probs, None) == ["rock", "jazz", None, "pop"]  # no threshold: as before issue 23


def test_the_saved_threshold_and_the_override(tmp_path: Path) -> None:
    assert model_threshold(tmp_path) is None  # a model saved before issue 23
    assert effective_threshold(None, tmp_path) is None and effective_threshold(0.4, tmp_path) == 0.4
    (tmp_path / OPEN_SET_FILE).write_text(json.dumps({"threshold": 0.62}))
    assert model_threshold(tmp_path) == 0.62
    assert effective_threshold(None, tmp_path) == 0.62 and effective_threshold(0.0, tmp_path) == 0.0
    (tmp_path / OPEN_SET_FILE).write_text(json.dumps({"threshold": None}))
    assert model_threshold(tmp_path) is None
