"""The CNN's clip selection, shared by the train stage (each split's shards) and a fold (its tracks of every
shard): training on every clip, augmented copies included; validation on original clips only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from genreflow.storage.outputs import OutputSpec, open_output
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import write_shard
from genreflow.tasks.train import cnn_clips


def shard(root: DataRoot, stage: str, name: str, tracks: dict[str, str], augmentations: list[str]) -> None:
    """A shard of one clip per track and augmentation: tracks is track_id -> split."""
    index = pd.DataFrame([{"track_id": t, "clip_index": 0, "split": split, "genre": "rock", "augmentation": a}
                          for a in augmentations for t, split in tracks.items()])
    index["row"] = np.arange(len(index))
    with open_output(root, OutputSpec(stage, name, inputs="fp")) as out:
        write_shard(out, array=np.zeros((len(index), 4, 8), np.float16), index=index)


def selected(sources: list) -> list[tuple[str, str]]:
    return sorted((t, a) for s in sources for t, a in zip(s.index["track_id"], s.index["augmentation"], strict=True))


def test_train_on_copies_validate_on_originals_by_split_or_by_tracks(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path / "root"))
    shard(root, "mel", "train-0000", {"a": "train", "b": "train"}, ["original"])
    shard(root, "augment", "train-0000", {"a": "train", "b": "train"}, ["pitch+2"])
    shard(root, "mel", "val-0000", {"c": "val"}, ["original"])
    mel = [("mel", "train-0000"), ("mel", "val-0000")]
    train_shards = [("mel", "train-0000"), ("augment", "train-0000")]

    # The rebuild: each split's shards.
    train, val = cnn_clips(root, train_shards, [("mel", "val-0000")])
    assert selected(train) == [("a", "original"), ("a", "pitch+2"), ("b", "original"), ("b", "pitch+2")]
    assert selected(val) == [("c", "original")]

    # A fold: every shard, its tracks; a validation track's augmented copies stay out of validation.
    train, val = cnn_clips(root, [*train_shards, ("mel", "val-0000")], [*mel, ("augment", "train-0000")],
                           train_tracks=["a", "c"], val_tracks=["b"])
    assert selected(train) == [("a", "original"), ("a", "pitch+2"), ("c", "original")]
    assert selected(val) == [("b", "original")]
