"""The split and the shards: which tracks are trained, validated and tested on, and in which task.

Both are stable across rebuilds of a collection that changes, as TFX and TFDS
split by a hash of a stable key and Dagster runs only new partitions:

- **Split** (:func:`split_tracks`): a track keeps the split it has in the data
  root for as long as it exists. A new track's split depends only on its own
  group key (its artist, else the track) and the seed: a hash of the two,
  read as a number in [0, 1), below ``test_fraction`` is test, below
  ``test_fraction + val_fraction`` val, else train. Adding or removing other
  tracks never moves it, and two data roots that reach the same collection by
  different histories hold the same splits. A new track by an artist that
  already has a split joins it, so no artist spans two splits; a split given
  by the source (FMA's official one, a CSV's ``split`` column) wins over all.
  The fractions hold in expectation: a genre of n groups has a binomial spread
  of sqrt(f (1 - f) / n) around each fraction (1.7 points for 300 tracks at
  10 %), so a small collection may have a genre without validation or test
  tracks (a warning names it; ``--folds`` measures small sets better).
- **Shards** (:func:`assign_shards`): append-only with compaction. A track
  stays in its shard; new tracks of a split are cut into new shards of their
  own, and shards that end up under half the shard size are merged when there
  are two or more of them in a split. So a rebuild recomputes only the shards
  that gain or lose tracks (and those it merges): adding 5 % of tracks
  recomputes about one shard per split instead of all of them. Positional
  shards (tracks sorted by id, cut into equal chunks) moved almost every track
  to another shard when a few were added; hash buckets move tracks whenever
  their count doubles; one shard per content hash of its members would make
  every rebuild a new set of shards.

``--resplit`` forgets the stored splits and shards and assigns every track
afresh (the test set then changes: its accuracy is not comparable with earlier
rebuilds).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
from pydantic import Field

from genreflow.model.params import Section
from genreflow.storage.root import SPLITS
from genreflow.tasks.sources import IngestError, clean_cell, is_blank

logger = logging.getLogger(__name__)

_HASH_SCALE = float(1 << 64)


def group_keys(tracks: pd.DataFrame) -> pd.Series:
    """Artist where known, else the track itself: tracks of one group share a split."""
    return pd.Series(
        [
            f"track:{track_id}" if is_blank(artist) else f"artist:{str(artist).strip()}"
            for track_id, artist in zip(tracks["track_id"], tracks["artist"], strict=True)
        ],
        index=tracks.index,
        dtype=object,
    )


def group_position(seed: int, key: str) -> float:
    """Where a group falls in [0, 1): a hash of the seed and its key, and of nothing else."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SCALE


def split_of_position(position: float, val_fraction: float, test_fraction: float) -> str:
    if position < test_fraction:
        return "test"
    return "val" if position < test_fraction + val_fraction else "train"


def split_tracks(tracks: pd.DataFrame, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 42,
                 previous: pd.DataFrame | None = None) -> pd.DataFrame:
    """Fill the split of rows without one (see the module docstring); a copy with ``split`` filled.

    In order of precedence: the source's own split; the split the track has in
    ``previous`` (the data root's last track table: track_id, split); the split
    most tracks of its artist already have; the hash of its group key.
    Deterministic and independent of row order.
    """
    missing = [c for c in ("track_id", "genre", "split", "artist") if c not in tracks.columns]
    if missing:
        raise IngestError(f"track table lacks column(s) {', '.join(missing)}")
    if tracks.empty:
        raise IngestError("no tracks to split")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise IngestError(
            f"val_fraction {val_fraction} and test_fraction {test_fraction} must leave tracks for training"
        )
    result = tracks.copy()
    splits = [clean_cell(value) for value in result["split"]]
    bad = sorted({s for s in splits if s is not None and s not in SPLITS})
    if bad:
        raise IngestError(f"unknown split value(s) {', '.join(map(repr, bad))}: expected train, val or test")
    if previous is not None and len(previous):
        kept = dict(zip(previous["track_id"].astype(str), previous["split"].astype(str), strict=True))
        splits = [split if split is not None else kept.get(str(track_id))
                  for split, track_id in zip(splits, result["track_id"], strict=True)]
    groups = group_keys(result)

    # An artist's unsplit tracks follow the split most of its other tracks already have.
    pinned: dict[str, Counter[str]] = defaultdict(Counter)
    for group, split in zip(groups, splits, strict=True):
        if split is not None:
            pinned[group][split] += 1
    for i, group in enumerate(groups):
        if splits[i] is None:
            counts = pinned.get(group)
            splits[i] = (max(SPLITS, key=lambda s: (counts[s], -SPLITS.index(s))) if counts else
                         split_of_position(group_position(seed, group), val_fraction, test_fraction))
    result["split"] = pd.Series(splits, index=result.index)
    _warn_thin_genres(result)
    return result


def _warn_thin_genres(table: pd.DataFrame) -> None:
    """One warning naming the genres a hash split left without validation or test tracks."""
    present = table.groupby("genre")["split"].agg(set)
    lacking = {split: [str(genre) for genre, splits in present.items() if split not in splits]
               for split in ("val", "test")}
    if any(lacking.values()):
        logger.warning("too few tracks (or artists) for a hash split to reach every genre: %s; measure with "
                       "--folds, or give the split in a CSV", "; ".join(
                           f"no {split} track for {', '.join(map(repr, genres))}"
                           for split, genres in lacking.items() if genres))


# --------------------------------------------------------------------------- shards


def _split_order(tracks: pd.DataFrame) -> pd.DataFrame:
    """Sort by split (train, val, test), then shard, then track_id."""
    rank = tracks["split"].map({s: i for i, s in enumerate(SPLITS)})
    ordered = tracks.assign(_rank=rank).sort_values(["_rank", "shard", "track_id"], kind="stable")
    return ordered.drop(columns="_rank").reset_index(drop=True)


def _shard_number(split: str, name: str) -> int:
    match = re.fullmatch(rf"{re.escape(split)}-(\d+)", name)
    return int(match.group(1)) if match else -1


def assign_shards(tracks: pd.DataFrame, shard_size: int, previous: pd.DataFrame | None = None) -> pd.DataFrame:
    """Add ``shard`` (see the module docstring): a copy sorted by split, shard, track_id.

    A shard holds one split only, so a stage can treat training shards
    differently (augment) without looking inside. New shards are named
    ``f"{split}-{n:04d}"`` after the highest number in use, and cut
    near-equal, so that the last one is not a tiny task. ``previous`` is the
    data root's last track table (track_id, split, shard).
    """
    if shard_size < 1:
        raise IngestError(f"shard_size must be at least 1, got {shard_size}")
    if "split" not in tracks.columns or "track_id" not in tracks.columns:
        raise IngestError("track table needs track_id and split columns to be sharded")
    splits = [clean_cell(value) for value in tracks["split"]]
    if any(split not in SPLITS for split in splits):
        raise IngestError("every track needs a split (train, val or test) before sharding")
    result = tracks.reset_index(drop=True)
    result["split"] = pd.Series(splits, index=result.index)
    before: dict[str, tuple[str, str]] = {}
    if previous is not None and len(previous):
        before = {str(t): (str(s), str(h)) for t, s, h in zip(previous["track_id"], previous["split"],
                                                               previous["shard"], strict=True)}
    shards = pd.Series([""] * len(result), index=result.index, dtype=object)
    # Row i's id, looked up in a list: a pandas .at per row cost 0.3 ms, most of ingest at 100,000 tracks.
    ids = [str(track_id) for track_id in result["track_id"]]
    for split in SPLITS:
        rows = result.index[result["split"] == split]
        kept = {i: before[ids[i]][1] for i in rows if before.get(ids[i], ("", ""))[0] == split}
        new = sorted((i for i in rows if i not in kept), key=ids.__getitem__)
        members: dict[str, list[int]] = defaultdict(list)
        for i, shard in kept.items():
            members[shard].append(i)
        if new:
            number = max((_shard_number(split, name) for name in members), default=-1) + 1
            for chunk in np.array_split(np.asarray(new), math.ceil(len(new) / shard_size)):
                members[f"{split}-{number:04d}"] = [int(i) for i in chunk]
                number += 1
        for shard, rows_of_shard in _compacted(members, shard_size).items():
            shards[rows_of_shard] = shard
    result["shard"] = shards
    return _split_order(result)


def _compacted(members: dict[str, list[int]], shard_size: int) -> dict[str, list[int]]:
    """Merge shards under half the shard size, when a split has two or more of them.

    First-fit decreasing into shards of at most ``shard_size``; a merged shard
    takes the lowest name of its parts. Shards of a healthy size are never touched.
    """
    small = sorted((name for name, rows in members.items() if len(rows) < shard_size / 2),
                   key=lambda name: (-len(members[name]), name))
    if len(small) < 2:
        return members
    bins: list[list[str]] = []
    for name in small:
        target = next((b for b in bins if sum(len(members[n]) for n in b) + len(members[name]) <= shard_size), None)
        if target is None:
            bins.append([name])
        else:
            target.append(name)
    result = {name: rows for name, rows in members.items() if name not in small}
    for parts in bins:
        result[min(parts)] = sorted(i for part in parts for i in members[part])
    return result


class SplitConfig(Section):
    """How tracks are split when the source has no split of its own, and whether stored splits are kept."""

    split_seed: int = Field(42, description="seed of the track split (a hash of it and the artist or track)")
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="validation share of tracks")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="test share of tracks")
    resplit: bool = Field(False, description="forget the stored splits and shards and assign every track afresh "
                                             "(the test set changes)")
