"""The fold splitter: every track tests once, nothing of a track or its artist crosses folds."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from genreflow.tasks.folds import make_folds

GENRES = ["blues", "jazz", "rock", "pop"]


def track_table(per_genre: int, artists_per_genre: int | None = None) -> pd.DataFrame:
    rows = []
    for genre in GENRES:
        for i in range(per_genre):
            artist = None if artists_per_genre is None else f"{genre}-artist-{i % artists_per_genre}"
            rows.append({"track_id": f"{genre}/{i:03d}", "genre": genre, "artist": artist, "split": "train"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_each_track_is_tested_once_and_never_trained_on_in_its_fold(k: int) -> None:
    tracks = track_table(15)
    folds = make_folds(tracks, k, val_fraction=0.1, seed=0)
    assert [f.number for f in folds] == list(range(1, k + 1))
    tested = Counter(t for f in folds for t in f.test)
    assert set(tested) == set(tracks["track_id"]) and set(tested.values()) == {1}
    for fold in folds:
        train, val, test = set(fold.train), set(fold.val), set(fold.test)
        assert not (train & test) and not (train & val) and not (val & test)
        assert train | val | test == set(tracks["track_id"])


def test_folds_are_stratified_and_validation_is_about_val_fraction() -> None:
    tracks = track_table(20)
    genre_of = dict(zip(tracks["track_id"], tracks["genre"], strict=True))
    for fold in make_folds(tracks, 5, val_fraction=0.1, seed=3):
        assert Counter(genre_of[t] for t in fold.test) == {g: 4 for g in GENRES}
        assert 6 <= len(fold.val) <= 10  # 10 % of 80 tracks, in whole artist groups
        assert {genre_of[t] for t in fold.val} == set(GENRES)


def test_an_artist_never_spans_two_folds_or_train_and_validation() -> None:
    tracks = track_table(12, artists_per_genre=4)  # 3 tracks per artist
    artist_of = dict(zip(tracks["track_id"], tracks["artist"], strict=True))
    folds = make_folds(tracks, 4, val_fraction=0.1, seed=1)
    fold_of_artist: dict[str, set[int]] = {}
    for fold in folds:
        for track in fold.test:
            fold_of_artist.setdefault(artist_of[track], set()).add(fold.number)
        assert not {artist_of[t] for t in fold.train} & {artist_of[t] for t in fold.test}
        assert not {artist_of[t] for t in fold.train} & {artist_of[t] for t in fold.val}
    assert all(len(numbers) == 1 for numbers in fold_of_artist.values())


def test_seeded_and_independent_of_row_order() -> None:
    tracks = track_table(10)
    first = make_folds(tracks, 3, 0.1, seed=5)
    assert make_folds(tracks.sample(frac=1.0, random_state=9), 3, 0.1, seed=5) == first
    assert make_folds(tracks, 3, 0.1, seed=6) != first


def test_too_few_groups_for_the_folds_is_a_clear_error() -> None:
    tracks = track_table(6, artists_per_genre=1)  # 4 artists in all
    with pytest.raises(ValueError, match="5 folds need at least 5 tracks of different artists; there are 4"):
        make_folds(tracks, 5, 0.1, seed=0)


def test_small_genres_get_what_validation_they_can() -> None:
    tracks = track_table(3)  # after a third is tested, 2 tracks a genre are left
    for fold in make_folds(tracks, 3, val_fraction=0.1, seed=0):
        assert len(fold.test) == 4 and len(fold.val) >= 1 and len(fold.train) >= 1
    with pytest.raises(ValueError, match="4 folds need a genre with at least 4 tracks; the largest has 3"):
        make_folds(tracks, 4, 0.1, seed=0)
