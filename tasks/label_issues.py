"""Suspect labels: the tracks whose given genre a cross-validation's out-of-fold predictions most doubt.

Why: genre tags in a personal collection are messy, and a wrong tag both
teaches the model the wrong thing and scores it wrongly. Every track of a
K-fold cross-validation is predicted once by a model that never trained on
it, so those out-of-fold probabilities say how much the rest of the
collection agrees with each track's tag.

The list holds every track whose out-of-fold prediction is another genre
than its tag, ranked by self-confidence (the out-of-fold probability of the
given genre, least first: cleanlab's ``find_label_issues`` with
``filter_by="predicted_neq_given"`` and its ranking). Confident learning
(Northcutt, Jiang and Chuang, JAIR 2021; cleanlab's default filter) marks the
tracks it also flags: their predicted genre's probability passes that
genre's own threshold and the count of such tracks per pair of genres
survives its noise-rate pruning. The ranking is the list, not the mark,
because on gtzan-mini and the demo set with 10 % of tags swapped the
confident-learning filter left out swapped tracks that the ranking put in its
top k (docs/model.md, "Suspect labels"), and a listener works down a ranked
list anyway.

Plain functions: predictions in, a ranked table out; tasks/crossval.py
writes it as reports/cv-<id>/label_issues.csv.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd

from genreflow.model.metrics import prob_columns, track_probabilities

LABEL_ISSUES_FILE = "label_issues.csv"
LABEL_ISSUE_COLUMNS: tuple[str, ...] = ("rank", "path", "given_genre", "suggested_genre", "given_probability",
                                        "suggested_probability", "confident_learning", "track_id", "fold")
SHOWN_IN_REPORT = 25  # suspect labels the CV report lists with a player; the CSV has all of them


def out_of_fold_tracks(predictions: pd.DataFrame, genres: list[str]) -> pd.DataFrame:
    """One row a track: its clips' mean out-of-fold probability per genre (the report's track level).

    predictions : one row a clip of a fold's test tracks (track_id, genre, fold, prob_<genre>); each track is
        a test track of exactly one fold.
    Returns track_id, genre, fold, prob_<genre>..., predicted, sorted by track_id.
    """
    folds = predictions.groupby("track_id")["fold"].nunique()
    if (folds > 1).any():
        raise ValueError(f"track(s) {list(folds[folds > 1].index[:5])} are test tracks of more than one fold")
    columns = prob_columns(genres)
    tracks = track_probabilities(predictions[["track_id", "genre"]], predictions[columns].to_numpy(), genres)
    fold = predictions.drop_duplicates("track_id").set_index("track_id")["fold"]
    tracks.insert(2, "fold", tracks["track_id"].map(fold).astype("int64"))
    return tracks.drop(columns=["n_clips", "correct"])


def suspect_labels(tracks: pd.DataFrame, genres: list[str], paths: dict[Any, str] | None = None) -> pd.DataFrame:
    """The tracks whose out-of-fold prediction disagrees with their tag (or that confident learning flags), most
    suspect first (LABEL_ISSUE_COLUMNS).

    tracks : out_of_fold_tracks' table. The suggested genre is the most
    probable other genre; given_probability, the out-of-fold probability of
    the given genre, is what the ranking sorts by (self-confidence);
    confident_learning says whether cleanlab's default filter flags the track too.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import order_label_issues

    columns = prob_columns(genres)
    probabilities = tracks[columns].to_numpy(dtype=np.float64)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    index = {genre: i for i, genre in enumerate(genres)}
    labels = np.array([index[str(genre)] for genre in tracks["genre"]], dtype=np.int64)
    empty = pd.DataFrame(columns=list(LABEL_ISSUE_COLUMNS))
    if len(tracks) == 0 or len(set(labels)) < 2:
        return empty
    disagree = find_label_issues(labels, probabilities, filter_by="predicted_neq_given", n_jobs=1)
    confident = find_label_issues(labels, probabilities, n_jobs=1)
    flagged = order_label_issues(disagree | confident, labels, probabilities, rank_by="self_confidence")
    if len(flagged) == 0:
        return empty
    others = probabilities[flagged].copy()
    others[np.arange(len(flagged)), labels[flagged]] = -1.0
    suggested = others.argmax(axis=1)
    ids = tracks["track_id"].to_numpy()[flagged]
    table = pd.DataFrame({
        "rank": np.arange(1, len(flagged) + 1),
        "path": [str((paths or {}).get(track, track)) for track in ids],
        "given_genre": [genres[i] for i in labels[flagged]],
        "suggested_genre": [genres[i] for i in suggested],
        "given_probability": probabilities[flagged, labels[flagged]],
        "suggested_probability": probabilities[flagged, suggested],
        "confident_learning": confident[flagged],
        "track_id": ids,
        "fold": tracks["fold"].to_numpy()[flagged] if "fold" in tracks else None,
    })
    return table[list(LABEL_ISSUE_COLUMNS)]


def label_issues_csv(issues: pd.DataFrame) -> bytes:
    """label_issues.csv: LABEL_ISSUE_COLUMNS, probabilities to 4 decimals."""
    return issues[list(LABEL_ISSUE_COLUMNS)].to_csv(index=False, float_format="%.4f").encode()


def precision_recall_at_k(ranked: Sequence[Any], relevant: Collection[Any], k: int) -> tuple[float, float]:
    """Precision and recall of the first ``k`` of ``ranked`` against the set ``relevant`` (a ranking shorter
    than k counts its missing places as misses)."""
    if k <= 0:
        raise ValueError(f"k must be at least 1, got {k}")
    hits = len(set(list(ranked)[:k]) & set(relevant))
    return hits / k, hits / len(relevant) if relevant else 0.0
