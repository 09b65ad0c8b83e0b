"""The open-set decision (issue 23): the threshold chosen on validation, the coverage curve, ``unknown``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genreflow.model.files import NOVELTY_FILE, OPEN_SET_FILE
from genreflow.model.open_set import (
    UNKNOWN,
    NoveltyReference,
    OpenSetError,
    OpenSetRule,
    choose_threshold,
    coverage_curve,
    decide,
    effective_rule,
    fit_novelty,
    load_novelty,
    model_threshold,
    novelty_record,
    open_set_record,
    reference_tracks,
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
    # 19 correct tracks are too few for a 5th percentile: no threshold, the novelty half alone decides
    assert choose_threshold(probs[:19], labels[:19]) is None
    assert choose_threshold(probs[:20], labels[:20]) == pytest.approx(0.52)  # floor(0.05 * 20) = 1 under it


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
    assert decide(genres, probs, OpenSetRule(0.5)) == ["rock", UNKNOWN, None, "pop"]  # at the threshold: kept
    assert decide(genres, probs, OpenSetRule()) == ["rock", "jazz", None, "pop"]  # no rule: as before issue 23


def test_decide_gives_unknown_past_the_novelty_cut_whatever_the_probability() -> None:
    genres, probs = ["rock", "jazz", "pop", "folk"], [0.99, 0.99, 0.3, 0.99]
    novelty = [0.5, 1.7, 0.5, float("nan")]  # the last: a model without a reference measured none
    assert decide(genres, probs, OpenSetRule(None, 1.0), novelty) == ["rock", UNKNOWN, "pop", "folk"]
    assert decide(genres, probs, OpenSetRule(0.5, 1.0), novelty) == ["rock", UNKNOWN, UNKNOWN, "folk"]
    assert decide(genres, probs, OpenSetRule(0.5, 2.0), novelty) == ["rock", "jazz", UNKNOWN, "folk"]


def test_the_saved_threshold_and_the_override(tmp_path: Path) -> None:
    assert model_threshold(tmp_path) is None  # a model saved before issue 23
    assert effective_rule(tmp_path) == OpenSetRule() and effective_rule(tmp_path, 0.4) == OpenSetRule(0.4)
    (tmp_path / OPEN_SET_FILE).write_text(json.dumps({"threshold": 0.62}))
    assert model_threshold(tmp_path) == 0.62
    assert effective_rule(tmp_path) == OpenSetRule(0.62) and effective_rule(tmp_path, 0.0) == OpenSetRule(0.0)
    # a model with a novelty reference: its cut (1.0) unless --max-novelty moves it
    fit_novelty(np.random.default_rng(0).normal(size=(20, 3)), np.zeros((0, 3))).save(tmp_path / NOVELTY_FILE)
    assert effective_rule(tmp_path) == OpenSetRule(0.62, 1.0)
    assert effective_rule(tmp_path, None, 2.5) == OpenSetRule(0.62, 2.5)
    (tmp_path / OPEN_SET_FILE).write_text(json.dumps({"threshold": None}))
    assert model_threshold(tmp_path) is None


def clusters(rng: np.random.Generator, n: int, centre: float, dims: int = 8) -> np.ndarray:
    return rng.normal(centre, 1.0, size=(n, dims))


def test_the_novelty_cut_keeps_95_percent_of_the_familiar_tracks_and_puts_far_ones_beyond() -> None:
    rng = np.random.default_rng(0)
    train, val = clusters(rng, 200, 0.0), clusters(rng, 100, 0.0)
    reference = fit_novelty(train, val)
    familiar = np.concatenate([reference.distances(val), reference.distances(train, exclude_self=True)])
    assert (familiar <= reference.cut).mean() == pytest.approx(0.95, abs=0.004)  # the cut's quantile, of 300
    assert (reference.novelty(val) <= 1.0).mean() >= 0.85
    far = clusters(rng, 30, 6.0)  # another distribution: every one of them beyond the cut
    assert (reference.novelty(far) > 1.0).all()
    assert (reference.novelty(clusters(rng, 100, 0.0)) > 1.0).mean() < 0.15  # new tracks like the training ones
    # the distances: the mean Euclidean distance to the 5 nearest standardised training tracks, by hand
    x = (far[:1] - train.mean(axis=0)) / train.std(axis=0)
    by_hand = np.sort(np.linalg.norm((train - train.mean(axis=0)) / train.std(axis=0) - x, axis=1))[:5].mean()
    assert reference.distances(far[:1])[0] == pytest.approx(by_hand, rel=1e-5)
    record = novelty_record(reference, val)
    assert record["validation_beyond"] == pytest.approx((reference.novelty(val) > 1.0).mean())
    assert record["reference_tracks"] == 200 and record["validation_tracks"] == 100


def test_without_validation_tracks_the_cut_comes_from_the_training_tracks_alone() -> None:
    rng = np.random.default_rng(1)
    train = clusters(rng, 100, 0.0)
    reference = fit_novelty(train, np.zeros((0, 8)))
    inside = (reference.distances(train, exclude_self=True) <= reference.cut).mean()
    assert inside == pytest.approx(0.95, abs=0.011)
    assert (reference.novelty(clusters(rng, 10, 6.0)) > 1.0).all()


def test_a_large_collection_keeps_a_seeded_sample_as_its_reference() -> None:
    rng = np.random.default_rng(2)
    reference = fit_novelty(clusters(rng, 300, 0.0), clusters(rng, 50, 0.0), max_tracks=100)
    assert reference.tracks.shape == (100, 8)
    ids = [f"t{i:03d}" for i in range(300)]
    assert reference_tracks(ids, max_tracks=1000) == sorted(ids)
    sample = reference_tracks(list(reversed(ids)), max_tracks=50, seed=3)
    assert len(sample) == 50 and sample == sorted(sample) and sample == reference_tracks(ids, max_tracks=50, seed=3)


def test_the_reference_round_trips_without_pickle_and_a_bad_file_is_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    reference = fit_novelty(clusters(rng, 40, 0.0), clusters(rng, 20, 0.0))
    assert load_novelty(tmp_path) is None  # a model saved without one
    reference.save(tmp_path / NOVELTY_FILE)
    loaded = load_novelty(tmp_path)
    assert loaded is not None and loaded.cut == reference.cut and loaded.neighbours == reference.neighbours
    probe = clusters(rng, 5, 1.0)
    np.testing.assert_array_equal(loaded.novelty(probe), reference.novelty(probe))
    (tmp_path / NOVELTY_FILE).write_bytes(b"not an npz")
    with pytest.raises(OpenSetError, match=NOVELTY_FILE):
        load_novelty(tmp_path)
    np.savez(tmp_path / NOVELTY_FILE, mean=np.zeros(3), scale=np.ones(3), tracks=np.zeros((4, 2)),
             neighbours=np.int64(5), cut=np.float64(1.0))
    with pytest.raises(OpenSetError, match="is not a novelty reference"):
        load_novelty(tmp_path)
    with pytest.raises(OpenSetError, match="two training tracks or more"):
        fit_novelty(np.zeros((1, 3)), np.zeros((0, 3)))
    assert isinstance(reference, NoveltyReference)


def test_a_feature_constant_over_the_training_tracks_does_not_swamp_the_distance() -> None:
    """A dead ReLU unit: always 0 in training, a little above 0 elsewhere. Divided by its own spread (0) it would
    make every validation track look a million times farther than it is, and the cut with it."""
    rng = np.random.default_rng(4)
    train, val = clusters(rng, 200, 0.0), clusters(rng, 50, 0.0)
    train[:, 0] = 0.0
    val[:, 0] = rng.uniform(0.0, 0.01, len(val))
    reference = fit_novelty(train, val)
    assert reference.cut < 10.0  # about the spread of 8 standard normal features, not 10,000 of them
    assert (reference.novelty(clusters(rng, 20, 6.0)) > 1.0).all()
