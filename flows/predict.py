"""``genreflow predict``: the genre of audio files with a trained model, from a handful to a whole library.

The command line: its flags, and which way a run goes. How much is asked decides it:

- **a handful of files** (at most ``--local-max``) and no table asked for: the
  quick path. The model is loaded in this process and each file's top genres
  are printed (table, CSV or JSON; flows/predict_output.py); no cluster, no flow.
- **a table** (``--out``, ``--windows``, ``--playlists``) of a handful of files:
  the buckets of a library run (tasks/predict.py), predicted in this process.
- **more files, or ``--dask-address``**: the same buckets in tasks of a Prefect
  flow on Dask workers, each worker loading the model once.

A table run keeps up with the library: a rerun predicts only the files added or
changed since the last one in the same work root (README "A library").

Table runs live in flows/predict_flow.py, which imports nothing from here. This
module imports it, Prefect and TensorFlow only when a run needs them, so that
``genreflow --help`` loads none of them (tests/flows/test_cli_imports.py).
"""

from __future__ import annotations

import argparse
import io
import posixpath
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from genreflow.flows.config import DEFAULT_OUT, LOCAL_MAX_FILES, ConfigError, config_sources, data_root_of
from genreflow.flows.predict_options import LibraryOptions, add_cluster_arguments, add_open_set_arguments
from genreflow.model.files import model_audio, resolve_model_dir
from genreflow.model.params import PREDICT_TOP_K

if TYPE_CHECKING:
    from genreflow.tasks.library import Listing
    from genreflow.tasks.predict import PredictSummary


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``genreflow predict``."""
    parser.add_argument("paths", nargs="+", type=Path, metavar="FILE_FOLDER_OR_CSV",
                        help="audio files, folders (searched recursively) or CSV files with a 'path' column")
    parser.add_argument("--model", type=Path,
                        help="model folder, its model.keras, or a run name under DATA_ROOT/models (default: the "
                             "data root's promoted model)")
    parser.add_argument("--output-format", "--format", dest="format", choices=["table", "csv", "json"], default=None,
                        help="print the predictions as a table, CSV or JSON (default: table for a handful of files; "
                             "a table run prints its summary, and the rows too when this is given)")
    parser.add_argument("--data-root", default=None,
                        help="where to find the promoted model (default: $GENREFLOW_DATA_ROOT, the project file's, "
                             "or genreflow-data)")
    parser.add_argument("--out", default=None, metavar="PATH",
                        help=f"write the predictions table here (Parquet, a path or fsspec URL; default {DEFAULT_OUT} "
                             "for more files than --local-max); x.csv: path, genre, probability, top3, model, "
                             "error for beets and spreadsheets")
    parser.add_argument("--windows", action="store_true", help="add each window's probabilities to the table")
    parser.add_argument("--top-k", type=int, default=3, metavar="K", help="genres per file (default: 3)")
    add_open_set_arguments(parser)
    parser.add_argument("--work", default=None, metavar="DIR",
                        help="where a table run keeps its shards for a resume (default: OUT without .parquet + .parts)")
    add_cluster_arguments(parser)
    parser.add_argument("--retries", type=int, default=None, metavar="N",
                        help="retries of a task on I/O errors (default: $GENREFLOW_RETRIES, the project file's, or 2)")
    parser.add_argument("--local-max", type=int, default=LOCAL_MAX_FILES, metavar="N",
                        help=f"up to N files run in this process, without a cluster (default: {LOCAL_MAX_FILES})")
    library = parser.add_argument_group("a library kept up to date (a table run)")
    library.add_argument("--content-hash", action="store_true",
                         help="a file counts as changed when its bytes do, not its size or mtime (reads every file "
                              "on every run; for libraries whose mtimes are not to be trusted)")
    library.add_argument("--retry-failed", action="store_true",
                         help="predict again the files that failed last time even if they did not change")
    library.add_argument("--playlists", default=None, metavar="DIR",
                         help="write one M3U8 playlist per predicted genre into DIR (paths relative to it)")


def options_from_args(args: argparse.Namespace, model_dir: Path) -> LibraryOptions:
    cluster = config_sources({}).config().run  # the environment's and the project file's, as a rebuild's
    try:
        return LibraryOptions(inputs=[str(p) for p in args.paths], model_dir=str(model_dir),
                              out=args.out or DEFAULT_OUT, work=args.work, top_k=args.top_k, windows=args.windows,
                              min_confidence=getattr(args, "min_confidence", None),
                              max_novelty=getattr(args, "max_novelty", None),
                              shard_size=args.shard_size,
                              workers=cluster.workers if args.workers is None else args.workers,
                              dask_address=args.dask_address or cluster.dask_address,
                              retries=cluster.retries if args.retries is None else args.retries,
                              local_max=args.local_max,
                              content_hash=getattr(args, "content_hash", False),
                              retry_failed=getattr(args, "retry_failed", False),
                              playlists=getattr(args, "playlists", None))
    except ValidationError as exc:
        problems = [f"--{'.'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']} (got {err['input']!r})"
                    for err in exc.errors()]
        raise ConfigError("invalid predict flag: " + "; ".join(problems)) from None


def predict_command(args: argparse.Namespace) -> int:
    """Run ``genreflow predict``: the quick path, a table in this process, or the library flow."""
    from genreflow.tasks.library import expand_inputs, list_library  # pandas, soundfile: once a run starts

    model_dir = resolve_model_dir(args.model, data_root_of(args.data_root))
    options = options_from_args(args, model_dir)
    listing = list_library(args.paths)
    table = args.out is not None or args.windows or options.playlists is not None
    if not table and not options.dask_address and len(listing.files) <= options.local_max:
        return quick_predict([Path(p) for p in expand_inputs(args.paths)], model_dir, args.format or "table",
                             options.top_k, options.min_confidence, options.max_novelty)
    summary = table_predict(options, listing)
    if args.format:  # asked for: the rows as the quick path prints them, whatever the number of files
        print_table_rows(options.out, args.format)
    return 1 if summary.files and summary.predicted == 0 else 0


def print_table_rows(out: str, fmt: str) -> None:
    """The written predictions table's rows, printed as ``--output-format`` says."""
    import pandas as pd

    from genreflow.flows.predict_flow import parent_url
    from genreflow.flows.predict_output import format_predictions, table_results
    from genreflow.storage.root import DataRoot

    root = DataRoot(parent_url(out))
    path = root.join(posixpath.basename(out))
    if out.endswith(".csv"):  # the spreadsheet's columns: its genre (or unknown) and the top-1 in top3
        table = pd.read_csv(io.BytesIO(root.read_bytes(path)), keep_default_na=False)
        top = table["top3"].astype(str).str.split(";").str[0].str.rsplit(":", n=1).str[0] if "top3" in table \
            else table["genre"]
        table["genre_1"], table["prob_1"] = top.where(top != "", table["genre"]), table["probability"]
    else:
        table = root.read_parquet(path)
    print(format_predictions(table_results(table), fmt))


def table_predict(options: LibraryOptions, listing: Listing) -> PredictSummary:
    """A table run: the library flow on Dask for more than ``--local-max`` files (or ``--dask-address``), else
    its buckets in this process. ``genreflow tag`` runs the same to get its table."""
    from genreflow.flows.predict_flow import local_table_predict, run_library_predict  # Dask: a table run only

    if options.dask_address or len(listing.files) > options.local_max:
        return run_library_predict(options)
    return local_table_predict(options, listing)


def quick_predict(paths: list[Path], model_dir: Path, fmt: str, top_k: int = PREDICT_TOP_K,
                  min_confidence: float | None = None, max_novelty: float | None = None) -> int:
    """Print each file's genre (``unknown`` where the open-set rule says so) and top genres; unreadable files get
    an error line and the batch goes on."""
    from genreflow.flows.predict_output import format_predictions  # TensorFlow: the quick path predicts here
    from genreflow.model.open_set import decide, effective_rule
    from genreflow.model.predict import FilePrediction, PredictionFailure, load_classifier, predict_paths

    classifier = load_classifier(model_dir)
    rule = effective_rule(model_dir, min_confidence, max_novelty)
    results = [replace(r, genre=decide([r.genres[0][0]], [r.genres[0][1]], rule, [r.novelty])[0])
               if isinstance(r, FilePrediction) and r.genres else r
               for r in predict_paths(classifier, paths, model_audio(model_dir), top_k)]
    print(format_predictions(results, fmt))
    failures = [r for r in results if isinstance(r, PredictionFailure)]
    for failure in failures:
        print(f"genreflow: cannot predict {failure.path}: {failure.reason}", file=sys.stderr)
    return 1 if failures and len(failures) == len(results) else 0
