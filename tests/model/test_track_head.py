"""model/track_head.py on synthetic embeddings with known answers: pooling, inner CV, calibration, Keras twins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genreflow.model import track_head
from genreflow.model.track_head import (
    HEAD_KINDS,
    TrackHead,
    TrackHeadError,
    build_head_model,
    expected_calibration_error,
    fit_temperature,
    fit_track_head,
    inner_folds,
    pool_clips,
    softmax,
)

GENRES = ["a", "b", "c"]
SMALL_GRIDS = {"logistic": ({"C": 1.0},), "svm": ({"C": 10.0, "gamma_scale": 1.0},),
               "mlp": ({"hidden": 16, "alpha": 1.0},)}


def _tracks(per_genre: int = 12, dims: int = 6, seed: int = 0, spread: float = 1.0
            ) -> tuple[np.ndarray, np.ndarray]:
    """Track vectors around one centre a genre, and their genres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (len(GENRES), dims))
    y = np.repeat(np.arange(len(GENRES)), per_genre)
    return centres[y] + rng.normal(0, spread, (len(y), dims)), np.array(GENRES)[y]


def test_pooling_gives_one_row_per_track_in_sorted_order() -> None:
    x = np.array([[1.0, 0.0], [3.0, 4.0], [10.0, 10.0], [5.0, -2.0]])
    keys, pooled = pool_clips(x, np.array(["t2", "t2", "t1", "t2"]))
    assert keys.tolist() == ["t1", "t2"]
    np.testing.assert_allclose(pooled, [[10.0, 10.0], [3.0, 2.0 / 3.0]])
    _, both = pool_clips(x, np.array(["t2", "t2", "t1", "t2"]), "mean+max")
    np.testing.assert_allclose(both, [[10.0, 10.0, 10.0, 10.0], [3.0, 2.0 / 3.0, 5.0, 4.0]])
    with pytest.raises(TrackHeadError, match="pooling"):
        pool_clips(x, np.zeros(4), "median")


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_a_track_whose_clips_disagree_is_decided_by_the_pooled_vector(kind: str) -> None:
    """Two clips near genre b's edge and one deep in genre a: a vote of the clips says b, their mean says a."""
    dims = 2
    rng = np.random.default_rng(0)
    centres = {"a": np.array([-4.0, 0.0]), "b": np.array([4.0, 0.0]), "c": np.array([0.0, 8.0])}
    x = np.vstack([centres[g] + rng.normal(0, 0.5, (15, dims)) for g in GENRES])
    head = fit_track_head(x, np.repeat(GENRES, 15), GENRES, kinds=[kind], grids=SMALL_GRIDS)
    clips = np.array([[0.8, 0.0], [0.8, 0.0], [-6.0, 0.0]])  # mean (-1.47, 0): on a's side
    per_clip = head.probabilities(clips).argmax(axis=1)
    assert [GENRES[i] for i in per_clip] == ["b", "b", "a"]  # a clip vote would say b
    _, pooled = pool_clips(clips, np.zeros(3, int))
    assert GENRES[int(head.probabilities(pooled).argmax())] == "a"


def test_inner_cross_validation_sees_only_the_training_tracks_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fit inside the tuning gets rows of the training tracks only; the held-out tracks never reach it."""
    x, labels = _tracks(per_genre=20, dims=5)
    # The first column names each track, so that each fit's rows say which tracks it saw.
    ids = np.arange(len(x), dtype=float) * 1000.0
    x = np.hstack([ids[:, None], x])
    train = np.arange(len(x)) % 5 < 3  # 36 training tracks; the others stand for validation and test
    seen: list[set[float]] = []
    original = track_head.fit_arrays

    def recording(kind: str, rows: np.ndarray, *args: object, **kwargs: object) -> object:
        seen.append(set(np.asarray(rows)[:, 0].tolist()))
        return original(kind, rows, *args, **kwargs)

    monkeypatch.setattr(track_head, "fit_arrays", recording)
    split_calls: list[tuple[int, int]] = []
    original_splits = track_head.inner_folds

    def recording_splits(labels: np.ndarray, groups: np.ndarray, k: int = 4, seed: int = 0) -> list:
        splits = original_splits(labels, groups, k, seed)
        split_calls.append((len(labels), len(groups)))
        for fit, held in splits:  # positions into the training tracks, the two parts disjoint and covering them
            assert set(fit).isdisjoint(held) and sorted([*fit, *held]) == list(range(len(labels)))
        return splits

    monkeypatch.setattr(track_head, "inner_folds", recording_splits)
    fit_track_head(x[train], labels[train], GENRES, kinds=["logistic"], grids=SMALL_GRIDS)
    allowed = set(ids[train].tolist())
    assert split_calls == [(int(train.sum()), int(train.sum()))]
    assert len(seen) == 4 + 1  # four inner folds, then the final fit on all training tracks
    assert all(rows <= allowed for rows in seen)
    assert seen[-1] == allowed
    assert all(len(rows) < len(allowed) for rows in seen[:-1])


def test_inner_folds_keep_an_artists_tracks_together() -> None:
    labels = np.repeat([0, 1], 8)
    artists = np.array([f"artist{i // 2}" for i in range(16)])  # two tracks each
    for fit, held in inner_folds(labels, artists, k=4):
        assert set(artists[fit]).isdisjoint(artists[held])
    assert inner_folds(labels, np.zeros(16), k=4) == []  # one artist: nothing to cross-validate
    # Three tracks a genre at most: three parts, not four (sklearn refuses more parts than the largest genre).
    few = inner_folds(np.array([0, 0, 0, 1, 1, 2]), np.arange(6), k=4)
    assert len(few) == 3 and sorted(np.concatenate([held for _, held in few]).tolist()) == list(range(6))
    assert inner_folds(np.array([0, 1, 2]), np.arange(3), k=4) == []  # one track a genre


def test_temperature_scaling_lowers_the_ece_of_an_overconfident_model() -> None:
    """A model right 70 % of the time that says 99 %: the fitted temperature brings its confidence to about 70 %."""
    rng = np.random.default_rng(0)
    n, classes = 2000, 4
    labels = rng.integers(0, classes, n)
    predicted = np.where(rng.random(n) < 0.7, labels, (labels + rng.integers(1, classes, n)) % classes)
    logits = rng.normal(0, 0.3, (n, classes))
    logits[np.arange(n), predicted] += 6.0  # about 0.99 on its pick
    calibration, check = slice(0, n // 2), slice(n // 2, n)
    temperature = fit_temperature(logits[calibration], labels[calibration])
    before = expected_calibration_error(softmax(logits[check]), labels[check])
    after = expected_calibration_error(softmax(logits[check], temperature), labels[check])
    assert temperature > 2.0
    assert before > 0.25 and after < 0.05
    # The temperature only rescales: every prediction keeps its genre.
    assert (softmax(logits, temperature).argmax(axis=1) == logits.argmax(axis=1)).all()


def test_ece_of_a_perfectly_calibrated_and_of_a_certain_wrong_model() -> None:
    probs = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert expected_calibration_error(probs, np.array([0, 0])) == 0.0
    assert expected_calibration_error(probs, np.array([1, 1])) == 1.0
    halves = np.array([[0.55, 0.45]] * 4)
    assert expected_calibration_error(halves, np.array([0, 1, 0, 0])) == pytest.approx(0.20)


def test_fit_chooses_by_inner_cv_and_records_its_candidates() -> None:
    x, labels = _tracks()
    head = fit_track_head(x, labels, GENRES, kinds=list(HEAD_KINDS), grids=SMALL_GRIDS)
    assert head.kind in HEAD_KINDS and head.cv["folds"] == 4 and len(head.cv["candidates"]) == 3
    assert head.cv["inner_accuracy"] == max(c["accuracy"] for c in head.cv["candidates"])
    assert (head.probabilities(x).argmax(axis=1) == [GENRES.index(g) for g in labels]).mean() == 1.0
    assert track_head.describe(head)["head"] == head.kind


def test_fit_refuses_a_genre_without_training_tracks() -> None:
    x, labels = _tracks()
    keep = labels != "c"
    with pytest.raises(TrackHeadError, match=r"\['c'\]"):
        fit_track_head(x[keep], labels[keep], GENRES)
    with pytest.raises(TrackHeadError, match="unknown head kind"):
        fit_track_head(x, labels, GENRES, kinds=["forest"])


def test_the_svm_arrays_reproduce_sklearns_rbf_svm() -> None:
    from sklearn.svm import SVC

    x, labels = _tracks(dims=4, spread=3.0)  # overlapping: many support vectors
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    y = np.array([GENRES.index(g) for g in labels])
    weights = track_head.FITTERS["svm"](z, y, len(GENRES), {"C": 3.0, "gamma_scale": 1.0}, 0)
    ours = track_head.kind_logits("svm", weights, z)
    for g in range(len(GENRES)):
        reference = SVC(C=3.0, kernel="rbf", gamma=1.0 / 4).fit(z, (y == g).astype(int))
        np.testing.assert_allclose(ours[:, g], reference.decision_function(z), atol=1e-6)


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_each_head_kind_saves_loads_in_safe_mode_and_predicts_as_numpy(kind: str, tmp_path: Path) -> None:
    import keras

    x, labels = _tracks(spread=2.0)
    head = fit_track_head(x, labels, GENRES, kinds=[kind], grids=SMALL_GRIDS)
    assert isinstance(head, TrackHead) and head.temperature != 1.0
    path = tmp_path / f"{kind}.keras"
    build_head_model(head).save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    probs = np.asarray(loaded.predict(x.astype(np.float32), verbose=0))
    np.testing.assert_allclose(probs, head.probabilities(x), atol=1e-5)
    uncalibrated = keras.Model(loaded.inputs, loaded.get_layer("head_temperature").input)
    np.testing.assert_allclose(np.asarray(uncalibrated.predict(x.astype(np.float32), verbose=0)), head.logits(x),
                               rtol=1e-4, atol=1e-4)
