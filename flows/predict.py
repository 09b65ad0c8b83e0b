"""``genreflow predict``: the genre of audio files with a trained model, from a handful to a whole library.

The command line: its flags, and which way a run goes. How much is asked decides it:

- **a handful of files** (at most ``--local-max``) and no table asked for: the
  quick path. The model is loaded in this process and each file's top genres
  are printed (table, CSV or JSON; flows/predict_output.py); no cluster, no flow.
- **a table** (``--out``, ``--windows``) of a handful of files: the shards of a
  library run (tasks/predict.py), predicted in this process.
- **more files, or ``--dask-address``**: the same shards as tasks of a Prefect
  flow on Dask workers, each worker loading the model once.

Table runs live in flows/predict_flow.py, which imports nothing from here. This
module imports it, Prefect and TensorFlow only when a run needs them, so that
``genreflow --help`` loads none of them (tests/flows/test_cli_imports.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from genreflow.flows.config import DEFAULT_OUT, LOCAL_MAX_FILES, ConfigError, PredictOptions
from genreflow.model.files import model_audio, resolve_model_dir


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``genreflow predict``."""
    parser.add_argument("paths", nargs="+", type=Path, metavar="FILE_FOLDER_OR_CSV",
                        help="audio files, folders (searched recursively) or CSV files with a 'path' column")
    parser.add_argument("--model", type=Path,
                        help="model folder, its model.keras, or a run name under DATA_ROOT/models (default: latest)")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table",
                        help="output of a handful of files without --out (default: table)")
    parser.add_argument("--data-root", default="genreflow-data", help="where to find the latest model")
    parser.add_argument("--out", default=None, metavar="PATH",
                        help=f"write the predictions table here (Parquet, a path or fsspec URL; default {DEFAULT_OUT} "
                             "for more files than --local-max)")
    parser.add_argument("--windows", action="store_true", help="add each window's probabilities to the table")
    parser.add_argument("--top-k", type=int, default=3, metavar="K", help="genres per file (default: 3)")
    parser.add_argument("--work", default=None, metavar="DIR",
                        help="where a table run keeps its shards for a resume (default: OUT without .parquet + .parts)")
    parser.add_argument("--shard-size", type=int, default=50, metavar="N", help="files per task (default: 50)")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="LocalCluster workers (default: 2)")
    parser.add_argument("--dask-address", default=None, help="existing Dask scheduler, tcp://HOST:PORT")
    parser.add_argument("--retries", type=int, default=2, metavar="N", help="retries of a task on I/O errors")
    parser.add_argument("--local-max", type=int, default=LOCAL_MAX_FILES, metavar="N",
                        help=f"up to N files run in this process, without a cluster (default: {LOCAL_MAX_FILES})")


def options_from_args(args: argparse.Namespace, model_dir: Path) -> PredictOptions:
    try:
        return PredictOptions(inputs=[str(p) for p in args.paths], model_dir=str(model_dir),
                              out=args.out or DEFAULT_OUT, work=args.work, top_k=args.top_k, windows=args.windows,
                              shard_size=args.shard_size, workers=args.workers, dask_address=args.dask_address,
                              retries=args.retries, local_max=args.local_max)
    except ValidationError as exc:
        problems = [f"--{'.'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']} (got {err['input']!r})"
                    for err in exc.errors()]
        raise ConfigError("invalid predict flag: " + "; ".join(problems)) from None


def predict_command(args: argparse.Namespace) -> int:
    """Run ``genreflow predict``: the quick path, a table in this process, or the library flow."""
    from genreflow.tasks.predict import collect_files, expand_inputs  # Prefect: once a run starts

    model_dir = resolve_model_dir(args.model, args.data_root)
    options = options_from_args(args, model_dir)
    files = collect_files(args.paths)
    table = args.out is not None or args.windows
    if not table and not options.dask_address and len(files) <= options.local_max:
        return quick_predict([Path(p) for p in expand_inputs(args.paths)], model_dir, args.format)
    from genreflow.flows.predict_flow import local_table_predict, run_library_predict  # Dask: a table run only

    if options.dask_address or len(files) > options.local_max:
        summary = run_library_predict(options)
    else:
        summary = local_table_predict(options, files)
    return 1 if summary.files and summary.predicted == 0 else 0


def quick_predict(paths: list[Path], model_dir: Path, fmt: str) -> int:
    """Print each file's top-3 genres; unreadable files get an error line and the batch goes on."""
    from genreflow.flows.predict_output import format_predictions  # TensorFlow: the quick path predicts here
    from genreflow.model.predict import PredictionFailure, load_classifier, predict_paths

    classifier = load_classifier(model_dir)
    results = list(predict_paths(classifier, paths, model_audio(model_dir)))
    print(format_predictions(results, fmt))
    failures = [r for r in results if isinstance(r, PredictionFailure)]
    for failure in failures:
        print(f"genreflow: cannot predict {failure.path}: {failure.reason}", file=sys.stderr)
    return 1 if failures and len(failures) == len(results) else 0
