"""The split and the shards: stable across rebuilds of a collection that grows, shrinks and changes."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
import pytest

from genreflow.tasks.sources import IngestError
from genreflow.tasks.sources.fma import FmaSource
from genreflow.tasks.split import assign_shards, split_tracks
from tests.tasks.collection_files import assert_no_leakage, synthetic_tracks

# --------------------------------------------------------------------------- split_tracks


def binomial_bound(fraction: float, n: int) -> float:
    """Three standard deviations of a share of n independent draws: what a hash split may stray by."""
    return 3 * math.sqrt(fraction * (1 - fraction) / n)


@pytest.mark.parametrize("seed", [0, 7, 42])
def test_fractions_hold_over_hundreds_of_tracks_per_genre(seed: int) -> None:
    tracks = synthetic_tracks({genre: 400 for genre in "abcdefgh"})
    table = split_tracks(tracks, val_fraction=0.1, test_fraction=0.1, seed=seed)
    overall = table["split"].value_counts(normalize=True)
    assert abs(overall["test"] - 0.1) <= 0.02 and abs(overall["val"] - 0.1) <= 0.02
    shares = table.groupby("genre")["split"].value_counts(normalize=True).unstack(fill_value=0)
    assert ((shares[["val", "test"]] - 0.1).abs() <= binomial_bound(0.1, 400)).all().all()


def test_split_fractions_are_honoured() -> None:
    table = split_tracks(synthetic_tracks({"rock": 2000}), val_fraction=0.2, test_fraction=0.15, seed=1)
    shares = table["split"].value_counts(normalize=True)
    for split, target in (("train", 0.65), ("val", 0.2), ("test", 0.15)):
        assert abs(shares[split] - target) <= 0.02, (split, shares[split])


def test_split_is_deterministic_and_seeded() -> None:
    tracks = synthetic_tracks({"rock": 60, "jazz": 40}, artists_per_genre=12)
    first = split_tracks(tracks, seed=3)
    again = split_tracks(tracks, seed=3)
    other = split_tracks(tracks, seed=4)
    pd.testing.assert_frame_equal(first, again)
    assert list(first["split"]) != list(other["split"])


def test_split_is_independent_of_row_order() -> None:
    tracks = synthetic_tracks({"rock": 60, "jazz": 40, "pop": 7}, artists_per_genre=9)
    shuffled = tracks.sample(frac=1.0, random_state=123).reset_index(drop=True)
    a = split_tracks(tracks, seed=11).set_index("track_id")["split"]
    b = split_tracks(shuffled, seed=11).set_index("track_id")["split"]
    pd.testing.assert_series_equal(a.sort_index(), b.sort_index())


def test_split_keeps_input_rows_and_other_columns() -> None:
    tracks = synthetic_tracks({"rock": 20})
    table = split_tracks(tracks)
    assert list(table.index) == list(tracks.index)
    pd.testing.assert_frame_equal(table.drop(columns="split"), tracks.drop(columns="split"))
    assert tracks["split"].isna().all()  # the input is not modified


def test_split_groups_by_artist() -> None:
    tracks = synthetic_tracks({"rock": 900, "jazz": 450}, artists_per_genre=150)
    table = split_tracks(tracks, seed=5)
    assert_no_leakage(table)
    assert set(table["split"]) == {"train", "val", "test"}
    per_genre = table.groupby("genre")["split"].value_counts().unstack(fill_value=0)
    assert (per_genre["val"] > 0).all()
    assert (per_genre["test"] > 0).all()


def test_artist_spanning_genres_stays_in_one_split() -> None:
    tracks = synthetic_tracks({"rock": 30, "jazz": 30}, artists_per_genre=6)
    jazz = tracks["genre"] == "jazz"
    tracks.loc[jazz, "artist"] = tracks.loc[jazz, "artist"].str.replace("jazz", "rock")  # shared artists
    table = split_tracks(tracks, seed=2)
    assert_no_leakage(table)


def test_thin_genres_are_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    tracks = synthetic_tracks({"rock": 400, "duo": 2})
    with caplog.at_level(logging.WARNING, logger="genreflow.tasks.split"):
        table = split_tracks(tracks, seed=0)
    assert set(table[table["genre"] == "duo"]["split"]) == {"train"}  # both hash to train with seed 0
    assert "no val track for 'duo'; no test track for 'duo'" in caplog.text and "'rock'" not in caplog.text
    assert len(caplog.records) == 1


# --------------------------------------------------------------------------- stable splits


def test_a_track_keeps_its_split_whatever_is_added_or_removed() -> None:
    first = split_tracks(synthetic_tracks({"rock": 300, "jazz": 300}), seed=3)
    grown_source = pd.concat([synthetic_tracks({"rock": 300, "jazz": 300}),
                              synthetic_tracks({"rock": 60, "pop": 40}, prefix="new")], ignore_index=True)
    grown = split_tracks(grown_source, seed=3, previous=first)
    kept = grown.set_index("track_id").loc[first["track_id"], "split"]
    assert list(kept) == list(first["split"])
    shrunk = split_tracks(grown_source.iloc[::2], seed=3, previous=grown)
    before = grown.set_index("track_id").loc[shrunk["track_id"], "split"]
    assert list(shrunk["split"]) == list(before)


def test_stored_splits_win_over_new_seeds_and_fractions() -> None:
    first = split_tracks(synthetic_tracks({"rock": 200}), seed=1)
    again = split_tracks(synthetic_tracks({"rock": 200}), seed=2, val_fraction=0.3, test_fraction=0.3,
                         previous=first)
    pd.testing.assert_series_equal(again["split"], first["split"])


def test_a_new_tracks_split_depends_on_its_own_key_only() -> None:
    alone = split_tracks(synthetic_tracks({"rock": 1}, prefix="x"), seed=9)
    crowd = pd.concat([synthetic_tracks({"rock": 500, "jazz": 200}), synthetic_tracks({"rock": 1}, prefix="x")],
                      ignore_index=True)
    in_crowd = split_tracks(crowd, seed=9).set_index("track_id")
    assert in_crowd.loc[alone["track_id"].iloc[0], "split"] == alone["split"].iloc[0]


def test_two_histories_that_reach_one_collection_hold_the_same_splits() -> None:
    everything = synthetic_tracks({"rock": 120, "jazz": 80, "pop": 50}, artists_per_genre=30)
    at_once = split_tracks(everything, seed=4)
    history = None
    for part in (everything.iloc[100:], everything.iloc[:40], everything.iloc[40:100]):  # three additions
        seen = [] if history is None else list(history["track_id"])
        source = pd.concat([everything[everything["track_id"].isin(seen)], part], ignore_index=True)
        history = split_tracks(source, seed=4, previous=history)
    assert history is not None
    pd.testing.assert_series_equal(history.set_index("track_id")["split"].sort_index(),
                                   at_once.set_index("track_id")["split"].sort_index())


def test_a_new_track_joins_the_split_of_its_artist() -> None:
    first = split_tracks(synthetic_tracks({"rock": 40}), seed=0)
    first.loc[0, ["split", "artist"]] = ["test", "Ann"]  # e.g. given by a CSV split column back then
    newcomer = pd.DataFrame([{"track_id": "late", "path": "/m/late.mp3", "genre": "rock", "split": None,
                              "artist": "Ann"}])
    table = split_tracks(pd.concat([first.assign(split=None), newcomer], ignore_index=True), seed=0,
                         previous=first)
    assert table.set_index("track_id").loc["late", "split"] == "test"


def test_the_sources_split_wins_over_the_stored_one() -> None:
    first = split_tracks(synthetic_tracks({"rock": 50}), seed=0)
    relabelled = first.assign(split=["val"] * len(first))
    table = split_tracks(relabelled, seed=0, previous=first)
    assert set(table["split"]) == {"val"}


def test_official_split_is_kept(fma_root: Path) -> None:
    tracks = FmaSource(fma_root).read()
    table = split_tracks(tracks, seed=99)
    pd.testing.assert_series_equal(table["split"], tracks["split"], check_dtype=False)


def test_partial_split_fills_the_rest_and_artists_follow_their_split() -> None:
    tracks = synthetic_tracks({"rock": 40}, artists_per_genre=None)
    tracks.loc[0, ["split", "artist"]] = ["test", "Ann"]
    tracks.loc[1, ["artist"]] = ["Ann"]  # unsplit, but Ann is already in test
    tracks.loc[2, ["split"]] = ["val"]
    table = split_tracks(tracks, seed=0)
    assert table.loc[0, "split"] == "test"
    assert table.loc[1, "split"] == "test"
    assert table.loc[2, "split"] == "val"
    assert table["split"].notna().all()
    assert_no_leakage(table)


def test_split_rejects_bad_input() -> None:
    tracks = synthetic_tracks({"rock": 10})
    with pytest.raises(IngestError, match="must leave tracks for training"):
        split_tracks(tracks, val_fraction=0.5, test_fraction=0.5)
    bad = tracks.assign(split="holdout")
    with pytest.raises(IngestError, match="unknown split value"):
        split_tracks(bad)
    with pytest.raises(IngestError, match="no tracks to split"):
        split_tracks(tracks.iloc[:0])


# --------------------------------------------------------------------------- assign_shards


def test_shards_are_single_split_sized_and_named() -> None:
    tracks = split_tracks(synthetic_tracks({"rock": 100, "jazz": 30}), seed=1)
    table = assign_shards(tracks, shard_size=20)
    assert (table.groupby("shard")["split"].nunique() == 1).all()
    for split, group in table.groupby("split"):
        n = len(group)
        sizes = group["shard"].value_counts()
        assert len(sizes) == math.ceil(n / 20)
        assert sizes.max() <= 20
        assert sizes.max() - sizes.min() <= 1
        assert sorted(sizes.index) == [f"{split}-{i:04d}" for i in range(len(sizes))]
        assert (group["shard"].str.startswith(f"{split}-")).all()


def test_shards_chunk_tracks_in_id_order_with_balanced_sizes() -> None:
    tracks = pd.DataFrame({
        "track_id": [f"t{i:02d}" for i in range(23)][::-1],
        "split": ["train"] * 23,
    })
    table = assign_shards(tracks, shard_size=10)
    assert list(table["track_id"]) == sorted(tracks["track_id"])
    assert table["shard"].value_counts().sort_index().to_dict() == {
        "train-0000": 8, "train-0001": 8, "train-0002": 7,
    }


def test_shards_sorted_by_split_then_shard_then_track() -> None:
    tracks = split_tracks(synthetic_tracks({"rock": 40, "jazz": 40}), seed=3)
    table = assign_shards(tracks, shard_size=7)
    order = table["split"].map({"train": 0, "val": 1, "test": 2})
    keys = list(zip(order, table["shard"], table["track_id"], strict=True))
    assert keys == sorted(keys)
    assert table["split"].iloc[0] == "train"
    assert table["split"].iloc[-1] == "test"


def test_shards_need_a_split_and_a_positive_size() -> None:
    tracks = synthetic_tracks({"rock": 5})
    with pytest.raises(IngestError, match="needs a split"):
        assign_shards(tracks, 2)
    with pytest.raises(IngestError, match="shard_size must be at least 1"):
        assign_shards(split_tracks(tracks), 0)


# --------------------------------------------------------------------------- stable shards


def members(table: pd.DataFrame) -> dict[str, frozenset[str]]:
    return {shard: frozenset(group["track_id"]) for shard, group in table.groupby("shard")}


def changed_shards(before: pd.DataFrame, after: pd.DataFrame) -> set[str]:
    """Shards that a rebuild must compute: new ones and those whose members changed."""
    old = members(before)
    return {shard for shard, tracks in members(after).items() if old.get(shard) != tracks}


def rebuilt(source: pd.DataFrame, previous: pd.DataFrame | None, shard_size: int = 50) -> pd.DataFrame:
    return assign_shards(split_tracks(source, seed=42, previous=previous), shard_size, previous=previous)


def test_adding_five_percent_recomputes_about_one_shard_per_split() -> None:
    base = synthetic_tracks({genre: 125 for genre in "abcdefgh"})  # 1,000 tracks
    first = rebuilt(base, None)
    grown = rebuilt(pd.concat([base, synthetic_tracks({genre: 6 for genre in "abcdefgh"} | {"a": 8}, prefix="new")],
                              ignore_index=True), first)
    assert len(grown) == 1050 and len(members(first)) >= 20
    changed = changed_shards(first, grown)
    assert len(changed) <= 3, changed
    assert all(old == members(grown)[shard] for shard, old in members(first).items())  # no old shard moved
    assert grown.set_index("track_id").loc[first["track_id"], "shard"].tolist() == first["shard"].tolist()


def test_removing_tracks_recomputes_only_the_shards_that_lose_them() -> None:
    base = synthetic_tracks({genre: 100 for genre in "abcd"})
    first = rebuilt(base, None, shard_size=40)
    victims = list(first[first["shard"] == "train-0002"]["track_id"][:3]) + list(
        first[first["shard"] == "test-0000"]["track_id"][:1])
    shrunk = rebuilt(base[~base["track_id"].isin(victims)], first, shard_size=40)
    assert changed_shards(first, shrunk) == {"train-0002", "test-0000"}
    assert not set(victims) & set(shrunk["track_id"])


def test_small_shards_are_merged_when_there_are_two() -> None:
    base = synthetic_tracks({"rock": 200})
    table = rebuilt(base, None, shard_size=20)
    for batch in range(4):  # four small additions
        extra = synthetic_tracks({"rock": 12}, prefix=f"add{batch}")
        base = pd.concat([base, extra], ignore_index=True)
        table = rebuilt(base, table, shard_size=20)
        sizes = table.groupby(["split", "shard"]).size()
        for split, per_split in sizes.groupby(level=0):
            assert (per_split < 10).sum() <= 1, (split, per_split.to_dict())  # at most one small shard a split
        assert sizes.max() <= 20 and (table.groupby("shard")["split"].nunique() == 1).all()
    assert set(base["track_id"]) == set(table["track_id"])


def test_a_track_moved_to_another_split_leaves_its_shard() -> None:
    base = synthetic_tracks({"rock": 100})
    first = rebuilt(base, None, shard_size=25)
    mover = first[first["split"] == "train"]["track_id"].iloc[0]
    relabelled = first.drop(columns="shard")
    relabelled.loc[relabelled["track_id"] == mover, "split"] = "test"  # the CSV's split column changed
    second = rebuilt(relabelled, first, shard_size=25)
    row = second.set_index("track_id").loc[mover]
    assert row["split"] == "test" and row["shard"].startswith("test-")
    assert changed_shards(first, second) == {first.set_index("track_id").loc[mover, "shard"], row["shard"]}
