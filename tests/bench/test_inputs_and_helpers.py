"""Bench inputs (linked copies of a demo set), its configurations, the child protocol and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from genreflow.bench import inputs, preprocess, training


def _fake_set(folder: Path, per_genre: int = 2) -> inputs.BenchSet:
    paths = []
    for genre in ("Folk", "Rock"):
        (folder / genre).mkdir(parents=True)
        for i in range(per_genre):
            path = folder / genre / f"{genre.lower()}-{i:04d}.mp3"
            path.write_bytes(f"{genre}{i}".encode())
            paths.append(path)
    return inputs.BenchSet(folder, tuple(sorted(paths)))


def test_replicate_set_makes_new_names_with_the_same_bytes(tmp_path: Path) -> None:
    base = _fake_set(tmp_path / "base")
    big = inputs.replicate_set(base, tmp_path / "big", copies=3)
    assert len(big) == 3 * len(base)
    assert len({p.name for p in big.paths}) == len(big)  # every copy is another track
    assert (tmp_path / "big" / "Rock" / "rock-0001-c2.mp3").read_bytes() == b"Rock1"
    again = inputs.replicate_set(base, tmp_path / "big", copies=3)  # idempotent
    assert again.paths == big.paths
    with pytest.raises(ValueError, match="copies"):
        inputs.replicate_set(base, tmp_path / "none", copies=0)


def test_first_per_genre_takes_from_each_genre(tmp_path: Path) -> None:
    base = _fake_set(tmp_path / "base", per_genre=3)
    chosen = inputs.first_per_genre(base, 2)
    assert [p.name for p in chosen] == ["folk-0000.mp3", "folk-0001.mp3", "rock-0000.mp3", "rock-0001.mp3"]


def test_bench_config_mel_only_or_full_preprocessing(tmp_path: Path) -> None:
    mel = preprocess.bench_config(tmp_path / "src", tmp_path / "root", 2, dask_address="tcp://127.0.0.1:1")
    assert mel.run.to_stage == "mel" and mel.augment.names() == []
    assert mel.audio.clips_per_track == 1 and mel.run.workers == 2 and mel.run.shard_size == 50
    assert mel.source.source == "folder" and mel.run.dask_address == "tcp://127.0.0.1:1"
    full = preprocess.bench_config(tmp_path / "src", tmp_path / "root", 1, augment=True, clips_per_track=None)
    assert full.run.to_stage == "augment" and full.audio.clips_per_track is None
    assert full.augment.names() == ["stretch0.8", "stretch0.9", "pitch+2", "pitch-2"]
    assert full.augment.augment_domain == "spectral"
    waveform = preprocess.bench_config(tmp_path / "list.csv", tmp_path / "root", 2, augment=True,
                                       source_kind="csv", augment_domain="waveform")
    assert waveform.source.source == "csv" and waveform.augment.augment_domain == "waveform"


def test_train_csv_lists_every_file_as_training(tmp_path: Path) -> None:
    from genreflow.tasks.sources.factory import read_source

    base = _fake_set(tmp_path / "base")
    table = read_source("csv", inputs.train_csv(base, tmp_path / "list.csv")).read()
    assert sorted(table["path"]) == sorted(str(p.absolute()) for p in base.paths)
    assert set(table["split"]) == {"train"} and sorted(table["genre"]) == ["Folk", "Folk", "Rock", "Rock"]


def test_granularity_bound_is_the_busiest_workers_share() -> None:
    assert preprocess.granularity_bound([46] * 11, 2) == pytest.approx(11 / 6)
    assert preprocess.granularity_bound([52] * 8 + [48, 48], 2) == 2.0  # 4 x 52 + 48 each
    assert preprocess.granularity_bound([10, 1, 1], 2) == pytest.approx(12 / 10)  # one long shard dominates
    assert preprocess.granularity_bound([5, 5, 5], 1) == 1.0


def test_balanced_shard_size_makes_shards_two_workers_share_evenly(tmp_path: Path) -> None:
    source = _fake_set(tmp_path / "base", per_genre=30).root  # 60 tracks, split by hash of track
    sizes_at_5 = preprocess.shard_sizes(source, 5)
    assert sum(sizes_at_5) == 60 and max(sizes_at_5) <= 5
    assert preprocess.granularity_bound(sizes_at_5, 2) < 0.99 * 2  # 13 shards of up to 5: one worker gets 7
    size = preprocess.balanced_shard_size(source, 2, 5)
    assert size > 5
    assert preprocess.granularity_bound(preprocess.shard_sizes(source, size), 2) >= 0.99 * 2
    assert all(preprocess.granularity_bound(preprocess.shard_sizes(source, s), 2) < 0.99 * 2 for s in range(5, size))
    # No size up to twice the asked one balances 10-track shards of this set: the asked size is kept.
    assert preprocess.balanced_shard_size(source, 2, 10) == 10


def test_steady_rate_excludes_the_first_batch() -> None:
    assert training.steady_rate([10.0, 11.0, 12.0, 13.0], batch_size=64) == pytest.approx(64.0)
    with pytest.raises(ValueError):
        training.steady_rate([1.0], batch_size=64)


def test_child_protocol_round_trips() -> None:
    cmd = training.child_command("predict", {"paths": ["a.mp3"]})
    assert cmd[1:4] == ["-m", "genreflow.bench.training", "predict"] and json.loads(cmd[4]) == {"paths": ["a.mp3"]}
    out = "noise\n" + training.RESULT_PREFIX + json.dumps({"mean_s": 0.1}) + "\nmore noise\n"
    assert training.parse_result(out) == {"mean_s": 0.1}
    with pytest.raises(RuntimeError):
        training.parse_result("no result here")


def test_cli_help_lists_the_options() -> None:
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, check=True)
    assert "--quick" in out.stdout and "--json" in out.stdout


def test_projection_is_cost_arithmetic() -> None:
    from genreflow.bench import project

    stage = {"decode_per_track_s": 0.03, "mel_per_clip_s": 0.005, "augment_per_clip_s": 0.2, "augmentations": 4}
    small = project.project(project.FMA_SMALL, stage, workers=2, overhead=1.1, train_clips_per_s=50.0)
    assert small["windows_per_track"] == 3
    decode = 0.03 * (1_321_967 / 44_100) / 30  # fma_small's tracks are 29.98 s: decoding scales with seconds
    cpu = 6400 * (decode + 3 * 0.205) + 1600 * (decode + 3 * 0.005)
    assert small["preprocess_cpu_hours"] == pytest.approx(cpu / 3600)
    assert small["preprocess_hours"] == pytest.approx(cpu / 2 * 1.1 / 3600)
    assert small["epoch_clips"] == 6400 * 3 * 5
    assert small["epoch_minutes_cpu"] == pytest.approx(6400 * 15 / 50 / 60)
    full = project.project(project.FMA_FULL, stage, workers=2, overhead=1.1, train_clips_per_s=50.0)
    assert full["collection"]["train"] + full["collection"]["val"] + full["collection"]["test"] == 106_574
    assert full["windows_per_track"] == 28  # 343 days over 106,574 tracks: ~278 s, 27 whole windows and the end


@pytest.mark.slow
def test_recipe_epochs_are_timed_with_each_recipes_knobs(tmp_path: Path) -> None:
    """The seed-vs-default epoch comparison trains both recipes on the same shard and times later epochs."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    clips = rng.normal(-40, 10, size=(12, 128, 431)).astype(np.float16)
    np.save(tmp_path / "train-0000.npy", clips)
    pd.DataFrame({"track_id": [f"t{i}" for i in range(12)], "clip_index": 0, "split": "train",
                  "genre": ["Folk", "Rock"] * 6, "row": range(12), "augmentation": "original"}
                 ).to_parquet(tmp_path / "train-0000.parquet")
    result = training.measure_recipes({"shards": [str(tmp_path / "train-0000.npy")], "batch_size": 4,
                                       "recipes": ["seed", "genreflow"], "extra_epochs": 2, "rounds": 1})
    assert result["clips"] == 12
    assert result["knobs"]["seed"]["crop_frames"] == 0 and not result["knobs"]["seed"]["batch_norm"]
    assert result["knobs"]["genreflow"]["crop_frames"] == 216 and result["knobs"]["genreflow"]["spec_augment"]
    for name in ("seed", "genreflow"):
        assert len(result["epoch_seconds"][name]) == 2  # the first (tracing) epoch dropped
        assert result["epoch_s"][name] == min(result["epoch_seconds"][name]) > 0
