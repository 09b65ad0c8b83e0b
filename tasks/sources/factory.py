"""The Source for a ``--source`` kind: the one module that knows every reader, so that no reader needs another."""

from __future__ import annotations

from pathlib import Path

from genreflow.tasks.sources.base import IngestError, Source, SourceConfig
from genreflow.tasks.sources.demo import DemoSource
from genreflow.tasks.sources.fma import FmaSource
from genreflow.tasks.sources.folder import FolderSource
from genreflow.tasks.sources.label_csv import CsvSource


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
