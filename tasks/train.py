"""train stage: fit the CNN on the training shards, resumable and cached by fingerprint.

TensorFlow is imported inside the task body only, so that Dask workers which
only decode or compute mels never load it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from genreflow.model.files import (
    AUDIO_FILE,
    BACKUP_DIR,
    HISTORY_FILE,
    NOVELTY_FILE,
    OPEN_SET_FILE,
    TRAINED_FILES,
)
from genreflow.model.params import AudioConfig, TrainConfig
from genreflow.storage.outputs import OutputSpec, open_output
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import read_shard_index, shard_array_path


def clip_sources(root: DataRoot, shards: list[tuple[str, str]], split: str | None = None,
                 tracks: Collection[str] | None = None, original_only: bool = False) -> list[Any]:
    """model.dataset.ClipSource for each (stage, shard), optionally of one split, some tracks, no copies."""
    from genreflow.model.dataset import ClipSource

    sources = []
    for stage, shard in shards:
        index = read_shard_index(root, stage, shard)
        if split is not None:
            index = index[index["split"] == split]
        if tracks is not None:
            index = index[index["track_id"].isin(tracks)]
        if original_only:
            index = index[index["augmentation"] == "original"]
        if len(index):
            sources.append(ClipSource(Path(root.local_path(shard_array_path(root, stage, shard))), index))
    return sources


def cnn_clips(root: DataRoot, train_shards: list[tuple[str, str]], val_shards: list[tuple[str, str]],
              train_tracks: Collection[str] | None = None, val_tracks: Collection[str] | None = None
              ) -> tuple[list[Any], list[Any]]:
    """The CNN's training clips (every clip of ``train_shards``, augmented copies included) and validation clips
    (the original clips of ``val_shards``), of only the tracks given where given. A rebuild passes each split's
    shards; a fold every shard and its tracks."""
    return (clip_sources(root, train_shards, tracks=train_tracks),
            clip_sources(root, val_shards, tracks=val_tracks, original_only=True))


def fit_model(root: DataRoot, spec: OutputSpec, genres: list[str], stats: dict, train_sources: list[Any],
              val_sources: list[Any], train: TrainConfig, audio: AudioConfig, force: bool,
              log: Callable[..., None]) -> dict[str, Any]:
    """Train (or resume, or skip when finished) the model models/<spec.key>/; its summary.

    A finished model with the same fingerprint is not trained again; a backup
    left by a killed run is resumed (the manifest is only written at the end).
    """
    name = spec.key
    with open_output(root, spec, force) as out:
        if out.done:
            log("train: %s is already trained on these inputs; skipping", name)
            return {**out.extra, "skipped": True}
        local_dir = Path(root.local_path(out.folder))
        if force:
            root.remove(str(local_dir / BACKUP_DIR), recursive=True)
            root.remove(str(local_dir / HISTORY_FILE))

        from genreflow.model.train import train_model

        def report(epoch: int, epochs: int, logs: dict) -> None:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items()))
            log("train: %s epoch %d/%d: %s", name, epoch, epochs, shown)

        start = time.perf_counter()
        result = train_model(
            train_sources, val_sources, genres, stats, local_dir,
            epochs=train.epochs, batch_size=train.batch_size, learning_rate=train.learning_rate,
            patience=train.patience, seed=train.seed, shuffle_buffer=train.shuffle_buffer, progress=report,
            knobs=model_knobs(train, audio),
        )
        for file in TRAINED_FILES:
            out.add(file)
        out.write_bytes(AUDIO_FILE, audio.model_dump_json(indent=2).encode())
        record, reference = model_open_set(local_dir, train_sources, val_sources, genres, train.seed)
        out.write_json(OPEN_SET_FILE, record)
        if reference is not None:
            out.write_bytes(NOVELTY_FILE, reference)
        trained_here = result.epochs_run - (result.resumed_from_epoch or 1) + 1
        seconds = time.perf_counter() - start
        out.rows = int(result.epochs_run)
        out.extra = {"epochs_run": int(result.epochs_run), "resumed_from_epoch": int(result.resumed_from_epoch or 0),
                     "best_epoch": int(result.best_epoch), "seconds": seconds,
                     "seconds_per_epoch": seconds / trained_here if trained_here > 0 else None}
    return {**out.extra, "skipped": False}


def model_open_set(model_dir: Path, train_sources: list[Any], val_sources: list[Any], genres: list[str],
                   seed: int = 0) -> tuple[dict[str, Any], bytes | None]:
    """The open-set files of the CNN in ``model_dir`` (model/open_set.py): open_set.json's record and the
    novelty reference's bytes (None with fewer than two training tracks: nothing to measure a distance to).

    The threshold is chosen on the validation tracks' probabilities, each track its clips' mean as evaluate
    and predict decide a track. The reference holds the training tracks' (original clips only; a seeded
    sample of them in a large collection) last hidden layer, pooled by track as predict pools a file's
    windows; its cut is chosen on the validation and training tracks' distances (model/open_set.py fit_novelty).
    """
    import numpy as np
    import pandas as pd

    from genreflow.model.cnn import cnn_representation_model
    from genreflow.model.files import MODEL_FILE
    from genreflow.model.metrics import prob_columns, track_probabilities
    from genreflow.model.open_set import fit_novelty, novelty_record, open_set_record, reference_tracks
    from genreflow.model.quiet_tf import keras
    from genreflow.model.track_head import pool_clips

    model = keras.saving.load_model(model_dir / MODEL_FILE, safe_mode=True, compile=False)
    both = cnn_representation_model(model)

    def run(sources: list[Any]) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """(features, probabilities, index) of the sources' clips."""
        sources = [s for s in sources if len(s.index)]
        if not sources:
            return np.zeros((0, 0)), np.zeros((0, len(genres))), pd.DataFrame(columns=["track_id", "genre"])
        features, probs = [], []
        for source in sources:
            array = np.load(source.path, mmap_mode="r", allow_pickle=False)
            clips = np.asarray(array[source.index["row"].to_numpy()], np.float32)[..., np.newaxis]
            for start in range(0, len(clips), 64):
                f, p = both.predict_on_batch(clips[start : start + 64])
                features.append(np.asarray(f))
                probs.append(np.asarray(p))
        index = pd.concat([s.index[["track_id", "genre"]] for s in sources], ignore_index=True)
        return np.concatenate(features), np.concatenate(probs), index

    val_features, val_probs, val_index = run(val_sources)
    if len(val_index):
        tracks = track_probabilities(val_index, val_probs, genres)  # the clips' mean, as evaluate decides a track
        labels = np.array([genres.index(genre) for genre in tracks["genre"]])
        record = open_set_record(tracks[prob_columns(genres)].to_numpy(np.float64), labels)
        _, val_pooled = pool_clips(val_features, val_index["track_id"].astype(str).to_numpy())
    else:
        record = open_set_record(np.zeros((0, len(genres))), np.zeros(0, int))
        val_pooled = np.zeros((0, 0))
    originals = [replace(s, index=s.index[s.index["augmentation"] == "original"]) if "augmentation" in s.index
                 else s for s in train_sources]
    kept = set(reference_tracks(pd.concat([s.index["track_id"] for s in originals]).astype(str), seed=seed)) \
        if originals else set()
    train_features, _, train_index = run([replace(s, index=s.index[s.index["track_id"].astype(str).isin(kept)])
                                          for s in originals])
    if train_index["track_id"].nunique() < 2:
        return record, None
    _, train_pooled = pool_clips(train_features, train_index["track_id"].astype(str).to_numpy())
    reference = fit_novelty(train_pooled, val_pooled, seed=seed)
    return {**record, "novelty": novelty_record(reference, val_pooled)}, reference.to_bytes()


def model_knobs(train: TrainConfig, audio: AudioConfig) -> dict[str, Any]:
    """The recipe's knobs as model.train takes them: the crop in frames instead of seconds."""
    knobs = train.knobs()
    seconds = float(knobs.pop("crop_seconds") or 0.0)
    knobs["crop_frames"] = 1 + round(seconds * audio.sample_rate) // audio.hop_length if seconds else 0
    return knobs


@task(name="train")
def train_task(
    root_url: str, spec: OutputSpec, genres: list[str], stats: dict, train_shards: list[tuple[str, str]],
    val_shards: list[tuple[str, str]], train: TrainConfig, audio: AudioConfig, force: bool,
) -> dict[str, Any]:
    """Train (or resume, or skip when finished) the run ``spec.key``; returns its summary."""
    root = DataRoot(root_url)
    summary = fit_model(root, spec, genres, stats, *cnn_clips(root, train_shards, val_shards), train, audio, force,
                        get_run_logger().info)
    return {**summary, "run": spec.key}
