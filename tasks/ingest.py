"""ingest stage: read a labelled collection into a track table, split it by track, group it into shards.

Everything downstream works on the table this stage makes, one row a track:
``track_id, path, genre, split, artist, shard``. The split is fixed here, once,
per track, so that no stage after it can leak a test track into training.
Sources are in tasks/sources.py, the split and shards in tasks/split.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task

from genreflow.storage.fingerprint import frame_fingerprint
from genreflow.storage.outputs import SKIPPED_TABLE, TRACKS_TABLE, OutputSpec, open_output
from genreflow.storage.root import QUARANTINE_COLUMNS, SPLITS, DataRoot
from genreflow.tasks.sources import TRACK_COLUMNS, DemoSource, IngestError, Skipped, Source, SourceConfig, source_of
from genreflow.tasks.split import SplitConfig, assign_shards, split_tracks
from genreflow.tasks.stages import stage_code

logger = logging.getLogger(__name__)


def skipped_table(skipped: Iterable[Skipped]) -> pd.DataFrame:
    """Skipped tracks as a table for quarantine: track_id, path, genre, reason."""
    return pd.DataFrame([tuple(item) for item in skipped], columns=list(QUARANTINE_COLUMNS))


def ingest(
    source: Source,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    shard_size: int = 50,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read, split and shard a source: (tracks table, skipped table).

    The tracks table has columns track_id, path, genre, split, artist, shard,
    sorted by split, shard, track_id; the skipped one track_id, path, genre, reason.
    """
    table = source.read()
    duplicated = table["track_id"].duplicated()
    if duplicated.any():
        raise IngestError(
            f"source {source.name}: duplicate track id {table['track_id'][duplicated].iloc[0]!r}"
        )
    table = split_tracks(table, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    table = assign_shards(table, shard_size)[list(TRACK_COLUMNS)]
    counts = table["split"].value_counts()
    logger.info(
        "ingested %d tracks from %s (%s), %d shards, %d skipped",
        len(table), source.name, ", ".join(f"{s} {int(counts.get(s, 0))}" for s in SPLITS),
        table["shard"].nunique(), len(source.skipped),
    )
    return table, skipped_table(source.skipped)



# ---- Prefect task ---------------------------------------------------------------------------


def ingest_stage(root_url: str, source_cfg: SourceConfig, split: SplitConfig, shard_size: int, workers: int,
                 force: bool = False, log: Callable[..., None] = logger.info) -> pd.DataFrame:
    """Read the configured source into tracks.parquet (rewritten only when it changed).

    Without --input, the demo source writes its set under the data root, in raw/demo.
    """
    root = DataRoot(root_url)
    root.ensure_writable()
    source = source_of(source_cfg, Path(root.local_path(root.join("raw", "demo"))), workers)
    if isinstance(source, DemoSource) and source.needs_writing():
        log("ingest: writing a demo set of %d tracks per genre to %s", source.tracks_per_genre, source.root)
    tracks, skipped = ingest(source, split.val_fraction, split.test_fraction, split.split_seed, shard_size)
    spec = OutputSpec("ingest", code=stage_code("ingest"),
                      inputs=[frame_fingerprint(tracks), frame_fingerprint(skipped)])
    with open_output(root, spec, force) as out:
        if not out.done:
            out.write_parquet(TRACKS_TABLE, tracks)
            out.write_parquet(SKIPPED_TABLE, skipped)
            out.rows = len(tracks)
    counts = tracks.groupby("split").size().to_dict()
    log("ingest: %d tracks from %s (%s), %d skipped, %d shards", len(tracks), source.name,
        ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), len(skipped), tracks["shard"].nunique())
    return tracks


@task(name="ingest")
def ingest_task(root_url: str, source_cfg: SourceConfig, split: SplitConfig, shard_size: int, workers: int,
                force: bool = False) -> pd.DataFrame:
    """:func:`ingest_stage`, logging to the task run."""
    return ingest_stage(root_url, source_cfg, split, shard_size, workers, force, get_run_logger().info)
