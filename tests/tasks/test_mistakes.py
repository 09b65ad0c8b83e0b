"""Confident mistakes: per true genre, the wrong test tracks, most confident first, with their worst clip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genreflow.tasks.mistakes import confident_mistakes, top_genres

GENRES = ["Rock", "Jazz", "Pop"]


def clips(rows: list[tuple[str, str, list[float]]]) -> pd.DataFrame:
    """(track, genre, probabilities) per clip; clip indexes count per track."""
    frame = pd.DataFrame({"track_id": [r[0] for r in rows], "genre": [r[1] for r in rows]})
    frame["clip_index"] = frame.groupby("track_id").cumcount()
    for i, genre in enumerate(GENRES):
        frame[f"prob_{genre}"] = [r[2][i] for r in rows]
    return frame


def test_known_answer() -> None:
    predictions = clips([
        ("r1", "Rock", [0.8, 0.1, 0.1]),  # right
        ("r2", "Rock", [0.2, 0.7, 0.1]), ("r2", "Rock", [0.4, 0.5, 0.1]),  # Jazz 0.6, worst clip 0
        ("r3", "Rock", [0.1, 0.1, 0.8]),  # Pop 0.8: the more confident Rock mistake
        ("j1", "Jazz", [0.5, 0.3, 0.2]),  # Rock 0.5
    ])
    rows = confident_mistakes(predictions, GENRES, {"r2": "rock/r2.mp3"})
    assert [(r["genre"], r["track_id"], r["predicted"]) for r in rows] == [
        ("Rock", "r3", "Pop"), ("Rock", "r2", "Jazz"), ("Jazz", "j1", "Rock")]
    r2 = rows[1]
    assert r2["path"] == "rock/r2.mp3" and rows[0]["path"] == "r3"  # no path known: the id
    assert r2["confidence"] == pytest.approx(0.6) and r2["true_probability"] == pytest.approx(0.3)
    assert r2["clip_index"] == 0
    assert [t["genre"] for t in r2["top3"]] == ["Jazz", "Rock", "Pop"]


def test_at_most_per_genre_rows_and_none_when_all_right() -> None:
    wrong = clips([(f"t{i}", "Rock", [0.1, 0.9 - i / 100, 0.0 + i / 100]) for i in range(8)])
    rows = confident_mistakes(wrong, GENRES, {}, per_genre=5)
    assert [r["track_id"] for r in rows] == ["t0", "t1", "t2", "t3", "t4"]
    assert confident_mistakes(clips([("a", "Pop", [0.1, 0.1, 0.8])]), GENRES, {}) == []


def test_top_genres_breaks_ties_in_label_order() -> None:
    assert [t["genre"] for t in top_genres(np.array([0.25, 0.5, 0.25]), GENRES)] == ["Jazz", "Rock", "Pop"]
