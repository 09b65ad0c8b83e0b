"""The split and the shards: which tracks are trained on, validated on and tested on, and in which task.

Split rules (:func:`split_tracks`): rows that already have a split keep it
(FMA's official split); the others are split stratified by genre and grouped
by artist, so no artist spans two splits. See the function for the algorithm.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
from pydantic import Field

from genreflow.model.params import Section
from genreflow.storage.root import SPLITS
from genreflow.tasks.sources import IngestError, _blank, _clean

logger = logging.getLogger(__name__)


def _rank(seed: int, key: str) -> str:
    """A seeded pseudo-random rank of a group that depends on nothing but its key.

    Ranking groups by a hash, not by a shuffled list, makes the split
    independent of row order and of which other tracks are in the table.
    """
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def _take(groups: list[tuple[str, int]], target: int, at_least_one: bool, keep: int) -> list[str]:
    """Groups (in rank order) whose sizes add up to at most ``target`` tracks.

    Takes at least one group when ``at_least_one`` (the smallest, if none fits)
    and always leaves ``keep`` groups for the splits still to fill.
    """
    limit = len(groups) - keep
    chosen: list[str] = []
    total = 0
    for key, size in groups:
        if len(chosen) >= limit or total >= target:
            break
        if total + size <= target:
            chosen.append(key)
            total += size
    if not chosen and at_least_one and limit > 0:
        chosen.append(min(groups, key=lambda group: group[1])[0])
    return chosen


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def group_keys(tracks: pd.DataFrame) -> pd.Series:
    """Artist where known, else the track itself: tracks of one group share a split."""
    return pd.Series(
        [
            f"track:{track_id}" if _blank(artist) else f"artist:{str(artist).strip()}"
            for track_id, artist in zip(tracks["track_id"], tracks["artist"], strict=True)
        ],
        index=tracks.index,
        dtype=object,
    )


def split_tracks(
    tracks: pd.DataFrame, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 42
) -> pd.DataFrame:
    """Fill the split of rows without one; rows with a split (FMA's official one) keep it.

    Algorithm, for the unsplit rows:

    1. Group tracks by artist (a track without an artist is its own group). An
       artist that already has tracks in a split puts its unsplit tracks there.
    2. Give each group to the genre most of its tracks have (ties: alphabetical).
    3. Per genre, rank the groups by a hash of (seed, group key), then fill test
       and then val with groups, in rank order, up to round(n * fraction) tracks
       each, skipping groups that would overshoot; the rest is train. A genre
       with at least 3 groups gets at least one test and one val group, and
       always keeps one for train.

    Deterministic, independent of row order, and no artist spans two splits.
    Returns a copy with the ``split`` column filled.
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
    splits = [_clean(value) for value in result["split"]]
    bad = sorted({s for s in splits if s is not None and s not in SPLITS})
    if bad:
        raise IngestError(f"unknown split value(s) {', '.join(map(repr, bad))}: expected train, val or test")
    groups = group_keys(result)

    # An artist's unsplit tracks follow the split most of its other tracks already have.
    pinned: dict[str, Counter[str]] = defaultdict(Counter)
    for group, split in zip(groups, splits, strict=True):
        if split is not None:
            pinned[group][split] += 1
    for i, group in enumerate(groups):
        if splits[i] is None and group in pinned:
            counts = pinned[group]
            splits[i] = max(SPLITS, key=lambda s: (counts[s], -SPLITS.index(s)))

    open_rows = [i for i, split in enumerate(splits) if split is None]
    if open_rows:
        assignment = _split_groups(
            groups=[groups.iloc[i] for i in open_rows],
            genres=[str(result["genre"].iloc[i]) for i in open_rows],
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
        for i in open_rows:
            splits[i] = assignment[groups.iloc[i]]
    result["split"] = pd.Series(splits, index=result.index)
    return result


def _split_groups(
    groups: list[str], genres: list[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """Map each group key to a split (steps 2 and 3 of :func:`split_tracks`)."""
    genre_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for group, genre in zip(groups, genres, strict=True):
        genre_counts[group][genre] += 1
    by_genre: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for group, counts in genre_counts.items():
        main_genre = min(counts, key=lambda g: (-counts[g], g))
        by_genre[main_genre].append((group, sum(counts.values())))

    assignment: dict[str, str] = {}
    for genre in sorted(by_genre):
        ranked = sorted(by_genre[genre], key=lambda group: (_rank(seed, group[0]), group[0]))
        n_tracks = sum(size for _, size in ranked)
        enough = len(ranked) >= 3
        if not enough:
            logger.warning(
                "genre %r has only %d artist group(s): it may be missing from val or test",
                genre, len(ranked),
            )
        need_val = enough and val_fraction > 0
        need_test = enough and test_fraction > 0
        test = _take(ranked, _round_half_up(n_tracks * test_fraction), need_test, keep=1 + need_val)
        taken = set(test)
        rest = [group for group in ranked if group[0] not in taken]
        val = _take(rest, _round_half_up(n_tracks * val_fraction), need_val, keep=1)
        for key in test:
            assignment[key] = "test"
        for key in val:
            assignment[key] = "val"
        for key, _ in ranked:
            assignment.setdefault(key, "train")
    return assignment


# --------------------------------------------------------------------------- shards


def _split_order(tracks: pd.DataFrame) -> pd.DataFrame:
    """Sort by split (train, val, test), then shard, then track_id."""
    rank = tracks["split"].map({s: i for i, s in enumerate(SPLITS)})
    ordered = tracks.assign(_rank=rank).sort_values(["_rank", "shard", "track_id"], kind="stable")
    return ordered.drop(columns="_rank").reset_index(drop=True)


def assign_shards(tracks: pd.DataFrame, shard_size: int) -> pd.DataFrame:
    """Add ``shard``: per split, tracks by track_id cut into ceil(n / shard_size) near-equal shards.

    A shard holds one split only, so a stage can treat training shards
    differently (augment) without looking inside. Near-equal sizes keep the
    last shard from being a tiny task. Named ``f"{split}-{i:04d}"``.
    """
    if shard_size < 1:
        raise IngestError(f"shard_size must be at least 1, got {shard_size}")
    if "split" not in tracks.columns or "track_id" not in tracks.columns:
        raise IngestError("track table needs track_id and split columns to be sharded")
    splits = [_clean(value) for value in tracks["split"]]
    if any(split not in SPLITS for split in splits):
        raise IngestError("every track needs a split (train, val or test) before sharding")
    result = tracks.reset_index(drop=True)
    shards = [""] * len(result)
    for split in SPLITS:
        rows = sorted(
            (i for i, s in enumerate(splits) if s == split), key=lambda i: str(result["track_id"].iat[i])
        )
        if not rows:
            continue
        count = math.ceil(len(rows) / shard_size)
        for number, chunk in enumerate(np.array_split(np.asarray(rows), count)):
            for i in chunk:
                shards[int(i)] = f"{split}-{number:04d}"
    result["split"] = pd.Series(splits, index=result.index)
    result["shard"] = pd.Series(shards, index=result.index)
    return _split_order(result)



class SplitConfig(Section):
    """How tracks are split when the source has no official split."""

    split_seed: int = Field(42, description="seed of the stratified track split")
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="validation share of tracks")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="test share of tracks")

