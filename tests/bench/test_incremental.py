"""The incremental-rebuild benchmark's split of a collection into what was there and what is new."""

from __future__ import annotations

from pathlib import Path

from genreflow.bench.incremental import NEW_SHARE, split_collection
from genreflow.bench.inputs import BenchSet


def test_five_percent_are_new_and_spread_over_the_genres(tmp_path: Path) -> None:
    paths = tuple(tmp_path / genre / f"{genre}-{i:03d}.mp3" for genre in ("Rock", "Pop") for i in range(100))
    old, new = split_collection(BenchSet(tmp_path, paths))
    assert len(new) == len(paths) // NEW_SHARE == 10 and len(old) == 190
    assert set(old).isdisjoint(new) and set(old) | set(new) == set(paths)
    assert {p.parent.name for p in new} == {"Rock", "Pop"}
