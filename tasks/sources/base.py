"""The Source interface, its settings and the helpers every reader shares.

Each reader (fma.py, label_csv.py, folder.py, demo.py) is a :class:`Source`
that imports what it shares from here, and nothing here imports a reader, so
the readers never import one another. Cheap to import (no pandas, numpy or
audio libraries at module level): flows/config.py takes :class:`SourceConfig`
from here for every ``genreflow --help``.

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

import logging
import os
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import Field

from genreflow.model.params import Section
from genreflow.storage.errors import GenreflowError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


TRACK_COLUMNS: tuple[str, ...] = ("track_id", "path", "genre", "split", "artist", "shard")
SOURCE_COLUMNS: tuple[str, ...] = ("track_id", "path", "genre", "split", "artist")

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


def is_blank(value: object) -> bool:
    """Whether a cell is missing: None, NaN/NA or only whitespace."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    import pandas as pd  # here, not at the top: SourceConfig's importers need no pandas

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def clean_cell(value: object) -> str | None:
    """A cell as a stripped string, or None when missing."""
    return None if is_blank(value) else str(value).strip()


def fma_id(value: int) -> str:
    """FMA's file name stem: the track id zero-padded to 6 digits."""
    return f"{value:06d}"


def fma_audio_path(audio_dir: Path, track_id: str) -> Path:
    """FMA's layout: ``<audio_dir>/<first 3 digits>/<id6>.mp3``."""
    return audio_dir / track_id[:3] / f"{track_id}.mp3"


def require_dir(path: Path, what: str) -> None:
    """Raise IngestError unless ``path`` is a readable folder; ``what`` names it in the message."""
    if not path.exists():
        raise IngestError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise IngestError(f"{what} {path} is not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise IngestError(f"{what} {path} is not readable")


def require_file(path: Path, what: str) -> None:
    """Raise IngestError unless ``path`` is a file; ``what`` names it in the message."""
    if not path.exists():
        raise IngestError(f"{what} {path} does not exist")
    if not path.is_file():
        raise IngestError(f"{what} {path} is not a file")


def track_table(rows: Iterable[dict[str, str | None]]) -> pd.DataFrame:
    """Rows as a source table with the standard columns, sorted by track_id."""
    import pandas as pd

    table = pd.DataFrame(list(rows), columns=list(SOURCE_COLUMNS))
    return table.sort_values("track_id", kind="stable").reset_index(drop=True)


def warn_skipped(skipped: list[Skipped], total: int, where: Path) -> None:
    """One warning per reason, with the count and a first example."""
    by_reason: dict[str, list[Skipped]] = defaultdict(list)
    for item in skipped:
        by_reason[item.reason].append(item)
    for reason, items in by_reason.items():
        logger.warning(
            "%s: skipped %d of %d tracks (%s), e.g. %s", where, len(items), total, reason, items[0].path
        )


def keep_existing(
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
