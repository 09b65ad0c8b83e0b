"""``genreflow runs``: a data root's trained runs side by side, newest first (tasks/runs.py reads them)."""

from __future__ import annotations

import argparse
import json

from genreflow.flows.config import data_root_of
from genreflow.storage.root import DataRoot
from genreflow.tasks.runs import list_runs, runs_lines


def add_runs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=None,
                        help="the data root (default: $GENREFLOW_DATA_ROOT, the project file's, or genreflow-data)")
    parser.add_argument("--json", action="store_true", help="a JSON list, one object a run, instead of lines")


def runs_command(args: argparse.Namespace) -> int:
    """Print the runs: one line each under a header, or JSON with ``--json``."""
    root = DataRoot(data_root_of(args.data_root))
    runs = list_runs(root)
    if args.json:
        print(json.dumps(runs, indent=2))
    elif runs:
        print("\n".join(runs_lines(runs)))
    else:
        print(f"no trained run under {root.url}: `genreflow rebuild` trains one")
    return 0
