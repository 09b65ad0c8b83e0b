"""Sources: a labelled collection read into one row a track, and the collection's own tools.

One interface, :class:`Source` (base.py), and one module a reader:

- ``fma.FmaSource``: FMA's ``fma_metadata/tracks.csv`` and ``fma_<subset>/``
  audio, with FMA's official, artist-filtered split.
- ``label_csv.CsvSource``: the seed's ``file_name,genre`` label file (FMA track
  ids, audio under ``--audio``) or a generic ``path,genre[,split][,artist]`` file.
- ``folder.FolderSource``: one sub-folder per genre.
- ``demo.DemoSource``: the demo set, a folder source that writes it first.

``factory`` picks the reader for a ``--source`` kind; ``demo_synth`` synthesises
the demo set's MP3s; ``fma_download`` fetches and unpacks FMA's archives.
Readers import what they share from ``base`` only, and ``base`` imports no
reader. This package re-exports ``base``'s public names alone, so importing it
(as flows/config.py does for ``SourceConfig``) loads no reader, pandas or
audio library.
"""

from genreflow.tasks.sources.base import (
    SOURCE_COLUMNS,
    TRACK_COLUMNS,
    IngestError,
    Skipped,
    Source,
    SourceConfig,
    SourceKind,
    clean_cell,
    is_blank,
)

__all__ = [
    "SOURCE_COLUMNS",
    "TRACK_COLUMNS",
    "IngestError",
    "Skipped",
    "Source",
    "SourceConfig",
    "SourceKind",
    "clean_cell",
    "is_blank",
]
