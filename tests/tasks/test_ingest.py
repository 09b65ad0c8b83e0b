"""Ingest: each source, each bad-metadata rule, the split and the shards, on tiny fixtures."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
import pytest

from genreflow.storage.root import QUARANTINE_COLUMNS
from genreflow.tasks.ingest import ingest
from genreflow.tasks.sources import (
    TRACK_COLUMNS,
    CsvSource,
    FmaSource,
    FolderSource,
    IngestError,
    Skipped,
    read_source,
)
from genreflow.tasks.split import assign_shards, split_tracks

# --------------------------------------------------------------------------- fixtures

# (id, subset, split, genre_top, artist id); the table FMA's tracks.csv would hold.
FMA_ROWS: list[tuple[int, str, str, str | None, int]] = [
    (2, "small", "training", "Hip-Hop", 1),
    (3, "small", "training", "Hip-Hop", 1),
    (5, "small", "validation", "Hip-Hop", 2),
    (10, "small", "test", "Pop", 3),
    (140, "small", "training", "Folk", 4),
    (1234, "medium", "training", "Rock", 5),
    (5000, "large", "training", "Rock", 6),
    (141, "small", "training", None, 7),  # empty genre_top
    (142, "small", "test", "Folk", 8),  # listed, but its mp3 is missing
]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0")
    return path


def write_fma_tracks(path: Path, rows: list[tuple[int, str, str, str | None, int]], drop: tuple = ()) -> None:
    """tracks.csv in FMA's layout: two header rows, then a 'track_id' index-name row."""
    columns = pd.MultiIndex.from_tuples([
        ("album", "id"),
        ("artist", "id"),
        ("artist", "name"),
        ("set", "split"),
        ("set", "subset"),
        ("track", "genre_top"),
        ("track", "title"),
    ])
    data = [[100 + tid, artist, f"artist {artist}", split, subset, genre, f"song, {tid}"]
            for tid, subset, split, genre, artist in rows]
    index = pd.Index([row[0] for row in rows], name="track_id")
    frame = pd.DataFrame(data, index=index, columns=columns).drop(columns=list(drop))
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path)


@pytest.fixture
def fma_root(tmp_path: Path) -> Path:
    root = tmp_path / "fma"
    write_fma_tracks(root / "fma_metadata" / "tracks.csv", FMA_ROWS)
    for tid, subset, _, _, _ in FMA_ROWS:
        if tid == 142:
            continue
        name = f"{tid:06d}"
        if subset == "small":
            touch(root / "fma_small" / name[:3] / f"{name}.mp3")
        if subset in ("small", "medium"):
            touch(root / "fma_medium" / name[:3] / f"{name}.mp3")
    return root


@pytest.fixture
def seed_csv(tmp_path: Path) -> tuple[Path, Path]:
    audio = tmp_path / "fma_small"
    for tid in (2, 5, 140):
        touch(audio / f"{tid:06d}"[:3] / f"{tid:06d}.mp3")
    csv_path = tmp_path / "music_analysis.csv"
    csv_path.write_text("file_name,genre\n2,Hip-Hop\n5,Hip-Hop\n140,Folk\n")
    return csv_path, audio


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def synthetic_tracks(
    genres: dict[str, int], artists_per_genre: int | None = None, prefix: str = "t"
) -> pd.DataFrame:
    """A source table: ``genres`` maps genre -> track count; artists shared round-robin."""
    rows = []
    for genre, count in genres.items():
        for i in range(count):
            artist = None if artists_per_genre is None else f"{genre}-a{i % artists_per_genre}"
            rows.append({"track_id": f"{prefix}-{genre}-{i:04d}", "path": f"/music/{genre}/{i}.mp3",
                         "genre": genre, "split": None, "artist": artist})
    return pd.DataFrame(rows, columns=["track_id", "path", "genre", "split", "artist"])


def assert_no_leakage(table: pd.DataFrame) -> None:
    """No track and no known artist in two splits."""
    assert table["track_id"].is_unique
    known = table[table["artist"].notna()]
    per_artist = known.groupby("artist")["split"].nunique()
    assert (per_artist <= 1).all(), per_artist[per_artist > 1]


# --------------------------------------------------------------------------- FmaSource


def test_fma_small_reads_tracks_paths_split_and_artist(fma_root: Path) -> None:
    source = FmaSource(fma_root, subset="small")
    table = source.read()
    assert list(table.columns) == ["track_id", "path", "genre", "split", "artist"]
    assert list(table["track_id"]) == ["000002", "000003", "000005", "000010", "000140"]
    row = table.set_index("track_id").loc["000140"]
    assert row["path"] == str((fma_root / "fma_small" / "000" / "000140.mp3").absolute())
    assert row["genre"] == "Folk"
    assert row["artist"] == "4"
    assert dict(zip(table["track_id"], table["split"], strict=True)) == {
        "000002": "train", "000003": "train", "000005": "val", "000010": "test", "000140": "train",
    }
    assert source.name == "fma"


def test_fma_medium_includes_small(fma_root: Path) -> None:
    table = FmaSource(fma_root, subset="medium").read()
    assert list(table["track_id"]) == ["000002", "000003", "000005", "000010", "000140", "001234"]
    assert table["path"].str.contains("/fma_medium/").all()
    assert table.set_index("track_id").loc["001234", "path"].endswith("fma_medium/001/001234.mp3")


def test_fma_skips_empty_genre_and_missing_audio_with_warnings(
    fma_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = FmaSource(fma_root)
    with caplog.at_level(logging.WARNING, logger="genreflow.tasks.sources"):
        table = source.read()
    assert "000141" not in set(table["track_id"])
    assert "000142" not in set(table["track_id"])
    reasons = {item.track_id: item.reason for item in source.skipped}
    assert reasons == {"000141": "no genre", "000142": "audio file missing"}
    assert all(isinstance(item, Skipped) for item in source.skipped)
    text = caplog.text
    assert "skipped 1 of 7 tracks (no genre)" in text
    assert "skipped 1 of 7 tracks (audio file missing)" in text


def test_fma_missing_column_names_file_and_column(tmp_path: Path) -> None:
    root = tmp_path / "fma"
    tracks = root / "fma_metadata" / "tracks.csv"
    write_fma_tracks(tracks, FMA_ROWS, drop=(("track", "genre_top"),))
    (root / "fma_small").mkdir()
    with pytest.raises(IngestError, match=r"tracks\.csv: missing column track\.genre_top") as err:
        FmaSource(root).read()
    assert str(tracks) in str(err.value)


def test_fma_duplicate_id_names_file_id_and_lines(tmp_path: Path) -> None:
    root = tmp_path / "fma"
    write_fma_tracks(root / "fma_metadata" / "tracks.csv", [*FMA_ROWS[:3], FMA_ROWS[0]])
    (root / "fma_small").mkdir()
    # three header lines, then data from line 4: id 2 is on lines 4 and 7
    with pytest.raises(IngestError, match=r"tracks\.csv: duplicate track id 000002 on lines 4 and 7"):
        FmaSource(root).read()


def test_fma_missing_metadata_or_root_names_path(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"FMA root .*nowhere does not exist"):
        FmaSource(tmp_path / "nowhere").read()
    (tmp_path / "fma").mkdir()
    with pytest.raises(IngestError, match=r"fma_metadata/tracks\.csv does not exist"):
        FmaSource(tmp_path / "fma").read()


def test_fma_without_usable_tracks_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "fma"
    write_fma_tracks(root / "fma_metadata" / "tracks.csv", FMA_ROWS)
    (root / "fma_small").mkdir()  # no audio at all
    with pytest.raises(IngestError, match="no usable tracks in FMA subset small"):
        FmaSource(root).read()


def test_fma_rejects_unknown_subset(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="small or medium"):
        FmaSource(tmp_path, subset="large")


def test_fma_unknown_split_value_names_line_and_column(tmp_path: Path) -> None:
    root = tmp_path / "fma"
    write_fma_tracks(root / "fma_metadata" / "tracks.csv", [FMA_ROWS[0], (3, "small", "holdout", "Pop", 1)])
    touch(root / "fma_small" / "000" / "000002.mp3")
    with pytest.raises(IngestError, match=r"line 5, column set\.split: 'holdout'"):
        FmaSource(root).read()


# --------------------------------------------------------------------------- CsvSource


def test_seed_csv_resolves_fma_ids_under_audio(seed_csv: tuple[Path, Path]) -> None:
    csv_path, audio = seed_csv
    table = CsvSource(csv_path, audio).read()
    assert list(table["track_id"]) == ["000002", "000005", "000140"]
    assert list(table["path"]) == [str(audio / "000" / f"{tid}.mp3") for tid in table["track_id"]]
    assert list(table["genre"]) == ["Hip-Hop", "Hip-Hop", "Folk"]
    assert table["split"].isna().all()
    assert table["artist"].isna().all()


def test_seed_csv_without_audio_says_audio_is_needed(seed_csv: tuple[Path, Path]) -> None:
    with pytest.raises(IngestError, match="--audio is needed"):
        CsvSource(seed_csv[0], None).read()


def test_seed_csv_bad_id_names_file_line_and_column(seed_csv: tuple[Path, Path]) -> None:
    csv_path, audio = seed_csv
    write_text(csv_path, "file_name,genre\n2,Hip-Hop\n\nabc,Rock\n")
    with pytest.raises(IngestError, match=r"music_analysis\.csv, line 4, column file_name: 'abc'"):
        CsvSource(csv_path, audio).read()


def test_seed_csv_duplicate_id_is_an_error(seed_csv: tuple[Path, Path]) -> None:
    csv_path, audio = seed_csv
    write_text(csv_path, "file_name,genre\n2,Hip-Hop\n5,Hip-Hop\n002,Rock\n")
    with pytest.raises(IngestError, match=r"line 4: duplicate track id '000002' \(first on line 2\)"):
        CsvSource(csv_path, audio).read()


def test_seed_csv_skips_missing_files_and_empty_genres(
    seed_csv: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    csv_path, audio = seed_csv
    write_text(csv_path, "file_name,genre\n2,Hip-Hop\n5,\n99,Rock\n140,Folk\n")
    source = CsvSource(csv_path, audio)
    with caplog.at_level(logging.WARNING, logger="genreflow.tasks.sources"):
        table = source.read()
    assert list(table["track_id"]) == ["000002", "000140"]
    assert sorted(source.skipped) == [
        Skipped("000005", str(audio / "000" / "000005.mp3"), None, "no genre"),
        Skipped("000099", str(audio / "000" / "000099.mp3"), "Rock", "audio file missing"),
    ]
    assert "skipped 1 of 4 tracks (audio file missing)" in caplog.text


def test_generic_csv_relative_absolute_split_and_artist(tmp_path: Path) -> None:
    touch(tmp_path / "lib" / "rock" / "a.mp3")
    touch(tmp_path / "lib" / "jazz" / "b.flac")
    outside = touch(tmp_path / "elsewhere" / "c.wav")
    csv_path = write_text(
        tmp_path / "lib" / "labels.csv",
        "path,genre,split,artist\n"
        "rock/a.mp3,Rock,training,Ann\n"
        "./jazz/b.flac, Jazz ,validation,\n"
        f"{outside},Rock,,Bob\n",
    )
    table = CsvSource(csv_path, None).read().set_index("track_id")
    assert list(table.index) == [str(outside.with_suffix("").as_posix()), "jazz/b", "rock/a"]
    assert table.loc["rock/a", "path"] == str(tmp_path / "lib" / "rock" / "a.mp3")
    assert table.loc["jazz/b", "genre"] == "Jazz"
    assert table.loc["rock/a", "split"] == "train"
    assert table.loc["jazz/b", "split"] == "val"
    assert pd.isna(table.loc[str(outside.with_suffix("").as_posix()), "split"])
    assert table.loc["rock/a", "artist"] == "Ann"
    assert pd.isna(table.loc["jazz/b", "artist"])


def test_generic_csv_minimal_header_in_any_order(tmp_path: Path) -> None:
    touch(tmp_path / "x.ogg")
    csv_path = write_text(tmp_path / "labels.csv", "Genre,Path\nAmbient,x.ogg\n")
    table = CsvSource(csv_path, None).read()
    assert list(table["track_id"]) == ["x"]
    assert list(table["genre"]) == ["Ambient"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,label\nx.mp3,Rock\n", r"labels\.csv, line 1: header must be"),
        ("path,genre\nx.mp3,Rock,extra\n", r"labels\.csv, line 2: expected 2 fields \(path,genre\), got 3"),
        ("path,genre,split\nx.mp3,Rock,holdout\n", r"labels\.csv, line 2, column split: 'holdout'"),
        ("path,genre\n,Rock\n", r"labels\.csv, line 2, column path: empty"),
        ('path,genre\n"x.mp3"junk,Rock\n', r"labels\.csv, line 2: unparsable CSV"),
        ("path,genre\nx.mp3,Rock\n./x.mp3,Pop\n", r"line 3: duplicate track id 'x' \(first on line 2\)"),
        ("", r"labels\.csv: empty"),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    touch(tmp_path / "x.mp3")
    csv_path = write_text(tmp_path / "labels.csv", text)
    with pytest.raises(IngestError, match=message):
        CsvSource(csv_path, None).read()


def test_missing_csv_names_path(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"label CSV .*absent\.csv does not exist"):
        CsvSource(tmp_path / "absent.csv", None).read()


def test_csv_without_usable_tracks_is_an_error(tmp_path: Path) -> None:
    csv_path = write_text(tmp_path / "labels.csv", "path,genre\ngone.mp3,Rock\n")
    with pytest.raises(IngestError, match=r"labels\.csv: no usable tracks \(1 skipped of 1\)"):
        CsvSource(csv_path, None).read()


# --------------------------------------------------------------------------- FolderSource


def test_folder_source_recursive_case_insensitive_hidden_ignored(tmp_path: Path) -> None:
    root = tmp_path / "collection"
    touch(root / "rock" / "a.mp3")
    touch(root / "rock" / "live" / "b.WAV")
    touch(root / "jazz" / "c.Flac")
    touch(root / "jazz" / "d.au")
    touch(root / "jazz" / "e.ogg")
    touch(root / "jazz" / "notes.txt")
    touch(root / "jazz" / ".hidden.mp3")
    touch(root / "jazz" / ".cache" / "f.mp3")
    touch(root / ".trash" / "g.mp3")
    touch(root / "loose.mp3")
    table = FolderSource(root).read()
    assert list(table["track_id"]) == ["jazz/c", "jazz/d", "jazz/e", "rock/a", "rock/live/b"]
    assert list(table["genre"]) == ["jazz", "jazz", "jazz", "rock", "rock"]
    assert table.set_index("track_id").loc["rock/live/b", "path"] == str(root / "rock" / "live" / "b.WAV")
    assert table["artist"].isna().all()
    assert table["split"].isna().all()


def test_folder_source_duplicate_stem_is_an_error(tmp_path: Path) -> None:
    touch(tmp_path / "rock" / "a.mp3")
    touch(tmp_path / "rock" / "a.wav")
    with pytest.raises(IngestError, match=r"duplicate track id 'rock/a' from files a\.mp3 and a\.wav"):
        FolderSource(tmp_path).read()


def test_folder_source_empty_genre_warns_and_empty_source_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    touch(tmp_path / "rock" / "a.mp3")
    (tmp_path / "jazz").mkdir()
    with caplog.at_level(logging.WARNING, logger="genreflow.tasks.sources"):
        table = FolderSource(tmp_path).read()
    assert list(table["genre"]) == ["rock"]
    assert "genre folder 'jazz' holds no audio files" in caplog.text
    with pytest.raises(IngestError, match=r"folder .*jazz: no audio files"):
        FolderSource(tmp_path / "jazz").read()


def test_folder_source_broken_link_is_skipped(tmp_path: Path) -> None:
    touch(tmp_path / "rock" / "a.mp3")
    (tmp_path / "rock" / "b.mp3").symlink_to(tmp_path / "gone.mp3")
    source = FolderSource(tmp_path)
    assert list(source.read()["track_id"]) == ["rock/a"]
    assert [(s.track_id, s.reason) for s in source.skipped] == [("rock/b", "audio file missing")]


def test_folder_source_missing_root_names_path(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"collection folder .*missing does not exist"):
        FolderSource(tmp_path / "missing").read()
    file_path = touch(tmp_path / "file.mp3")
    with pytest.raises(IngestError, match="is not a folder"):
        FolderSource(file_path).read()


# --------------------------------------------------------------------------- read_source


def test_read_source_factory(tmp_path: Path) -> None:
    assert isinstance(read_source("fma", tmp_path, None, "medium"), FmaSource)
    assert read_source("fma", tmp_path, None, "medium").subset == "medium"
    csv_source = read_source("csv", tmp_path / "a.csv", tmp_path, "small")
    assert isinstance(csv_source, CsvSource)
    assert csv_source.audio_dir == tmp_path
    assert read_source("folder", tmp_path, None, "small").name == "folder"
    demo = read_source("demo", tmp_path, None, "small")
    assert isinstance(demo, FolderSource)
    assert demo.name == "demo"
    with pytest.raises(IngestError, match="unknown source 'mp3'"):
        read_source("mp3", tmp_path, None, "small")
    with pytest.raises(IngestError, match="--input is needed for source folder"):
        read_source("folder", None, None, "small")


# --------------------------------------------------------------------------- split_tracks


def test_split_proportions_per_genre() -> None:
    tracks = synthetic_tracks({"rock": 100, "jazz": 50, "pop": 30})
    table = split_tracks(tracks, val_fraction=0.1, test_fraction=0.1, seed=7)
    counts = table.groupby(["genre", "split"]).size().unstack(fill_value=0)
    assert counts.loc["rock"].to_dict() == {"test": 10, "train": 80, "val": 10}
    assert counts.loc["jazz"].to_dict() == {"test": 5, "train": 40, "val": 5}
    assert counts.loc["pop"].to_dict() == {"test": 3, "train": 24, "val": 3}


def test_split_fractions_are_honoured() -> None:
    table = split_tracks(synthetic_tracks({"rock": 100}), val_fraction=0.2, test_fraction=0.15, seed=1)
    assert table["split"].value_counts().to_dict() == {"train": 65, "val": 20, "test": 15}


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
    tracks = synthetic_tracks({"rock": 90, "jazz": 45}, artists_per_genre=15)
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


def test_small_genre_gets_one_track_in_each_split() -> None:
    tracks = synthetic_tracks({"rock": 50, "tiny": 3, "four": 4})
    table = split_tracks(tracks, seed=42)
    for genre in ("tiny", "four"):
        counts = table[table["genre"] == genre]["split"].value_counts()
        assert counts["val"] == 1
        assert counts["test"] == 1
        assert counts["train"] == len(table[table["genre"] == genre]) - 2


def test_genre_with_two_tracks_keeps_them_for_training(caplog: pytest.LogCaptureFixture) -> None:
    tracks = synthetic_tracks({"rock": 20, "duo": 2})
    with caplog.at_level(logging.WARNING, logger="genreflow.tasks.split"):
        table = split_tracks(tracks)
    assert set(table[table["genre"] == "duo"]["split"]) == {"train"}
    assert "'duo' has only 2 artist group(s)" in caplog.text


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


# --------------------------------------------------------------------------- ingest


def test_ingest_folder_end_to_end(tmp_path: Path) -> None:
    for genre in ("rock", "jazz", "pop"):
        for i in range(10):
            touch(tmp_path / genre / f"song{i:02d}.wav")
    tracks, skipped = ingest(FolderSource(tmp_path), 0.1, 0.1, 42, shard_size=4)
    assert list(tracks.columns) == list(TRACK_COLUMNS)
    assert list(skipped.columns) == list(QUARANTINE_COLUMNS)
    assert skipped.empty
    assert len(tracks) == 30
    assert tracks["split"].value_counts().to_dict() == {"train": 24, "val": 3, "test": 3}
    assert list(tracks["shard"].unique()) == [
        "train-0000", "train-0001", "train-0002", "train-0003", "train-0004", "train-0005",
        "val-0000", "test-0000",
    ]
    assert tracks["path"].map(lambda p: Path(p).is_absolute() and Path(p).is_file()).all()


def test_ingest_fma_keeps_official_split_and_reports_skipped(fma_root: Path) -> None:
    tracks, skipped = ingest(FmaSource(fma_root), 0.1, 0.1, 42, shard_size=2)
    assert list(tracks["track_id"]) == ["000002", "000003", "000140", "000005", "000010"]
    assert list(tracks["shard"]) == ["train-0000", "train-0000", "train-0001", "val-0000", "test-0000"]
    assert list(skipped.columns) == ["track_id", "path", "genre", "reason"]
    assert set(skipped["reason"]) == {"no genre", "audio file missing"}


def test_ingest_has_no_leakage_between_splits(tmp_path: Path) -> None:
    lines = ["path,genre,artist"]
    for genre in ("rock", "jazz", "folk"):
        for i in range(40):
            touch(tmp_path / genre / f"{i:02d}.mp3")
            lines.append(f"{genre}/{i:02d}.mp3,{genre},{genre}-artist{i % 11}")
    csv_path = write_text(tmp_path / "labels.csv", "\n".join(lines) + "\n")
    tracks, _ = ingest(CsvSource(csv_path, None), 0.1, 0.1, 42, shard_size=16)
    assert_no_leakage(tracks)
    assert set(tracks["split"]) == {"train", "val", "test"}
    splits_per_track = tracks.groupby("track_id")["split"].nunique()
    assert (splits_per_track == 1).all()
    assert (tracks.groupby("shard")["split"].nunique() == 1).all()
