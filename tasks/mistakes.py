"""The test tracks a model got wrong with the most confidence, per true genre: the report's "Mistakes".

Why: an accuracy says how often a model is wrong, not where. The confident
mistakes are where to listen first: a label that is itself wrong, a genre
pair the model cannot tell apart, a recording unlike the rest of its genre.

Plain functions on evaluate's per-clip predictions (tasks/evaluate.py);
tasks/excerpts.py cuts the window each row plays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from genreflow.model.metrics import prob_columns, track_probabilities
from genreflow.tasks.excerpts import worst_clips

MISTAKES_PER_GENRE = 5  # rows per true genre: enough to hear a pattern, few enough to listen to
TOP_K = 3  # genres shown per mistake, with their probabilities


def top_genres(probabilities: np.ndarray, genres: list[str], k: int = TOP_K) -> list[dict[str, Any]]:
    """The ``k`` most probable genres of one probability row, most probable first (ties: label order)."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"genre": genres[i], "probability": float(probabilities[i])} for i in order]


def confident_mistakes(predictions: pd.DataFrame, genres: list[str], paths: dict[Any, str],
                       per_genre: int = MISTAKES_PER_GENRE) -> list[dict[str, Any]]:
    """Per true genre (in label order), its wrongly predicted test tracks, the most confidently wrong first.

    predictions : one row a clip: track_id, clip_index, genre and prob_<genre> (evaluate's predictions.parquet).
    paths : track_id -> the track's file (tracks.parquet), for the listener and for the excerpt.

    A track's prediction is its clips' mean probability (the report's track
    level); its confidence that probability of the predicted genre. Each row:
    genre, track_id, path, predicted, confidence, true_probability, top3
    [{genre, probability}] and clip_index, the clip that gave the true genre
    the least probability (the window the model was most wrong about).
    """
    columns = prob_columns(genres)
    tracks = track_probabilities(predictions[["track_id", "genre"]], predictions[columns].to_numpy(), genres)
    probabilities = tracks[columns].to_numpy()
    index = {genre: i for i, genre in enumerate(genres)}
    tracks["confidence"] = probabilities.max(axis=1)
    tracks["true_probability"] = probabilities[np.arange(len(tracks)), [index[g] for g in tracks["genre"]]]
    tracks["top"] = [top_genres(row, genres) for row in probabilities]
    wrong = tracks[~tracks["correct"]].sort_values(["confidence", "track_id"], ascending=[False, True], kind="stable")
    chosen = pd.concat([wrong[wrong["genre"] == genre].head(per_genre) for genre in genres]) if len(wrong) else wrong
    clips = worst_clips(predictions, genres, dict(zip(chosen["track_id"], chosen["genre"], strict=True)))
    return [{"genre": str(row.genre), "track_id": row.track_id, "path": str(paths.get(row.track_id, row.track_id)),
             "predicted": str(row.predicted), "confidence": float(row.confidence),
             "true_probability": float(row.true_probability), "top3": row.top, "clip_index": clips[row.track_id]}
            for row in chosen.itertuples(index=False)]
