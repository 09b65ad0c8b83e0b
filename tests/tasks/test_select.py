"""The choice among model families: the best on validation, ties to the reference, the baseline never chosen."""

from __future__ import annotations

from typing import Any

import pytest

from genreflow.tasks.select import choose_model


def _scored(val: float | None, test: float, loss: float = 0.5) -> dict[str, Any]:
    validation = None if val is None else {"track_accuracy": val, "macro_f1": val, "log_loss": loss}
    return {"track_accuracy": test, "macro_f1": test, "clip_accuracy": test, "validation": validation}


RUNS = {"cnn": "run-1", "embedding": "emb-1"}


def test_the_best_on_validation_is_chosen_whatever_the_test_split_says() -> None:
    selection = choose_model({"cnn": _scored(0.6, 0.9), "embedding": _scored(0.8, 0.7)}, RUNS)
    assert selection["chosen"] == "embedding" and selection["run"] == "emb-1"
    assert selection["reason"] == ("best validation track accuracy: 0.800 against CNN 0.600")
    rows = {row["family"]: row for row in selection["candidates"]}
    assert rows["embedding"]["chosen"] and not rows["cnn"]["chosen"]
    assert rows["cnn"]["test_track_accuracy"] == 0.9 and rows["cnn"]["val_track_accuracy"] == 0.6


def test_accuracy_ties_go_to_the_lower_log_loss_then_to_the_cnn() -> None:
    tied = choose_model({"cnn": _scored(1.0, 0.5, loss=0.4), "embedding": _scored(1.0, 0.5, loss=0.1)}, RUNS)
    assert tied["chosen"] == "embedding"
    assert tied["reason"] == ("validation track accuracy tied at 1.000; lower validation log-loss: 0.100 against "
                              "CNN 0.400")
    assert choose_model({"cnn": _scored(0.9, 0.5, loss=0.1), "embedding": _scored(1.0, 0.5, loss=0.9)},
                        RUNS)["chosen"] == "embedding"  # accuracy first
    assert choose_model({"cnn": _scored(0.8, 0.5), "embedding": _scored(0.8, 0.9)}, RUNS)["chosen"] == "cnn"


def test_the_baseline_is_shown_but_never_chosen() -> None:
    baseline = {"name": "MFCC + SVM", "val_track_accuracy": 0.95, "track_accuracy": 0.9, "macro_f1": 0.9,
                "clip_accuracy": 0.9}
    selection = choose_model({"cnn": _scored(0.7, 0.7), "embedding": _scored(0.8, 0.8)}, RUNS, baseline)
    assert selection["chosen"] == "embedding"
    assert "the MFCC + SVM baseline scored 0.950 but is a reference only" in selection["reason"]
    reference = selection["candidates"][-1]
    assert reference["family"] == "baseline" and not reference["promotable"] and not reference["chosen"]
    assert reference["run"] is None and reference["test_track_accuracy"] == 0.9


def test_one_family_or_no_validation_tracks() -> None:
    only = choose_model({"embedding": _scored(0.8, 0.8)}, RUNS)
    assert only["chosen"] == "embedding"
    assert only["reason"] == "the only model trained (validation track accuracy 0.800)"
    blind = choose_model({"cnn": _scored(None, 0.6), "embedding": _scored(None, 0.9)}, RUNS)
    assert blind["chosen"] == "cnn" and blind["reason"] == "no validation tracks to compare on"
    with pytest.raises(ValueError, match="no trained model"):
        choose_model({}, RUNS)
