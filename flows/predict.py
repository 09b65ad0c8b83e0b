"""``genreflow predict``: the genre of audio files with a trained model, from a handful to a whole library.

How much is asked decides how it runs:

- **a handful of files** (at most ``--local-max``) and no table asked for: the
  quick path. The model is loaded in this process and each file's top genres
  are printed (table, CSV or JSON); no cluster, no flow.
- **a table** (``--out``, ``--windows``) of a handful of files: the shards of a
  library run (tasks/predict.py), predicted in this process.
- **more files, or ``--dask-address``**: the same shards as tasks of a Prefect
  flow on Dask workers (flows/library.py), each worker loading the model once.

A table run writes its shards under a work root (``--work``, by default
``<out>.parts`` beside the table) and then one table, so a killed run resumes
with the shards that finished.
"""

from __future__ import annotations

import argparse
import posixpath
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from genreflow.flows.config import ConfigError
from genreflow.model.files import MODEL_FILE, model_audio
from genreflow.storage.errors import GenreflowError
from genreflow.storage.outputs import output_location
from genreflow.storage.registry import read_registry
from genreflow.storage.root import DataRoot

DEFAULT_OUT = "predictions.parquet"
WORK_SUFFIX = ".parts"  # predictions.parquet -> predictions.parts/: the shards of its runs
# Up to this many files (and no table asked for) are predicted in this process. A flow on Dask costs
# about 20 s before its first file (temporary Prefect API, cluster, TensorFlow in each worker); this
# process predicts a 30 s track in about 0.1 s, so below a few dozen files the flow cannot win.
LOCAL_MAX_FILES = 32


class ModelNotFound(GenreflowError, FileNotFoundError):
    """No trained model where one was expected."""


def resolve_model_dir(model: Path | None, data_root: str) -> Path:
    """The model folder to predict or export with: the one place that decides which model is used.

    ``model`` is a run folder, its model.keras, or a run name under
    ``<data-root>/models`` (``promoted``: the promoted run); without it, the
    data root's promoted model (storage/registry.py).
    """
    root = DataRoot(data_root)
    if model is not None and str(model) != "promoted":
        folder = model.parent if model.suffix == ".keras" else model
        if (folder / MODEL_FILE).is_file():
            return folder
        if len(model.parts) == 1 and not model.exists() and root.is_local:  # a bare run name
            named = Path(root.local_path(output_location(root, "train", model.name)[0]))
            if (named / MODEL_FILE).is_file():
                return named
            raise ModelNotFound(f"no {MODEL_FILE} in {folder}, nor a run {model.name} under {root.path}/models")
        raise ModelNotFound(f"no {MODEL_FILE} in {folder}")
    promoted = read_registry(root).promoted
    if promoted is None:
        raise ModelNotFound(f"no promoted model under {root.url}: run `genreflow rebuild`, "
                            "`genreflow promote RUN`, or pass --model")
    folder = Path(root.local_path(output_location(root, "train", promoted)[0]))
    if not (folder / MODEL_FILE).is_file():
        raise ModelNotFound(f"the promoted model {promoted} has no {MODEL_FILE} in {folder}: "
                            "`genreflow promote RUN` another run, or pass --model")
    return folder


class PredictOptions(BaseModel):
    """How a table run goes: also the Prefect flow's parameter (small: the inputs as given, not the files)."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[str]
    model_dir: str
    out: str = DEFAULT_OUT
    work: str | None = Field(None, description="work root of the shards; default <out>.parts")
    top_k: int = Field(3, ge=1, le=1000)
    windows: bool = False
    shard_size: int = Field(50, ge=1, le=100_000)
    workers: int = Field(2, ge=1, le=512)
    dask_address: str | None = None
    retries: int = Field(2, ge=0, le=20)
    local_max: int = Field(LOCAL_MAX_FILES, ge=0)

    @field_validator("dask_address")
    @classmethod
    def _scheduler_url(cls, address: str | None) -> str | None:
        if address is not None and "://" not in address:
            raise ValueError(f"{address!r} is not a scheduler address like tcp://HOST:8786")
        return address

    @property
    def work_root(self) -> str:
        return self.work or default_work(self.out)


def default_work(out: str) -> str:
    """``<out without .parquet>.parts``, beside the table: where its runs' shards live."""
    stem = out[: -len(".parquet")] if out.endswith(".parquet") else out
    return stem + WORK_SUFFIX


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
    from genreflow.tasks.predict import collect_files, expand_inputs

    model_dir = resolve_model_dir(args.model, args.data_root)
    options = options_from_args(args, model_dir)
    files = collect_files(args.paths)
    table = args.out is not None or args.windows
    if not table and not options.dask_address and len(files) <= options.local_max:
        return quick_predict([Path(p) for p in expand_inputs(args.paths)], model_dir, args.format)
    if options.dask_address or len(files) > options.local_max:
        from genreflow.flows.library import run_library_predict

        summary = run_library_predict(options)
    else:
        summary = local_table_predict(options, files)
    return 1 if summary.files and summary.predicted == 0 else 0


def quick_predict(paths: list[Path], model_dir: Path, fmt: str) -> int:
    """Print each file's top-3 genres; unreadable files get an error line and the batch goes on."""
    from genreflow.model.predict import PredictionFailure, format_predictions, load_classifier, predict_paths

    classifier = load_classifier(model_dir)
    results = list(predict_paths(classifier, paths, model_audio(model_dir)))
    print(format_predictions(results, fmt))
    failures = [r for r in results if isinstance(r, PredictionFailure)]
    for failure in failures:
        print(f"genreflow: cannot predict {failure.path}: {failure.reason}", file=sys.stderr)
    return 1 if failures and len(failures) == len(results) else 0


# --------------------------------------------------------------------------- table runs, shared by both executors


def check_destinations(options: PredictOptions) -> None:
    """Fail before any work when the table or the work root cannot be written, naming which."""
    from genreflow.storage.root import StorageError

    for flag, url in (("--out", parent_url(options.out)), ("--work", options.work_root)):
        try:
            DataRoot(url).ensure_writable()
        except StorageError as exc:
            raise ConfigError(f"{flag}: {exc}") from None


def parent_url(path: str) -> str:
    """The folder (path or URL) that holds ``path``; "." for a bare file name."""
    return posixpath.dirname(path) or "."


def plan_for(options: PredictOptions, files: list[str], tf_threads: int | None) -> Any:
    """The shards of this run (tasks.predict.plan_prediction) with the model's own audio settings."""
    from genreflow.tasks.predict import ModelRef, plan_prediction

    model = ModelRef.of(Path(options.model_dir), tf_threads)
    return plan_prediction(files, model, model_audio(options.model_dir), options.top_k, options.windows,
                           options.shard_size)


def write_table(options: PredictOptions, plan: Any) -> Any:
    """Merge the finished shards into the one table at --out (atomically) and summarise it."""
    from genreflow.tasks.predict import PredictSummary, read_predictions

    table = read_predictions(options.work_root, plan)
    out_root = DataRoot(parent_url(options.out))
    out_root.write_parquet(out_root.join(posixpath.basename(options.out)), table)
    return PredictSummary.of(table, plan.model.name), table


def print_summary(summary: Any, options: PredictOptions, seconds: float) -> None:
    for line in summary.lines():
        print(line)
    print(f"table: {options.out} ({seconds:.1f} s); shards kept in {options.work_root} for a rerun")


def local_table_predict(options: PredictOptions, files: list[str]) -> Any:
    """A table of a handful of files, predicted here: the library run's shards without a flow or cluster."""
    import logging

    from genreflow.flows.lock import data_root_lock
    from genreflow.flows.progress import FileProgress
    from genreflow.model.predict import load_classifier
    from genreflow.tasks.predict import predict_stage

    start = time.perf_counter()
    check_destinations(options)
    plan = plan_for(options, files, tf_threads=None)
    loaded: list[Any] = []

    def classifier() -> Any:
        if not loaded:
            loaded.append(load_classifier(Path(options.model_dir)))
        return loaded[0]

    with data_root_lock(options.work_root), \
            FileProgress(logging.getLogger("genreflow.predict"), plan.files, len(plan.shards)) as progress:
        for shard in plan.shards:
            result = predict_stage(options.work_root, shard, classifier, plan.audio, plan.top_k, plan.windows,
                                   plan.model.name)
            progress.advance(result.shard, result.files, result.failed, result.skipped)
    summary, _ = write_table(options, plan)
    print_summary(summary, options, time.perf_counter() - start)
    return summary
