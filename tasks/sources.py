"""Sources: a labelled collection read into one row a track.

Sources (one interface, :class:`Source`):

- ``FmaSource``: FMA's ``fma_metadata/tracks.csv`` and ``fma_<subset>/`` audio,
  with FMA's official, artist-filtered split.
- ``CsvSource``: the seed's ``file_name,genre`` label file (FMA track ids, audio
  under ``--audio``) or a generic ``path,genre[,split][,artist]`` file.
- ``FolderSource``: one sub-folder per genre (also used for the demo set).

Bad metadata rules. Users' collections have holes, so what only loses a track
is skipped; what makes the listing itself untrustworthy is an error:

- A listed audio file that does not exist: skipped, one warning per source with
  the count, and recorded in ``source.skipped`` for the quarantine table.
- A track with an empty or missing genre (FMA's empty ``genre_top``, an empty
  CSV genre cell) or a genre folder without audio files: skipped the same way.
- A duplicated track id: ``IngestError`` naming the file, the id and the lines
  (or, for folders, the two files). The first row is not silently kept, as
  two rows for one id mean the listing is not what its author thinks.
- A malformed CSV (unknown header, a line with the wrong number of fields, a
  track id that is not an integer, an unknown split value): ``IngestError``
  "file X, line N[, column C]: ...".
- A missing or unreadable input file or folder, a missing needed column, or a
  source with zero usable tracks: ``IngestError`` naming the path.

"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from pydantic import Field

from genreflow.model.audio import AUDIO_EXTENSIONS
from genreflow.model.params import Section
from genreflow.storage.errors import GenreflowError

logger = logging.getLogger(__name__)


TRACK_COLUMNS: tuple[str, ...] = ("track_id", "path", "genre", "split", "artist", "shard")
SOURCE_COLUMNS: tuple[str, ...] = ("track_id", "path", "genre", "split", "artist")
FMA_SUBSETS: tuple[str, ...] = ("small", "medium", "large")  # nested: small ⊂ medium ⊂ large
FMA_SPLITS: dict[str, str] = {"training": "train", "validation": "val", "test": "test"}
CSV_SPLITS: dict[str, str] = {
    "train": "train", "training": "train", "val": "val", "validation": "val", "test": "test",
}
FMA_COLUMNS: dict[str, tuple[str, str]] = {
    "subset": ("set", "subset"),
    "split": ("set", "split"),
    "genre": ("track", "genre_top"),
    "artist": ("artist", "id"),
}
SEED_HEADER: tuple[str, ...] = ("file_name", "genre")
GENERIC_REQUIRED: tuple[str, ...] = ("path", "genre")
GENERIC_OPTIONAL: tuple[str, ...] = ("split", "artist")

REASON_MISSING = "audio file missing"
REASON_NO_GENRE = "no genre"


class IngestError(GenreflowError, ValueError):
    """A source that cannot be ingested; the message is one line naming the file (and line)."""


class Skipped(NamedTuple):
    """A listed track left out of the table, kept so the caller can quarantine it."""

    track_id: str
    path: str
    genre: str | None
    reason: str


class Source(ABC):
    """A labelled collection: ``read()`` gives one row a track, ``skipped`` what it left out."""

    name: str = "source"

    def __init__(self) -> None:
        self.skipped: list[Skipped] = []

    @abstractmethod
    def read(self) -> pd.DataFrame:
        """Return columns track_id, path, genre, split (None without one), artist (None if unknown).

        Resets and refills ``self.skipped``. Raises IngestError for bad metadata.
        """


# --------------------------------------------------------------------------- helpers


def _blank(value: object) -> bool:
    """Whether a cell is missing: None, NaN/NA or only whitespace."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _clean(value: object) -> str | None:
    """A cell as a stripped string, or None when missing."""
    return None if _blank(value) else str(value).strip()


def _fma_id(value: int) -> str:
    """FMA's file name stem: the track id zero-padded to 6 digits."""
    return f"{value:06d}"


def _fma_audio_path(audio_dir: Path, track_id: str) -> Path:
    """FMA's layout: ``<audio_dir>/<first 3 digits>/<id6>.mp3``."""
    return audio_dir / track_id[:3] / f"{track_id}.mp3"


def _artist_str(value: object) -> str | None:
    """An artist id as text; FMA's numeric ids become "123", not "123.0"."""
    if _blank(value):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value).strip()


def _require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise IngestError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise IngestError(f"{what} {path} is not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise IngestError(f"{what} {path} is not readable")


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise IngestError(f"{what} {path} does not exist")
    if not path.is_file():
        raise IngestError(f"{what} {path} is not a file")


def _track_table(rows: Iterable[dict[str, str | None]]) -> pd.DataFrame:
    """Rows as a source table with the standard columns, sorted by track_id."""
    table = pd.DataFrame(list(rows), columns=list(SOURCE_COLUMNS))
    return table.sort_values("track_id", kind="stable").reset_index(drop=True)


def _warn_skipped(skipped: list[Skipped], total: int, where: Path) -> None:
    """One warning per reason, with the count and a first example."""
    by_reason: dict[str, list[Skipped]] = defaultdict(list)
    for item in skipped:
        by_reason[item.reason].append(item)
    for reason, items in by_reason.items():
        logger.warning(
            "%s: skipped %d of %d tracks (%s), e.g. %s", where, len(items), total, reason, items[0].path
        )


def _keep_existing(
    candidates: list[dict[str, str | None]], skipped: list[Skipped]
) -> list[dict[str, str | None]]:
    """Candidates whose audio file exists; the others are added to ``skipped``."""
    kept = []
    for row in candidates:
        if os.path.isfile(str(row["path"])):
            kept.append(row)
        else:
            skipped.append(Skipped(str(row["track_id"]), str(row["path"]), row["genre"], REASON_MISSING))
    return kept


# --------------------------------------------------------------------------- FMA


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
        _require_dir(self.root, "FMA root")
        path = self.metadata_path
        _require_file(path, "FMA metadata")
        _require_dir(self.audio_dir, f"FMA {self.subset} audio folder")
        meta = self._load(path)

        allowed = set(FMA_SUBSETS[: FMA_SUBSETS.index(self.subset) + 1])
        subset = meta[FMA_COLUMNS["subset"]].map(_clean)
        meta = meta[subset.isin(allowed)]

        candidates: list[dict[str, str | None]] = []
        for raw_id, genre_value, split_value, artist_value in zip(
            meta.index,
            meta[FMA_COLUMNS["genre"]],
            meta[FMA_COLUMNS["split"]],
            meta[FMA_COLUMNS["artist"]],
            strict=True,
        ):
            track_id = _fma_id(int(raw_id))
            audio = str(_fma_audio_path(self.audio_dir, track_id))
            genre = _clean(genre_value)
            if genre is None:
                self.skipped.append(Skipped(track_id, audio, None, REASON_NO_GENRE))
                continue
            split_text = _clean(split_value)
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
        kept = _keep_existing(candidates, self.skipped)
        _warn_skipped(self.skipped, len(meta), path)
        if not kept:
            raise IngestError(
                f"file {path}: no usable tracks in FMA subset {self.subset} "
                f"({len(self.skipped)} skipped; is the audio under {self.audio_dir}?)"
            )
        return _track_table(kept)

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
            raise IngestError(f"file {path}: duplicate track id {_fma_id(value)} on {where}")
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


# --------------------------------------------------------------------------- CSV


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
        _require_file(path, "label CSV")
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
        kept = _keep_existing(candidates, self.skipped)
        _warn_skipped(self.skipped, total, path)
        if not kept:
            raise IngestError(f"file {path}: no usable tracks ({len(self.skipped)} skipped of {total})")
        return _track_table(kept)

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
        _require_dir(self.audio_dir, "audio folder")
        rows: list[dict[str, str | None]] = []
        seen: dict[str, int] = {}
        for line, cells in self._fields(header, records):
            value = cells["file_name"]
            if not value.isdigit() or len(value) > 6:
                raise IngestError(
                    f"file {self.csv_path}, line {line}, column file_name: "
                    f"{value!r} is not an FMA track id (an integer)"
                )
            track_id = _fma_id(int(value))
            self._check_unique(track_id, line, seen)
            audio = str(_fma_audio_path(self.audio_dir, track_id))
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


# --------------------------------------------------------------------------- folders


class FolderSource(Source):
    """One sub-folder per genre holding audio files, searched recursively.

    The track id is ``<genre>/<path inside the genre folder without extension>``.
    Hidden files and folders (name starting with ".") are ignored, as are
    files of other types and files directly under the root.
    """

    name = "folder"

    def __init__(self, root: Path, name: str = "folder") -> None:
        super().__init__()
        self.root = Path(root).expanduser().absolute()
        self.name = name

    def read(self) -> pd.DataFrame:
        self.skipped = []
        _require_dir(self.root, "collection folder")
        try:
            genre_dirs = sorted(
                entry for entry in self.root.iterdir() if entry.is_dir() and not entry.name.startswith(".")
            )
        except OSError as exc:
            raise IngestError(f"cannot list folder {self.root}: {exc.strerror or exc}") from None
        candidates: list[dict[str, str | None]] = []
        sources: dict[str, Path] = {}
        for genre_dir in genre_dirs:
            genre = genre_dir.name
            found = 0
            for audio in self._audio_files(genre_dir):
                track_id = f"{genre}/{audio.relative_to(genre_dir).with_suffix('').as_posix()}"
                if track_id in sources:
                    raise IngestError(
                        f"folder {genre_dir}: duplicate track id {track_id!r} from files "
                        f"{sources[track_id].name} and {audio.name}"
                    )
                sources[track_id] = audio
                found += 1
                candidates.append(
                    {"track_id": track_id, "path": str(audio), "genre": genre, "split": None, "artist": None}
                )
            if not found:
                logger.warning("%s: genre folder %r holds no audio files; ignored", self.root, genre)
        total = len(candidates)
        kept = _keep_existing(candidates, self.skipped)  # broken symbolic links
        _warn_skipped(self.skipped, total, self.root)
        if not kept:
            raise IngestError(
                f"folder {self.root}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) "
                "in genre sub-folders"
            )
        return _track_table(kept)

    @staticmethod
    def _audio_files(genre_dir: Path) -> Iterator[Path]:
        """Audio files under ``genre_dir``, hidden entries pruned, in a stable order."""

        def fail(exc: OSError) -> None:
            raise IngestError(f"cannot list folder {exc.filename}: {exc.strerror or exc}")

        for folder, dirs, files in os.walk(genre_dir, onerror=fail):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file_name in sorted(files):
                if not file_name.startswith(".") and Path(file_name).suffix.lower() in AUDIO_EXTENSIONS:
                    yield Path(folder) / file_name


class DemoSource(FolderSource):
    """The synthetic demo set: a folder source that writes its folder first when it is absent or incomplete.

    An interrupted generation resumes: finished files are kept. Like FMA, the
    demo set comes with its own split, by the number in each file's name: of
    every ten tracks of a genre, the tenth is test and the ninth validation. A
    hash split of a dozen tracks a genre would leave some genres without a test
    track; this one tests every genre from 10 tracks a genre up, and stays put
    when the set grows.
    """

    name = "demo"

    def __init__(self, root: Path, tracks_per_genre: int = 12, seed: int = 0, workers: int = 1) -> None:
        super().__init__(root, name="demo")
        self.tracks_per_genre, self.seed, self.workers = tracks_per_genre, seed, workers

    def needs_writing(self) -> bool:
        """Whether the folder lacks the demo set, or part of it (an interrupted generation)."""
        from genreflow.tasks.demo import DEMO_GENRES, is_demo_set

        complete = sum(1 for _ in self.root.glob("*/*.mp3")) >= self.tracks_per_genre * len(DEMO_GENRES)
        return not is_demo_set(self.root) or not complete

    def read(self) -> pd.DataFrame:
        from genreflow.tasks.demo import generate_demo_set

        if self.needs_writing():
            generate_demo_set(self.root, tracks_per_genre=self.tracks_per_genre, seed=self.seed,
                              workers=self.workers)
        table = super().read()
        table["split"] = [demo_split(track_id) for track_id in table["track_id"]]
        return table


def demo_split(track_id: str) -> str | None:
    """The demo set's own split of ``<Genre>/<genre>-NNNN``: NNNN % 10 of 9 is test, 8 val, else train."""
    number = track_id.rsplit("-", 1)[-1]
    if not number.isdigit():
        return None  # not a file of the generator's: split by hash like any other
    return {9: "test", 8: "val"}.get(int(number) % 10, "train")


def read_source(kind: str, input: Path | None, audio: Path | None = None, subset: str = "small") -> Source:
    """The Source for a ``--source`` kind reading ``input``; "demo" reads a demo folder already written."""
    if kind not in ("fma", "csv", "folder", "demo"):
        raise IngestError(f"unknown source {kind!r}: expected demo, folder, csv or fma")
    if input is None:
        raise IngestError(f"--input is needed for source {kind}")
    path = Path(input)
    if kind == "fma":
        return FmaSource(path, subset=subset)
    if kind == "csv":
        return CsvSource(path, None if audio is None else Path(audio))
    return FolderSource(path, name=kind)


def source_of(config: SourceConfig, demo_folder: Path, workers: int = 1) -> Source:
    """The Source a configuration names; the demo source writes its set (to ``demo_folder`` without --input)."""
    if config.source == "demo":
        return DemoSource(Path(config.input) if config.input else demo_folder, config.tracks_per_genre,
                          config.demo_seed, workers)
    return read_source(config.source, Path(config.input) if config.input else None,
                       Path(config.audio) if config.audio else None, config.subset)


# ---- Parameters ---------------------------------------------------------------------------

SourceKind = Literal["demo", "folder", "csv", "fma"]


class SourceConfig(Section):
    """Where the labelled tracks come from."""

    source: SourceKind = Field("demo", description="demo, folder, csv or fma")
    input: str | None = Field(
        None, description="source path: demo/folder root, label CSV, or FMA root"
    )
    audio: str | None = Field(None, description="audio folder for a CSV of FMA track ids")
    subset: Literal["small", "medium"] = Field("small", description="FMA subset")
    tracks_per_genre: int = Field(12, ge=1, le=10_000, description="demo tracks per genre")
    demo_seed: int = Field(0, ge=0, description="seed of the demo generator")


