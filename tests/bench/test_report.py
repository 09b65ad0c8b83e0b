"""The JSON document holds exactly the issues' ratio names (5, 12, 13, 15, 24), and the table tells pass from miss."""

from __future__ import annotations

import json
import math
from pathlib import Path

from genreflow.bench import report

ISSUE_RATIOS = ["preprocess_vs_seed", "preprocess_vs_floor", "orchestration_overhead", "noop_rerun_fraction",
                "train_input_vs_memory", "train_rss_growth", "predict_per_track_s", "worker_scaling",
                "incremental_rebuild_fraction",  # issue 12
                "full_preprocess_vs_seed", "augment_copy_vs_mel",  # issue 13
                "library_predict_vs_model",  # issue 15
                "library_incremental_fraction"]  # issue 24


def test_the_ratio_names_are_the_issues() -> None:
    assert list(report.RATIO_NAMES) == ISSUE_RATIOS


def test_targets_pass_on_their_side_of_the_bound() -> None:
    at_least, at_most = report.TARGETS["preprocess_vs_seed"], report.TARGETS["noop_rerun_fraction"]
    assert at_least.passes(1.8) and at_least.passes(2.5) and not at_least.passes(1.79)
    assert at_most.passes(0.05) and at_most.passes(0.01) and not at_most.passes(0.051)
    assert at_least.passes(None) is None and at_least.passes(math.nan) is None
    full, copy = report.TARGETS["full_preprocess_vs_seed"], report.TARGETS["augment_copy_vs_mel"]
    assert full.passes(10.0) and not full.passes(9.9) and copy.passes(0.5) and not copy.passes(0.51)


def test_document_has_every_ratio_figures_and_machine(tmp_path: Path) -> None:
    doc = report.document({"worker_scaling": 1.9, "train_rss_growth": 1.5}, {"x": 1}, {"cpu": "test"})
    assert set(doc) >= {"ratios", "figures", "machine"}
    assert list(doc["ratios"]) == ISSUE_RATIOS
    assert doc["ratios"]["worker_scaling"] == 1.9 and doc["ratios"]["preprocess_vs_seed"] is None
    assert doc["verdicts"]["worker_scaling"] == "pass" and doc["verdicts"]["train_rss_growth"] == "miss"
    assert doc["verdicts"]["preprocess_vs_seed"] == "n/a"
    path = tmp_path / "bench.json"
    report.write_json(path, doc)
    assert json.loads(path.read_text()) == doc


def test_table_lists_each_ratio_with_value_target_and_verdict() -> None:
    lines = report.format_table({"worker_scaling": 1.234, "predict_per_track_s": 0.9}).splitlines()
    assert lines[0].split() == ["name", "value", "target", "result"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert list(rows) == ISSUE_RATIOS
    assert rows["worker_scaling"] == ["worker_scaling", "1.234", ">=", "1.8", "pass" if 1.234 >= 1.8 else "miss"]
    assert rows["predict_per_track_s"][-1] == "miss"
    assert rows["preprocess_vs_seed"] == ["preprocess_vs_seed", "-", ">=", "1.8", "n/a"]
