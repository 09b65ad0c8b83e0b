"""Track-level folds for cross-validation: stratified by genre, grouped by artist, seeded.

Folds are drawn over every ingested track, whatever split ingest gave it, and
by track: all clips of a track, and all its augmented copies, belong to its
track's fold, and an artist's tracks share a fold, so nothing of a test track
(or of its artist) reaches that fold's training. Each fold's validation tracks
(for early stopping and the baseline's C) come out of its training part the
same way.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from genreflow.tasks.split import group_keys


@dataclass(frozen=True)
class Fold:
    """One fold: which tracks train, validate and test. ``number`` counts from 1."""

    number: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def _split(tracks: pd.DataFrame, n_splits: int, seed: int) -> list[np.ndarray]:
    """Row positions of each of ``n_splits`` stratified, artist-grouped parts of ``tracks``."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # A genre with fewer tracks than parts: some parts lack it, as they must.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return [test for _, test in splitter.split(np.zeros(len(tracks)), tracks["genre"].astype(str),
                                                   group_keys(tracks))]


def make_folds(tracks: pd.DataFrame, k: int, val_fraction: float, seed: int) -> list[Fold]:
    """``k`` folds over ``tracks`` (track_id, genre, artist): each track is a test track exactly once.

    A fold's validation tracks are about ``val_fraction`` of all tracks, taken
    from its training part by the same stratified, grouped rule.
    """
    missing = {"track_id", "genre", "artist"} - set(tracks.columns)
    if missing:
        raise ValueError(f"track table lacks column(s) {sorted(missing)}")
    tracks = tracks.sort_values("track_id", kind="stable").reset_index(drop=True)
    groups = group_keys(tracks).nunique()
    if not 2 <= k <= groups:
        raise ValueError(f"{k} folds need at least {k} tracks of different artists; there are {groups}")
    largest = int(tracks["genre"].value_counts().max())
    if k > largest:
        raise ValueError(f"{k} folds need a genre with at least {k} tracks; the largest has {largest}")
    folds = []
    for number, test_rows in enumerate(_split(tracks, k, seed), start=1):
        rest = tracks.drop(index=test_rows).reset_index(drop=True)
        # As many parts as give one of about val_fraction of all tracks, as far as genres and artists allow.
        parts = min(round((1 - 1 / k) / val_fraction), group_keys(rest).nunique(),
                    int(rest["genre"].value_counts().max()))
        val_rows = _split(rest, parts, seed + number)[0] if parts >= 2 else np.array([], dtype=int)
        val = rest.iloc[val_rows]
        train = rest.drop(index=val_rows)
        folds.append(Fold(number, tuple(train["track_id"]), tuple(val["track_id"]),
                          tuple(tracks.iloc[test_rows]["track_id"])))
    return folds
