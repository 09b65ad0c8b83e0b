"""train stage, embedding family: a head fitted on the embed shards, saved with musicnn as one model.

The head is track-level (issue 22, model/track_head.py): one vector a training
track (its clips' embeddings pooled), its kind and hyperparameters chosen by
cross-validation over the training tracks only (grouped by artist where the
tracks table knows them), its temperature fitted on their out-of-fold
predictions. The validation tracks are not used: they stay for the choice
between the CNN and the embedding family.

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

from genreflow.model.files import (
    AUDIO_FILE,
    EMBEDDING_FILE,
    LABELS_FILE,
    MODEL_FILE,
    NOVELTY_FILE,
    OPEN_SET_FILE,
)
from genreflow.model.params import AudioConfig, TrainConfig
from genreflow.storage.files import write_then_move
from genreflow.storage.outputs import OutputSpec, open_output, tracks_path
from genreflow.storage.root import DataRoot
from genreflow.tasks.evaluate import original_clips


def stacked(clips: list[tuple[pd.DataFrame, np.ndarray]]) -> tuple[np.ndarray, pd.DataFrame]:
    """The indexed rows of each (index, array) pair as one array, and the indexes concatenated."""
    if not clips:
        return np.zeros((0, 0), np.float32), pd.DataFrame(columns=["track_id", "genre"])
    arrays = [np.asarray(array[index["row"].to_numpy()], np.float32) for index, array in clips]
    return np.concatenate(arrays), pd.concat([index for index, _ in clips], ignore_index=True)


def track_artists(root: DataRoot) -> dict[str, Any] | None:
    """Each track's artist from the ingest table (None where unknown), or None without a tracks table."""
    if not root.exists(tracks_path(root)):
        return None
    tracks = root.read_parquet(tracks_path(root))
    if "artist" not in tracks.columns:
        return None
    return dict(zip(tracks["track_id"].astype(str), tracks["artist"], strict=True))


def fit_embedding_model(root: DataRoot, spec: OutputSpec, genres: list[str],
                        train_clips: list[tuple[pd.DataFrame, np.ndarray]],
                        val_clips: list[tuple[pd.DataFrame, np.ndarray]], train: TrainConfig, audio: AudioConfig,
                        force: bool) -> dict[str, Any]:
    """Fit (or find finished) the embedding model models/<spec.key>/ on the clips' embeddings; its summary.

    The track-level head learns from ``train_clips`` only; ``val_clips`` choose only the open-set threshold
    (model/open_set.py), which changes no genre, and are left for the choice between families to score.
    """
    from genreflow.model.embedding import (
        build_track_classifier,
        describe_track_head,
        fit_track_level_head,
        patches_per_window,
    )
    from genreflow.model.weights import weights_checksum
    from genreflow.tasks.embed import load_embedder

    with open_output(root, spec, force) as out:
        if out.done:
            return {**out.extra, "skipped": True}
        start = time.perf_counter()
        x_train, train_index = stacked(train_clips)
        head = fit_track_level_head(x_train, train_index, genres, train.seed, artists=track_artists(root))
        fit_seconds = time.perf_counter() - start
        embedder = load_embedder(train.embedding_model, train.embedding_feature, train.weights_dir)
        model = build_track_classifier(embedder, head, patches_per_window(audio))
        out.write_json(LABELS_FILE, list(genres))
        model_path = Path(root.local_path(out.add(MODEL_FILE)))  # staged, then moved: a full disk names it
        write_then_move(model_path.with_name(f".{MODEL_FILE}.tmp.keras"), model_path, model.save)
        out.write_bytes(AUDIO_FILE, audio.model_dump_json(indent=2).encode())
        record, reference = head_open_set(head, x_train, train_index, val_clips, genres, train.seed)
        out.write_json(OPEN_SET_FILE, record)
        if reference is not None:
            out.write_bytes(NOVELTY_FILE, reference)
        fitted = describe_track_head(head)
        out.write_bytes(EMBEDDING_FILE, json.dumps({
            "family": "embedding", "embedder": train.embedding_model, "feature": train.embedding_feature,
            "weights_sha256": weights_checksum(), **fitted}, indent=2).encode())
        out.rows = len(x_train)
        out.extra = {"family": "embedding", **fitted, "train_clips": len(x_train),
                     "train_tracks": int(train_index["track_id"].nunique()),
                     "val_clips": sum(len(index) for index, _ in val_clips), "fit_seconds": fit_seconds,
                     "seconds": time.perf_counter() - start}
    return {**out.extra, "skipped": False}


def head_open_set(head: Any, x_train: np.ndarray, train_index: pd.DataFrame,
                  val_clips: list[tuple[pd.DataFrame, np.ndarray]], genres: list[str], seed: int = 0
                  ) -> tuple[dict[str, Any], bytes | None]:
    """The open-set files (model/open_set.py): open_set.json's record and the novelty reference's bytes (None
    with fewer than two training tracks).

    The threshold is chosen on the head's calibrated probabilities of the validation tracks' pooled clip
    embeddings, the decision predict makes of a file. The reference holds the training tracks' mean clip
    embeddings, as predict pools a file's windows; its cut is chosen on the validation and training tracks'.
    """
    from genreflow.model.open_set import fit_novelty, novelty_record, open_set_record
    from genreflow.model.track_head import pool_clips

    x_val, val_index = stacked(val_clips)
    _, train_pooled = pool_clips(np.asarray(x_train, np.float64), train_index["track_id"].astype(str).to_numpy())
    val_pooled = np.zeros((0, train_pooled.shape[1]))
    if len(x_val):
        track_ids = val_index["track_id"].astype(str).to_numpy()
        keys, pooled = pool_clips(np.asarray(x_val, np.float64), track_ids, head.pooling)
        genre_of = pd.Series(val_index["genre"].astype(str).to_numpy(), index=track_ids).groupby(level=0).first()
        labels = np.array([genres.index(g) for g in genre_of.loc[keys]])
        record = open_set_record(head.probabilities(pooled), labels)
        _, val_pooled = pool_clips(np.asarray(x_val, np.float64), track_ids)
    else:
        record = open_set_record(np.zeros((0, len(genres))), np.zeros(0, int))
    if len(train_pooled) < 2:
        return record, None
    reference = fit_novelty(train_pooled, val_pooled, seed=seed)
    return {**record, "novelty": novelty_record(reference, val_pooled)}, reference.to_bytes()


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
    inner = summary.get("inner_accuracy")
    get_run_logger().info("train: embedding model %s%s: %s head (%s), temperature %.3g, inner %s-fold CV track "
                          "accuracy %s", spec.key, " (already fitted)" if summary["skipped"] else "",
                          summary.get("head"), ", ".join(f"{k} {summary[k]:g}" for k in ("C", "gamma_scale", "alpha")
                                                         if summary.get(k) is not None),
                          summary.get("temperature", 1.0), summary.get("inner_folds"),
                          "-" if inner is None else f"{inner:.3f}")
    return {**summary, "run": spec.key}
