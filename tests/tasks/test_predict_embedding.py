"""The library path of ``genreflow predict`` with an embedding model folder: buckets, the table, the CLI.

The model folder is tests/model/test_predict_embedding.py's (a tiny musicnn
with random weights under a fitted head, 6 s windows of two patches); the
table's numbers are model.predict's, which that module checks against the
Keras model on musicnn's patches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genreflow.flows.cli import main
from genreflow.flows.predict_output import format_predictions
from genreflow.model.predict import load_classifier, predict_file, predict_files
from genreflow.tasks.predict import WINDOW_PREFIX, ModelRef, plan_prediction, predict_stage, read_predictions
from tests.model.test_predict_embedding import AUDIO, GENRES, save_embedding_model_dir, write_music


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_embedding_model_dir(tmp_path_factory.mktemp("models") / "run-embedding")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three songs (3, 1 and 2 windows) and a file that is not there."""
    folder = tmp_path_factory.mktemp("library")
    songs = [write_music(folder / f"{kind}.wav", seconds, kind, seed=2)
             for kind, seconds in (("bass", 13.0), ("treble", 4.0), ("noise", 8.0))]
    return [str(path) for path in songs] + [str(folder / "gone.wav")]


def test_the_shards_of_an_embedding_run_hold_model_predicts_numbers(model_dir: Path, files: list[str],
                                                                    tmp_path: Path) -> None:
    plan = plan_prediction(files, ModelRef.of(model_dir), AUDIO, top_k=2, windows=True, shard_size=3)
    work = str(tmp_path / "work")
    loads: list[int] = []

    def load() -> object:
        loads.append(1)
        return load_classifier(model_dir)

    results = [predict_stage(work, shard, load, AUDIO, 2, True, "run-embedding") for shard in plan.shards]
    # four files in up to four of the 16 hash buckets (the paths' hashes decide)
    assert (sum(r.files for r in results), sum(r.failed for r in results), sum(r.windows for r in results)) == \
        (4, 1, 3 + 1 + 2)
    table = read_predictions(work, plan)
    assert table["path"].tolist() == files and table["error"].tolist() == ["", "", "", "no such file"]
    assert table["model"].eq("run-embedding").all() and table["n_windows"].tolist() == [3, 1, 2, 0]
    classifier = load_classifier(model_dir)
    for (_, row), expected in zip(table.iloc[:3].iterrows(), predict_files(classifier, files[:3], AUDIO),
                                  strict=True):
        windows = np.stack([row[f"{WINDOW_PREFIX}{genre}"] for genre in GENRES], axis=1)
        np.testing.assert_allclose(windows, expected.probs, atol=1e-6)
        order = np.argsort(-expected.mean, kind="stable")[:2]
        assert [row["genre_1"], row["genre_2"]] == [GENRES[i] for i in order]
        np.testing.assert_allclose([row["prob_1"], row["prob_2"]], expected.mean[order], atol=1e-6)
    assert table["genre_1"].iloc[:3].tolist() == ["bass", "treble", "noise"]  # the head tells the kinds apart
    again = [predict_stage(work, shard, load, AUDIO, 2, True, "run-embedding") for shard in plan.shards]
    assert all(r.skipped for r in again) and len(loads) == len(plan.shards)


def test_genreflow_predict_with_an_embedding_model(model_dir: Path, files: list[str], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    classifier = load_classifier(model_dir)
    expected = [predict_file(classifier, Path(path), AUDIO) for path in files[:3]]

    # a handful of files, no table: the quick path prints model.predict's genres
    assert main(["predict", *files[:3], "--model", str(model_dir), "--format", "json"]) == 0
    assert capsys.readouterr().out == format_predictions(expected, "json") + "\n"

    # with --out: the library run's shards predicted here, one table
    code = main(["predict", *files, "--model", str(model_dir), "--out", "table.parquet", "--windows"])
    printed = capsys.readouterr().out
    assert code == 0 and "4 files: 3 predicted, 1 failed (model run-embedding)" in printed
    table = pd.read_parquet(tmp_path / "table.parquet")
    assert table["path"].tolist() == files and table["error"].tolist() == ["", "", "", "no such file"]
    for (_, row), prediction in zip(table.iloc[:3].iterrows(), expected, strict=True):
        assert row["n_windows"] == prediction.n_windows
        assert [row[f"genre_{k}"] for k in (1, 2, 3)] == [g for g, _ in prediction.genres]
        np.testing.assert_allclose([row[f"prob_{k}"] for k in (1, 2, 3)], [p for _, p in prediction.genres],
                                   atol=1e-6)
        assert len(row[f"{WINDOW_PREFIX}bass"]) == prediction.n_windows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet", "table.parts"]


def test_predict_honours_top_k_and_output_format_on_both_paths(model_dir: Path, files: list[str], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 21: the quick path used to print 3 genres whatever --top-k said, and a table run ignored --format."""
    import json

    monkeypatch.chdir(tmp_path)
    assert main(["predict", *files[:2], "--model", str(model_dir), "--top-k", "1", "--output-format", "json"]) == 0
    quick = json.loads(capsys.readouterr().out)
    assert [len(item["genres"]) for item in quick] == [1, 1]
    code = main(["predict", *files[:2], "--model", str(model_dir), "--out", "t.parquet", "--top-k", "2",
                 "--format", "json"])
    printed = capsys.readouterr().out
    table_rows = json.loads(printed[printed.index("["):printed.rindex("]") + 1])
    assert code == 0 and [len(item["genres"]) for item in table_rows] == [2, 2]
    assert [item["genres"][0]["genre"] for item in table_rows] == [item["genres"][0]["genre"] for item in quick]
