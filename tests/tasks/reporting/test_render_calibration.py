"""The headline table shows the test tracks' ECE (issue 22) where the evaluation computed it, and no row otherwise."""

from __future__ import annotations

import numpy as np

from genreflow.tasks.reporting.render import CALIBRATION, HEADLINE, MISSING, Table, _headline_table


def _labels(table: Table) -> list[str]:
    return [row[0] for row in table.rows]


def test_ece_rows_follow_the_headline_when_the_metrics_have_them() -> None:
    metrics = {"track_accuracy": 0.9, "ece": 0.031, "ece_uncalibrated": 0.12}
    table = _headline_table(metrics, {"name": "MFCC + SVM", "track_accuracy": 0.7}, "Embedding")
    assert _labels(table) == [label for _, label in HEADLINE] + [label for _, label in CALIBRATION]
    assert table.rows[-2][1:] == ("0.031", MISSING) and table.rows[-1][1] == "0.120"


def test_no_ece_rows_without_ece() -> None:
    assert _labels(_headline_table({"track_accuracy": 0.9}, None)) == [label for _, label in HEADLINE]


def test_a_report_with_calibration_bins_draws_the_reliability_diagram() -> None:
    import pandas as pd

    from genreflow.model.metrics import evaluate_predictions
    from genreflow.model.track_head import reliability_table
    from genreflow.tasks.reporting.render import dataset_summary, render_report

    clips = pd.DataFrame({"track_id": [1, 1, 2, 3], "genre": ["a", "a", "b", "b"]})
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    _, metrics = evaluate_predictions(clips, probs, ["a", "b"])
    labels, track_probs = np.array([0, 1, 1]), np.array([[0.7, 0.3], [0.3, 0.7], [0.9, 0.1]])
    metrics.update(ece=0.3, ece_uncalibrated=0.4, reliability=reliability_table(track_probs, labels),
                   reliability_uncalibrated=reliability_table(track_probs ** 2 / (track_probs ** 2).sum(1)[:, None],
                                                              labels))
    tracks = pd.DataFrame({"track_id": [1, 2, 3], "genre": ["a", "b", "b"], "split": ["test"] * 3})
    summary = dataset_summary(tracks, pd.DataFrame(), pd.DataFrame(columns=["split", "augmentation", "clips"]), [])
    files = render_report("r", {**metrics, "family": "embedding"}, pd.DataFrame(), summary, {},
                          model={"embedder": "MSD_musicnn", "feature": "max_pool"})
    assert files["reliability.png"].startswith(b"\x89PNG")
    text = files["report.md"].decode("utf-8")
    assert "## Calibration" in text and "![Reliability diagram](reliability.png)" in text
    assert "| ECE, 10 bins (track) | 0.300 |" in text and "| ECE before calibration (track) | 0.400 |" in text
    assert "data:image/png;base64," in files["report.html"].decode("utf-8")
    without = render_report("r", {**metrics, "reliability": None, "family": "embedding"}, pd.DataFrame(), summary, {},
                            model={"embedder": "MSD_musicnn", "feature": "max_pool"})
    assert "reliability.png" not in without and "## Calibration" not in without["report.md"].decode("utf-8")
