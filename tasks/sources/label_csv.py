"""A label CSV: the seed's ``file_name,genre`` (FMA track ids) or a generic ``path,genre[,split][,artist]``.

Named for what it reads, not ``csv.py``, so that it never shadows the standard library's csv module.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from genreflow.tasks.sources.base import (
    REASON_NO_GENRE,
    IngestError,
    Skipped,
    Source,
    fma_audio_path,
    fma_id,
    keep_existing,
    require_dir,
    require_file,
    track_table,
    warn_skipped,
)

CSV_SPLITS: dict[str, str] = {
    "train": "train", "training": "train", "val": "val", "validation": "val", "test": "test",
}
SEED_HEADER: tuple[str, ...] = ("file_name", "genre")
GENERIC_REQUIRED: tuple[str, ...] = ("path", "genre")
GENERIC_OPTIONAL: tuple[str, ...] = ("split", "artist")


def _csv_records(text: str, path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each non-blank record; csv errors become IngestError."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise IngestError(f"file {path}, line {reader.line_num}: unparsable CSV ({exc})") from None
        if record and any(field.strip() for field in record):
            yield start, record
        start = reader.line_num + 1


class CsvSource(Source):
    """A label CSV: the seed's ``file_name,genre`` (FMA ids) or ``path,genre[,split][,artist]``.

    Seed format: ``file_name`` is an integer FMA track id, its audio is
    ``audio_dir/<id6[:3]>/<id6>.mp3``. Generic format: ``path`` is relative to
    the CSV's folder or absolute, and the track id is that path relative to the
    CSV's folder (absolute when outside it), without its extension. Split cells
    may be train/training, val/validation, test or empty (split later).
    """

    name = "csv"

    def __init__(self, csv_path: Path, audio_dir: Path | None = None) -> None:
        super().__init__()
        self.csv_path = Path(csv_path).expanduser().absolute()
        self.audio_dir = None if audio_dir is None else Path(audio_dir).expanduser().absolute()

    def read(self) -> pd.DataFrame:
        self.skipped = []
        path = self.csv_path
        require_file(path, "label CSV")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise IngestError(f"file {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except OSError as exc:
            raise IngestError(f"cannot read file {path}: {exc.strerror or exc}") from None
        records = _csv_records(text, path)
        first = next(records, None)
        if first is None:
            raise IngestError(f"file {path}: empty, expected a header 'file_name,genre' or 'path,genre'")
        header_line, raw_header = first
        header = [name.strip().lower() for name in raw_header]
        if sorted(header) == sorted(SEED_HEADER):
            candidates = self._seed_rows(header, records)
        elif self._generic_header(header):
            candidates = self._generic_rows(header, records)
        else:
            raise IngestError(
                f"file {path}, line {header_line}: header must be 'file_name,genre' or "
                f"'path,genre[,split][,artist]', got {','.join(raw_header)!r}"
            )
        total = len(candidates) + len(self.skipped)
        kept = keep_existing(candidates, self.skipped)
        warn_skipped(self.skipped, total, path)
        if not kept:
            raise IngestError(f"file {path}: no usable tracks ({len(self.skipped)} skipped of {total})")
        return track_table(kept)

    @staticmethod
    def _generic_header(header: list[str]) -> bool:
        known = set(GENERIC_REQUIRED) | set(GENERIC_OPTIONAL)
        return (
            len(set(header)) == len(header)
            and set(GENERIC_REQUIRED) <= set(header)
            and set(header) <= known
        )

    def _fields(
        self, header: list[str], records: Iterator[tuple[int, list[str]]]
    ) -> Iterator[tuple[int, dict[str, str]]]:
        """Each record as {column: stripped cell}, after checking its field count."""
        for line, record in records:
            if len(record) != len(header):
                raise IngestError(
                    f"file {self.csv_path}, line {line}: expected {len(header)} fields "
                    f"({','.join(header)}), got {len(record)}"
                )
            yield line, {name: cell.strip() for name, cell in zip(header, record, strict=True)}

    def _check_unique(self, track_id: str, line: int, seen: dict[str, int]) -> None:
        if track_id in seen:
            raise IngestError(
                f"file {self.csv_path}, line {line}: duplicate track id {track_id!r} "
                f"(first on line {seen[track_id]})"
            )
        seen[track_id] = line

    def _seed_rows(
        self, header: list[str], records: Iterator[tuple[int, list[str]]]
    ) -> list[dict[str, str | None]]:
        if self.audio_dir is None:
            raise IngestError(
                f"file {self.csv_path} lists FMA track ids (file_name,genre): "
                "--audio is needed to say where their mp3 files are"
            )
        require_dir(self.audio_dir, "audio folder")
        rows: list[dict[str, str | None]] = []
        seen: dict[str, int] = {}
        for line, cells in self._fields(header, records):
            value = cells["file_name"]
            if not value.isdigit() or len(value) > 6:
                raise IngestError(
                    f"file {self.csv_path}, line {line}, column file_name: "
                    f"{value!r} is not an FMA track id (an integer)"
                )
            track_id = fma_id(int(value))
            self._check_unique(track_id, line, seen)
            audio = str(fma_audio_path(self.audio_dir, track_id))
            genre = cells["genre"] or None
            if genre is None:
                self.skipped.append(Skipped(track_id, audio, None, REASON_NO_GENRE))
                continue
            rows.append({"track_id": track_id, "path": audio, "genre": genre, "split": None, "artist": None})
        return rows

    def _generic_rows(
        self, header: list[str], records: Iterator[tuple[int, list[str]]]
    ) -> list[dict[str, str | None]]:
        base = self.csv_path.parent
        rows: list[dict[str, str | None]] = []
        seen: dict[str, int] = {}
        for line, cells in self._fields(header, records):
            if not cells["path"]:
                raise IngestError(f"file {self.csv_path}, line {line}, column path: empty")
            audio = Path(os.path.abspath(base / Path(cells["path"]).expanduser()))
            try:
                stem_path = audio.relative_to(base).with_suffix("")
            except ValueError:
                stem_path = audio.with_suffix("")
            track_id = stem_path.as_posix()
            self._check_unique(track_id, line, seen)
            split = self._split_cell(cells.get("split", ""), line)
            genre = cells["genre"] or None
            if genre is None:
                self.skipped.append(Skipped(track_id, str(audio), None, REASON_NO_GENRE))
                continue
            rows.append({
                "track_id": track_id, "path": str(audio), "genre": genre, "split": split,
                "artist": cells.get("artist") or None,
            })
        return rows

    def _split_cell(self, value: str, line: int) -> str | None:
        if not value:
            return None
        split = CSV_SPLITS.get(value.lower())
        if split is None:
            raise IngestError(
                f"file {self.csv_path}, line {line}, column split: {value!r} is not one of "
                "train, training, val, validation, test"
            )
        return split
