"""FMA's own layout: ``fma_metadata/tracks.csv`` and the ``fma_<subset>/`` audio, with FMA's split."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import numpy as np
import pandas as pd

from genreflow.tasks.sources.base import (
    REASON_NO_GENRE,
    IngestError,
    Skipped,
    Source,
    clean_cell,
    fma_audio_path,
    fma_id,
    is_blank,
    keep_existing,
    require_dir,
    require_file,
    track_table,
    warn_skipped,
)

FMA_SUBSETS: tuple[str, ...] = ("small", "medium", "large")  # nested: small ⊂ medium ⊂ large
FMA_SPLITS: dict[str, str] = {"training": "train", "validation": "val", "test": "test"}
FMA_COLUMNS: dict[str, tuple[str, str]] = {
    "subset": ("set", "subset"),
    "split": ("set", "split"),
    "genre": ("track", "genre_top"),
    "artist": ("artist", "id"),
}


def _artist_str(value: object) -> str | None:
    """An artist id as text; FMA's numeric ids become "123", not "123.0"."""
    if is_blank(value):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value).strip()


class FmaSource(Source):
    """FMA: ``root/fma_metadata/tracks.csv`` plus audio under ``root/fma_<subset>/``.

    Keeps tracks of ``subset`` or a smaller one (subsets are nested), with FMA's
    official split, which is already filtered so that no artist spans two splits.
    """

    name = "fma"

    def __init__(self, root: Path, subset: str = "small") -> None:
        super().__init__()
        if subset not in ("small", "medium"):
            raise IngestError(f"FMA subset must be small or medium, not {subset!r}")
        self.root = Path(root).expanduser().absolute()
        self.subset = subset

    @property
    def metadata_path(self) -> Path:
        return self.root / "fma_metadata" / "tracks.csv"

    @property
    def audio_dir(self) -> Path:
        return self.root / f"fma_{self.subset}"

    def read(self) -> pd.DataFrame:
        self.skipped = []
        require_dir(self.root, "FMA root")
        path = self.metadata_path
        require_file(path, "FMA metadata")
        require_dir(self.audio_dir, f"FMA {self.subset} audio folder")
        meta = self._load(path)

        allowed = set(FMA_SUBSETS[: FMA_SUBSETS.index(self.subset) + 1])
        subset = meta[FMA_COLUMNS["subset"]].map(clean_cell)
        meta = meta[subset.isin(allowed)]

        candidates: list[dict[str, str | None]] = []
        audio_dir = self.audio_dir  # once, not a Path built per track
        for raw_id, genre_value, split_value, artist_value in zip(
            meta.index,
            meta[FMA_COLUMNS["genre"]],
            meta[FMA_COLUMNS["split"]],
            meta[FMA_COLUMNS["artist"]],
            strict=True,
        ):
            track_id = fma_id(int(raw_id))
            audio = str(fma_audio_path(audio_dir, track_id))
            genre = clean_cell(genre_value)
            if genre is None:
                self.skipped.append(Skipped(track_id, audio, None, REASON_NO_GENRE))
                continue
            split_text = clean_cell(split_value)
            split = None
            if split_text is not None:
                split = FMA_SPLITS.get(split_text.lower())
                if split is None:
                    line = _csv_lines_of(path, str(raw_id))
                    raise IngestError(
                        f"file {path}, line {line[0] if line else '?'}, column set.split: "
                        f"{split_text!r} is not one of {', '.join(FMA_SPLITS)}"
                    )
            candidates.append(
                {"track_id": track_id, "path": audio, "genre": genre, "split": split,
                 "artist": _artist_str(artist_value)}
            )
        kept = keep_existing(candidates, self.skipped)
        warn_skipped(self.skipped, len(meta), path)
        if not kept:
            raise IngestError(
                f"file {path}: no usable tracks in FMA subset {self.subset} "
                f"({len(self.skipped)} skipped; is the audio under {self.audio_dir}?)"
            )
        return track_table(kept)

    def _load(self, path: Path) -> pd.DataFrame:
        """Read tracks.csv (two header rows) and check its ids and needed columns."""
        try:
            meta = pd.read_csv(path, header=[0, 1], index_col=0, low_memory=False)
        except (OSError, UnicodeDecodeError) as exc:
            raise IngestError(f"cannot read file {path}: {exc}") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, IndexError) as exc:
            first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise IngestError(f"file {path}: not FMA's tracks.csv layout ({first_line})") from None
        if not isinstance(meta.columns, pd.MultiIndex):
            raise IngestError(f"file {path}: expected two header rows (FMA's tracks.csv layout)")
        for key in FMA_COLUMNS.values():
            if key not in meta.columns:
                raise IngestError(f"file {path}: missing column {key[0]}.{key[1]}")
        ids = pd.to_numeric(pd.Series(meta.index, dtype=object), errors="coerce")
        bad = ids.isna() | (ids < 0) | (ids != ids.round()) | (ids > 999_999)
        if bad.any():
            value = str(meta.index[int(np.flatnonzero(bad.to_numpy())[0])])
            lines = _csv_lines_of(path, value)
            raise IngestError(
                f"file {path}, line {lines[0] if lines else '?'}, column track_id: "
                f"{value!r} is not an FMA track id"
            )
        meta.index = ids.astype("int64").to_numpy()
        duplicated = meta.index.duplicated()
        if duplicated.any():
            value = int(meta.index[int(np.flatnonzero(duplicated)[0])])
            lines = _csv_lines_of(path, str(value))
            where = f"lines {lines[0]} and {lines[1]}" if len(lines) >= 2 else "two rows"
            raise IngestError(f"file {path}: duplicate track id {fma_id(value)} on {where}")
        return meta


def _id_text(value: str) -> str:
    """An id cell as compared in errors: "002" and "2.0" both read as "2"."""
    text = value.strip()
    with contextlib.suppress(ValueError, OverflowError):
        return str(int(float(text)))
    return text


def _csv_lines_of(path: Path, first_field: str) -> list[int]:
    """Physical line numbers of the records whose first field is ``first_field``.

    Only used to word an error, so the second pass over the file costs nothing
    on the normal path; csv's line count stays right across quoted newlines.
    """
    wanted = _id_text(first_field)
    lines = []
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        start = 1
        for record in reader:
            if record and _id_text(record[0]) == wanted:
                lines.append(start)
            start = reader.line_num + 1
    return lines
