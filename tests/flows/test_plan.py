"""The DAG's plan: one ShardPlan per shard, and fingerprints that change exactly when their inputs do."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from genreflow.flows.config import build_config
from genreflow.flows.plan import baseline_spec, plan_shards, stats_spec, train_spec, training_inputs


def stats_fingerprint(plans: list) -> str:
    return stats_spec(plans).fingerprint


def baseline_fingerprint(plans: list, seed: int) -> str:
    return baseline_spec(plans, seed).fingerprint


def run_name(plans: list, config: object) -> str:
    return train_spec(plans, config).key  # type: ignore[arg-type]


@pytest.fixture()
def tracks(tmp_path: Path) -> pd.DataFrame:
    """Six tracks in three shards: two of train, one each of val and test."""
    rows = []
    for i, (split, shard) in enumerate([("train", 0), ("train", 0), ("train", 1), ("train", 1), ("val", 2),
                                        ("test", 3)]):
        path = tmp_path / f"t{i}.wav"
        path.write_bytes(b"x" * (100 + i))
        rows.append({"track_id": i, "path": str(path), "genre": "Rock", "split": split, "artist": None,
                     "shard": shard})
    return pd.DataFrame(rows)


def test_one_plan_per_shard_and_only_training_shards_augment(tracks: pd.DataFrame) -> None:
    plans = plan_shards(tracks, build_config(None))
    assert [(p.shard, p.split, len(p.tracks)) for p in plans] == [("0", "train", 2), ("1", "train", 2),
                                                                   ("2", "val", 1), ("3", "test", 1)]
    assert [p.augment is not None for p in plans] == [True, True, False, False]
    assert training_inputs(plans) == [("mel", "0"), ("mel", "1"), ("augment", "0"), ("augment", "1")]


def test_no_augmentations_means_no_augment_output(tracks: pd.DataFrame) -> None:
    plans = plan_shards(tracks, build_config(None, time_stretch=[], pitch_shift=[]))
    assert all(p.augment is None for p in plans)


def test_an_edited_source_file_makes_only_its_shard_stale(tracks: pd.DataFrame) -> None:
    before = plan_shards(tracks, build_config(None))
    edited = tracks.loc[2, "path"]
    Path(edited).write_bytes(b"y" * 500)
    os.utime(edited, ns=(1, 1))
    after = plan_shards(tracks, build_config(None))
    assert [a.decode == b.decode for a, b in zip(after, before, strict=True)] == [True, False, True, True]
    assert after[1].mel != before[1].mel and after[1].augment != before[1].augment


def test_mel_parameters_change_mel_and_augment_but_not_decode(tracks: pd.DataFrame) -> None:
    base = plan_shards(tracks, build_config(None))
    fewer_bands = plan_shards(tracks, build_config(None, n_mels=64))
    for a, b in zip(base, fewer_bands, strict=True):
        assert a.decode == b.decode and a.mel != b.mel
        assert (a.augment is None) == (b.augment is None) and (a.augment is None or a.augment != b.augment)


def test_augmentation_domain_changes_only_the_augmented_copies(tracks: pd.DataFrame) -> None:
    spectral = plan_shards(tracks, build_config(None))
    waveform = plan_shards(tracks, build_config(None, augment_domain="waveform"))
    for a, b in zip(spectral, waveform, strict=True):
        assert a.decode == b.decode and a.mel == b.mel
        assert a.augment is None or a.augment != b.augment


def test_stats_follow_the_training_inputs_only(tracks: pd.DataFrame) -> None:
    plans = plan_shards(tracks, build_config(None))
    other_test = tracks.assign(genre=["Rock"] * 5 + ["Pop"])  # the test track changes; training does not
    assert stats_fingerprint(plan_shards(other_test, build_config(None))) == stats_fingerprint(plans)
    assert baseline_fingerprint(plan_shards(other_test, build_config(None)), 42) != baseline_fingerprint(plans, 42)
    assert baseline_fingerprint(plans, 1) != baseline_fingerprint(plans, 42)


def test_run_name_is_the_resolved_training(tracks: pd.DataFrame) -> None:
    plans = plan_shards(tracks, build_config(None))
    default = run_name(plans, build_config(None))
    assert default.startswith("run-") and len(default) == len("run-") + 12
    assert run_name(plans, build_config(None, batch_norm=True)) == default  # the recipe's own value
    assert run_name(plans, build_config(None, baseline=False, folds=3)) == default  # which runs, not what one learns
    assert run_name(plans, build_config(None, batch_norm=False)) != default
    assert run_name(plans, build_config(None, learning_rate=0.01)) != default
