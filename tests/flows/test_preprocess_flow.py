"""The preprocessing flow end to end on Dask: outputs, leakage, quarantine, reruns, TF-free workers."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from genreflow.flows.plan import plan_shards
from genreflow.flows.rebuild import run_command
from genreflow.flows.status import collect_status
from genreflow.storage.manifest import read_manifest
from genreflow.storage.outputs import manifest_path, state_of, tracks_path
from genreflow.storage.root import DataRoot
from tests.flows.conftest import small_config

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> tuple[Path, object]:
    """One preprocessing run on an external 2-worker cluster, shared by the checks below."""
    root = tmp_path_factory.mktemp("root")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        config = small_config(root, demo_dir, dask_address=cluster.scheduler_address)
        summary = run_command("preprocess", config)
        with Client(cluster) as client:
            tf_in_workers = client.run(lambda: "tensorflow" in sys.modules)
    return root, (config, summary, tf_in_workers)


def copied_root(root_path: Path, tmp_path: Path) -> tuple[Path, DataRoot]:
    """A copy of the shared preprocessed root, for a test that changes it."""
    copy = tmp_path / "root"
    shutil.copytree(root_path, copy)
    return copy, DataRoot(str(copy))


def test_every_shard_is_written_with_the_seed_shapes(preprocessed: tuple[Path, object]) -> None:
    root_path, (config, summary, _) = preprocessed
    root = DataRoot(str(root_path))
    tracks = root.read_parquet(tracks_path(root))
    assert len(tracks) == 24 and set(tracks["split"]) == {"train", "val", "test"}
    plans = plan_shards(tracks, config)
    for plan in plans:
        assert state_of(root, plan.decode) == "done"
        assert state_of(root, plan.mel) == "done"
        mel = np.load(root_path / "mel" / f"{plan.shard}.npy", allow_pickle=False)
        index = pd.read_parquet(root_path / "mel" / f"{plan.shard}.parquet")
        assert mel.dtype == np.float16 and mel.shape == (len(plan.tracks), 128, 431)  # one clip a 12 s track
        assert np.isfinite(mel).all() and mel.max() <= 0 and mel.min() >= -80
        assert list(index.columns[:5]) == ["track_id", "clip_index", "split", "genre", "row"]
        assert set(index["augmentation"]) == {"original"}
    assert summary == {"decode": len(plans), "mel": len(plans), "augment": sum(p.augment is not None for p in plans)}


def test_augmented_copies_come_only_from_training_tracks(preprocessed: tuple[Path, object]) -> None:
    root_path, (config, _, _) = preprocessed
    root = DataRoot(str(root_path))
    tracks = root.read_parquet(tracks_path(root))
    train_ids = set(tracks.loc[tracks["split"] == "train", "track_id"])
    held_out = set(tracks.loc[tracks["split"] != "train", "track_id"])
    assert train_ids and held_out and not train_ids & held_out
    aug = pd.concat(pd.read_parquet(p) for p in (root_path / "augment").glob("*[0-9].parquet"))
    assert set(aug["track_id"]) == train_ids
    assert not set(aug["track_id"]) & held_out
    assert set(aug["split"]) == {"train"}
    assert sorted(set(aug["augmentation"])) == sorted(config.augment.names())
    assert len(aug) == len(train_ids) * len(config.augment.names())
    for path in (root_path / "mel").glob("*[0-9].parquet"):
        index = pd.read_parquet(path)
        shard_split = path.stem.split("-")[0]
        assert set(index["split"]) == {shard_split}
        assert set(index["track_id"]) <= (train_ids if shard_split == "train" else held_out)


def test_preprocessing_workers_never_import_tensorflow(preprocessed: tuple[Path, object]) -> None:
    _, (_, _, tf_in_workers) = preprocessed
    assert tf_in_workers and not any(tf_in_workers.values())


def test_status_counts_done_stale_and_missing(preprocessed: tuple[Path, object]) -> None:
    _, (config, _, _) = preprocessed
    status = collect_status(config)
    n = status["shards"]
    assert status["stages"]["decode"] == {"done": n}
    assert status["quarantined"] == 0
    changed = config.model_copy(update={"audio": config.audio.model_copy(update={"n_mels": 64})})
    stale = collect_status(changed)
    assert stale["stages"]["decode"] == {"done": n} and stale["stages"]["mel"] == {"stale": n}


def test_rerun_skips_finished_shards_and_rebuilds_a_corrupted_one(
    tmp_path: Path, preprocessed: tuple[Path, object]
) -> None:
    root_path, (config, _, _) = preprocessed
    copy, root = copied_root(root_path, tmp_path)
    config = config.model_copy(update={"run": config.run.model_copy(update={"data_root": str(copy),
                                                                            "dask_address": None})})
    victim = "train-0000"
    before = read_manifest(root, manifest_path(root, "mel", victim))
    mel_path = copy / "mel" / f"{victim}.npy"
    data = bytearray(mel_path.read_bytes())
    data[-10:] = b"\x00" * 10  # an altered shard: same size, other bytes
    mel_path.write_bytes(bytes(data))
    summary = run_command("preprocess", config)
    assert summary == {"decode": 0, "mel": 1, "augment": 0}
    after = read_manifest(root, manifest_path(root, "mel", victim))
    assert before is not None and after is not None

    def contents(files: dict) -> dict:
        return {name: (entry.size, entry.checksum) for name, entry in files.items()}

    assert contents(after.files) == contents(before.files)  # the same bytes again (written anew: new mtimes)
    assert np.isfinite(np.load(mel_path)).all()


def test_quarantine_keeps_bad_files_out_and_the_rest_in(tmp_path: Path, demo_dir: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(demo_dir, source)
    rock = source / "Rock"
    good = sorted(rock.glob("*.mp3"))[0]
    (rock / "empty.mp3").write_bytes(b"")
    (rock / "truncated.mp3").write_bytes(good.read_bytes()[:3000])
    (rock / "notes.mp3").write_text("this is not audio\n" * 50)
    import soundfile as sf

    sf.write(rock / "short.wav", np.sin(np.linspace(0, 2000, 22050)).astype(np.float32) * 0.3, 22050)
    config = small_config(tmp_path / "root", source, to_stage="mel")
    run_command("preprocess", config)
    root = DataRoot(config.run.data_root)
    quarantine = root.read_parquet(root.quarantine_path()).set_index("track_id")
    bad = {"Rock/empty", "Rock/truncated", "Rock/notes", "Rock/short"}
    assert set(quarantine.index) == bad
    assert "empty" in quarantine.loc["Rock/empty", "reason"]
    assert "too short" in quarantine.loc["Rock/short", "reason"]
    assert "not decodable" in quarantine.loc["Rock/notes", "reason"]
    clips = pd.concat(pd.read_parquet(p) for p in (Path(config.run.data_root) / "mel").glob("*[0-9].parquet"))
    assert not set(clips["track_id"]) & bad
    assert set(clips["track_id"]) == set(root.read_parquet(tracks_path(root))["track_id"]) - bad


def test_shards_are_submitted_longest_first(tmp_path: Path, demo_dir: Path) -> None:
    from genreflow.flows.preprocess import longest_first
    from genreflow.tasks.ingest import ingest
    from genreflow.tasks.sources.factory import read_source

    config = small_config(tmp_path, demo_dir, shard_size=3)
    split = config.split
    tracks, _ = ingest(read_source("folder", demo_dir), split.val_fraction, split.test_fraction, split.split_seed,
                       config.run.shard_size)
    plans = plan_shards(tracks, config)
    assert len({len(p.tracks) for p in plans}) > 1 and {p.split for p in plans} == {"train", "val", "test"}

    ordered = longest_first(plans, augment=True)
    assert sorted(p.shard for p in ordered) == sorted(p.shard for p in plans)
    training = [p.augment is not None for p in ordered]
    assert training == sorted(training, reverse=True), "every augmenting shard before any other"
    for group in (True, False):
        sizes = [len(p.tracks) for p in ordered if (p.augment is not None) is group]
        assert sizes == sorted(sizes, reverse=True)
    sizes = [len(p.tracks) for p in longest_first(plans, augment=False)]
    assert sizes == sorted(sizes, reverse=True), "without augmentation, by size alone"


def test_a_finished_shard_is_known_without_submitting_its_task(
    tmp_path: Path, preprocessed: tuple[Path, object]
) -> None:
    """The flow's check before submitting returns what the task itself would, and only for finished shards."""
    from genreflow.tasks.shard import finished_shard, preprocess_shard_task

    root_path, (config, _, _) = preprocessed
    copy, root = copied_root(root_path, tmp_path)
    plans = plan_shards(root.read_parquet(tracks_path(root)), config)
    stages = config.stages_to_run()
    train = next(p for p in plans if p.augment is not None)
    found = finished_shard(root, train, stages)
    assert found is not None and [r.stage for r in found] == ["decode", "mel", "augment"]
    assert all(r.skipped and r.clips > 0 for r in found)
    assert found == preprocess_shard_task.fn(root.url, train, config.audio, config.augment, config.train, stages)
    held_out = next(p for p in plans if p.augment is None)
    assert [r.stage for r in finished_shard(root, held_out, stages) or []] == ["decode", "mel"]
    assert [r.stage for r in finished_shard(root, train, ["ingest", "decode"]) or []] == ["decode"]
    assert finished_shard(root, train, stages, forced=["augment"]) is None  # --from-stage augment

    mel = copy / "mel" / f"{train.shard}.npy"
    data = bytearray(mel.read_bytes())
    data[-1] ^= 0xFF  # same size, another byte
    mel.write_bytes(bytes(data))
    assert finished_shard(root, train, stages) is None
    assert finished_shard(root, held_out, stages) is not None
