"""The open set (issue 23) in the tables and the report: a ``genre`` column that can be ``unknown``, playlists and
the CSV that file by it, and the report's coverage/accuracy section with its numbers in metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genreflow.model.metrics import evaluate_predictions
from genreflow.model.open_set import UNKNOWN, OpenSetRule
from genreflow.tasks.evaluate import open_set_metrics
from genreflow.tasks.playlists import csv_table, with_decision, write_playlists
from genreflow.tasks.predict import PredictSummary


def predictions_table(folder: Path) -> pd.DataFrame:
    """A predictions table as the library flow merges it: two sure files, one unsure, one failed."""
    paths = [str(folder / name) for name in ("sure.mp3", "also-sure.mp3", "speech.wav", "broken.mp3")]
    for path in paths:
        Path(path).write_bytes(b"x")
    return pd.DataFrame({"path": paths, "duration_s": [30.0, 30.0, 5.0, np.nan], "n_windows": [3, 3, 1, 0],
                         "genre_1": ["Rock", "Jazz", "Pop", None], "prob_1": [0.9, 0.7, 0.35, np.nan],
                         "genre_2": ["Pop", "Rock", "Rock", None], "prob_2": [0.05, 0.2, 0.33, np.nan],
                         "model": "run-x", "error": ["", "", "", "not decodable audio"]})


def test_the_genre_column_is_unknown_under_the_threshold(tmp_path: Path) -> None:
    table = with_decision(predictions_table(tmp_path), OpenSetRule(0.5))
    assert list(table.columns[:4]) == ["path", "duration_s", "n_windows", "genre"]
    assert table["genre"].tolist() == ["Rock", "Jazz", UNKNOWN, None]
    assert table["genre_1"].tolist()[:3] == ["Rock", "Jazz", "Pop"]  # the top-k stay
    assert with_decision(table, OpenSetRule())["genre"].tolist() == ["Rock", "Jazz", "Pop", None]  # an older model
    assert with_decision(table, OpenSetRule(0.8))["genre"].tolist() == ["Rock", UNKNOWN, UNKNOWN, None]  # 0.8
    # the novelty half: a sure file far from the training tracks is unknown too; no column, no novelty
    far = table.assign(novelty=[0.4, 3.0, 0.9, np.nan])
    assert with_decision(far, OpenSetRule(0.5, 1.0))["genre"].tolist() == ["Rock", UNKNOWN, UNKNOWN, None]
    assert with_decision(far, OpenSetRule(None, 1.0))["genre"].tolist() == ["Rock", UNKNOWN, "Pop", None]
    assert with_decision(far, OpenSetRule(None, 5.0))["genre"].tolist() == ["Rock", "Jazz", "Pop", None]

    csv = csv_table(table)
    assert csv["genre"].tolist() == ["Rock", "Jazz", UNKNOWN, ""] and csv["top3"][2].startswith("Pop:0.350")
    report = write_playlists(table, tmp_path / "playlists")
    assert report.written == {"Jazz.m3u8": 1, "Rock.m3u8": 1, "unknown.m3u8": 1}
    assert "speech.wav" in (tmp_path / "playlists" / "unknown.m3u8").read_text()
    summary = PredictSummary.of(table, "run-x")
    assert summary.genres == {"Jazz": 1, "Rock": 1, UNKNOWN: 1}
    assert summary.lines()[1] == "genres: Jazz 1 (33%), Rock 1 (33%), unknown 1 (33%)"


def evaluated() -> tuple[pd.DataFrame, dict]:
    """Four test tracks of two clips: two sure and right, one unsure and right, one unsure and wrong."""
    clips = pd.DataFrame({"track_id": [1, 1, 2, 2, 3, 3, 4, 4], "genre": ["a", "a", "b", "b", "a", "a", "b", "b"]})
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.0, 1.0], [0.6, 0.4], [0.5, 0.5], [0.6, 0.4],
                      [0.6, 0.4]])
    return evaluate_predictions(clips, probs, ["a", "b"])


def test_coverage_and_accuracy_on_the_test_tracks() -> None:
    predictions, _ = evaluated()
    result = open_set_metrics(predictions, ["a", "b"], {"threshold": 0.7, "rule": "the 5th percentile",
                                                        "validation_tracks": 9})
    assert result["threshold"] == 0.7 and result["validation_tracks"] == 9
    assert result["at_threshold"] == {"threshold": 0.7, "coverage": 0.5, "accuracy": 1.0, "tracks": 2}
    curve = {row["threshold"]: row for row in result["curve"]}
    assert curve[0.0]["coverage"] == 1.0 and curve[0.0]["accuracy"] == pytest.approx(0.75)
    assert curve[0.5]["coverage"] == 1.0 and curve[0.6]["coverage"] == pytest.approx(0.75)  # track 3's mean is 0.55
    assert 0.7 in curve  # the saved threshold is a row of the table
    older = open_set_metrics(predictions, ["a", "b"], None)
    assert older["threshold"] is None and older["at_threshold"] is None and len(older["curve"]) == 10
    assert "novelty" not in result  # a model without a novelty reference


def test_the_novelty_half_on_the_test_tracks() -> None:
    """Track 2 is sure and right but far from the training tracks: predict's whole rule leaves only track 1."""
    predictions, _ = evaluated()
    predictions["novelty"] = predictions["track_id"].map({1: 0.5, 2: 1.5, 3: 0.2, 4: 0.3}).astype("float32")
    result = open_set_metrics(predictions, ["a", "b"], {"threshold": 0.7, "novelty": {"cut": 3.2}})
    assert result["novelty"] == {"cut": 3.2, "beyond": 0.25, "rule_coverage": 0.25, "rule_accuracy": 1.0}
    assert result["at_threshold"]["coverage"] == 0.5  # the probability half alone, as before


def test_the_report_shows_the_open_set_section_and_metrics_json_its_numbers() -> None:
    from genreflow.tasks.reporting.render import dataset_summary, render_report

    predictions, metrics = evaluated()
    metrics["open_set"] = open_set_metrics(predictions, ["a", "b"], {"threshold": 0.7, "rule": "the 5th "
                                                                     "percentile", "validation_tracks": 9})
    tracks = pd.DataFrame({"track_id": [1, 2, 3, 4], "genre": ["a", "b", "a", "b"], "split": ["test"] * 4})
    summary = dataset_summary(tracks, pd.DataFrame(), pd.DataFrame(columns=["split", "augmentation", "clips"]), [])
    files = render_report("r", metrics, pd.DataFrame({"epoch": [1], "accuracy": [0.5], "loss": [1.0]}), summary, {})
    assert files["open_set.png"].startswith(b"\x89PNG")
    text = files["report.md"].decode("utf-8")
    assert '## Open set: "unknown"' in text and "The threshold saved with this model is **0.700**" in text
    assert "| 0.700 (saved) | 0.500 | 1.000 | 2 |" in text and "| 0.000 | 1.000 | 0.750 | 4 |" in text
    html = files["report.html"].decode("utf-8")
    assert "<td>0.700 (saved)</td>" in html and 'alt="Coverage against accuracy"' in html
    saved = json.loads(files["metrics.json"])["metrics"]["open_set"]
    assert saved["at_threshold"] == {"threshold": 0.7, "coverage": 0.5, "accuracy": 1.0, "tracks": 2}
    metrics["open_set"] = open_set_metrics(predictions, ["a", "b"], None)
    older = render_report("r", metrics, pd.DataFrame(), summary, {})["report.md"].decode("utf-8")
    assert "This model has no saved threshold" in older
    assert "novelty" not in older
    predictions["novelty"] = predictions["track_id"].map({1: 0.5, 2: 1.5, 3: 0.2, 4: 0.3}).astype("float32")
    metrics["open_set"] = open_set_metrics(predictions, ["a", "b"], {"threshold": 0.7, "novelty": {"cut": 3.2}})
    files = render_report("r", metrics, pd.DataFrame(), summary, {})
    line = "Of the test tracks, 0.250 are past the cut; with both rules, as `genreflow predict` decides, coverage " \
           "is 0.250 and the accuracy of the covered tracks 1.000."
    assert line in files["report.md"].decode("utf-8")
    assert "with both rules, as <code>genreflow predict</code> decides, coverage is 0.250" in \
        files["report.html"].decode("utf-8")
