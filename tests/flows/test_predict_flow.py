"""``genreflow predict`` on a library: a flow on 2 Dask workers, broken files, a kill -9 and a resume, and a
library that changes between runs.

The library is the session's demo set (24 mp3 files) beside three broken
files; the model is a small untrained CNN on 1 s windows (tests/model/test_export.py),
so each of the 10.25 s demo files gives 11 windows. A handful of files keeps the
quick path: no cluster, no flow, and the output of the functions it always used.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf

# Before TensorFlow (tests.model.test_export imports it): Prefect's logging set-up closes the handlers
# it finds, absl's among them, and absl's holds the sys.stderr of the moment it was made.
from genreflow.flows.predict_flow import local_table_predict, run_library_predict
from genreflow.flows.predict_options import LibraryOptions
from genreflow.tasks.predict import MIN_BUCKETS, bucket_of
from genreflow.tasks.sources.demo_synth import DEMO_GENRES
from tests.flows.conftest import DEMO_SECONDS, DEMO_TRACKS_PER_GENRE
from tests.model.test_export import AUDIO, GENRES, save_model
from tests.reliability.conftest import cli_env

pytestmark = pytest.mark.timeout(1500)

SHARD_SIZE = 3
BROKEN = {"broken.mp3": "not decodable audio", "empty.wav": "empty file (0 bytes)",
          "silent.wav": "silent (peak below -80 dBFS)"}
GOOD = DEMO_TRACKS_PER_GENRE * len(DEMO_GENRES)
FILES = GOOD + len(BROKEN)
BUCKET_GLOB = "predictions.parts/predict-*/b*.manifest.json"  # every sealed bucket of the run


def bucket_count(library: Path) -> int:
    """Buckets of the library's files (tasks/predict.py plan_prediction): the hash buckets its files fall in."""
    files = [str(p) for p in library.rglob("*") if p.is_file()]
    return len({bucket_of(path, MIN_BUCKETS) for path in files})


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Path:
    """The demo files (linked) and three files that cannot be predicted, in one folder tree."""
    folder = tmp_path_factory.mktemp("library")
    for path in sorted(demo_dir.rglob("*.mp3")):
        (folder / path.parent.name).mkdir(exist_ok=True)
        os.symlink(path, folder / path.parent.name / path.name)
    bad = folder / "zz-bad"
    bad.mkdir()
    (bad / "broken.mp3").write_text("this is not audio")
    (bad / "empty.wav").write_bytes(b"")
    sf.write(bad / "silent.wav", np.zeros(22050 * 2, np.float32), 22050)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(tmp_path_factory.mktemp("models") / "run-library", "genreflow")


def options(library: Path, model_dir: Path, out: Path, **extra: object) -> LibraryOptions:
    values: dict[str, object] = {"inputs": [str(library)], "model_dir": str(model_dir), "out": str(out),
                                 "windows": True, "shard_size": SHARD_SIZE, "workers": 2, "retries": 0,
                                 "local_max": 0}
    values.update(extra)
    return LibraryOptions(**values)


def cli_args(library: Path, model_dir: Path, out: Path) -> list[str]:
    """The command line of ``options(library, model_dir, out)``."""
    return ["predict", str(library), "--model", str(model_dir), "--out", str(out), "--windows", "--shard-size",
            str(SHARD_SIZE), "--workers", "2", "--retries", "0", "--local-max", "0"]


@pytest.fixture(scope="module")
def reference(library: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """An uninterrupted library run on a 2-worker LocalCluster: its summary and its table."""
    out = tmp_path_factory.mktemp("reference") / "predictions.parquet"
    summary = run_library_predict(options(library, model_dir, out))
    return summary, out


def test_every_good_file_gets_a_row_and_every_bad_file_its_reason(reference: tuple, library: Path) -> None:
    summary, out = reference
    table = pd.read_parquet(out)
    files = sorted(str(p) for p in library.rglob("*") if p.is_file())
    assert sorted(table["path"]) == files and table["path"].is_unique and len(files) == GOOD + len(BROKEN)
    good, bad = table[table["error"] == ""], table[table["error"] != ""]
    assert len(good) == GOOD and set(good["genre_1"]) <= set(GENRES)
    assert good["n_windows"].eq(int(DEMO_SECONDS // AUDIO.clip_seconds) + 1).all()  # and one flush with the end
    assert np.allclose(good["duration_s"], DEMO_SECONDS, atol=0.05)
    probs = good[["prob_1", "prob_2", "prob_3"]].to_numpy()
    assert (np.diff(probs, axis=1) <= 0).all() and ((probs > 0) & (probs < 1)).all()
    for row in good.itertuples():  # the per-window columns: a genre's mean over windows is its file probability
        window = np.stack([getattr(row, f"window_prob_{g}") for g in GENRES], axis=1)
        assert window.shape == (row.n_windows, len(GENRES))
        np.testing.assert_allclose(window.mean(axis=0)[GENRES.index(row.genre_1)], row.prob_1, rtol=1e-5)
    reasons = {Path(p).name: reason for p, reason in zip(bad["path"], bad["error"], strict=True)}
    assert set(reasons) == set(BROKEN)
    assert all(reasons[name].startswith(start) for name, start in BROKEN.items())
    assert bad["genre_1"].isna().all() and bad["n_windows"].eq(0).all()
    assert table["model"].eq("run-library").all()
    assert (summary.files, summary.predicted, len(summary.failures)) == (len(files), GOOD, len(BROKEN))
    assert sum(summary.genres.values()) == GOOD
    # each worker loaded the model once, not once a bucket
    assert len(list(out.parent.glob(BUCKET_GLOB))) == bucket_count(library)
    assert 1 <= summary.model_loads <= 2 and summary.load_s < summary.worker_s


def test_the_summary_is_a_prefect_artifact(reference: tuple) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    summary, out = reference
    run_id = next(p.name for p in (out.parent / "predictions.parts").iterdir() if p.is_dir())
    with get_client(sync_client=True) as client:
        key = ArtifactFilterKey(any_=[f"genreflow-{run_id}"])
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=key))
    assert len(found) == 1
    text = str(found[0].data)
    assert f"{summary.files} files, {GOOD} predicted, {len(BROKEN)} failed" in text
    assert f"| added | {FILES} |" in text and "| reused | 0 |" in text and "First run." in text
    assert all(f"| {genre} | {n} |" in text for genre, n in summary.genres.items())
    assert "silent (peak below -80 dBFS)" in text


def _finished_shards(out: Path) -> dict[str, tuple[bytes, int]]:
    """Manifest and table of every finished (sealed) shard: bytes and modification time.

    A shard whose table is written but whose manifest is not was cut short, and is redone.
    """
    work = out.parent / "predictions.parts"
    sealed = [m.name.removesuffix(".manifest.json") for m in work.glob("predict-*/b*.manifest.json")]
    return {str(p.relative_to(work)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(work.glob("predict-*/b*")) if p.name.split(".")[0] in sealed}


def test_kill_then_rerun_predicts_no_file_twice_and_gives_the_same_table(
        reference: tuple, library: Path, model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "predictions.parquet"
    shards = bucket_count(library)
    env = cli_env(tmp_path)
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "genreflow.flows.cli", *cli_args(library, model_dir, out)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 900
    try:
        while not list(tmp_path.glob(BUCKET_GLOB)):
            assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no shard finished in time"
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = _finished_shards(out)
    finished = [name for name in before if name.endswith(".manifest.json")]
    assert len(before) == 2 * len(finished)
    assert 0 < len(finished) < shards, "the kill must land between the first and the last bucket"
    assert not out.exists()

    summary = run_library_predict(options(library, model_dir, out))
    assert summary.computed == FILES - sum(int(json.loads((out.parent / "predictions.parts" / name).read_text())
                                               ["rows"]) for name in finished)  # no file predicted twice

    after = _finished_shards(out)
    assert {name: after[name] for name in before} == before, "a bucket finished before the kill was predicted again"
    assert len([name for name in after if name.endswith(".manifest.json")]) == shards
    assert 1 <= summary.model_loads <= 2
    expected, got = pq.read_table(reference[1]), pq.read_table(out)
    assert got.num_rows == GOOD + len(BROKEN) and pd.Series(got.column("path").to_pylist()).is_unique
    assert got.equals(expected, check_metadata=False), "the resumed table differs from an uninterrupted run's"
    assert not list(tmp_path.rglob("*.tmp-*"))


# --------------------------------------------------------------------------- a handful of files: the quick path


def test_a_single_file_keeps_the_quick_path_and_its_output(library: Path, model_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from genreflow.flows.cli import main
    from genreflow.flows.predict_output import format_predictions
    from genreflow.model.predict import load_classifier, predict_file

    monkeypatch.chdir(tmp_path)
    song = next(library.glob("Rock/*.mp3"))
    relative = Path(os.path.relpath(song, tmp_path))
    classifier = load_classifier(model_dir)
    expected = predict_file(classifier, relative, AUDIO)
    for fmt in ("table", "csv", "json"):
        assert main(["predict", str(relative), "--model", str(model_dir), "--format", fmt]) == 0
        assert capsys.readouterr().out == format_predictions([expected], fmt) + "\n"  # as print() wrote it before
    assert list(tmp_path.iterdir()) == []  # no table, no shards, nothing written
    assert main(["predict", str(relative), "--model", str(model_dir), "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)
    assert list(frame.columns) == ["path", "genre", "genre_1", "prob_1", "genre_2", "prob_2", "genre_3", "prob_3",
                                   "novelty", "error"]
    assert frame.loc[0, "path"] == str(relative) and frame.loc[0, "genre_1"] == expected.genres[0][0]
    # genre: the open-set decision, the top genre unless its probability is under the model's saved threshold
    from genreflow.model.open_set import decide, effective_rule

    assert [frame.loc[0, "genre"]] == decide([expected.genres[0][0]], [expected.genres[0][1]],
                                             effective_rule(model_dir), [expected.novelty])

    # a handful with --out: the same shards as a library run, predicted here (no flow), the same genres
    assert main(["predict", str(relative), "--model", str(model_dir), "--out", "few.parquet"]) == 0
    printed = capsys.readouterr().out
    assert "1 files: 1 predicted, 0 failed (model run-library)" in printed and "table: few.parquet" in printed
    row = pd.read_parquet(tmp_path / "few.parquet").iloc[0]
    assert row["path"] == str(song.absolute()) and row["error"] == ""
    assert [row[f"genre_{k}"] for k in (1, 2, 3)] == [g for g, _ in expected.genres]
    np.testing.assert_allclose([row[f"prob_{k}"] for k in (1, 2, 3)], [p for _, p in expected.genres], atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.parquet", "few.parts"]


def test_predict_flags_and_inputs_fail_in_one_line(model_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from genreflow.flows.cli import main

    bad_csv = tmp_path / "files.csv"
    bad_csv.write_text("file\na.mp3\n")
    cases = [
        (["--shard-size", "0"], "invalid predict flag: --shard-size: Input should be greater than or equal to 1"),
        (["--dask-address", "localhost"], "is not a scheduler address"),
        ([str(bad_csv)], "files.csv: a CSV of files needs a header line with a 'path' column"),
        (["--out", str(tmp_path / "file" / "x.parquet")], "--out:"),
    ]
    (tmp_path / "file").write_text("a file where a folder should be")
    for extra, message in cases:
        paths = [] if extra and extra[0].endswith(".csv") else [str(tmp_path / "a.wav")]
        code = main(["predict", *paths, *extra, "--model", str(model_dir)])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code in (1, 2) and len(err) == 1 and message in err[0], (extra, err)
    assert json.loads((model_dir / "labels.json").read_text()) == GENRES


# --------------------------------------------------------------------------- a library that changes between runs


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(source, target)


def test_a_library_that_changes_is_predicted_incrementally_and_equals_a_cold_run(
        demo_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    demo = sorted(demo_dir.rglob("*.mp3"))
    library = tmp_path / "library"
    for path in demo[:10]:
        _link(path, library / path.parent.name / path.name)
    out = tmp_path / "predictions.parquet"
    first = run_library_predict(options(library, model_dir, out))
    assert first.computed == 10 and first.changes is not None and first.changes.first_run
    before = pd.read_parquet(out)

    # grown by 2, shrunk by 1, one file modified (another recording under the same path)
    for path in demo[10:12]:
        _link(path, library / path.parent.name / path.name)
    gone = library / demo[0].parent.name / demo[0].name
    gone.unlink()
    modified = library / demo[1].parent.name / demo[1].name
    modified.unlink()
    modified.write_bytes(demo[15].read_bytes())
    playlists = tmp_path / "playlists"
    second = run_library_predict(options(library, model_dir, out, playlists=str(playlists)))
    assert second.changes is not None and (second.changes.added, second.changes.removed, second.changes.modified,
                                           second.changes.unchanged) == (2, 1, 1, 8)
    assert second.computed == 3 and second.reused == 8 and second.files == 11  # from the manifests' counts
    table = pd.read_parquet(out)
    assert str(gone) not in set(table["path"]) and len(table) == 11
    kept = before[~before["path"].isin([str(gone), str(modified)])].reset_index(drop=True)
    pd.testing.assert_frame_equal(table[table["path"].isin(kept["path"])].reset_index(drop=True), kept)
    assert second.change_line() == ("since the last run: 2 added, 1 removed, 1 modified, 8 unchanged; "
                                    "3 predicted, 8 reused")

    # the same files from nothing, in this process: the same table, to the bit
    cold_out = tmp_path / "cold" / "predictions.parquet"
    local_table_predict(options(library, model_dir, cold_out), [str(library)])
    assert pq.read_table(out).equals(pq.read_table(cold_out), check_metadata=False)

    # the artifact says what changed
    run_id = next(p.name for p in (tmp_path / "predictions.parts").iterdir() if p.is_dir())
    with get_client(sync_client=True) as client:
        key = ArtifactFilterKey(any_=[f"genreflow-{run_id}"])
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=key))
    text = str(max(found, key=lambda a: a.created).data)
    assert "| added | 2 |" in text and "| removed | 1 |" in text and "| modified | 1 |" in text
    assert "| reused | 8 |" in text

    # the playlists: one per genre, every entry an existing file relative to the playlist
    lists = sorted(playlists.glob("*.m3u8"))
    assert {p.stem for p in lists} == set(table.loc[table["error"] == "", "genre_1"])
    entries = [os.path.normpath(p.parent / line) for p in lists
               for line in p.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    assert sorted(entries) == sorted(table.loc[table["error"] == "", "path"])  # relative to the playlist's folder
    assert all(os.path.isfile(entry) for entry in entries)
    assert not any(line.startswith("/") for p in lists for line in p.read_text().splitlines())
