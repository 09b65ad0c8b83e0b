"""What ``genreflow predict`` prints for a handful of files: CSV, JSON and a plain-text table that parse back."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from genreflow.flows.predict_output import format_predictions
from genreflow.model.predict import FilePrediction, PredictError, PredictionFailure


@pytest.fixture
def mixed_results() -> list[FilePrediction | PredictionFailure]:
    return [
        FilePrediction(Path("a/song one.wav"), [("jazz", 0.7), ("blues", 0.2), ("rock", 0.1)], 3),
        PredictionFailure(Path("b,broken.mp3"), "not decodable audio: Format not recognised"),
        FilePrediction(Path("two.flac"), [("pop", 0.9), ("rock", 0.1)], 1),
        FilePrediction(Path("speech.wav"), [("pop", 0.4), ("rock", 0.3)], 1, "unknown", novelty=2.5),
    ]


def test_csv_format_parses(mixed_results: list) -> None:
    frame = pd.read_csv(io.StringIO(format_predictions(mixed_results, "csv")), keep_default_na=False)
    assert list(frame.columns) == [
        "path", "genre", "genre_1", "prob_1", "genre_2", "prob_2", "genre_3", "prob_3", "novelty", "error",
    ]  # fmt: skip
    assert frame["path"].tolist() == ["a/song one.wav", "b,broken.mp3", "two.flac", "speech.wav"]
    assert frame["genre"].tolist() == ["jazz", "", "pop", "unknown"]  # the open-set decision; top-k stay
    assert frame.loc[3, "genre_1"] == "pop" and float(frame.loc[3, "novelty"]) == 2.5
    assert frame.loc[0, "novelty"] == ""  # a model without a novelty reference
    assert frame.loc[0, "genre_1"] == "jazz" and float(frame.loc[0, "prob_1"]) == pytest.approx(0.7)
    assert frame.loc[1, "error"].startswith("not decodable") and frame.loc[1, "genre_1"] == ""
    assert frame.loc[2, "genre_3"] == "" and frame.loc[2, "error"] == ""


def test_json_format_parses(mixed_results: list) -> None:
    items = json.loads(format_predictions(mixed_results, "json"))
    assert items[0] == {
        "path": "a/song one.wav",
        "genre": "jazz",
        "genres": [
            {"genre": "jazz", "prob": 0.7},
            {"genre": "blues", "prob": 0.2},
            {"genre": "rock", "prob": 0.1},
        ],
        "n_windows": 3,
        "novelty": None,
    }
    assert items[3]["genre"] == "unknown" and items[3]["novelty"] == 2.5
    assert items[1] == {"path": "b,broken.mp3", "error": "not decodable audio: Format not recognised"}


def test_table_format_is_text(mixed_results: list) -> None:
    text = format_predictions(mixed_results, "table")
    assert "top-1" in text and "jazz (0.70)" in text and "error: not decodable" in text and "unknown" in text
    assert "\x1b[" not in text  # plain text, no terminal codes
    with pytest.raises(PredictError, match="unknown output format"):
        format_predictions(mixed_results, "xml")  # type: ignore[arg-type]
