"""Predictions that reach a music player or another tool: M3U8 playlists per genre, and a plain CSV.

Plain functions on a predictions table (tasks/predict.py); no Prefect, and
nothing here opens an audio file: a playlist lists paths, the CSV copies the
table's columns.

The genre a file is filed under is the table's decided genre: the ``genre``
column where the model side gives an open-set decision (a genre or
``unknown``), else the top-1 genre (``genre_1``). Failed rows are in no
playlist.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

DECISION_COLUMNS = ("genre", "decision")  # an open-set decision, where the table has one (else genre_1)
UNKNOWN = "unknown"
PLAYLIST_SUFFIX = ".m3u8"
PLAYLIST_INDEX = ".genreflow-playlists.json"  # which playlists genreflow wrote in a folder: the only ones it removes
CSV_TOP = 3  # genres in the CSV's top3 column
_UNSAFE = re.compile(r'[\x00-\x1f<>:"/\\|?*]+')


def decided_genre(table: pd.DataFrame) -> pd.Series:
    """Each row's genre for a player: the open-set decision where there is one, else the top-1; None when failed."""
    column = next((c for c in DECISION_COLUMNS if c in table.columns), "genre_1")
    if column not in table.columns:
        return pd.Series([None] * len(table), index=table.index, dtype=object)
    genres = table[column].astype(object)
    return genres.where((table["error"] == "") & genres.notna(), None)


def csv_table(table: pd.DataFrame) -> pd.DataFrame:
    """The columns other tools import: path, genre, probability (of the top-1), top3 ("Rock:0.912;Pop:0.050;
    ..."), model (the training run) and error ("" when predicted)."""
    genre = decided_genre(table)
    ranks = [k for k in range(1, CSV_TOP + 1) if f"genre_{k}" in table.columns]
    top3 = []
    for _, row in table.iterrows():
        parts = [f"{row[f'genre_{k}']}:{float(row[f'prob_{k}']):.3f}" for k in ranks
                 if isinstance(row[f"genre_{k}"], str)]
        top3.append(";".join(parts))
    probability = table["prob_1"].astype("float64") if "prob_1" in table else pd.Series(np.nan, index=table.index)
    return pd.DataFrame({"path": table["path"], "genre": genre.fillna(""), "probability": probability.round(6),
                         "top3": top3, "model": table["model"], "error": table["error"]}).reset_index(drop=True)


def playlist_name(genre: str) -> str:
    """A file name for a genre's playlist: characters no file system takes become "-" ("Old-Time - Historic")."""
    name = _UNSAFE.sub("-", genre).strip(" .") or "genre"
    return name + PLAYLIST_SUFFIX


@dataclass
class PlaylistReport:
    """What :func:`write_playlists` wrote, and the rows it left out with why."""

    folder: str
    written: dict[str, int] = field(default_factory=dict)  # playlist file name -> entries
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    removed: list[str] = field(default_factory=list)  # playlists of an earlier run whose genre has no file now

    def line(self) -> str:
        made = ", ".join(f"{name.removesuffix(PLAYLIST_SUFFIX)} {n}" for name, n in self.written.items())
        extra = f"; {len(self.skipped)} file(s) in none (see below)" if self.skipped else ""
        return f"playlists in {self.folder}: {made or 'none'}{extra}"


def write_playlists(table: pd.DataFrame, folder: str | os.PathLike[str],
                    real_paths: Mapping[str, str] | None = None) -> PlaylistReport:
    """One M3U8 playlist per genre in ``folder`` (UTF-8, ``#EXTM3U``, paths relative to the playlist file).

    ``real_paths`` maps the table's path (a display form for names that are not
    UTF-8, tasks.library.display_path) to the file's own path. A file that is
    no longer there, or whose name is not UTF-8 (an M3U8 playlist cannot hold
    it), is left out with a reason. Playlists this function wrote before for a
    genre that has no file now are removed; nothing else in the folder is touched.
    """
    target = Path(folder).absolute()
    target.mkdir(parents=True, exist_ok=True)
    report = PlaylistReport(str(target))
    genres = decided_genre(table)
    entries: dict[str, list[str]] = {}
    for (path, duration, error), genre in zip(table[["path", "duration_s", "error"]].itertuples(index=False),
                                              genres, strict=True):
        if error or genre is None:
            continue
        real = (real_paths or {}).get(path, path)
        try:
            real.encode("utf-8")
        except UnicodeEncodeError:
            report.skipped.append((path, "its name is not UTF-8, which an M3U8 playlist cannot hold"))
            continue
        if not os.path.isfile(real):
            report.skipped.append((path, "no longer there"))
            continue
        relative = os.path.relpath(real, target).replace(os.sep, "/")
        seconds = -1 if duration is None or not np.isfinite(duration) else round(float(duration))
        entries.setdefault(playlist_name(str(genre)), []).append(
            f"#EXTINF:{seconds},{Path(real).stem}\n{relative}\n")
    for name, lines in sorted(entries.items()):
        _write_text(target / name, "#EXTM3U\n" + "".join(lines))
        report.written[name] = len(lines)
    index = target / PLAYLIST_INDEX
    try:
        earlier = json.loads(index.read_text()) if index.is_file() else []
    except (OSError, ValueError):
        earlier = []
    for name in earlier:
        if isinstance(name, str) and name not in report.written and name == Path(name).name:
            (target / name).unlink(missing_ok=True)
            report.removed.append(name)
    _write_text(index, json.dumps(sorted(report.written)))
    return report


def _write_text(path: Path, text: str) -> None:
    """Write atomically: a player reading the playlist meanwhile sees the old one or the new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
