"""The tf.data input: every selected clip once per epoch, shuffled across shards, from memory maps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genreflow.model.dataset import ClipSource, DatasetError, clip_dataset, count_clips, steps_per_epoch

N_MELS, FRAMES = 8, 16
GENRES = ["blues", "jazz", "rock"]
LABEL_OF = {g: i for i, g in enumerate(GENRES)}


def write_shard(directory: Path, name: str, n: int, first_id: int, genres: list[str]) -> ClipSource:
    """A float16 shard whose clip i is filled with the value first_id + i, and its index.

    The constant fill makes every clip identify itself in a batch.
    """
    directory.mkdir(parents=True, exist_ok=True)
    values = np.arange(first_id, first_id + n, dtype=np.float16)
    np.save(directory / f"{name}.npy", np.broadcast_to(values[:, None, None], (n, N_MELS, FRAMES)).copy())
    index = pd.DataFrame(
        {
            "track_id": [f"t{first_id + i}" for i in range(n)],
            "clip_index": 0,
            "augmentation": "original",
            "split": "train",
            "genre": [genres[i % len(genres)] for i in range(n)],
            "row": np.arange(n),
        }
    )
    index.to_parquet(directory / f"{name}.parquet")
    return ClipSource(directory / f"{name}.npy", index)


@pytest.fixture
def shards(tmp_path: Path) -> list[ClipSource]:
    return [
        write_shard(tmp_path, "a", 10, 0, GENRES),
        write_shard(tmp_path, "b", 7, 100, ["rock", "jazz"]),
        write_shard(tmp_path, "c", 12, 200, ["blues"]),
    ]


def expected_pairs(sources: list[ClipSource]) -> dict[int, int]:
    """Clip id -> label for every selected row, read straight from the shards."""
    pairs = {}
    for source in sources:
        array = np.load(source.path)
        for row, genre in zip(source.index["row"], source.index["genre"], strict=True):
            pairs[int(array[row, 0, 0])] = LABEL_OF[genre]
    return pairs


def epoch_pairs(dataset) -> list[tuple[int, int]]:
    """(clip id, label) in the order one pass yields them, checking dtypes and shapes."""
    seen = []
    for x, y in dataset:
        assert x.dtype.name == "float32" and y.dtype.name == "int32"
        assert tuple(x.shape[1:]) == (N_MELS, FRAMES, 1) and x.shape[0] == y.shape[0]
        ids = x.numpy()[:, 0, 0, 0]
        # Every value of a clip is its id: the whole clip came from the right row.
        assert np.all(x.numpy() == ids[:, None, None, None])
        seen += list(zip(ids.astype(int).tolist(), y.numpy().tolist(), strict=True))
    return seen


def test_every_selected_clip_once_with_its_label(shards: list[ClipSource]) -> None:
    dataset = clip_dataset(shards, LABEL_OF, batch_size=4, shuffle=True, seed=0)
    for _ in range(2):  # two epochs
        seen = epoch_pairs(dataset)
        assert len(seen) == count_clips(shards) == 29
        assert dict(seen) == expected_pairs(shards)
        assert len({clip for clip, _ in seen}) == len(seen)
    assert steps_per_epoch(shards, 4) == 8


def test_row_selection_and_unshuffled_order(shards: list[ClipSource]) -> None:
    picked = [ClipSource(s.path, s.index.iloc[::3]) for s in shards]
    seen = epoch_pairs(clip_dataset(picked, LABEL_OF, batch_size=5, shuffle=False, seed=0))
    assert [clip for clip, _ in seen] == [0, 3, 6, 9, 100, 103, 106, 200, 203, 206, 209]
    assert dict(seen) == expected_pairs(picked)


def test_shuffle_mixes_shards_and_epochs(shards: list[ClipSource]) -> None:
    dataset = clip_dataset(shards, LABEL_OF, batch_size=29, shuffle=True, seed=3)
    first, second = ([c for c, _ in epoch_pairs(dataset)] for _ in range(2))
    assert first != second  # a new permutation each epoch
    first_batch_shards = {clip // 100 for clip in first[:10]}
    assert len(first_batch_shards) >= 2  # the first clips do not all come from one shard
    assert first != sorted(first)


def test_same_seed_same_order_other_seed_other_order(shards: list[ClipSource]) -> None:
    def orders(seed: int) -> list[list[int]]:
        dataset = clip_dataset(shards, LABEL_OF, batch_size=4, shuffle=True, seed=seed)
        return [[c for c, _ in epoch_pairs(dataset)] for _ in range(2)]

    assert orders(11) == orders(11)
    assert orders(11) != orders(12)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, type]]:
    """Record every np.load: which file, and the type of array it returned."""
    calls: list[tuple[str, type]] = []
    real_load: Callable = np.load

    def recording_load(path, *args, **kwargs):
        array = real_load(path, *args, **kwargs)
        calls.append((Path(path).name, type(array)))
        return array

    monkeypatch.setattr(np, "load", recording_load)
    return calls


def test_shards_are_memory_mapped_and_opened_once(shards: list[ClipSource], opened: list) -> None:
    dataset = clip_dataset(shards, LABEL_OF, batch_size=3, shuffle=True, seed=0)
    assert opened == []  # nothing is opened before the data is read
    for _ in range(2):
        epoch_pairs(dataset)
    assert sorted(name for name, _ in opened) == ["a.npy", "b.npy", "c.npy"]
    assert all(kind is np.memmap for _, kind in opened)


def test_unselected_shards_are_never_opened(shards: list[ClipSource], opened: list) -> None:
    only_b = [ClipSource(s.path, s.index if s.path.name == "b.npy" else s.index.iloc[:0]) for s in shards]
    seen = epoch_pairs(clip_dataset(only_b, LABEL_OF, batch_size=4, shuffle=True, seed=0))
    assert sorted(c for c, _ in seen) == list(range(100, 107))
    assert [name for name, _ in opened] == ["b.npy"]


def test_bad_inputs_are_reported(shards: list[ClipSource], tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="without a label"):
        clip_dataset(shards, {"blues": 0}, batch_size=4, shuffle=False, seed=0)
    out_of_range = shards[0].index.assign(row=shards[0].index["row"] + 5)
    with pytest.raises(DatasetError, match="outside"):
        clip_dataset([ClipSource(shards[0].path, out_of_range)], LABEL_OF, 4, shuffle=False, seed=0)
    with pytest.raises(DatasetError, match="no clips"):
        clip_dataset([ClipSource(shards[0].path, shards[0].index.iloc[:0])], LABEL_OF, 4, False, 0)
    with pytest.raises(DatasetError, match="lacks column"):
        ClipSource(tmp_path / "x.npy", pd.DataFrame({"row": [0]}))
    np.save(tmp_path / "wide.npy", np.zeros((3, N_MELS, FRAMES + 1), dtype=np.float16))
    wide = ClipSource(tmp_path / "wide.npy", pd.DataFrame({"row": [0], "genre": ["jazz"]}))
    with pytest.raises(DatasetError, match="clips of"):
        clip_dataset([shards[0], wide], LABEL_OF, 4, shuffle=False, seed=0)
