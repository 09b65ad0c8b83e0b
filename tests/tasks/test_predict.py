"""The predict stage's plain parts: inputs, the plan and its run id, the table, skipping finished shards, summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genreflow.model.params import AudioConfig
from genreflow.model.predict import FileWindows
from genreflow.storage.outputs import output_path
from genreflow.storage.root import DataRoot
from genreflow.tasks.predict import (
    MIN_SHARDS,
    ModelRef,
    PredictInputError,
    PredictSummary,
    collect_files,
    expand_inputs,
    plan_prediction,
    predict_stage,
    read_predictions,
    table_from_windows,
)
from tests.model.test_predict import AUDIO, GENRES, save_model_dir, write_tone


def test_inputs_files_folders_and_csvs(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    (lib / "b").mkdir(parents=True)
    for name in ("b/2.wav", "a.mp3", "b/1.FLAC", "notes.txt"):
        (lib / name).write_bytes(b"x")
    csv = tmp_path / "list.csv"
    csv.write_text("path,genre\nlib/a.mp3,rock\n/abs/elsewhere.ogg,pop\n\n")
    given = [str(lib), str(csv), str(tmp_path / "missing.wav")]
    assert expand_inputs(given) == [str(lib / "a.mp3"), str(lib / "b/1.FLAC"), str(lib / "b/2.wav"),
                                    str(tmp_path / "lib/a.mp3"), "/abs/elsewhere.ogg", str(tmp_path / "missing.wav")]
    # absolute, each file once where it first appears (a.mp3 is in the folder and the CSV)
    assert collect_files(given) == [str(lib / "a.mp3"), str(lib / "b/1.FLAC"), str(lib / "b/2.wav"),
                                    "/abs/elsewhere.ogg", str(tmp_path / "missing.wav")]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,genre\na.mp3,rock\n")
    with pytest.raises(PredictInputError, match=r"bad.csv: a CSV of files needs a header line with a 'path' column"):
        collect_files([bad])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = save_model_dir(tmp_path_factory.mktemp("models") / "run-test")
    (run / "audio.json").write_text(AUDIO.model_dump_json())
    return run


def test_plan_run_id_and_shard_fingerprints(model_dir: Path, tmp_path: Path) -> None:
    files = [str(write_tone(tmp_path / f"{i}.wav", 1.0)) for i in range(5)]
    model = ModelRef.of(model_dir)
    plan = plan_prediction(files, model, AUDIO, top_k=3, windows=False, shard_size=2)
    # fewer files than MIN_SHARDS: a shard a file, so that every worker gets some
    assert [s.files for s in plan.shards] == [(f,) for f in files]
    assert [s.spec.key for s in plan.shards] == [f"{plan.run_id}/shard-0000{i}" for i in range(5)]
    assert plan.run_id.startswith("predict-") and plan.files == 5
    root = DataRoot(str(tmp_path / "work"))
    assert output_path(root, "predict", plan.shards[1].spec.key, ".parquet") == \
        f"{root.path}/{plan.run_id}/shard-00001.parquet"
    same = plan_prediction(files, model, AUDIO, 3, False, 2)
    assert same.run_id == plan.run_id and [s.spec.fingerprint for s in same.shards] == \
        [s.spec.fingerprint for s in plan.shards]
    # another file list, top-k, --windows or model: another run; an edited file: its shard only is stale
    assert plan_prediction(files[:4], model, AUDIO, 3, False, 2).run_id != plan.run_id
    assert plan_prediction(files, model, AUDIO, 2, False, 2).run_id != plan.run_id
    assert plan_prediction(files, model, AUDIO, 3, True, 2).run_id != plan.run_id
    other = ModelRef(model.folder, "0" * 32, model.name)
    assert plan_prediction(files, other, AUDIO, 3, False, 2).run_id != plan.run_id
    write_tone(Path(files[3]), 2.0)
    edited = plan_prediction(files, model, AUDIO, 3, False, 2)
    assert edited.run_id == plan.run_id
    assert [a.spec.fingerprint == b.spec.fingerprint for a, b in zip(plan.shards, edited.shards, strict=True)] == \
        [True, True, True, False, True]
    with pytest.raises(PredictInputError, match="no audio files"):
        plan_prediction([], model, AUDIO, 3, False, 2)


@pytest.mark.parametrize(("files", "shard_size", "sizes"), [
    (100, 50, [6] * 12 + [7] * 4),  # MIN_SHARDS near-equal shards, not 50 and 50
    (2000, 50, [50] * 40),  # a library: --shard-size files a shard
    (1001, 50, [47] * 7 + [48] * 14),  # 21 shards of at most 50, evened out (not 20 of 50 and 1 of 1)
])
def test_shards_are_near_equal_and_at_least_min_shards(model_dir: Path, files: int, shard_size: int,
                                                       sizes: list[int]) -> None:
    names = [f"/lib/{i:05d}.mp3" for i in range(files)]
    plan = plan_prediction(names, ModelRef.of(model_dir), AUDIO, 3, False, shard_size)
    assert sorted(len(s.files) for s in plan.shards) == sorted(sizes)
    assert [f for s in plan.shards for f in s.files] == names and max(sizes) <= shard_size
    assert len(plan.shards) >= min(MIN_SHARDS, files)


def test_table_from_windows_rows_columns_and_types() -> None:
    probs = np.array([[0.1, 0.6, 0.2, 0.1], [0.3, 0.2, 0.4, 0.1]], dtype=np.float32)  # mean: .2 .4 .3 .1
    results = [FileWindows("/m/a.wav", 20.5, probs), FileWindows("/m/bad.mp3", float("nan"), None, "empty file")]
    table = table_from_windows(results, GENRES, "run-x", top_k=2, windows=True)
    assert list(table.columns) == ["path", "duration_s", "n_windows", "genre_1", "prob_1", "genre_2", "prob_2",
                                   "model", "error"] + [f"window_prob_{g}" for g in GENRES]
    good, bad = table.iloc[0], table.iloc[1]
    assert (good["genre_1"], good["genre_2"], good["n_windows"], good["error"]) == ("jazz", "rock", 2, "")
    assert good["prob_1"] == pytest.approx(0.4) and good["prob_2"] == pytest.approx(0.3)
    np.testing.assert_array_equal(good["window_prob_rock"], np.array([0.2, 0.4], dtype=np.float32))
    assert pd.isna(bad["genre_1"]) and np.isnan(bad["prob_1"]) and bad["error"] == "empty file"
    assert bad["n_windows"] == 0 and bad["window_prob_jazz"] is None
    assert table["prob_1"].dtype == np.float32 and table["n_windows"].dtype == np.int32
    assert list(table_from_windows(results, GENRES, "run-x", top_k=10, windows=False).columns)[-4:] == \
        ["genre_4", "prob_4", "model", "error"]  # top-k is capped at the genres there are


def test_stage_writes_once_and_a_rerun_skips_without_loading_the_model(model_dir: Path, tmp_path: Path) -> None:
    from genreflow.model.predict import load_classifier

    files = [str(write_tone(tmp_path / f"{i}.wav", 1.5 + i)) for i in range(3)] + [str(tmp_path / "gone.wav")]
    plan = plan_prediction(files, ModelRef.of(model_dir), AUDIO, 3, False, 3)
    work = str(tmp_path / "work")
    loads: list[int] = []

    def load() -> object:
        loads.append(1)
        return load_classifier(model_dir)

    assert [len(s.files) for s in plan.shards] == [1, 1, 1, 1]  # fewer files than MIN_SHARDS: one a shard
    first = [predict_stage(work, shard, load, AUDIO, 3, False, "run-test") for shard in plan.shards]
    assert [(r.skipped, r.files, r.failed, r.windows) for r in first] == \
        [(False, 1, 0, 2), (False, 1, 0, 3), (False, 1, 0, 4), (False, 1, 1, 0)]  # whole 1 s windows, the last flush
    assert len(loads) == 4 and all(0 < r.load_s < r.seconds for r in first)
    table = read_predictions(work, plan)
    assert table["path"].tolist() == files and table["error"].tolist() == ["", "", "", "no such file"]
    assert table["model"].eq("run-test").all()
    again = [predict_stage(work, shard, load, AUDIO, 3, False, "run-test") for shard in plan.shards]
    assert all(r.skipped and r.seconds == 0 for r in again) and len(loads) == 4  # no load for finished shards
    assert [(r.files, r.failed, r.windows) for r in again] == [(r.files, r.failed, r.windows) for r in first]
    pd.testing.assert_frame_equal(read_predictions(work, plan), table)


def test_summary_counts_genres_and_failures() -> None:
    table = pd.DataFrame({"path": ["a", "b", "c", "d"], "genre_1": ["rock", "jazz", "rock", None],
                          "error": ["", "", "", "no such file"]})
    summary = PredictSummary.of(table, "run-x")
    assert (summary.files, summary.predicted, summary.genres) == (4, 3, {"rock": 2, "jazz": 1})
    assert summary.failures == [("d", "no such file")]
    lines = summary.lines()
    assert lines[0] == "4 files: 3 predicted, 1 failed (model run-x)"
    assert lines[1] == "top-1 genres: rock 2 (67%), jazz 1 (33%)" and lines[2] == "  failed: d: no such file"
    markdown = summary.markdown("out.parquet")
    assert "| rock | 2 | 66.7% |" in markdown and "| `d` | no such file |" in markdown


def test_model_ref_is_the_resolved_folder_and_its_checksum(model_dir: Path) -> None:
    ref = ModelRef.of(model_dir, tf_threads=1)
    assert ref.folder == str(model_dir.resolve()) and ref.name == "run-test" and ref.tf_threads == 1
    assert ref.plugin_name == f"genreflow-model-{ref.checksum[:16]}"
    assert json.loads((model_dir / "labels.json").read_text()) == GENRES
    assert AudioConfig.model_validate_json((model_dir / "audio.json").read_text()) == AUDIO
