"""tf.data input that streams log-mel clips from memory-mapped shards.

Only a global index of (source, row, label) integers lives in memory; it is
shuffled as a whole (a perfect shuffle across shards, cheap because it holds
integers, not clips), and each pass's permutation is a function of (seed,
epoch) only (:class:`EpochOrder`), so a training run resumed at epoch k after a
kill reads the clips in the order an uninterrupted run did. Clips are read a batch at a time from memory-mapped
``.npy`` shards, each opened on first use, so a collection far larger than RAM
trains from the page cache and sources whose rows are not selected are never
opened.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from genreflow.model.batch_augment import BatchAugment
from genreflow.model.quiet_tf import tf
from genreflow.storage.errors import GenreflowError

# Shards are float16 log-mel: (clips, n_mels, frames).
SHARD_NDIM = 3
# Columns of a shard's clip index that the input pipeline needs.
ROW_COLUMN = "row"
GENRE_COLUMN = "genre"


class DatasetError(GenreflowError, ValueError):
    """Shards and indexes that do not fit together, with the file concerned."""


@dataclass(frozen=True)
class ClipSource:
    """One ``.npy`` shard and the rows of its clip index to use.

    ``index`` is (a selection of) the shard's parquet index: at least the
    columns ``row`` (row in the .npy) and ``genre``.
    """

    path: Path
    index: pd.DataFrame

    def __post_init__(self) -> None:
        missing = {ROW_COLUMN, GENRE_COLUMN} - set(self.index.columns)
        if missing:
            raise DatasetError(f"index of {self.path} lacks column(s) {sorted(missing)}")

    def __len__(self) -> int:
        return len(self.index)


def count_clips(sources: Sequence[ClipSource]) -> int:
    """Clips selected over all sources."""
    return sum(len(s) for s in sources)


def steps_per_epoch(sources: Sequence[ClipSource], batch_size: int) -> int:
    """Batches in one pass over ``sources`` (the last one may be short)."""
    return math.ceil(count_clips(sources) / batch_size)


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a .npy file, read from its header only."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the array header of {path}: {exc}") from exc
    if np.dtype(dtype).hasobject:  # loading it would unpickle whatever the file holds
        raise DatasetError(f"{path} holds Python objects (pickled data), not clips: refused")
    return tuple(shape), np.dtype(dtype)


class _ShardReader:
    """Reads batches of rows from memory-mapped shards, opening each once, lazily."""

    def __init__(self, paths: Sequence[Path], clip_shape: tuple[int, int], dtype: np.dtype) -> None:
        self._paths = list(paths)
        self._clip_shape = clip_shape
        self._dtype = dtype
        self._maps: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def _shard(self, source: int) -> np.ndarray:
        array = self._maps.get(source)
        if array is None:
            with self._lock:
                array = self._maps.get(source)
                if array is None:
                    array = np.load(self._paths[source], mmap_mode="r", allow_pickle=False)
                    self._maps[source] = array
        return array

    def read(self, sources: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Clips at (sources[i], rows[i]), as float32 (b, n_mels, frames, 1)."""
        out = np.empty((len(rows), *self._clip_shape), dtype=self._dtype)
        for source in np.unique(sources):
            where = np.flatnonzero(sources == source)
            # Reading rows in file order keeps the page-cache access sequential-ish.
            order = np.argsort(rows[where], kind="stable")
            out[where[order]] = self._shard(int(source))[rows[where][order]]
        return out.astype(np.float32)[..., np.newaxis]


class EpochOrder:
    """The order of each pass over the clips: a permutation seeded by (seed, epoch) alone.

    tf.data's own reshuffling draws each pass's seed from a generator whose
    state is lost when the process dies, so a resumed run would see other
    orders than an uninterrupted one. Here a new pass takes ``next_epoch`` and
    advances it; a trainer that knows the epoch (Keras' ``on_epoch_begin``, run
    before the epoch's iterator is made) sets it with :meth:`start`.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed % 2**64  # SeedSequence takes non-negative integers
        self.next_epoch = 0
        self._lock = threading.Lock()

    def start(self, epoch: int) -> None:
        """The next pass is (0-based) epoch ``epoch``."""
        with self._lock:
            self.next_epoch = epoch

    def next_pass(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(epoch, positions 0..n-1 in its order) of the next pass, both int64."""
        with self._lock:
            epoch, self.next_epoch = self.next_epoch, self.next_epoch + 1
        order = np.random.default_rng([self.seed, epoch]).permutation(n).astype(np.int64)
        return np.int64(epoch), order


def _global_index(
    sources: Sequence[ClipSource], label_of: Mapping[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Path], tuple[int, int], np.dtype]:
    """Flatten the selected rows into (source id, row, label) arrays, after checking every shard."""
    ids, rows, labels, paths = [], [], [], []
    clip_shape: tuple[int, int] | None = None
    dtype: np.dtype | None = None
    for source in sources:
        if len(source) == 0:
            continue
        shape, shard_dtype = _npy_header(Path(source.path))
        if len(shape) != SHARD_NDIM:
            raise DatasetError(f"{source.path} holds shape {shape}, expected (clips, n_mels, frames)")
        if clip_shape is None:
            clip_shape, dtype = (shape[1], shape[2]), shard_dtype
        elif (shape[1], shape[2]) != clip_shape:
            raise DatasetError(f"{source.path} holds clips of {shape[1:]}, others {clip_shape}")
        row = source.index[ROW_COLUMN].to_numpy(dtype=np.int64)
        if row.min() < 0 or row.max() >= shape[0]:
            raise DatasetError(f"index of {source.path} selects rows outside 0..{shape[0] - 1}")
        unknown = set(source.index[GENRE_COLUMN]) - set(label_of)
        if unknown:
            raise DatasetError(f"{source.path} has genres without a label: {sorted(map(str, unknown))}")
        ids.append(np.full(len(row), len(paths), dtype=np.int64))
        rows.append(row)
        labels.append(source.index[GENRE_COLUMN].map(label_of).to_numpy(dtype=np.int32))
        paths.append(Path(source.path))
    if clip_shape is None or dtype is None:
        raise DatasetError("no clips selected: every source is empty")
    return (
        np.concatenate(ids),
        np.concatenate(rows),
        np.concatenate(labels),
        paths,
        clip_shape,
        dtype,
    )


def clip_dataset(
    sources: list[ClipSource],
    label_of: Mapping[str, int],
    batch_size: int,
    shuffle: bool,
    seed: int,
    shuffle_buffer: int = 2048,
    order: EpochOrder | None = None,
    one_hot: bool = False,
    augment: BatchAugment | None = None,
) -> tf.data.Dataset:
    """Batches (x float32 (b, n_mels, frames, 1), y) over every selected clip once.

    y is int32 (b,), or with ``one_hot`` float32 (b, n_classes) for n_classes =
    len(label_of). With ``shuffle`` the order is a fresh permutation of all clips
    across all shards each epoch, given by ``order`` (default: ``EpochOrder(seed)``,
    whose passes count 0, 1, 2, ...): the same permutations for the same ``seed``
    and epoch, whatever happened before. ``augment`` (shuffled, one-hot input
    only) masks and mixes each batch with draws seeded by (epoch, batch).
    ``shuffle_buffer`` is accepted for the config's sake, but the shuffle is of
    the integer index, so it is always global (as if the buffer held every clip).
    """
    del shuffle_buffer  # see the docstring: the index shuffle needs no bounded buffer
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if augment is not None and augment.active and not (shuffle and one_hot):
        raise ValueError("batch augmentation needs the shuffled, one-hot training input")
    ids, rows, labels, paths, clip_shape, dtype = _global_index(sources, label_of)
    reader = _ShardReader(paths, clip_shape, dtype)
    n_classes = len(label_of)

    def read_batch(batch_ids: tf.Tensor, batch_rows: tf.Tensor, batch_labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
        x = tf.numpy_function(reader.read, [batch_ids, batch_rows], tf.float32, stateful=False)
        x.set_shape((None, *clip_shape, 1))
        return x, (tf.one_hot(batch_labels, n_classes) if one_hot else batch_labels)

    if shuffle:
        order = order or EpochOrder(seed)
        n = len(ids)
        index = tf.constant(np.stack([ids, rows, labels.astype(np.int64)], axis=1))

        def epoch_permutation(_: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            epoch, positions = tf.numpy_function(lambda: order.next_pass(n), [], (tf.int64, tf.int64),
                                                 stateful=True)
            positions.set_shape((n,))
            return epoch, positions

        def batches(epoch: tf.Tensor, positions: tf.Tensor) -> tf.data.Dataset:
            steps = tf.data.Dataset.from_tensor_slices(positions).batch(batch_size).enumerate()
            return steps.map(lambda step, picked: (epoch, step, picked))

        def read(epoch: tf.Tensor, step: tf.Tensor, positions: tf.Tensor) -> tuple[tf.Tensor, ...]:
            picked = tf.gather(index, positions)
            x, y = read_batch(picked[:, 0], picked[:, 1], tf.cast(picked[:, 2], tf.int32))
            return (*augment(x, y, epoch, step),) if augment is not None and augment.active else (x, y)

        # One permutation per pass: from_tensors yields once for each new iterator.
        data = (tf.data.Dataset.from_tensors(0).map(epoch_permutation).flat_map(batches)
                .apply(tf.data.experimental.assert_cardinality(math.ceil(n / batch_size)))
                .map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    else:
        data = (tf.data.Dataset.from_tensor_slices((ids, rows, labels)).batch(batch_size)
                .map(read_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    return data.prefetch(tf.data.AUTOTUNE)
