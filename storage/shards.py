"""Shard I/O: an array (.npy), its index (.parquet) and side tables, sealed by a manifest.

Writing a shard first removes any old manifest, then writes every file
atomically, then the manifest: a crash at any point leaves a shard that the
next run sees as missing and rebuilds, never one it trusts half-written.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from genreflow.storage.manifest import Manifest, State, output_state, read_manifest, shard_manifest_path, write_manifest
from genreflow.storage.root import DataRoot


def shard_state(root: DataRoot, stage: str, shard: str, fingerprint: str, verify: bool = True) -> State:
    """done, stale, missing or corrupt (see storage.manifest.output_state)."""
    return output_state(root, shard_manifest_path(root, stage, shard), fingerprint, verify)


def write_shard(
    root: DataRoot,
    stage: str,
    shard: str,
    *,
    array: np.ndarray,
    index: pd.DataFrame,
    fingerprint: str,
    side_tables: dict[str, pd.DataFrame] | None = None,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Write ``<stage>/<shard>.npy``, ``.parquet`` and ``.<name>.parquet`` side tables, then seal."""
    manifest_path = shard_manifest_path(root, stage, shard)
    root.remove(manifest_path)
    for leftover in root.fs.glob(root.shard_path(stage, shard, ".*tmp-*")):
        root.remove(leftover)  # half-written files of a write that was killed
    files = [root.shard_path(stage, shard, ".npy"), root.shard_path(stage, shard, ".parquet")]
    root.write_npy(files[0], array)
    root.write_parquet(files[1], index)
    for name, table in (side_tables or {}).items():
        path = root.shard_path(stage, shard, f".{name}.parquet")
        root.write_parquet(path, table)
        files.append(path)
    return write_manifest(
        root, manifest_path, name=f"{stage}/{shard}", fingerprint=fingerprint, files=files,
        rows=len(index), extra=extra,
    )


def read_shard_index(root: DataRoot, stage: str, shard: str) -> pd.DataFrame:
    return root.read_parquet(root.shard_path(stage, shard, ".parquet"))


def read_side_table(root: DataRoot, stage: str, shard: str, name: str) -> pd.DataFrame:
    return root.read_parquet(root.shard_path(stage, shard, f".{name}.parquet"))


def open_shard_array(root: DataRoot, stage: str, shard: str, mmap: bool = True) -> np.ndarray:
    """The shard's array, memory-mapped on a local root."""
    return root.read_npy(root.shard_path(stage, shard, ".npy"), mmap=mmap)


def shard_manifest(root: DataRoot, stage: str, shard: str) -> Manifest | None:
    return read_manifest(root, shard_manifest_path(root, stage, shard))
