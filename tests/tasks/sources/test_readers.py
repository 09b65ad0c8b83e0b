"""Sources: each one, and each bad-metadata rule, on tiny fixtures."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from genreflow.tasks.sources import IngestError, Skipped
from genreflow.tasks.sources.factory import read_source
from genreflow.tasks.sources.fma import FmaSource
from genreflow.tasks.sources.folder import FolderSource
from genreflow.tasks.sources.label_csv import CsvSource
from tests.tasks.collection_files import FMA_ROWS, touch, write_fma_tracks, write_text

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


def test_demo_source_brings_its_own_stable_split(tmp_path: Path) -> None:
    from genreflow.tasks.sources.demo import DemoSource, demo_split
    from genreflow.tasks.sources.demo_synth import DEMO_GENRES

    for genre in DEMO_GENRES:
        for i in range(10):
            touch(tmp_path / genre / f"{genre.lower()}-{i:04d}.mp3")
    source = DemoSource(tmp_path, tracks_per_genre=10)
    assert not source.needs_writing()  # complete: nothing is generated
    table = source.read()
    per_genre = table.groupby("genre")["split"].value_counts().unstack(fill_value=0)
    assert (per_genre["test"] == 1).all() and (per_genre["val"] == 1).all() and (per_genre["train"] == 8).all()
    assert [demo_split(f"Rock/rock-{i:04d}") for i in (8, 9, 19, 20)] == ["val", "test", "test", "train"]
    assert demo_split("Rock/my own song") is None  # a file the user added: split by hash
    assert DemoSource(tmp_path, tracks_per_genre=11).needs_writing()  # asks for more than is there
