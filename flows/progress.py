"""Progress of the running stages: a live bar on a terminal, log lines elsewhere."""

from __future__ import annotations

import logging
import sys
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from genreflow.tasks.workers import ShardResult


class StageProgress:
    """Shards and tracks done of total for each stage.

    On a terminal it draws rich progress bars; otherwise (CI, logs, Prefect
    workers) it logs one line per finished shard.
    """

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter, live: bool | None = None) -> None:
        self.logger = logger
        self.live = sys.stderr.isatty() if live is None else live
        self._bars: Progress | None = None
        self._stages: dict[str, tuple[int, int, int]] = {}  # stage -> (bar id, shards, tracks)
        self._done: dict[str, tuple[int, int]] = {}

    def __enter__(self) -> StageProgress:
        if self.live:
            self._bars = Progress(
                TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("shards  {task.fields[tracks]}"), TimeElapsedColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._bars.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bars is not None:
            self._bars.stop()

    def add_stage(self, stage: str, shards: int, tracks: int) -> None:
        bar = self._bars.add_task(stage, total=shards, tracks=f"0/{tracks} tracks") if self._bars else -1
        self._stages[stage] = (bar, shards, tracks)
        self._done[stage] = (0, 0)

    def advance(self, result: ShardResult) -> None:
        stage = result.stage
        bar, shards, tracks = self._stages[stage]
        done_shards, done_tracks = self._done[stage]
        self._done[stage] = (done_shards + 1, done_tracks + result.tracks)
        status = "skipped (done)" if result.skipped else f"{result.clips} clips"
        if self._bars is not None:
            self._bars.update(bar, advance=1, tracks=f"{done_tracks + result.tracks}/{tracks} tracks")
        else:
            self.logger.info("%s: shard %s %s (%d/%d shards, %d/%d tracks)", stage, result.shard, status,
                             done_shards + 1, shards, done_tracks + result.tracks, tracks)


class FileProgress:
    """Files done of total for ``genreflow predict``: one bar counting files, advanced a shard at a time.

    On a terminal a rich bar; elsewhere one log line per finished shard.
    """

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter, files: int, shards: int,
                 live: bool | None = None) -> None:
        self.logger = logger
        self.live = sys.stderr.isatty() if live is None else live
        self.files, self.shards = files, shards
        self.done_files = self.done_shards = self.failed = 0
        self._bars: Progress | None = None
        self._bar = -1

    def __enter__(self) -> FileProgress:
        if self.live:
            self._bars = Progress(
                TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TextColumn("files  {task.fields[note]}"),
                TimeElapsedColumn(), console=Console(stderr=True), transient=False,
            )
            self._bars.start()
            self._bar = self._bars.add_task("predict", total=self.files, note="")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bars is not None:
            self._bars.stop()

    def advance(self, shard: str, files: int, failed: int, skipped: bool) -> None:
        self.done_files += files
        self.done_shards += 1
        self.failed += failed
        if self._bars is not None:
            self._bars.update(self._bar, advance=files, note=f"{self.failed} failed" if self.failed else "")
        else:
            status = "skipped (done)" if skipped else f"{files - failed} predicted, {failed} failed"
            self.logger.info("predict: shard %s %s (%d/%d shards, %d/%d files)", shard, status, self.done_shards,
                             self.shards, self.done_files, self.files)
