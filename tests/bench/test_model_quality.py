"""bench.model_quality's bookkeeping: which variants share a data root, and the tables it prints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from genreflow.bench import model_quality


def test_variants_that_preprocess_alike_share_a_data_root() -> None:
    key = model_quality._preprocessing_key
    assert key(["--mixup", "0.2"]) == key(["--spec-augment", "off"]) == key([]) == "default"
    assert key(["--recipe", "seed"]) == "recipe_seed"
    # Flags without a value (empty augmentation lists) still get a root of their own.
    assert key(["--time-stretch", "--pitch-shift"]) == "pitch-shift-time-stretch"
    assert key(["--clips-per-track", "1", "--batch-norm", "off"]) == "clips-per-track_1"


def test_every_variant_is_one_change_and_valid_flags() -> None:
    from genreflow.flows.cli import build_parser

    parser = build_parser()
    for name, (_, flags) in model_quality.VARIANTS.items():
        parser.parse_args(["evaluate", *flags, "--folds", "5"])  # exits on an unknown flag or value
        assert flags, name


def _result(variant: str, mean: float) -> dict:
    stat = {"mean": mean, "std": 0.05, "values": [mean]}
    return {"variant": variant, "summary": {"cnn": {"track_accuracy": stat, "macro_f1": stat},
                                            "baseline": {"track_accuracy": stat}},
            "epochs": [10, 20], "seconds_per_epoch": [2.0, 4.0]}


def test_tables_show_mean_and_std_per_variant() -> None:
    results = [_result("seed", 0.37), _result("genreflow", 0.68)]
    plain = model_quality.format_table(results).splitlines()
    assert plain[0].split()[0] == "variant" and plain[2].startswith("genreflow")
    assert "0.680 ± 0.050" in plain[2] and "15.0" in plain[2] and "3.0" in plain[2]
    markdown = model_quality.format_table(results, markdown=True).splitlines()
    assert markdown[1] == "|---|---|---|---|---|---|---|---|---|"  # a variant, eight figures
    assert markdown[2].startswith("| seed | 0.370 ± 0.050 |")
    assert "| - | - | - |" in markdown[2]  # no embedding model, no choice recorded


def test_tables_show_the_embedding_model_and_the_choice() -> None:
    result = _result("genreflow", 0.68)
    stat = {"mean": 0.9, "std": 0.04, "values": [0.9]}
    result["summary"].update(embedding={"track_accuracy": stat}, chosen={"track_accuracy": stat})
    result["chosen"] = ["embedding", "embedding", "cnn"]
    row = model_quality.format_table([result], markdown=True).splitlines()[2]
    assert "| 0.900 ± 0.040 | 0.900 ± 0.040 | cnn 1, embedding 2 |" in row


def test_reads_the_newest_crossval_report(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no cross-validation report"):
        model_quality._newest_crossval_report(tmp_path)
    for i, name in enumerate(["cv-old", "cv-new"]):
        path = tmp_path / "reports" / name / "crossval.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"name": name}))
        os.utime(path, ns=(10**18 + i, 10**18 + i))
    assert model_quality._newest_crossval_report(tmp_path) == {"name": "cv-new"}
