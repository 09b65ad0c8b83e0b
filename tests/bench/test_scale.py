"""The scale bench (issue 25, part 3): its FMA-format collection, and its 1k size as a smoke test."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from genreflow.bench import scale
from genreflow.tasks.sources.fma import FmaSource


def test_collection_is_fma_format_with_its_holes(tmp_path: Path) -> None:
    audio = scale.distinct_audio(tmp_path / "distinct", 3)
    root = scale.make_collection(tmp_path / "fma", 400, audio)
    lines = (root / "fma_metadata" / "tracks.csv").read_text().splitlines()
    assert lines[0].startswith(",album,album,artist,artist,set,set,track")  # FMA's two header rows
    assert lines[1].startswith(",id,title,id,name,split,subset,")
    assert lines[2].startswith("track_id,")  # and its index-name row
    meta = pd.read_csv(root / "fma_metadata" / "tracks.csv", header=[0, 1], index_col=0)
    assert len(meta) == 400 and meta.index.is_unique
    assert set(meta[("set", "split")]) == set(scale.SPLIT_NAMES)
    assert (meta[("set", "split")].groupby(meta[("artist", "id")]).nunique() == 1).all()  # split per artist
    assert set(meta[("track", "genre_top")].dropna()) <= set(scale.genre_names())
    assert len(scale.genre_names()) == scale.GENRES == 161

    source = FmaSource(root, "medium")
    table = source.read()
    reasons = pd.Series([s.reason for s in source.skipped]).value_counts()
    step = round(1 / scale.MISSING_AUDIO_SHARE)  # every 200th file is left out (unless its genre already is)
    genre = meta[("track", "genre_top")].notna().to_numpy()
    assert reasons.get("audio file missing", 0) == sum(genre[i] for i in range(step - 1, 400, step))
    assert reasons.get("no genre", 0) == (~genre).sum()
    assert len(table) + len(source.skipped) == 400
    assert table["split"].notna().all()  # the official split, not a drawn one
    # Tracks are links to the few distinct files, which are real mp3s of TRACK_SECONDS.
    import soundfile as sf

    first = Path(table["path"].iloc[0])
    assert first.stat().st_nlink > 1
    assert sf.info(str(first)).duration == pytest.approx(scale.TRACK_SECONDS, abs=0.1)
    # Made once: a second call with the same size reuses the folder.
    stamp = (root / "fma_metadata" / "tracks.csv").stat().st_mtime_ns
    scale.make_collection(tmp_path / "fma", 400, audio)
    assert (root / "fma_metadata" / "tracks.csv").stat().st_mtime_ns == stamp


def test_growth_ratio_is_per_figure_and_against_the_sizes() -> None:
    rows = [{"size": 10_000, "status_s": 2.0, "task_runs": 200, "preprocess_s": None},
            {"size": 100_000, "status_s": 30.0, "task_runs": 2000}]
    (pair,) = scale.growth(rows)
    assert pair["linear"] == 10 and pair["ratios"] == {"status_s": 15.0, "task_runs": 10.0}
    table = scale.format_table(rows, [pair])
    assert "x 10,000->100,000 (linear 10)" in table and "15.0" in table
    assert "FASTER THAN LINEAR" in "\n".join(scale.targets(rows, [pair]))


def test_smoke_1k_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scale.json"
    assert scale.main(["--sizes", "1000", "--steps-only", "--distinct", "4", "--workdir", str(tmp_path / "w"),
                       "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for label in ("read tracks.csv", "shard planning", "status, every shard output sealed", "report (",
                  "crossval report", "steps process peak RSS"):
        assert label in printed
    (row,) = json.loads(out.read_text())["sizes"]
    assert row["listed"] == 1000 and row["tracks"] == 1000 - row["skipped"] and row["skipped"] >= 5
    assert row["shards"] >= 1000 * 0.9 // scale.SHARD_SIZE
    assert row["status_all_done"], row["status_sealed_stages"]  # status saw every sealed output as done
    assert row["sealed_outputs"] > row["shards"]  # decode and mel of every shard, augment of the train ones
    assert row["mistakes"] > 0 and row["report_bytes"] > 10_000 and row["crossval_bytes"] > 1_000
    for key in ("read_s", "split_s", "shard_s", "plan_s", "ingest_s", "status_s", "status_sealed_s", "report_s",
                "crossval_s"):
        assert 0 < row[key] < 600, key
    assert 50 < row["steps_peak_rss_mib"] < 4096


def test_submit_child_stops_the_flow_right_after_its_last_submission(monkeypatch: pytest.MonkeyPatch) -> None:
    """The submit child times the flow's own run_shards, with its own shards, and ends it after the last one."""
    import genreflow.flows.preprocess as preprocess

    submitted: list[int] = []

    def fake_run_shards(task: object, retries: int, shards: object, arguments: object, on_result: object) -> None:
        for shard in shards:  # type: ignore[attr-defined]
            submitted.append(shard)
        raise AssertionError("run_shards went on to wait for results")

    monkeypatch.setattr(preprocess, "run_shards", fake_run_shards)
    marks: dict[str, float] = {}
    with scale.stop_after_last_submission(marks), pytest.raises(scale.AllSubmitted):
        preprocess.run_shards(None, 0, iter([1, 2, 3]), None, None)
    assert submitted == [1, 2, 3] and marks["last"] >= marks["first"]
    assert preprocess.run_shards is fake_run_shards  # put back


def test_projection_submits_at_the_no_worker_rate() -> None:
    rows = [{"size": 10_000, "preprocess_tracks": 9_857, "preprocess_s": 144.0, "submit_s": 52.0, "task_runs": 199,
             "submit_only_task_runs": 199, "submit_only_s": 9.95}]
    lines = scale.projection(rows)
    assert lines[0].startswith("fma_full's 2,132 task runs: 1.8 min of submission (50 ms each, no workers")
    assert len(lines) == 4  # and 2, 8, 32 workers
    assert scale.projection([{"size": 10_000, "submit_only_task_runs": 199, "submit_only_s": 9.95}])[0] == lines[0]
