"""The predict stage's plain parts: inputs, buckets and their fingerprints, the table, keeping up with a library
(grown, shrunk, modified, another model) bucket by bucket and file by file, the summary."""

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
    IDENTITY,
    MIN_BUCKETS,
    LibraryChanges,
    ModelRef,
    PredictInputError,
    PredictPlan,
    PredictSummary,
    bucket_count,
    bucket_of,
    collect_files,
    expand_inputs,
    group_shards,
    plan_prediction,
    predict_buckets,
    predict_stage,
    read_last_run,
    read_predictions,
    related_buckets,
    table_from_windows,
    write_last_run,
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


def test_plan_state_and_bucket_fingerprints(model_dir: Path, tmp_path: Path) -> None:
    files = [str(write_tone(tmp_path / f"{i}.wav", 1.0)) for i in range(5)]
    model = ModelRef.of(model_dir)
    plan = plan_prediction(files, model, AUDIO, top_k=3, windows=False, shard_size=2)
    # a file's bucket is a hash of its path: MIN_BUCKETS buckets for a small library, the empty ones not planned
    assert plan.buckets == MIN_BUCKETS and plan.order == tuple(files) and plan.files == 5
    assert {f: s.key for s in plan.shards for f in s.files} == \
        {f: f"{plan.run_id}/b00016-{bucket_of(f, 16):05d}" for f in files}
    assert plan.run_id.startswith("predict-") and all(len(s.files) == len(s.identities) for s in plan.shards)
    root = DataRoot(str(tmp_path / "work"))
    key = plan.shards[0].key
    assert output_path(root, "predict", key, ".parquet") == f"{root.path}/{key}.parquet"
    fingerprints = {s.key: s.spec.fingerprint for s in plan.shards}
    same = plan_prediction(files, model, AUDIO, 3, False, 2)
    assert same.run_id == plan.run_id and {s.key: s.spec.fingerprint for s in same.shards} == fingerprints
    # another top-k, --windows or model: another state; a file list that changed: the same state
    assert plan_prediction(files, model, AUDIO, 2, False, 2).run_id != plan.run_id
    assert plan_prediction(files, model, AUDIO, 3, True, 2).run_id != plan.run_id
    other = ModelRef(model.folder, "0" * 32, model.name)
    assert plan_prediction(files, other, AUDIO, 3, False, 2).run_id != plan.run_id
    fewer = plan_prediction(files[:4], model, AUDIO, 3, False, 2)
    gone = f"{plan.run_id}/b00016-{bucket_of(files[4], 16):05d}"
    assert fewer.run_id == plan.run_id
    assert {s.key for s in fewer.shards if s.spec.fingerprint != fingerprints[s.key]} <= {gone}
    # an edited file (size and mtime): its bucket only is stale
    write_tone(Path(files[3]), 2.0)
    edited = plan_prediction(files, model, AUDIO, 3, False, 2)
    assert {s.key for s in edited.shards if s.spec.fingerprint != fingerprints[s.key]} == \
        {f"{plan.run_id}/b00016-{bucket_of(files[3], 16):05d}"}
    with pytest.raises(PredictInputError, match="no audio files"):
        plan_prediction([], model, AUDIO, 3, False, 2)


def test_bucket_counts_grow_by_halves_and_doubles_and_buckets_nest() -> None:
    assert [bucket_count(n, 50) for n in (1, 64, 800, 801, 1600, 1601, 10_000)] == [16, 16, 16, 32, 32, 64, 256]
    # the last run's count is kept within a factor of two of the ideal (a library growing by a few files)
    assert bucket_count(801, 50, previous=16) == 16 and bucket_count(1601, 50, previous=16) == 64
    assert bucket_count(700, 50, previous=32) == 32 and bucket_count(300, 50, previous=64) == 16
    paths = [f"/music/{i}/song {i}.mp3" for i in range(500)]
    for path in paths:  # bucket i of B is buckets 2i and 2i+1 of 2B: the top bits of one hash
        assert bucket_of(path, 32) >> 1 == bucket_of(path, 16) and bucket_of(path, 64) >> 2 == bucket_of(path, 16)
    assert related_buckets(5, 32, 16) == [2] and related_buckets(2, 16, 32) == [4, 5]
    counts = np.bincount([bucket_of(p, 16) for p in paths], minlength=16)
    assert counts.min() > 15 and counts.max() < 50  # spread evenly: about 31 each


def test_groups_pack_buckets_by_work_and_keep_every_worker_busy(model_dir: Path) -> None:
    files = [f"/lib/{i:04d}.mp3" for i in range(500)]
    plan = plan_prediction(files, ModelRef.of(model_dir), AUDIO, 3, False, 50, file_ids=["1:1"] * 500)
    work = {s.key: len(s.files) for s in plan.shards}
    cold = group_shards(plan.shards, work, parallel=2, shard_size=50)
    # a cold run: tasks of at most --shard-size files, each bucket in one (about 31 files each: mostly one a task)
    assert sorted(s.key for g in cold for s in g) == sorted(work) and 12 <= len(cold) <= 16
    assert all(sum(work[s.key] for s in g) <= 50 for g in cold)
    few = {s.key: 1 if n < 2 else 2 for n, s in enumerate(plan.shards)}  # 5 % new files spread over the buckets
    small = group_shards(plan.shards, few, parallel=2, shard_size=50)
    assert len(small) == 4 and sorted(k for g in small for k in (s.key for s in g)) == sorted(work)
    assert max(sum(few[s.key] for s in g) for g in small) <= -(-sum(few.values()) // 4)
    assert group_shards([], {}, 2, 50) == []
    removed_only = group_shards(plan.shards[:3], dict.fromkeys(work, 0), parallel=2, shard_size=50)
    assert len(removed_only) == 1  # nothing to predict: one task rewrites them


def _load_counter(model_dir: Path) -> tuple[list[int], object]:
    from genreflow.model.predict import load_classifier

    loads: list[int] = []

    def load() -> object:
        loads.append(1)
        return load_classifier(model_dir)

    return loads, load


def _run(work: str, plan: PredictPlan, load: object, **kw: object) -> list:
    results = predict_buckets(work, plan.shards, load, AUDIO, 3, False, "run-test", **kw)
    write_last_run(work, plan, read_predictions(work, plan))
    return results


def test_stage_writes_once_and_a_rerun_skips_without_loading_the_model(model_dir: Path, tmp_path: Path) -> None:
    files = [str(write_tone(tmp_path / f"{i}.wav", 1.5 + i)) for i in range(3)] + [str(tmp_path / "gone.wav")]
    plan = plan_prediction(files, ModelRef.of(model_dir), AUDIO, 3, False, 3)
    work = str(tmp_path / "work")
    loads, load = _load_counter(model_dir)
    first = [predict_stage(work, shard, load, AUDIO, 3, False, "run-test") for shard in plan.shards]
    by_file = {f: r for s, r in zip(plan.shards, first, strict=True) for f in s.files}
    assert sum(r.files for r in first) == 4 and sum(r.failed for r in first) == 1
    assert sum(r.windows for r in first) == 2 + 3 + 4  # whole 1 s windows, the last flush with the end
    assert all(not r.skipped and r.predicted == r.files for r in first) and by_file[files[3]].failed == 1
    assert len(loads) == len(plan.shards) and all(0 < r.load_s < r.seconds for r in first)
    table = read_predictions(work, plan)
    assert table["path"].tolist() == files and table["error"].tolist() == ["", "", "", "no such file"]
    assert table["model"].eq("run-test").all() and IDENTITY not in table
    again = [predict_stage(work, shard, load, AUDIO, 3, False, "run-test") for shard in plan.shards]
    assert all(r.skipped and r.seconds == 0 for r in again) and len(loads) == len(plan.shards)  # no load
    assert [(r.files, r.failed, r.windows) for r in again] == [(r.files, r.failed, r.windows) for r in first]
    pd.testing.assert_frame_equal(read_predictions(work, plan), table)


def _bucket_predicted(results: list, plan: PredictPlan) -> set[str]:
    """The files of the buckets that predicted anything, where each such bucket predicted exactly one file."""
    return {f for s, r in zip(plan.shards, results, strict=True) if r.predicted for f in s.files}


def test_a_library_that_grows_shrinks_and_changes_predicts_only_what_changed(model_dir: Path,
                                                                           tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    files = [str(write_tone(library / f"{i:02d}.wav", 1.0 + (i % 3) / 2)) for i in range(12)]
    model = ModelRef.of(model_dir)
    work = str(tmp_path / "work")
    loads, load = _load_counter(model_dir)
    first = plan_prediction(files, model, AUDIO, 3, False, 4)
    assert first.changes == LibraryChanges(12, 0, 0, 0, True)
    assert sum(r.predicted for r in _run(work, first, load)) == 12

    # two files added, one removed, one modified: those three predicted, the rest carried over
    grown = files[:5] + files[6:] + [str(write_tone(library / f"new-{i}.wav", 1.0)) for i in range(2)]
    write_tone(Path(files[7]), 2.5)
    last = read_last_run(work)
    assert last is not None and last.state == first.run_id and len(last.files) == 12
    second = plan_prediction(grown, model, AUDIO, 3, False, 4, last=last)
    assert second.changes == LibraryChanges(added=2, removed=1, modified=1, unchanged=10, first_run=False)
    before = len(loads)
    results = _run(work, second, load)
    assert sum(r.predicted for r in results) == 3 and len(loads) - before <= 3
    assert sum(r.files for r in results) == 13
    first_fingerprints = {s.key: s.spec.fingerprint for s in first.shards}
    rewritten = {s.key for s in second.shards if first_fingerprints.get(s.key) != s.spec.fingerprint}
    assert {r.shard for r in results if not r.skipped} == rewritten and len(rewritten) <= 4  # 4 changes at most
    table = read_predictions(work, second)
    assert table["path"].tolist() == grown

    # the same files from nothing: the same table, to the bit
    cold_work = str(tmp_path / "cold")
    cold = plan_prediction(grown, model, AUDIO, 3, False, 4)
    _run(cold_work, cold, load)
    pd.testing.assert_frame_equal(read_predictions(cold_work, cold), table, check_exact=True)

    # a rerun with nothing changed: no bucket written, the model never loaded
    before = len(loads)
    third = plan_prediction(grown, model, AUDIO, 3, False, 4, last=read_last_run(work))
    assert third.changes == LibraryChanges(0, 0, 0, 13, False)
    assert all(r.skipped for r in _run(work, third, load)) and len(loads) == before

    # another model: another state, everything predicted again, and the summary says why
    other = save_model_dir(tmp_path / "models" / "run-other")
    (other / "audio.json").write_text(AUDIO.model_dump_json())
    fourth = plan_prediction(grown, ModelRef.of(other), AUDIO, 3, False, 4, last=read_last_run(work))
    assert fourth.run_id != second.run_id and "the model changed since the last run (run-test -> run-other)" \
        in fourth.changes.why_all
    _, load_other = _load_counter(other)
    results = predict_buckets(work, fourth.shards, load_other, AUDIO, 3, False, "run-other")
    assert sum(r.predicted for r in results) == 13
    write_last_run(work, fourth, read_predictions(work, fourth))
    assert [p.name for p in (tmp_path / "work").iterdir() if p.is_dir()] == [fourth.run_id]  # the old state gone


def test_failures_are_not_retried_unless_the_file_changes_or_retry_failed(model_dir: Path, tmp_path: Path) -> None:
    good = str(write_tone(tmp_path / "good.wav", 1.0))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    files = [good, str(bad)]
    model = ModelRef.of(model_dir)
    work = str(tmp_path / "work")
    _, load = _load_counter(model_dir)
    plan = plan_prediction(files, model, AUDIO, 3, False, 4)
    _run(work, plan, load)
    assert read_predictions(work, plan)["error"].tolist()[1].startswith("not decodable audio")
    again = plan_prediction(files, model, AUDIO, 3, False, 4, last=read_last_run(work))
    assert sum(r.predicted for r in _run(work, again, load)) == 0
    retry = plan_prediction(files, model, AUDIO, 3, False, 4, last=read_last_run(work), retry_failed=True)
    results = _run(work, retry, load, retry_failed=True)
    assert sum(r.predicted for r in results) == 1  # the failure only, not the good file beside it
    write_tone(bad, 1.0)  # fixed: a changed file is predicted again without asking
    fixed = plan_prediction(files, model, AUDIO, 3, False, 4, last=read_last_run(work))
    assert sum(r.predicted for r in _run(work, fixed, load)) == 1
    assert read_predictions(work, fixed)["error"].tolist() == ["", ""]


def test_buckets_carry_rows_over_when_their_count_changes(model_dir: Path, tmp_path: Path) -> None:
    files = [f"/nowhere/{i:03d}.wav" for i in range(40)]  # missing files: failure rows, quick to make
    model = ModelRef.of(model_dir)
    work = str(tmp_path / "work")
    _, load = _load_counter(model_dir)
    small = plan_prediction(files, model, AUDIO, 3, False, 1, file_ids=[""] * 40)
    assert small.buckets == 64
    _run(work, small, load)
    before = read_predictions(work, small)
    # shard size 1 -> 4: 40 files want 16 buckets, outside a factor of two of 64: the buckets merge, rows carry over
    merged = plan_prediction(files, model, AUDIO, 3, False, 4, file_ids=[""] * 40, last=read_last_run(work))
    assert merged.buckets == 16 and all(s.carry for s in merged.shards)
    results = _run(work, merged, load)
    assert sum(r.predicted for r in results) == 0 and not any(r.skipped for r in results)
    pd.testing.assert_frame_equal(read_predictions(work, merged), before)
    assert not list((tmp_path / "work" / merged.run_id).glob("b00064-*"))  # the old count's buckets removed


def test_table_from_windows_rows_columns_and_types() -> None:
    probs = np.array([[0.1, 0.6, 0.2, 0.1], [0.3, 0.2, 0.4, 0.1]], dtype=np.float32)  # mean: .2 .4 .3 .1
    results = [FileWindows("/m/a.wav", 20.5, probs, novelty=1.25),
               FileWindows("/m/bad.mp3", float("nan"), None, "empty file")]
    table = table_from_windows(results, GENRES, "run-x", top_k=2, windows=True)
    assert list(table.columns) == ["path", "duration_s", "n_windows", "genre_1", "prob_1", "genre_2", "prob_2",
                                   "novelty", "model", "error"] + [f"window_prob_{g}" for g in GENRES]
    good, bad = table.iloc[0], table.iloc[1]
    assert (good["genre_1"], good["genre_2"], good["n_windows"], good["error"]) == ("jazz", "rock", 2, "")
    assert good["prob_1"] == pytest.approx(0.4) and good["prob_2"] == pytest.approx(0.3)
    np.testing.assert_array_equal(good["window_prob_rock"], np.array([0.2, 0.4], dtype=np.float32))
    assert pd.isna(bad["genre_1"]) and np.isnan(bad["prob_1"]) and bad["error"] == "empty file"
    assert bad["n_windows"] == 0 and bad["window_prob_jazz"] is None
    assert good["novelty"] == 1.25 and np.isnan(bad["novelty"]) and table["novelty"].dtype == np.float32
    assert table["prob_1"].dtype == np.float32 and table["n_windows"].dtype == np.int32
    assert list(table_from_windows(results, GENRES, "run-x", top_k=10, windows=False).columns)[-5:] == \
        ["genre_4", "prob_4", "novelty", "model", "error"]  # top-k is capped at the genres there are


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


def test_a_killed_incremental_run_resumes_and_predicts_no_sealed_file_again(
        model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import genreflow.model.predict as model_predict

    library = tmp_path / "lib"
    library.mkdir()
    files = [str(write_tone(library / f"{i:02d}.wav", 1.0)) for i in range(10)]
    model = ModelRef.of(model_dir)
    work = str(tmp_path / "work")
    _, load = _load_counter(model_dir)
    _run(work, plan_prediction(files, model, AUDIO, 3, False, 4), load)

    grown = files + [str(write_tone(library / f"new-{i}.wav", 1.0 + i / 4)) for i in range(6)]
    plan = plan_prediction(grown, model, AUDIO, 3, False, 4, last=read_last_run(work))
    real = model_predict.predict_files
    predicted: list[str] = []

    def killed_after(limit: int) -> object:
        def predict_files(classifier: object, paths: list[str], *args: object, **kwargs: object) -> object:
            for n, result in enumerate(real(classifier, paths, *args, **kwargs)):
                if n == limit:
                    raise KeyboardInterrupt("kill -9")
                predicted.append(result.path)
                yield result
        return predict_files

    monkeypatch.setattr(model_predict, "predict_files", killed_after(3))
    with pytest.raises(KeyboardInterrupt):
        predict_buckets(work, plan.shards, load, AUDIO, 3, False, "run-test")
    root = DataRoot(work)
    from genreflow.tasks.predict import finished_shard

    sealed = {f for s in plan.shards if finished_shard(root, s) is not None for f in s.files}
    assert len(predicted) == 3  # the buckets whose files all came before the kill are sealed

    done_before, predicted[:] = set(predicted) & sealed, []
    monkeypatch.setattr(model_predict, "predict_files", killed_after(10**6))
    _run(work, plan, load)
    assert not done_before & set(predicted), "a file of a bucket sealed before the kill was predicted again"
    assert set(predicted) | done_before == set(grown[10:])  # only new files, each once
    cold = plan_prediction(grown, model, AUDIO, 3, False, 4)
    _run(str(tmp_path / "cold"), cold, load)
    pd.testing.assert_frame_equal(read_predictions(work, plan), read_predictions(str(tmp_path / "cold"), cold),
                                  check_exact=True)
