"""Small labelled collections for the ingest, source and split tests: FMA metadata, CSVs, folders, tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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
