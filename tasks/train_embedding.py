"""train stage, embedding family: a head fitted on the embed shards, saved with musicnn as one model.

models/<run>/ then holds what a CNN run holds for prediction and export
(model.keras, labels.json, audio.json) and embedding.json, which says which
weights and layer it stands on and what the fit chose. There is no epoch loop,
so no history or checkpoint: the fit takes seconds once the shards exist.
TensorFlow and sklearn are imported inside the functions, as for training.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task

from genreflow.model.files import AUDIO_FILE, EMBEDDING_FILE, LABELS_FILE, MODEL_FILE
from genreflow.model.params import AudioConfig, TrainConfig
from genreflow.storage.outputs import OutputSpec, open_output
from genreflow.storage.root import DataRoot
from genreflow.tasks.evaluate import original_clips


def stacked(clips: list[tuple[pd.DataFrame, np.ndarray]]) -> tuple[np.ndarray, pd.DataFrame]:
    """The indexed rows of each (index, array) pair as one array, and the indexes concatenated."""
    if not clips:
        return np.zeros((0, 0), np.float32), pd.DataFrame(columns=["track_id", "genre"])
    arrays = [np.asarray(array[index["row"].to_numpy()], np.float32) for index, array in clips]
    return np.concatenate(arrays), pd.concat([index for index, _ in clips], ignore_index=True)


def fit_embedding_model(root: DataRoot, spec: OutputSpec, genres: list[str],
                        train_clips: list[tuple[pd.DataFrame, np.ndarray]],
                        val_clips: list[tuple[pd.DataFrame, np.ndarray]], train: TrainConfig, audio: AudioConfig,
                        force: bool) -> dict[str, Any]:
    """Fit (or find finished) the embedding model models/<spec.key>/ on the clips' embeddings; its summary."""
    from genreflow.model.embedding import build_classifier, describe_head, fit_head, patches_per_window
    from genreflow.model.weights import weights_checksum
    from genreflow.tasks.embed import load_embedder

    with open_output(root, spec, force) as out:
        if out.done:
            return {**out.extra, "skipped": True}
        start = time.perf_counter()
        (x_train, train_index), (x_val, val_index) = stacked(train_clips), stacked(val_clips)
        head = fit_head(x_train, train_index, x_val, val_index, genres, train.seed)
        embedder = load_embedder(train.embedding_model, train.embedding_feature, train.weights_dir)
        model = build_classifier(embedder, head, patches_per_window(audio))
        out.write_json(LABELS_FILE, list(genres))
        model.save(Path(root.local_path(out.add(MODEL_FILE))))
        out.write_bytes(AUDIO_FILE, audio.model_dump_json(indent=2).encode())
        fitted = describe_head(head)
        out.write_bytes(EMBEDDING_FILE, json.dumps({
            "family": "embedding", "embedder": train.embedding_model, "feature": train.embedding_feature,
            "weights_sha256": weights_checksum(), **fitted}, indent=2).encode())
        out.rows = len(x_train)
        out.extra = {"family": "embedding", **fitted, "train_clips": len(x_train),
                     "seconds": time.perf_counter() - start}
    return {**out.extra, "skipped": False}


def embedding_clips(root: DataRoot, train_shards: list[str], val_shards: list[str],
                    train_tracks: Collection[str] | None = None, val_tracks: Collection[str] | None = None
                    ) -> tuple[list[tuple[pd.DataFrame, np.ndarray]], list[tuple[pd.DataFrame, np.ndarray]]]:
    """The embedding model's training and validation clips: the original clips of the embed shards named, of
    only the tracks given where given. A rebuild passes each split's shards; a fold every shard and its tracks."""
    return (original_clips(root, [("embed", s) for s in train_shards], train_tracks),
            original_clips(root, [("embed", s) for s in val_shards], val_tracks))


@task(name="train-embedding")
def train_embedding_task(root_url: str, spec: OutputSpec, genres: list[str], train_shards: list[str],
                         val_shards: list[str], train: TrainConfig, audio: AudioConfig, force: bool) -> dict[str, Any]:
    """Fit (or find finished) the embedding model ``spec.key`` on the embed shards; returns its summary."""
    root = DataRoot(root_url)
    summary = fit_embedding_model(root, spec, genres, *embedding_clips(root, train_shards, val_shards), train, audio,
                                  force)
    get_run_logger().info("train: embedding model %s%s: C %g, validation track accuracy %s", spec.key,
                          " (already fitted)" if summary["skipped"] else "", summary["C"],
                          f"{summary['val_track_accuracy']:.3f}" if summary["val_track_accuracy"] is not None
                          else "-")
    return {**summary, "run": spec.key}
