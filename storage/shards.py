"""Shard I/O: an array (.npy), its index (.parquet) and side tables, written into a stage output.

A shard is one output of a shard stage (decode, mel, augment) under the
protocol of storage/outputs.py, which seals it with a manifest written last.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from genreflow.storage.outputs import Output, output_path
from genreflow.storage.root import DataRoot

ARRAY = ".npy"  # (clips, ...) the shard's data
INDEX = ".parquet"  # one row a clip: track_id, clip_index, split, genre, row (, augmentation)


def write_shard(out: Output, *, array: np.ndarray, index: pd.DataFrame,
                side_tables: dict[str, pd.DataFrame] | None = None) -> None:
    """Write the array, its index and ``.<name>.parquet`` side tables into ``out``; rows = clips."""
    out.write_npy(ARRAY, array)
    out.write_parquet(INDEX, index)
    for name, table in (side_tables or {}).items():
        out.write_parquet(f".{name}.parquet", table)
    out.rows = len(index)


def read_shard_index(root: DataRoot, stage: str, shard: str) -> pd.DataFrame:
    return root.read_parquet(output_path(root, stage, shard, INDEX))


def read_side_table(root: DataRoot, stage: str, shard: str, name: str) -> pd.DataFrame:
    return root.read_parquet(output_path(root, stage, shard, f".{name}.parquet"))


def open_shard_array(root: DataRoot, stage: str, shard: str, mmap: bool = True) -> np.ndarray:
    """The shard's array, memory-mapped on a local root."""
    return root.read_npy(output_path(root, stage, shard, ARRAY), mmap=mmap)


def shard_array_path(root: DataRoot, stage: str, shard: str) -> str:
    return output_path(root, stage, shard, ARRAY)
