"""The options of a library run of ``genreflow predict`` beyond flows.config.PredictOptions.

A module of its own, light like flows/config.py (pydantic only), so that the
CLI builds them without importing Prefect, and the flow takes them as its one
parameter.
"""

from __future__ import annotations

import argparse

from pydantic import Field

from genreflow.flows.config import PredictOptions, default_work

CSV_SUFFIX = ".csv"


class LibraryOptions(PredictOptions):
    """A table run that keeps up with a library, and the results it hands on."""

    content_hash: bool = Field(False, description="a file's identity is its size and a hash of its bytes, "
                                                  "not its size and mtime")
    retry_failed: bool = Field(False, description="predict again the files that failed, changed or not")
    playlists: str | None = Field(None, description="write one M3U8 playlist per genre into this folder")

    @property
    def csv(self) -> bool:
        """``--out x.csv``: the table as a CSV for beets, spreadsheets and scripts, not Parquet."""
        return self.out.lower().endswith(CSV_SUFFIX)

    @property
    def work_root(self) -> str:
        """As PredictOptions', with ``x.csv`` giving ``x.parts`` too."""
        from genreflow.storage.root import DataRoot

        if self.work is None and self.csv:
            return DataRoot(default_work(self.out[: -len(CSV_SUFFIX)])).url
        return super().work_root


def add_open_set_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--min-confidence P`` and ``--max-novelty R`` of predict and tag, from PredictOptions: one concept, one
    name each (model/open_set.py OpenSetRule)."""
    parser.add_argument("--min-confidence", type=float, default=None, metavar="P",
                        help=PredictOptions.model_fields["min_confidence"].description)
    parser.add_argument("--max-novelty", type=float, default=None, metavar="R",
                        help=PredictOptions.model_fields["max_novelty"].description)


def add_cluster_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The task and cluster flags of a library run, predict's and tag's. The cluster ones default as a rebuild's
    do: ``$GENREFLOW_WORKERS``, the project file's, else the default (flows/predict.py options_from_args)."""
    parser.add_argument("--shard-size", type=int, default=50, metavar="N", help="files per task (default: 50)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="LocalCluster workers (default: $GENREFLOW_WORKERS, the project file's, or 2)")
    parser.add_argument("--dask-address", default=None,
                        help="existing Dask scheduler, tcp://HOST:PORT (default: $GENREFLOW_DASK_ADDRESS, the "
                             "project file's, or a LocalCluster)")
