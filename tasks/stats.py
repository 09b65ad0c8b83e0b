"""stats stage: per-mel-band mean and std over the training clips, for input normalisation."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from prefect import task

from genreflow.storage.outputs import OutputSpec, open_output
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import open_shard_array

STATS_CHUNK = 256  # clips read at once from a memory-mapped shard


def band_stats(arrays: Iterable[np.ndarray]) -> dict[str, list[float] | int]:
    """Mean and std of each mel band over all clips and frames of ``arrays``.

    arrays : iterable of np.ndarray [shape=(clips, n_mels, frames)], read in chunks
    so that memory stays flat however large the shards are.
    """
    total: np.ndarray | None = None
    total_sq: np.ndarray | None = None
    count = 0
    clips = 0
    for array in arrays:
        for start in range(0, len(array), STATS_CHUNK):
            chunk = np.asarray(array[start : start + STATS_CHUNK], dtype=np.float64)
            sums, sums_sq = chunk.sum(axis=(0, 2)), np.square(chunk).sum(axis=(0, 2))
            total = sums if total is None else total + sums
            total_sq = sums_sq if total_sq is None else total_sq + sums_sq
            count += chunk.shape[0] * chunk.shape[2]
            clips += chunk.shape[0]
    if total is None or total_sq is None or count == 0:
        raise ValueError("no training clips to compute normalisation statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return {"mean": mean.tolist(), "std": np.maximum(std, 1e-3).tolist(), "clips": clips}


STATS_FILE = ".json"  # stats.json


@task(name="stats")
def stats_task(root_url: str, shards: list[tuple[str, str]], spec: OutputSpec, force: bool) -> dict:
    """Write stats.json from the (stage, shard) arrays given, unless done for ``spec``."""
    root = DataRoot(root_url)
    with open_output(root, spec, force) as out:
        if out.done:
            return out.read_json(STATS_FILE)
        stats = band_stats(open_shard_array(root, stage, shard) for stage, shard in shards)
        out.write_json(STATS_FILE, stats)
        out.rows = int(stats["clips"])
    return stats
