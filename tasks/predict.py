"""predict stage: shards of audio files to a table of genre predictions, one row a file.

A library of tens of thousands of files is cut into shards of files; each
shard is one output of the output protocol (storage/outputs.py), under a work
root of its own: ``<work>/<run id>/shard-00000.parquet`` and its manifest. The
run id hashes the model's files, the file list and the parameters, so a rerun
of the same prediction finds its finished shards and skips them, and another
model or another list never reuses them.

Each Dask worker loads the model once, not once a shard: the flow registers a
:func:`classifier_cache` worker plugin (tasks/workers.py WorkerCache), which the
worker keeps in its own plugin registry (no module-level state) and which loads
the model on first use.
The plain functions here know nothing of Prefect; ``predict_shard_task`` is
the thin wrapper.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from prefect import task

from genreflow.model.audio import AUDIO_EXTENSIONS
from genreflow.model.files import model_checksum
from genreflow.model.params import AudioConfig
from genreflow.storage.errors import GenreflowError
from genreflow.storage.fingerprint import fingerprint
from genreflow.storage.outputs import OutputSpec, open_output, output_path
from genreflow.storage.root import DataRoot
from genreflow.tasks.stages import stage_code
from genreflow.tasks.workers import WorkerCache, retry_transient, worker_cached

if TYPE_CHECKING:
    from genreflow.model.predict import Classifier, FileWindows

logger = logging.getLogger(__name__)

TABLE = ".parquet"  # a shard's predictions: <work>/<run>/shard-00000.parquet
WINDOW_PREFIX = "window_prob_"  # with --windows: window_prob_<genre>, one probability a window
BATCH_SIZE = 64  # windows the model runs at once
# At least this many shards where there are files enough, whatever --shard-size: a small library in two
# shards of 50 and 14 files keeps one of two workers idle most of the run. A function of the file count
# alone, so a rerun with other --workers finds the same shards.
MIN_SHARDS = 16


class PredictInputError(GenreflowError, ValueError):
    """An input list that cannot be read: a CSV without a path column, no audio files at all."""


# --------------------------------------------------------------------------- inputs


def read_path_csv(csv_path: Path) -> list[str]:
    """The ``path`` column of a CSV of files; relative paths are relative to the CSV's folder.

    The same rule as the csv source's ``path,genre`` files, so a library's
    label CSV can be predicted as it is.
    """
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise PredictInputError(f"{csv_path}: cannot read it as a CSV of files ({exc})") from None
    if "path" not in frame.columns:
        raise PredictInputError(f"{csv_path}: a CSV of files needs a header line with a 'path' column; "
                                f"it has {', '.join(map(repr, frame.columns)) or 'no columns'}")
    folder = csv_path.parent
    return [str(folder / p) for p in frame["path"].str.strip() if p]


def expand_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """The files that inputs name, as given: files, audio files under folders, the paths a CSV lists.

    Folders are walked recursively in sorted order; a ``.csv`` names files in
    its ``path`` column. Missing files stay in the list: their row says "no such file".
    """
    files: list[str] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(str(p) for p in item.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        elif item.suffix.lower() == ".csv" and item.is_file():
            files += read_path_csv(item)
        else:
            files.append(str(item))
    return files


def collect_files(inputs: Iterable[str | Path]) -> list[str]:
    """Absolute paths of the files to predict (:func:`expand_inputs`); a file named twice is predicted once.

    Absolute, so that every worker opens the same file whatever its working
    directory, and the table's path column joins back to a library unambiguously.
    """
    return list(dict.fromkeys(os.path.abspath(path) for path in expand_inputs(inputs)))


# --------------------------------------------------------------------------- the model on a worker


@dataclass(frozen=True)
class ModelRef:
    """The model a prediction run uses: a folder every worker can open, and its files' checksum."""

    folder: str
    checksum: str
    name: str  # the training run, written in every row
    tf_threads: int | None = None  # TensorFlow threads per worker; None leaves TensorFlow's default

    @classmethod
    def of(cls, folder: Path, tf_threads: int | None = None) -> ModelRef:
        folder = Path(folder).resolve()
        return cls(str(folder), model_checksum(folder), folder.name, tf_threads)

    @property
    def plugin_name(self) -> str:
        return f"genreflow-model-{self.checksum[:16]}"


def load_verified(ref: ModelRef) -> Classifier:
    """Load the model ``ref`` names, refusing files that changed since the run was planned."""
    from genreflow.model.predict import PredictError, load_classifier

    if ref.tf_threads:
        _limit_tf_threads(ref.tf_threads)
    if model_checksum(ref.folder) != ref.checksum:
        raise PredictError(f"the model files in {ref.folder} changed since this prediction run started; "
                           "rerun to predict with the new model")
    return load_classifier(Path(ref.folder))


def _limit_tf_threads(threads: int) -> None:
    """One TensorFlow thread pool per worker sized to its share of the cores.

    Two workers on two cores each running TensorFlow's default pool (one thread a
    core) would oversubscribe the machine. Only possible before TensorFlow's
    first op in the process; later it is left as it is.
    """
    from genreflow.model.quiet_tf import tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        logger.debug("TensorFlow already initialised in this process: thread pools left as they are")


def classifier_cache(ref: ModelRef) -> WorkerCache:
    """The worker plugin the library flow registers: each worker's model, loaded and verified on first use."""
    return WorkerCache(ref.plugin_name, partial(load_verified, ref))


def worker_classifier(ref: ModelRef) -> tuple[Classifier, bool]:
    """The model for a task, and whether it was loaded for it: the worker's cached one where the
    flow's plugin is, else a fresh load."""
    return worker_cached(classifier_cache(ref))


# --------------------------------------------------------------------------- the table


def table_columns(genres: Sequence[str], top_k: int, windows: bool) -> list[str]:
    """The columns of a predictions table, in order."""
    columns = ["path", "duration_s", "n_windows"]
    for k in range(1, min(top_k, len(genres)) + 1):
        columns += [f"genre_{k}", f"prob_{k}"]
    columns += ["model", "error"]
    if windows:
        columns += [f"{WINDOW_PREFIX}{genre}" for genre in genres]
    return columns


def table_from_windows(results: Iterable[FileWindows], genres: Sequence[str], model_name: str, top_k: int,
                       windows: bool) -> pd.DataFrame:
    """The predictions table of windows already predicted, one row a file: its top-k genres by mean window
    probability, or its error (genres empty). No model runs here.

    Columns: path, duration_s (decoded seconds), n_windows, genre_k and prob_k
    for k = 1..top_k (best first), model (the training run), error ("" when
    predicted) and, with ``windows``, window_prob_<genre>: that genre's
    probability in each window, in time order.
    """
    k = min(top_k, len(genres))
    columns = table_columns(genres, top_k, windows)
    data: dict[str, list[Any]] = {column: [] for column in columns}
    for result in results:
        data["path"].append(result.path)
        data["duration_s"].append(result.duration_s)
        data["model"].append(model_name)
        data["error"].append(result.error)
        mean = result.mean
        data["n_windows"].append(0 if result.probs is None else len(result.probs))
        order = [] if mean is None else list(np.argsort(-mean, kind="stable")[:k])
        for rank in range(k):
            data[f"genre_{rank + 1}"].append(genres[order[rank]] if order else None)
            data[f"prob_{rank + 1}"].append(mean[order[rank]] if mean is not None else np.nan)
        if windows:
            for g, genre in enumerate(genres):
                data[f"{WINDOW_PREFIX}{genre}"].append(None if result.probs is None else result.probs[:, g].copy())
    frame = pd.DataFrame(data, columns=columns)
    types: dict[str, Any] = {"path": str, "duration_s": "float64", "n_windows": "int32", "model": str, "error": str}
    types.update({f"prob_{rank + 1}": "float32" for rank in range(k)})
    return frame.astype(types)


def predict_files_table(classifier: Classifier, files: Sequence[str], audio: AudioConfig, top_k: int,
                        windows: bool, model_name: str) -> pd.DataFrame:
    """Run the model on ``files`` and make their predictions table (model.predict.predict_files batches their
    windows together, :func:`table_from_windows` ranks them)."""
    from genreflow.model.predict import predict_files

    results = predict_files(classifier, files, audio, batch_size=BATCH_SIZE)
    return table_from_windows(results, classifier.genres, model_name, top_k, windows)


# --------------------------------------------------------------------------- plan, stage, merge


def file_state(path: str) -> list[int] | None:
    """(size, mtime in ns) of a file, part of its shard's fingerprint: an edited file is predicted again."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


@dataclass(frozen=True)
class PredictShard:
    """One shard of files and the output it makes."""

    spec: OutputSpec
    files: tuple[str, ...]


@dataclass(frozen=True)
class PredictPlan:
    """A prediction run: its id, its shards and what every shard needs."""

    run_id: str
    shards: tuple[PredictShard, ...]
    model: ModelRef
    audio: AudioConfig
    top_k: int
    windows: bool

    @property
    def files(self) -> int:
        return sum(len(shard.files) for shard in self.shards)


def plan_prediction(files: Sequence[str], model: ModelRef, audio: AudioConfig, top_k: int, windows: bool,
                    shard_size: int) -> PredictPlan:
    """Shards of at most ``shard_size`` files in the order given, each an output ``<run id>/shard-NNNNN``.

    As many shards as ``shard_size`` needs, and at least MIN_SHARDS (or one a
    file), of near-equal sizes so that workers finish together. The run id
    hashes the model, the file list and the parameters; a shard's fingerprint
    adds its files' sizes and modification times and the stage's code.
    """
    if not files:
        raise PredictInputError("no audio files to predict (folders are searched for "
                                f"{', '.join(sorted(AUDIO_EXTENSIONS))})")
    if shard_size < 1:
        raise PredictInputError(f"--shard-size must be at least 1 (got {shard_size})")
    params = {"audio": audio, "top_k": top_k, "windows": windows, "batch_size": BATCH_SIZE}
    run_id = "predict-" + fingerprint(model.checksum, list(files), params)[:12]
    code = stage_code("predict")
    shards = []
    count = max(-(-len(files) // shard_size), min(MIN_SHARDS, len(files)))
    bounds = [len(files) * k // count for k in range(count + 1)]
    for number in range(count):
        chunk = tuple(files[bounds[number] : bounds[number + 1]])
        spec = OutputSpec("predict", f"{run_id}/shard-{number:05d}", code,
                          inputs=[model.checksum, [[path, file_state(path)] for path in chunk]], params=params)
        shards.append(PredictShard(spec, chunk))
    return PredictPlan(run_id, tuple(shards), model, audio, top_k, windows)


@dataclass(frozen=True)
class PredictShardResult:
    """What a shard did, for progress and the summary."""

    shard: str
    skipped: bool
    files: int
    failed: int
    windows: int
    model_loaded: bool = False  # this shard's task loaded the model (the first on its worker), not reused it
    load_s: float = 0.0  # seconds spent loading the model for this shard (0 when reused or skipped)
    seconds: float = 0.0  # seconds the shard took, the load included (0 when skipped)


def predict_stage(work_url: str, shard: PredictShard, classifier: Callable[[], Classifier], audio: AudioConfig,
                  top_k: int, windows: bool, model_name: str, force: bool = False) -> PredictShardResult:
    """Predict one shard into its output, unless its finished output already matches the plan.

    ``classifier`` is called only when there is work, so a rerun whose shards
    are all done never loads TensorFlow.
    """
    start = time.perf_counter()
    load_s = 0.0
    with open_output(DataRoot(work_url), shard.spec, force) as out:
        if not out.done:
            loaded = classifier()
            load_s = time.perf_counter() - start
            table = predict_files_table(loaded, shard.files, audio, top_k, windows, model_name)
            out.write_parquet(TABLE, table)
            out.rows = len(table)
            out.extra = {"files": len(table), "failed": int((table["error"] != "").sum()),
                         "windows": int(table["n_windows"].sum())}
    seconds = 0.0 if out.done else time.perf_counter() - start
    return PredictShardResult(shard.spec.key, out.done, out.rows, int(out.extra.get("failed", 0)),
                              int(out.extra.get("windows", 0)), load_s=load_s, seconds=seconds)


def read_predictions(work_url: str, plan: PredictPlan) -> pd.DataFrame:
    """Every shard's table, in file order: the run's predictions, one row a file."""
    root = DataRoot(work_url)
    tables = [root.read_parquet(output_path(root, "predict", shard.spec.key, TABLE)) for shard in plan.shards]
    return pd.concat(tables, ignore_index=True)


@task(name="predict-shard", retry_condition_fn=retry_transient)
def predict_shard_task(work_url: str, shard: PredictShard, model: ModelRef, audio: AudioConfig, top_k: int,
                       windows: bool) -> PredictShardResult:
    """One shard on a Dask worker, with the worker's cached model."""
    loads: list[bool] = []

    def classifier() -> Classifier:
        loaded, fresh = worker_classifier(model)
        loads.append(fresh)
        return loaded

    result = predict_stage(work_url, shard, classifier, audio, top_k, windows, model.name)
    return replace(result, model_loaded=any(loads))


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class PredictSummary:
    """Files, their top-1 genres and the failures of a predictions table."""

    files: int
    predicted: int
    failures: list[tuple[str, str]]  # (path, reason)
    genres: dict[str, int]  # top-1 genre -> files, most frequent first
    model: str
    model_loads: int = 0  # times a worker loaded the model for this run (once per worker, 0 when all was done)
    load_s: float = 0.0  # worker seconds spent loading the model
    worker_s: float = 0.0  # worker seconds spent on shards, the loads included

    @classmethod
    def of(cls, table: pd.DataFrame, model: str) -> PredictSummary:
        failed = table[table["error"] != ""]
        top1 = table.loc[table["error"] == "", "genre_1"] if "genre_1" in table else pd.Series(dtype=str)
        counts = top1.value_counts()
        genres = {str(genre): int(n) for genre, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
        return cls(len(table), len(table) - len(failed), list(zip(failed["path"], failed["error"], strict=True)),
                   genres, model)

    def lines(self, max_failures: int = 20) -> list[str]:
        """The summary as plain text lines, for the terminal."""
        out = [f"{self.files} files: {self.predicted} predicted, {len(self.failures)} failed (model {self.model})"]
        if self.genres:
            out.append("top-1 genres: " + ", ".join(f"{genre} {n} ({n / max(self.predicted, 1):.0%})"
                                                   for genre, n in self.genres.items()))
        for path, reason in self.failures[:max_failures]:
            out.append(f"  failed: {path}: {reason}")
        if len(self.failures) > max_failures:
            out.append(f"  ... and {len(self.failures) - max_failures} more failures (the table's error column)")
        return out

    def markdown(self, out: str, max_failures: int = 50) -> str:
        """The summary as markdown, for a Prefect artifact."""
        text = [f"# genreflow predictions: {self.model}", "",
                f"{self.files} files, {self.predicted} predicted, {len(self.failures)} failed; table: `{out}`", "",
                "| top-1 genre | files | share |", "|---|---:|---:|"]
        text += [f"| {genre} | {n} | {n / max(self.predicted, 1):.1%} |" for genre, n in self.genres.items()]
        if self.failures:
            text += ["", "## Failures", "", "| file | reason |", "|---|---|"]
            text += [f"| `{path}` | {reason} |" for path, reason in self.failures[:max_failures]]
            if len(self.failures) > max_failures:
                text.append(f"\n... and {len(self.failures) - max_failures} more (the table's error column)")
        return "\n".join(text) + "\n"
