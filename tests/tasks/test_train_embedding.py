"""The embedding model's clip selection, shared by its train stage (each split's embed shards) and a fold (its
tracks of every shard): original clips only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from genreflow.storage.root import DataRoot
from genreflow.tasks.train_embedding import embedding_clips
from tests.tasks.test_train import shard


def tracks_of(clips: list[tuple[pd.DataFrame, np.ndarray]]) -> list[str]:
    return sorted(t for index, _ in clips for t in index["track_id"])


def test_original_embed_clips_by_split_or_by_tracks(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path / "root"))
    shard(root, "embed", "train-0000", {"a": "train", "b": "train"}, ["original", "pitch+2"])
    shard(root, "embed", "val-0000", {"c": "val"}, ["original"])

    train, val = embedding_clips(root, ["train-0000"], ["val-0000"])
    assert tracks_of(train) == ["a", "b"] and tracks_of(val) == ["c"]
    assert all((index["augmentation"] == "original").all() for index, _ in train)

    every = ["train-0000", "val-0000"]
    train, val = embedding_clips(root, every, every, train_tracks=["a", "c"], val_tracks=["b"])
    assert tracks_of(train) == ["a", "c"] and tracks_of(val) == ["b"]
