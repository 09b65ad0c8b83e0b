"""ingest stage: read a labelled collection into a track table, split it by track, group it into shards.

Everything downstream works on the table this stage makes, one row a track:
``track_id, path, genre, split, artist, shard``. The split is fixed here, once,
per track, so that no stage after it can leak a test track into training.
Sources are in tasks/sources/, the split and shards in tasks/split.py.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task

from genreflow.storage.fingerprint import frame_fingerprint
from genreflow.storage.outputs import (
    SKIPPED_TABLE,
    TRACKS_TABLE,
    OutputSpec,
    open_output,
    read_sealed_parquet,
    tracks_path,
)
from genreflow.storage.root import QUARANTINE_COLUMNS, SPLITS, DataRoot
from genreflow.tasks.sources import TRACK_COLUMNS, IngestError, Skipped, Source, SourceConfig, clean_cell
from genreflow.tasks.sources.demo import DemoSource
from genreflow.tasks.sources.factory import source_of
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
    previous: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read, split and shard a source: (tracks table, skipped table).

    ``previous`` is the data root's last track table: its tracks keep their
    split and shard (tasks/split.py). The tracks table has columns track_id,
    path, genre, split, artist, shard, sorted by split, shard, track_id; the
    skipped one track_id, path, genre, reason.
    """
    table = source.read()
    duplicated = table["track_id"].duplicated()
    if duplicated.any():
        raise IngestError(
            f"source {source.name}: duplicate track id {table['track_id'][duplicated].iloc[0]!r}"
        )
    table = split_tracks(table, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, previous=previous)
    table = assign_shards(table, shard_size, previous=previous)[list(TRACK_COLUMNS)]
    counts = table["split"].value_counts()
    logger.info(
        "ingested %d tracks from %s (%s), %d shards, %d skipped",
        len(table), source.name, ", ".join(f"{s} {int(counts.get(s, 0))}" for s in SPLITS),
        table["shard"].nunique(), len(source.skipped),
    )
    return table, skipped_table(source.skipped)


def evaluation_set_id(tracks: pd.DataFrame) -> str:
    """A short hash of the test split's track ids: equal ids mean test accuracies are comparable."""
    ids = sorted(tracks.loc[tracks["split"] == "test", "track_id"].astype(str))
    return hashlib.blake2b("\n".join(ids).encode(), digest_size=6).hexdigest()


def track_changes(previous: pd.DataFrame | None, current: pd.DataFrame) -> dict[str, Any]:
    """What the collection did since the last ingest: tracks added, removed and modified (re-tagged,
    moved or re-split), shards gained and dropped, and whether the test set is the same one."""
    before = previous if previous is not None else pd.DataFrame(columns=list(TRACK_COLUMNS))
    old, new = before.set_index(before["track_id"].astype(str)), current.set_index(current["track_id"].astype(str))
    added, removed = sorted(set(new.index) - set(old.index)), sorted(set(old.index) - set(new.index))
    both = sorted(set(new.index) & set(old.index))
    compared = ["path", "genre", "artist", "split"]

    def cells(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.loc[both, compared].map(lambda value: clean_cell(value) or "")

    changed = (cells(old) != cells(new)).any(axis=1)
    modified = sorted(changed[changed].index)
    return {
        "first_ingest": previous is None,
        "tracks": len(current), "added": len(added), "removed": len(removed), "modified": len(modified),
        "examples": {"added": added[:5], "removed": removed[:5], "modified": modified[:5]},
        "removed_by_split": {split: int(n) for split, n in before[before["track_id"].astype(str).isin(removed)]
                             .groupby("split").size().items()},
        "test_set": evaluation_set_id(current),
        "test_set_same": previous is not None and evaluation_set_id(previous) == evaluation_set_id(current),
    }


@dataclass(frozen=True)
class Ingested:
    """The ingest stage's result: the track table and what changed since the last ingest."""

    tracks: pd.DataFrame
    changes: dict[str, Any]


# ---- Prefect task ---------------------------------------------------------------------------


def ingest_stage(root_url: str, source_cfg: SourceConfig, split: SplitConfig, shard_size: int, workers: int,
                 force: bool = False, log: Callable[..., None] = logger.info) -> Ingested:
    """Read the configured source into tracks.parquet (rewritten only when it changed).

    The last track table under the data root keeps each track's split and shard
    (unless ``split.resplit``). Without --input, the demo source writes its set
    under the data root, in raw/demo.
    """
    root = DataRoot(root_url)
    root.ensure_writable()
    previous = read_sealed_parquet(root, "ingest", "", TRACKS_TABLE)
    if previous is None and root.exists(tracks_path(root)):
        log("ingest: %s is not as the last ingest sealed it (a killed or damaged write); splits and shards are "
            "assigned afresh", tracks_path(root))
    source = source_of(source_cfg, Path(root.local_path(root.join("raw", "demo"))), workers)
    if isinstance(source, DemoSource) and source.needs_writing():
        log("ingest: writing a demo set of %d tracks per genre to %s", source.tracks_per_genre, source.root)
    tracks, skipped = ingest(source, split.val_fraction, split.test_fraction, split.split_seed, shard_size,
                             previous=None if split.resplit else previous)
    spec = OutputSpec("ingest", code=stage_code("ingest"),
                      inputs=[frame_fingerprint(tracks), frame_fingerprint(skipped)])
    with open_output(root, spec, force) as out:
        if not out.done:
            out.write_parquet(TRACKS_TABLE, tracks)
            out.write_parquet(SKIPPED_TABLE, skipped)
            out.rows = len(tracks)
    counts = tracks.groupby("split").size().to_dict()
    changes = track_changes(previous, tracks)
    log("ingest: %d tracks from %s (%s), %d skipped, %d shards; since the last ingest: %d added, %d removed, "
        "%d modified", len(tracks), source.name, ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
        len(skipped), tracks["shard"].nunique(), changes["added"], changes["removed"], changes["modified"])
    return Ingested(tracks, changes)


@task(name="ingest")
def ingest_task(root_url: str, source_cfg: SourceConfig, split: SplitConfig, shard_size: int, workers: int,
                force: bool = False) -> Ingested:
    """:func:`ingest_stage`, logging to the task run."""
    return ingest_stage(root_url, source_cfg, split, shard_size, workers, force, get_run_logger().info)
