"""tasks/playlists.py: M3U8 playlists per genre and the CSV, from tables made here; no audio is opened."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from genreflow.tasks.playlists import PLAYLIST_INDEX, csv_table, decided_genre, playlist_name, write_playlists


def _table(paths: list[Path], genres: list[str | None], errors: list[str], **extra: list) -> pd.DataFrame:
    probs = [0.9 if g else np.nan for g in genres]
    return pd.DataFrame({"path": [str(p) for p in paths], "duration_s": [30.2, 241.0, np.nan, 12.0][: len(paths)],
                         "n_windows": 1, "genre_1": genres, "prob_1": np.array(probs, dtype=np.float32),
                         "genre_2": ["Pop" if g else None for g in genres], "prob_2": np.float32(0.05),
                         "model": "run-x", "error": errors, **extra})


def test_playlists_per_genre_relative_to_the_playlist(tmp_path: Path) -> None:
    music = tmp_path / "Music"
    files = [music / "Rock" / "a.mp3", music / "Old-Time" / "b é.flac", music / "c.mp3", music / "d.mp3"]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not opened")
    table = _table(files, ["Rock", "Old-Time / Historic", None, "Rock"], ["", "", "not decodable audio", ""])
    folder = tmp_path / "lists"
    (folder).mkdir()
    (folder / "mine.m3u8").write_text("#EXTM3U\n")  # the user's own playlist: never touched
    before = {p: p.read_bytes() for p in files}
    report = write_playlists(table, folder)
    assert report.written == {"Old-Time - Historic.m3u8": 1, "Rock.m3u8": 2} and report.skipped == []
    assert (folder / "Rock.m3u8").read_text(encoding="utf-8") == \
        "#EXTM3U\n#EXTINF:30,a\n../Music/Rock/a.mp3\n#EXTINF:12,d\n../Music/d.mp3\n"
    for playlist in folder.glob("*.m3u8"):
        for line in playlist.read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#"):
                assert (playlist.parent / line).is_file() and not os.path.isabs(line)
    assert {p: p.read_bytes() for p in files} == before

    # the next run: a genre with no file left loses its playlist, the user's own stays
    files[1].unlink()
    report = write_playlists(table, folder)
    assert report.written == {"Rock.m3u8": 2} and report.removed == ["Old-Time - Historic.m3u8"]
    assert report.skipped == [(str(files[1]), "no longer there")]
    assert sorted(p.name for p in folder.iterdir()) == [PLAYLIST_INDEX, "Rock.m3u8", "mine.m3u8"]


def test_an_open_set_decision_files_unknown_apart(tmp_path: Path) -> None:
    files = [tmp_path / f"{i}.mp3" for i in range(3)]
    for path in files:
        path.write_bytes(b"x")
    table = _table(files, ["Rock", "Jazz", "Pop"], ["", "", ""], genre=["Rock", "unknown", "Pop"])
    assert decided_genre(table).tolist() == ["Rock", "unknown", "Pop"]
    assert sorted(write_playlists(table, tmp_path / "lists").written) == ["Pop.m3u8", "Rock.m3u8", "unknown.m3u8"]


def test_the_csv_columns_for_other_tools(tmp_path: Path) -> None:
    files = [tmp_path / "a.mp3", tmp_path / "b.mp3"]
    table = _table(files, ["Rock", None], ["", "empty file (0 bytes)"])
    frame = csv_table(table)
    assert list(frame.columns) == ["path", "genre", "probability", "top3", "model", "error"]
    assert frame.iloc[0].tolist() == [str(files[0]), "Rock", 0.9, "Rock:0.900;Pop:0.050", "run-x", ""]
    assert (frame.iloc[1]["genre"], frame.iloc[1]["top3"]) == ("", "") and np.isnan(frame.iloc[1]["probability"])
    assert playlist_name('AC/DC: "Live"?') == "AC-DC- -Live-.m3u8"
