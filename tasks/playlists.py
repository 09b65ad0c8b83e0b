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

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genreflow.model.open_set import UNKNOWN, OpenSetRule, decide  # noqa: F401  (UNKNOWN: this module's name for it)

DECISION_COLUMNS = ("genre", "decision")  # an open-set decision, where the table has one (else genre_1)
PLAYLIST_SUFFIX = ".m3u8"
PLAYLIST_INDEX = ".genreflow-playlists.json"  # which playlists genreflow wrote in a folder: the only ones it removes
CSV_TOP = 3  # genres in the CSV's top3 column
_UNSAFE = re.compile(r'[\x00-\x1f<>:"/\\|?*]+')
NAME_MAX_BYTES = 255  # a file name's limit on ext4, XFS, Btrfs and NTFS (255 UTF-16 units there)


def decided_genre(table: pd.DataFrame) -> pd.Series:
    """Each row's genre for a player: the open-set decision where there is one, else the top-1; None when failed."""
    column = next((c for c in DECISION_COLUMNS if c in table.columns), "genre_1")
    if column not in table.columns:
        return pd.Series([None] * len(table), index=table.index, dtype=object)
    genres = table[column].astype(object)
    return genres.where((table["error"] == "") & genres.notna(), None)


def with_decision(table: pd.DataFrame, rule: OpenSetRule) -> pd.DataFrame:
    """The table with its ``genre`` column after ``n_windows``: each file's top genre, or ``unknown`` where
    ``rule`` says so from its top probability and novelty (model/open_set.py); None for a failed file. Made when
    the table is written, not in the buckets, so that another ``--min-confidence`` or ``--max-novelty``
    predicts nothing again."""
    out = table.drop(columns=["genre"], errors="ignore")
    top = out["genre_1"] if "genre_1" in out else pd.Series([None] * len(out), index=out.index, dtype=object)
    probs = out["prob_1"] if "prob_1" in out else pd.Series(np.nan, index=out.index)
    novelty = out["novelty"] if "novelty" in out else pd.Series(np.nan, index=out.index)
    genre = decide([g if isinstance(g, str) and e == "" else None for g, e in zip(top, out["error"], strict=True)],
                   probs.tolist(), rule, novelty.astype("float64").tolist())
    out.insert(list(out.columns).index("n_windows") + 1, "genre", pd.Series(genre, index=out.index, dtype=object))
    return out


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
    room = NAME_MAX_BYTES - len(PLAYLIST_SUFFIX.encode())
    if len(name.encode("utf-8")) > room:  # a genre folder named near the limit: cut it, and keep it unique
        digest = hashlib.blake2b(genre.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
        cut = name.encode("utf-8")[: room - len(digest) - 1].decode("utf-8", "ignore")
        name = f"{cut}-{digest}"
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
    UTF-8, storage.files.display_path) to the file's own path. A file that is
    no longer there, or whose name is not UTF-8 or holds a line break (an M3U8
    playlist cannot hold either), is left out with a reason. Playlists this function wrote before for a
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
        if "\n" in real or "\r" in real:
            report.skipped.append((path, "its name holds a line break, which an M3U8 playlist line cannot hold"))
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
    # Named by a hash: the playlist's own name may already be near the 255-byte limit.
    tmp = path.with_name(f".{hashlib.blake2b(path.name.encode(), digest_size=8).hexdigest()}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
