"""Known-answer tests of the evaluation: every expected number below is worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from genreflow.model.metrics import evaluate_predictions, prob_columns, track_probabilities

GENRES = ["rock", "jazz", "pop"]

# 4 tracks x 2 clips. Per clip: (track_id, true genre, probabilities over GENRES).
#   track 1 rock: clips say rock, pop;  mean [.35 .25 .40] -> pop  (wrong, rock 2nd: top-2 hit)
#   track 2 jazz: clips say jazz, jazz; mean [.425 .525 .05] -> jazz (right)
#   track 3 pop:  clips say rock, pop;  mean [.45 .15 .40] -> rock (wrong, pop 2nd: top-2 hit)
#   track 4 pop:  clips say jazz, pop;  mean [.15 .30 .55] -> pop  (right)
CLIPS = [
    (1, "rock", [0.6, 0.3, 0.1]),
    (1, "rock", [0.1, 0.2, 0.7]),
    (2, "jazz", [0.45, 0.55, 0.0]),
    (2, "jazz", [0.4, 0.5, 0.1]),
    (3, "pop", [0.9, 0.0, 0.1]),
    (3, "pop", [0.0, 0.3, 0.7]),
    (4, "pop", [0.2, 0.5, 0.3]),
    (4, "pop", [0.1, 0.1, 0.8]),
]


@pytest.fixture
def example() -> tuple[pd.DataFrame, np.ndarray]:
    clips = pd.DataFrame(
        {
            "track_id": [c[0] for c in CLIPS],
            "clip_index": [0, 1] * 4,
            "genre": [c[1] for c in CLIPS],
            "shard": ["test-0000"] * 8,
        },
        index=range(100, 108),  # a non-default index must not break the alignment with probs
    )
    probs = np.array([c[2] for c in CLIPS])
    return clips, probs


def test_known_answer_metrics(example: tuple[pd.DataFrame, np.ndarray]) -> None:
    clips, probs = example
    _, metrics = evaluate_predictions(clips, probs, GENRES)

    assert metrics["clip_accuracy"] == pytest.approx(5 / 8)  # 1 + 2 + 1 + 1 clips right
    assert metrics["clip_top2_accuracy"] == pytest.approx(7 / 8)  # only track 1's 2nd clip misses
    assert metrics["track_accuracy"] == pytest.approx(2 / 4)  # tracks 2 and 4
    assert metrics["top2_accuracy"] == pytest.approx(1.0)
    assert metrics["confusion"] == {
        "labels": GENRES,
        "matrix": [[0, 0, 1], [0, 1, 0], [1, 0, 1]],
    }
    # rock: predicted once (track 3, wrong), true once (track 1, missed).
    # jazz: one track, right.  pop: predicted for tracks 1 and 4, true for 3 and 4.
    assert metrics["per_genre"] == {
        "rock": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "jazz": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
        "pop": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
    }
    assert metrics["macro_f1"] == pytest.approx((0 + 1 + 0.5) / 3)
    assert metrics["n_clips"] == 8
    assert metrics["n_tracks"] == 4
    assert metrics["chance"] == pytest.approx(1 / 3)
    assert metrics["absent_genres"] == []
    assert json.loads(json.dumps(metrics)) == metrics  # JSON-serialisable, losslessly


def test_predictions_table(example: tuple[pd.DataFrame, np.ndarray]) -> None:
    clips, probs = example
    predictions, _ = evaluate_predictions(clips, probs, GENRES)

    assert len(predictions) == 8
    assert list(predictions.columns[:4]) == ["track_id", "clip_index", "genre", "shard"]
    assert predictions["predicted"].tolist() == ["rock", "pop", "jazz", "jazz", "rock", "pop", "jazz", "pop"]
    assert predictions["correct"].tolist() == [True, False, True, True, False, True, False, True]
    assert predictions["correct"].dtype == bool
    np.testing.assert_allclose(predictions[prob_columns(GENRES)].to_numpy(), probs)
    assert prob_columns(GENRES) == ["prob_rock", "prob_jazz", "prob_pop"]


def test_track_probabilities_vote_by_mean_not_majority() -> None:
    # Two clips lean jazz, one is sure of rock: the majority says jazz, the mean rock.
    clips = pd.DataFrame({"track_id": ["a", "a", "a"], "clip_index": [0, 1, 2], "genre": "jazz"})
    probs = np.array([[0.45, 0.55, 0.0], [0.4, 0.5, 0.1], [0.95, 0.0, 0.05]])
    tracks = track_probabilities(clips, probs, GENRES)

    assert tracks.columns.tolist() == [
        "track_id",
        "genre",
        "n_clips",
        "prob_rock",
        "prob_jazz",
        "prob_pop",
        "predicted",
        "correct",
    ]
    row = tracks.iloc[0]
    assert row["predicted"] == "rock"
    assert not row["correct"]
    assert row["n_clips"] == 3
    assert row["prob_rock"] == pytest.approx(0.6)
    assert row["prob_jazz"] == pytest.approx(0.35)


def test_genre_absent_from_test_data(example: tuple[pd.DataFrame, np.ndarray]) -> None:
    clips, probs = example
    genres = [*GENRES, "blues"]
    with_blues = np.hstack([probs, np.full((len(probs), 1), 0.01)])
    _, metrics = evaluate_predictions(clips, with_blues, genres)

    assert metrics["absent_genres"] == ["blues"]
    assert metrics["per_genre"]["blues"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert metrics["confusion"]["labels"] == genres
    assert metrics["confusion"]["matrix"] == [[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    # Never predicted and never true: it does not drag the macro average down.
    assert metrics["macro_f1"] == pytest.approx(0.5)
    assert metrics["chance"] == pytest.approx(0.25)

    # Predicted for track 4 though it has no test track: now it counts, as an F1 of 0.
    with_blues[7] = [0.0, 0.0, 0.0, 1.0]
    _, metrics = evaluate_predictions(clips, with_blues, genres)
    assert metrics["confusion"]["matrix"][2] == [1, 0, 0, 1]
    assert metrics["macro_f1"] == pytest.approx((0 + 1 + 0 + 0) / 4)


def test_empty_input_raises() -> None:
    clips = pd.DataFrame({"track_id": [], "clip_index": [], "genre": []})
    with pytest.raises(ValueError, match="no test clips"):
        evaluate_predictions(clips, np.empty((0, 3)), GENRES)
    with pytest.raises(ValueError, match="no test clips"):
        track_probabilities(clips, np.empty((0, 3)), GENRES)


def test_bad_input_raises(example: tuple[pd.DataFrame, np.ndarray]) -> None:
    clips, probs = example
    with pytest.raises(ValueError, match="shape"):
        evaluate_predictions(clips, probs[:, :2], GENRES)
    with pytest.raises(ValueError, match="no genres"):
        evaluate_predictions(clips, probs, [])
    with pytest.raises(ValueError, match="does not know"):
        evaluate_predictions(clips.assign(genre="folk"), probs, GENRES)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_predictions(clips, np.where(probs > 0.8, np.nan, probs), GENRES)
    mixed = clips.copy()
    mixed.iloc[1, mixed.columns.get_loc("genre")] = "jazz"
    with pytest.raises(ValueError, match="different genre labels"):
        evaluate_predictions(mixed, probs, GENRES)


def test_log_loss_is_the_clips_mean_negative_log_probability_of_their_genre() -> None:
    clips = pd.DataFrame({"track_id": ["a", "b"], "genre": ["rock", "jazz"]})
    sure = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert evaluate_predictions(clips, sure, GENRES)[1]["log_loss"] == pytest.approx(0.0, abs=1e-9)
    uniform = np.full((2, 3), 1 / 3)
    assert evaluate_predictions(clips, uniform, GENRES)[1]["log_loss"] == pytest.approx(np.log(3))
    mixed = np.array([[0.5, 0.25, 0.25], [0.8, 0.1, 0.1]])  # half right; the second gives jazz 0.1
    assert evaluate_predictions(clips, mixed, GENRES)[1]["log_loss"] == pytest.approx(-(np.log(0.5) + np.log(0.1)) / 2)
    wrong = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])  # a probability of 0 counts as the floor, not infinity
    assert evaluate_predictions(clips, wrong, GENRES)[1]["log_loss"] == pytest.approx(-np.log(1e-7) / 2)
