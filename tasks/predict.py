"""predict stage: a library's files, in stable hash buckets, to a table of genre predictions, one row a file.

A library is predicted once and then kept up with. Each file falls in a
bucket by a hash of its path (:func:`bucket_of`); a bucket is one output of
the output protocol (storage/outputs.py) under a work root of its own,
``<work>/<state>/b00016-00003.parquet`` and its manifest, where the state id
hashes the model's files, the parameters and the stage's code. A bucket's
fingerprint adds its files and their identities (tasks/library.py: size and
mtime, or a content hash), so a rerun rewrites only the buckets whose files
were added, removed or changed, and inside such a bucket predicts only the
files whose row it cannot carry over: a row is reused when the same path with
the same identity was predicted in the same state. A new model or new
parameters is a new state: everything is predicted again.

The bucket count is a power of two chosen from the library's size and kept
while the library stays within a factor of two of it; when it changes, bucket
``i`` of ``B`` buckets is the union of buckets ``2i`` and ``2i+1`` of ``2B``
(the hash's top bits), so a new bucket carries its rows over from one or two
old ones and nothing is predicted again. Buckets are outputs; tasks are
groups of stale buckets with about equal work (:func:`group_shards`), so
adding 5 % of files does not mean one task per touched bucket.

Each Dask worker loads the model once, not once a task: the flow registers a
:func:`classifier_cache` worker plugin (tasks/workers.py WorkerCache). The
plain functions here know nothing of Prefect; ``predict_shard_task`` is the
thin wrapper.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
import posixpath
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from prefect import task

from genreflow.model.audio import AUDIO_EXTENSIONS
from genreflow.model.files import model_checksum
from genreflow.model.params import AudioConfig
from genreflow.storage.files import display_path
from genreflow.storage.fingerprint import fingerprint
from genreflow.storage.manifest import Manifest
from genreflow.storage.outputs import OutputSpec, done_manifest, open_output, output_path, sealed_manifest
from genreflow.storage.root import DataRoot
from genreflow.tasks.library import (
    Listing,
    PredictInputError,
    collect_files,
    expand_inputs,
    file_identity,
    list_library,
    read_path_csv,
)
from genreflow.tasks.stages import stage_code, stage_libraries
from genreflow.tasks.workers import WorkerCache, retry_transient, worker_cached

if TYPE_CHECKING:
    from genreflow.model.predict import Classifier, FileWindows

__all__ = ["Listing", "PredictInputError", "collect_files", "expand_inputs", "list_library", "read_path_csv"]

logger = logging.getLogger(__name__)

TABLE = ".parquet"  # a bucket's predictions: <work>/<state>/b00016-00003.parquet
WINDOW_PREFIX = "window_prob_"  # with --windows: window_prob_<genre>, one probability a window
IDENTITY = "identity"  # a bucket table's column: the file's identity when predicted; not in the --out table
LIBRARY = "library"  # <work>/<state>/library.parquet: path, identity and failed of the last completed run
BATCH_SIZE = 64  # windows the model runs at once
# At least this many buckets, whatever --shard-size: a small library in two buckets of 50 and 14 files keeps one
# of two workers idle most of a cold run. Buckets are powers of two, so the hash's top bits name them.
MIN_BUCKETS = 16
MIN_SHARDS = MIN_BUCKETS  # the name the positional shards had
HASH_BITS = 64

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
    columns += ["novelty", "model", "error"]
    if windows:
        columns += [f"{WINDOW_PREFIX}{genre}" for genre in genres]
    return columns


def table_from_windows(results: Iterable[FileWindows], genres: Sequence[str], model_name: str, top_k: int,
                       windows: bool) -> pd.DataFrame:
    """The predictions table of windows already predicted, one row a file: its top-k genres by mean window
    probability, or its error (genres empty). No model runs here.

    Columns: path (storage.files.display_path), duration_s (decoded seconds), n_windows, genre_k and prob_k
    for k = 1..top_k (best first), novelty (model/open_set.py: past 1.0 the file is unlike the training
    tracks; NaN for a model without a novelty reference), model (the training run), error ("" when
    predicted) and, with ``windows``, window_prob_<genre>: that genre's
    probability in each window, in time order.
    """
    k = min(top_k, len(genres))
    columns = table_columns(genres, top_k, windows)
    data: dict[str, list[Any]] = {column: [] for column in columns}
    for result in results:
        data["path"].append(display_path(result.path))
        data["duration_s"].append(result.duration_s)
        data["model"].append(model_name)
        data["error"].append(result.error)
        data["novelty"].append(result.novelty)
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
    types: dict[str, Any] = {"path": str, "duration_s": "float64", "n_windows": "int32", "novelty": "float32",
                             "model": str, "error": str}
    types.update({f"prob_{rank + 1}": "float32" for rank in range(k)})
    return frame.astype(types)


def predict_files_table(classifier: Classifier, files: Sequence[str], audio: AudioConfig, top_k: int,
                        windows: bool, model_name: str) -> pd.DataFrame:
    """Run the model on ``files`` and make their predictions table (model.predict.predict_files batches their
    windows together, :func:`table_from_windows` ranks them)."""
    from genreflow.model.predict import predict_files

    results = predict_files(classifier, files, audio, batch_size=BATCH_SIZE)
    return table_from_windows(results, classifier.genres, model_name, top_k, windows)


# --------------------------------------------------------------------------- buckets and the plan


def bucket_count(files: int, shard_size: int, previous: int | None = None) -> int:
    """Buckets for ``files`` files: a power of two, about ``shard_size`` files a bucket, at least MIN_BUCKETS.

    ``previous`` (the last run's count) is kept while it is within a factor of
    two of the ideal, so a library that grows or shrinks by a few files keeps
    its buckets; past that the count doubles or halves and rows are carried over.
    """
    ideal = max(MIN_BUCKETS, 1 << max(0, math.ceil(math.log2(max(1, -(-files // max(1, shard_size)))))))
    if previous is not None and previous >= MIN_BUCKETS and ideal // 2 <= previous <= ideal * 2:
        return previous
    return ideal


def bucket_of(path: str, buckets: int) -> int:
    """The bucket of ``path`` among ``buckets`` (a power of two): the top bits of a hash of its bytes."""
    digest = hashlib.blake2b(os.fsencode(path), digest_size=HASH_BITS // 8).digest()
    return int.from_bytes(digest, "big") >> (HASH_BITS - (buckets.bit_length() - 1))


def bucket_key(state: str, buckets: int, index: int) -> str:
    return f"{state}/b{buckets:05d}-{index:05d}"


def related_buckets(index: int, buckets: int, previous: int) -> list[int]:
    """The buckets among ``previous`` that hold the files of bucket ``index`` among ``buckets`` (top-bit hashing)."""
    if previous >= buckets:
        ratio = previous // buckets
        return list(range(index * ratio, (index + 1) * ratio))
    return [index // (buckets // previous)]


@dataclass(frozen=True)
class PredictShard:
    """One bucket: its files (in the library's order), their identities, the output it makes, and where its
    rows may be carried over from (the same bucket of an earlier run, or its parent or children)."""

    spec: OutputSpec
    files: tuple[str, ...]
    identities: tuple[str, ...]
    carry: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.spec.key


@dataclass(frozen=True)
class LastRun:
    """What the last completed run of a work root predicted: its state, model and each file's identity."""

    state: str
    model: str
    checksum: str
    params: str  # fingerprint of the parameters
    buckets: int
    files: dict[str, tuple[str, bool]]  # display path -> (identity, failed)


@dataclass(frozen=True)
class LibraryChanges:
    """The library against the last completed run: what the summary line and the artifact say."""

    added: int
    removed: int
    modified: int
    unchanged: int
    first_run: bool
    why_all: str = ""  # why every file is predicted again ("the model changed ..."), "" when not

    @classmethod
    def between(cls, files: Sequence[str], file_ids: Sequence[str], last: LastRun | None, model: ModelRef,
                state: str) -> LibraryChanges:
        if last is None:
            return cls(len(files), 0, 0, 0, True)
        current = {display_path(p): i for p, i in zip(files, file_ids, strict=True)}
        known = {p: ident for p, (ident, _) in last.files.items()}
        added = sum(p not in known for p in current)
        removed = sum(p not in current for p in known)
        modified = sum(p in known and known[p] != i for p, i in current.items())
        why = ""
        if last.checksum != model.checksum:
            why = f"the model changed since the last run ({last.model} -> {model.name}): every file is predicted again"
        elif last.state != state:
            why = ("the settings (--top-k, --windows, the audio settings), genreflow's prediction code or a library "
                   "it uses changed since the last run: every file is predicted again")
        return cls(added, removed, modified, len(current) - added - modified, False, why)


@dataclass(frozen=True)
class PredictPlan:
    """A prediction run: its state, its buckets and what every bucket needs."""

    run_id: str  # the state: model, parameters and code; one folder of the work root
    shards: tuple[PredictShard, ...]
    model: ModelRef
    audio: AudioConfig
    top_k: int
    windows: bool
    buckets: int = MIN_BUCKETS
    order: tuple[str, ...] = ()  # every file, in the library's order: the table's row order
    params_fingerprint: str = ""
    changes: LibraryChanges | None = None
    retry_failed: bool = False
    last: LastRun | None = field(default=None, repr=False)

    @property
    def files(self) -> int:
        return sum(len(shard.files) for shard in self.shards)

    def work(self, shard: PredictShard) -> int:
        """Files of ``shard`` to predict, as far as the last run tells (the task decides from the rows)."""
        last = self.last if self.last is not None and self.last.state == self.run_id else None
        if last is None:
            return len(shard.files)
        count = 0
        for path, ident in zip(shard.files, shard.identities, strict=True):
            known = last.files.get(display_path(path))
            count += known is None or known[0] != ident or (self.retry_failed and known[1])
        return count


def plan_params(audio: AudioConfig, top_k: int, windows: bool) -> dict[str, Any]:
    return {"audio": audio, "top_k": top_k, "windows": windows, "batch_size": BATCH_SIZE}


def plan_prediction(files: Sequence[str], model: ModelRef, audio: AudioConfig, top_k: int, windows: bool,
                    shard_size: int, file_ids: Sequence[str] | None = None, last: LastRun | None = None,
                    retry_failed: bool = False) -> PredictPlan:
    """The buckets of ``files``, each an output ``<state>/b<B>-<i>`` holding its files in the order given.

    The state id hashes the model, the parameters and the stage's code; a
    bucket's fingerprint adds its files and their identities (``file_ids``,
    tasks.library.file_identity; by default size and mtime). ``last`` is the
    last completed run of the work root (:func:`read_last_run`): it keeps the
    bucket count, and tells the summary what changed.
    """
    if not files:
        raise PredictInputError("no audio files to predict (folders are searched for "
                                f"{', '.join(sorted(AUDIO_EXTENSIONS))})")
    if shard_size < 1:
        raise PredictInputError(f"--shard-size must be at least 1 (got {shard_size})")
    ids = list(file_ids) if file_ids is not None else [file_identity(path) for path in files]
    params = plan_params(audio, top_k, windows)
    params_fp = fingerprint(params)
    code = stage_code("predict")
    # The libraries' versions too (tasks/stages.py): an upgraded decoder or TensorFlow is a new state.
    state = "predict-" + fingerprint(model.checksum, params, code, stage_libraries("predict"))[:12]
    previous = last.buckets if last is not None and last.state == state else None
    count = bucket_count(len(files), shard_size, previous)
    members: dict[int, list[tuple[str, str]]] = {}
    for path, ident in zip(files, ids, strict=True):
        members.setdefault(bucket_of(path, count), []).append((path, ident))
    shards = []
    for index in sorted(members):
        chunk = members[index]
        carry = () if previous is None or previous == count else tuple(
            bucket_key(state, previous, i) for i in related_buckets(index, count, previous))
        spec = OutputSpec("predict", bucket_key(state, count, index), code,
                          inputs=[model.checksum, [[path, ident] for path, ident in chunk]], params=params)
        shards.append(PredictShard(spec, tuple(p for p, _ in chunk), tuple(i for _, i in chunk), carry))
    changes = LibraryChanges.between(files, ids, last, model, state)
    return PredictPlan(state, tuple(shards), model, audio, top_k, windows, count, tuple(files), params_fp,
                       changes, retry_failed, last)


def group_shards(shards: Sequence[PredictShard], work: Mapping[str, int], parallel: int,
                 shard_size: int) -> list[tuple[PredictShard, ...]]:
    """Buckets to predict, packed into tasks of at most ``shard_size`` files of work (first fit, largest first).

    At least ``2 * parallel`` tasks where there are buckets enough, so that every
    worker has work; a bucket with nothing to predict (files only removed)
    weighs nothing and rides along with another.
    """
    if not shards:
        return []
    total = sum(work[s.key] for s in shards)
    capacity = max(1, min(shard_size, -(-total // max(1, min(len(shards), 2 * parallel)))))
    bins: list[list[PredictShard]] = []
    loads: list[int] = []
    for shard in sorted(shards, key=lambda s: (-work[s.key], s.key)):
        weight = work[shard.key]
        for b, load in enumerate(loads):
            if load + weight <= capacity:
                bins[b].append(shard)
                loads[b] += weight
                break
        else:
            bins.append([shard])
            loads.append(weight)
    return [tuple(b) for b in bins]


# --------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class PredictShardResult:
    """What a bucket did, for progress and the summary."""

    shard: str
    skipped: bool
    files: int
    failed: int
    windows: int
    model_loaded: bool = False  # this task loaded the model (the first on its worker), not reused it
    load_s: float = 0.0  # seconds spent loading the model for this task (0 when reused or skipped)
    seconds: float = 0.0  # seconds the task took, the load included (0 when skipped), on its first bucket
    predicted: int = 0  # files predicted now (the rest of a rewritten bucket was carried over)

    @classmethod
    def done(cls, key: str, manifest: Manifest) -> PredictShardResult:
        return cls(key, True, manifest.rows, int(manifest.extra.get("failed", 0)),
                   int(manifest.extra.get("windows", 0)))


def finished_shard(root: DataRoot, shard: PredictShard, retry_failed: bool = False) -> PredictShardResult | None:
    """The result of a bucket that is done (its manifest matches its fingerprint, its files intact), or None.

    The flow asks before it submits, as the training side's shards do: a task for
    a finished bucket would only find its manifest. With ``retry_failed`` a bucket
    holding failures is not done.
    """
    manifest = done_manifest(root, shard.spec)
    if manifest is None or (retry_failed and manifest.extra.get("failed", 0)):
        return None
    return PredictShardResult.done(shard.key, manifest)


def previous_rows(root: DataRoot, shard: PredictShard) -> pd.DataFrame | None:
    """Rows sealed earlier in this state for the files of ``shard``: its own last version, or its parent's
    or children's under the last bucket count. Only sealed tables are read, whatever they were made from."""
    frames = []
    for key in dict.fromkeys((shard.key, *shard.carry)):
        if sealed_manifest(root, "predict", key) is not None:
            frames.append(root.read_parquet(output_path(root, "predict", key, TABLE)))
    frames = [f for f in frames if len(f)]
    if not frames:
        return None
    rows = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return rows.drop_duplicates("path", keep="first")


def reusable(shard: PredictShard, rows: pd.DataFrame | None, retry_failed: bool) -> tuple[pd.DataFrame | None,
                                                                                          list[int]]:
    """(the rows of ``shard`` to carry over, the positions of its files to predict)."""
    if rows is None or IDENTITY not in rows:
        return None, list(range(len(shard.files)))
    by_path = {p: i for i, p in enumerate(rows["path"])}
    keep, todo = [], []
    for position, (path, ident) in enumerate(zip(shard.files, shard.identities, strict=True)):
        row = by_path.get(display_path(path))
        if row is not None and rows[IDENTITY].iat[row] == ident and not (retry_failed and rows["error"].iat[row]):
            keep.append(row)
        else:
            todo.append(position)
    return (rows.iloc[keep] if keep else None), todo


def _bucket_table(shard: PredictShard, kept: pd.DataFrame | None, fresh: pd.DataFrame | None) -> pd.DataFrame:
    """The bucket's rows in its files' order: carried over and predicted now."""
    frames = [f for f in (kept, fresh) if f is not None and len(f)]
    table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    position = {display_path(p): i for i, p in enumerate(shard.files)}
    order = np.argsort([position[p] for p in table["path"]], kind="stable")
    return table.iloc[order].reset_index(drop=True)


def _write_bucket(root: DataRoot, shard: PredictShard, table: pd.DataFrame, predicted: int) -> PredictShardResult:
    with open_output(root, shard.spec, force=True) as out:
        out.write_parquet(TABLE, table)
        out.rows = len(table)
        out.extra = {"files": len(table), "failed": int((table["error"] != "").sum()),
                     "windows": int(table["n_windows"].sum()), "predicted": predicted}
    return PredictShardResult(shard.key, False, out.rows, out.extra["failed"], out.extra["windows"],
                              predicted=predicted)


def predict_buckets(work_url: str, shards: Sequence[PredictShard], classifier: Callable[[], Classifier],
                    audio: AudioConfig, top_k: int, windows: bool, model_name: str, retry_failed: bool = False,
                    force: bool = False) -> list[PredictShardResult]:
    """Bring each bucket of ``shards`` up to date: carry over the rows that still hold, predict the rest.

    The files to predict of all the buckets go through the model as one stream
    (model.predict.predict_files batches windows across files), and each bucket
    is written and sealed as soon as its last file is predicted, so a kill loses
    at most the bucket in flight. ``classifier`` is called only when there is a
    file to predict: a bucket that only lost files never loads TensorFlow.
    """
    from genreflow.model.predict import predict_files

    start = time.perf_counter()
    root = DataRoot(work_url)
    results: dict[int, PredictShardResult] = {}
    jobs: dict[int, tuple[pd.DataFrame | None, list[int]]] = {}
    for n, shard in enumerate(shards):
        done = None if force else finished_shard(root, shard, retry_failed)
        if done is not None:
            results[n] = done
            continue
        kept, todo = reusable(shard, previous_rows(root, shard), retry_failed)
        if not todo:
            results[n] = _write_bucket(root, shard, _bucket_table(shard, kept, None), 0)
        else:
            jobs[n] = (kept, todo)
    load_s = 0.0
    if jobs:
        loaded = classifier()
        load_s = time.perf_counter() - start
        stream = [(n, shards[n].files[i], shards[n].identities[i]) for n, (_, todo) in jobs.items() for i in todo]
        collected: dict[int, list[FileWindows]] = {n: [] for n in jobs}
        ids: dict[int, list[str]] = {n: [] for n in jobs}
        for (n, _, ident), result in zip(stream, predict_files(loaded, [p for _, p, _ in stream], audio,
                                                              batch_size=BATCH_SIZE), strict=True):
            collected[n].append(result)
            ids[n].append(ident)
            if len(collected[n]) == len(jobs[n][1]):
                fresh = table_from_windows(collected[n], loaded.genres, model_name, top_k, windows)
                fresh[IDENTITY] = ids[n]
                results[n] = _write_bucket(root, shards[n], _bucket_table(shards[n], jobs[n][0], fresh),
                                           len(fresh))
    ordered = [results[n] for n in range(len(shards))]
    if ordered and jobs:
        first = next(n for n in range(len(shards)) if n in jobs)
        ordered[first] = replace(ordered[first], load_s=load_s, seconds=time.perf_counter() - start)
    return ordered


def predict_stage(work_url: str, shard: PredictShard, classifier: Callable[[], Classifier], audio: AudioConfig,
                  top_k: int, windows: bool, model_name: str, force: bool = False,
                  retry_failed: bool = False) -> PredictShardResult:
    """One bucket (:func:`predict_buckets`)."""
    return predict_buckets(work_url, [shard], classifier, audio, top_k, windows, model_name, retry_failed,
                           force)[0]


@task(name="predict-buckets", retry_condition_fn=retry_transient)
def predict_shard_task(work_url: str, shards: tuple[PredictShard, ...], model: ModelRef, audio: AudioConfig,
                       top_k: int, windows: bool, retry_failed: bool = False) -> list[PredictShardResult]:
    """A group of buckets on a Dask worker, with the worker's cached model."""
    loads: list[bool] = []

    def classifier() -> Classifier:
        loaded, fresh = worker_classifier(model)
        loads.append(fresh)
        return loaded

    results = predict_buckets(work_url, shards, classifier, audio, top_k, windows, model.name, retry_failed)
    if any(loads):
        results[0] = replace(results[0], model_loaded=True)
    return results


# --------------------------------------------------------------------------- the table and the last run


def read_predictions(work_url: str, plan: PredictPlan) -> pd.DataFrame:
    """Every bucket's table, in the library's order: the run's predictions, one row a file."""
    root = DataRoot(work_url)
    tables = [root.read_parquet(output_path(root, "predict", shard.key, TABLE)) for shard in plan.shards]
    table = pd.concat([t for t in tables if len(t)] or tables, ignore_index=True)
    order = plan.order or tuple(p for shard in plan.shards for p in shard.files)
    position = {display_path(p): i for i, p in enumerate(order)}
    table = table.iloc[np.argsort([position[p] for p in table["path"]], kind="stable")]
    return table.drop(columns=[IDENTITY], errors="ignore").reset_index(drop=True)


def read_last_run(work_url: str) -> LastRun | None:
    """The last completed run of a work root (the newest sealed ``<state>/library``), or None."""
    root = DataRoot(work_url)
    found: list[tuple[str, str, Manifest]] = []
    for path in root.fs.glob(root.join("predict-*", f"{LIBRARY}.manifest.json")):
        state = posixpath.basename(posixpath.dirname(path))
        manifest = sealed_manifest(root, "predict", f"{state}/{LIBRARY}")
        if manifest is not None:
            found.append((manifest.created_at, state, manifest))
    if not found:
        return None
    _, state, manifest = max(found, key=lambda item: item[:2])
    table = root.read_parquet(output_path(root, "predict", f"{state}/{LIBRARY}", TABLE))
    extra = manifest.extra
    files = {p: (i, bool(f)) for p, i, f in zip(table["path"], table[IDENTITY], table["failed"], strict=True)}
    return LastRun(state, str(extra.get("model", "")), str(extra.get("checksum", "")), str(extra.get("params", "")),
                   int(extra.get("buckets", MIN_BUCKETS)), files)


def write_last_run(work_url: str, plan: PredictPlan, table: pd.DataFrame) -> None:
    """Record what this completed run predicted (:func:`read_last_run`), then drop what it no longer needs:
    buckets of an earlier bucket count, and other states (another model or other settings)."""
    root = DataRoot(work_url)
    paths = [display_path(p) for p in plan.order]
    failed = dict(zip(table["path"], table["error"] != "", strict=True))
    ids = {display_path(p): i for shard in plan.shards for p, i in zip(shard.files, shard.identities, strict=True)}
    index = pd.DataFrame({"path": paths, IDENTITY: [ids[p] for p in paths],
                          "failed": [bool(failed.get(p, False)) for p in paths]})
    spec = OutputSpec("predict", f"{plan.run_id}/{LIBRARY}", stage_code("predict"),
                      inputs=[shard.spec.fingerprint for shard in plan.shards], params=plan.params_fingerprint)
    with open_output(root, spec, force=True) as out:
        out.write_parquet(TABLE, index)
        out.rows = len(index)
        out.extra = {"model": plan.model.name, "checksum": plan.model.checksum, "params": plan.params_fingerprint,
                     "buckets": plan.buckets, "completed_at": dt.datetime.now(dt.UTC).isoformat()}
    keep = {posixpath.basename(shard.key) for shard in plan.shards} | {LIBRARY}
    for entry in root.fs.ls(root.path, detail=False):
        name = posixpath.basename(entry.rstrip("/"))
        if name.startswith("predict-") and name != plan.run_id and root.fs.isdir(entry):
            root.remove(entry, recursive=True)
    for entry in root.fs.ls(root.join(plan.run_id), detail=False):
        if posixpath.basename(entry).split(".")[0] not in keep:
            root.remove(entry)


def adopt_identities(work_url: str, paths: Iterable[str]) -> int:
    """Record the new identities of files whose tags genreflow itself rewrote (``genreflow tag``), in the
    last run's buckets and index, so that the next run reuses their rows instead of predicting them again:
    a tag write leaves the audio, and so the prediction, as it was. ``paths`` as the table shows them.

    Each table is unsealed, rewritten and sealed again with its old fingerprint; the
    next run finds the bucket stale (its files' identities changed), carries every
    row over and predicts nothing. Returns the rows updated.
    """
    from genreflow.storage.manifest import write_manifest
    from genreflow.storage.outputs import manifest_path

    last = read_last_run(work_url)
    wanted = {display_path(p): p for p in paths}
    if last is None or not wanted:
        return 0
    content = any(ident.split(":", 1)[-1].startswith("b2-") for ident, _ in last.files.values())
    fresh = {shown: file_identity(path, content_hash=content) for shown, path in wanted.items()
             if shown in last.files}
    root = DataRoot(work_url)
    updated = 0
    for found in sorted(root.fs.glob(root.join(last.state, "*.manifest.json"))):
        key = f"{last.state}/{posixpath.basename(found).removesuffix('.manifest.json')}"
        manifest = sealed_manifest(root, "predict", key)
        if manifest is None:
            continue
        table = root.read_parquet(output_path(root, "predict", key, TABLE))
        hit = table["path"].isin(list(fresh))
        if not hit.any() or IDENTITY not in table:
            continue
        table.loc[hit, IDENTITY] = table.loc[hit, "path"].map(fresh)
        root.remove(manifest_path(root, "predict", key))  # unsealed while its table is rewritten
        path = output_path(root, "predict", key, TABLE)
        root.write_parquet(path, table)
        write_manifest(root, manifest_path(root, "predict", key), name=manifest.name,
                       fingerprint=manifest.fingerprint, files=[path], rows=manifest.rows, extra=manifest.extra,
                       code=manifest.code, libraries=manifest.libraries)
        updated += int(hit.sum()) if not key.endswith(f"/{LIBRARY}") else 0
    return updated


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class PredictSummary:
    """Files, their top-1 genres and the failures of a predictions table, and what this run changed."""

    files: int
    predicted: int
    failures: list[tuple[str, str]]  # (path, reason)
    genres: dict[str, int]  # top-1 genre -> files, most frequent first
    model: str
    model_loads: int = 0  # times a worker loaded the model for this run (once per worker, 0 when all was done)
    load_s: float = 0.0  # worker seconds spent loading the model
    worker_s: float = 0.0  # worker seconds spent on buckets, the loads included
    changes: LibraryChanges | None = None
    computed: int = 0  # files predicted by this run; the others' rows were reused
    not_listed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): folders, duplicates
    notes: list[str] = field(default_factory=list)  # more lines for the terminal (the playlists written)
    decided: bool = False  # genres counts the open-set decisions (unknown among them), not the top-1 genres

    @classmethod
    def of(cls, table: pd.DataFrame, model: str) -> PredictSummary:
        failed = table[table["error"] != ""]
        column = "genre" if "genre" in table else "genre_1"  # the open-set decision where the table has it
        top1 = table.loc[table["error"] == "", column] if column in table else pd.Series(dtype=str)
        counts = top1.value_counts()
        genres = {str(genre): int(n) for genre, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
        return cls(len(table), len(table) - len(failed), list(zip(failed["path"], failed["error"], strict=True)),
                   genres, model, decided=column == "genre")

    @property
    def reused(self) -> int:
        return self.files - self.computed

    def change_line(self) -> str | None:
        """Files added, removed, modified and reused since the last run, in one line; None without a plan."""
        c = self.changes
        if c is None:
            return None
        if c.first_run:
            return f"first run: {self.computed} predicted, {self.reused} reused"
        line = (f"since the last run: {c.added} added, {c.removed} removed, {c.modified} modified, "
                f"{c.unchanged} unchanged; {self.computed} predicted, {self.reused} reused")
        return f"{line}; {c.why_all}" if c.why_all else line

    def lines(self, max_failures: int = 20) -> list[str]:
        """The summary as plain text lines, for the terminal."""
        out = [f"{self.files} files: {self.predicted} predicted, {len(self.failures)} failed (model {self.model})"]
        change = self.change_line()
        if change:
            out.append(change)
        out += self.notes
        if self.genres:
            shares = ", ".join(f"{genre} {n} ({n / max(self.predicted, 1):.0%})" for genre, n in self.genres.items())
            out.append(("genres: " if self.decided else "top-1 genres: ") + shares)
        for path, reason in self.failures[:max_failures]:
            out.append(f"  failed: {path}: {reason}")
        if len(self.failures) > max_failures:
            out.append(f"  ... and {len(self.failures) - max_failures} more failures (the table's error column)")
        for path, reason in self.not_listed[:max_failures]:
            out.append(f"  not predicted: {display_path(path)}: {reason}")
        if len(self.not_listed) > max_failures:
            out.append(f"  ... and {len(self.not_listed) - max_failures} more paths not predicted")
        return out

    def markdown(self, out: str, max_failures: int = 50) -> str:
        """The summary as markdown, for a Prefect artifact."""
        text = [f"# genreflow predictions: {self.model}", "",
                f"{self.files} files, {self.predicted} predicted, {len(self.failures)} failed; table: `{out}`", ""]
        c = self.changes
        if c is not None:
            text += ["| since the last run | files |", "|---|---:|"]
            text += [f"| {name} | {n} |" for name, n in (("added", c.added), ("removed", c.removed),
                                                        ("modified", c.modified), ("unchanged", c.unchanged),
                                                        ("predicted now", self.computed),
                                                        ("reused", self.reused))]
            text += [""] + ([f"**{c.why_all}**", ""] if c.why_all else []) + (["First run.", ""] if c.first_run
                                                                              else [])
        text += [f"| {'genre' if self.decided else 'top-1 genre'} | files | share |", "|---|---:|---:|"]
        text += [f"| {genre} | {n} | {n / max(self.predicted, 1):.1%} |" for genre, n in self.genres.items()]
        if self.failures:
            text += ["", "## Failures", "", "| file | reason |", "|---|---|"]
            text += [f"| `{path}` | {reason} |" for path, reason in self.failures[:max_failures]]
            if len(self.failures) > max_failures:
                text.append(f"\n... and {len(self.failures) - max_failures} more (the table's error column)")
        if self.not_listed:
            text += ["", "## Not predicted", "", "| path | reason |", "|---|---|"]
            text += [f"| `{display_path(path)}` | {reason} |" for path, reason in self.not_listed[:max_failures]]
        return "\n".join(text) + "\n"
