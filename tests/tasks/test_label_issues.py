"""Suspect labels from out-of-fold probabilities: the tracks whose tag disagrees come first."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genreflow.tasks.label_issues import (
    LABEL_ISSUE_COLUMNS,
    label_issues_csv,
    out_of_fold_tracks,
    precision_recall_at_k,
    suspect_labels,
)

GENRES = ["blues", "jazz", "metal", "pop"]


def oof(seed: int = 0, n: int = 80, wrong: int = 6) -> tuple[pd.DataFrame, set[str]]:
    """Out-of-fold clip probabilities of ``n`` tracks (2 clips each) that lean to their true genre; ``wrong`` of
    them carry another genre's tag."""
    rng = np.random.default_rng(seed)
    true = np.arange(n) % len(GENRES)
    given = true.copy()
    swapped = rng.choice(n, wrong, replace=False)
    given[swapped] = (given[swapped] + rng.integers(1, len(GENRES), wrong)) % len(GENRES)
    rows = []
    for track in range(n):
        for clip in range(2):
            p = rng.dirichlet(np.ones(len(GENRES))) * 0.2
            p[true[track]] += 0.8
            rows.append({"track_id": f"t{track:03d}", "clip_index": clip, "genre": GENRES[given[track]],
                         "fold": track % 5 + 1, **{f"prob_{g}": p[i] for i, g in enumerate(GENRES)}})
    return pd.DataFrame(rows), {f"t{i:03d}" for i in swapped}


def test_swapped_tags_rank_first() -> None:
    predictions, swapped = oof()
    tracks = out_of_fold_tracks(predictions, GENRES)
    assert len(tracks) == 80 and set(tracks["fold"]) == {1, 2, 3, 4, 5}
    issues = suspect_labels(tracks, GENRES, {"t000": "blues/t000.wav"})
    assert list(issues.columns) == list(LABEL_ISSUE_COLUMNS)
    assert precision_recall_at_k(issues["track_id"], swapped, len(swapped)) == (1.0, 1.0)
    # Confident learning flags a subset of them: its per-genre thresholds may not count every swapped track as
    # confidently another genre.
    assert 4 <= issues["confident_learning"].sum() <= len(swapped)
    assert list(issues["rank"]) == list(range(1, len(issues) + 1))
    assert issues["given_probability"].is_monotonic_increasing  # ranked by self-confidence
    assert (issues["given_genre"] != issues["suggested_genre"]).all()
    csv = label_issues_csv(issues).decode()
    assert csv.splitlines()[0] == ",".join(LABEL_ISSUE_COLUMNS)


def test_nothing_flagged_when_every_tag_agrees() -> None:
    predictions, _ = oof(wrong=1)
    predictions = predictions.assign(genre=[GENRES[int(t[1:]) % 4] for t in predictions["track_id"]])
    assert suspect_labels(out_of_fold_tracks(predictions, GENRES), GENRES).empty


def test_a_track_in_two_folds_is_refused() -> None:
    predictions, _ = oof()
    predictions.loc[1, "fold"] = 9
    with pytest.raises(ValueError, match="more than one fold"):
        out_of_fold_tracks(predictions, GENRES)


def test_precision_recall_at_k() -> None:
    assert precision_recall_at_k(["a", "x", "b"], {"a", "b"}, 2) == (0.5, 0.5)
    assert precision_recall_at_k(["a"], {"a", "b"}, 2) == (0.5, 0.5)  # a short list misses the rest
    with pytest.raises(ValueError):
        precision_recall_at_k([], set(), 0)
