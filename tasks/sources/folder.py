"""A collection laid out as one sub-folder per genre (the demo set is one too)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from genreflow.model.audio import AUDIO_EXTENSIONS
from genreflow.storage.files import display_path
from genreflow.tasks.sources.base import (
    IngestError,
    Skipped,
    Source,
    keep_existing,
    require_dir,
    track_table,
    warn_skipped,
)

logger = logging.getLogger(__name__)

REASON_NOT_UTF8 = "its name is not UTF-8 (rename it: the track tables hold UTF-8 names only)"


class FolderSource(Source):
    """One sub-folder per genre holding audio files, searched recursively.

    The track id is ``<genre>/<path inside the genre folder without extension>``.
    Hidden files and folders (name starting with ".") are ignored, as are
    files of other types and files directly under the root. A file or genre
    folder whose name is not UTF-8 is skipped with that reason (shown with its
    odd bytes as ``\\xNN``): the track tables are Parquet, which holds UTF-8 only.
    """

    name = "folder"

    def __init__(self, root: Path, name: str = "folder") -> None:
        super().__init__()
        self.root = Path(root).expanduser().absolute()
        self.name = name

    def read(self) -> pd.DataFrame:
        self.skipped = []
        require_dir(self.root, "collection folder")
        try:
            genre_dirs = sorted(
                entry for entry in self.root.iterdir() if entry.is_dir() and not entry.name.startswith(".")
            )
        except OSError as exc:
            raise IngestError(f"cannot list folder {self.root}: {exc.strerror or exc}") from None
        candidates: list[dict[str, str | None]] = []
        sources: dict[str, Path] = {}
        not_utf8 = 0
        for genre_dir in genre_dirs:
            genre = genre_dir.name
            found = 0
            for audio in self._audio_files(genre_dir):
                track_id = f"{genre}/{audio.relative_to(genre_dir).with_suffix('').as_posix()}"
                if display_path(str(audio)) != str(audio):  # not UTF-8
                    self.skipped.append(Skipped(display_path(track_id), display_path(str(audio)),
                                                display_path(genre), REASON_NOT_UTF8))
                    not_utf8 += 1
                    found += 1  # not an empty genre folder: the skip says why its file is left out
                    continue
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
        total = len(candidates) + not_utf8
        kept = keep_existing(candidates, self.skipped)  # broken symbolic links
        warn_skipped(self.skipped, total, self.root)
        if not kept:
            raise IngestError(
                f"folder {self.root}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) "
                "in genre sub-folders"
            )
        return track_table(kept)

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
