"""Table runs of ``genreflow predict``: the library flow on Dask, or its shards in this process.

A table run (``--out``, ``--windows``, or more files than ``--local-max``)
plans shards of files (tasks/predict.py), writes each shard through the output
protocol under a work root (``--work``, by default ``<out>.parts`` beside the
table) and then merges them into one table, so a killed run resumes with the
shards that finished. flows/predict.py, the CLI, decides which way a run goes;
this module imports nothing from it.

The library flow runs one task per shard of files (``--shard-size``), never one
per file (a Prefect task costs about 0.1 s of a worker's time). Each worker
loads the model once: the flow registers a worker plugin (tasks/predict.py
classifier_cache) for the run and removes it at the end. Shards are submitted a
few at a time ahead of the workers rather than all at once, so a library of
100,000 files does not first spend minutes creating task runs, and the progress
bar moves from the start.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import distributed
import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from genreflow.flows.config import ConfigError, PredictOptions
from genreflow.flows.lock import check_unlocked, data_root_lock
from genreflow.flows.progress import FileProgress
from genreflow.flows.runner import (
    cluster_settings,
    dask_client,
    make_task_runner,
    plugin_on_workers,
    prefect_api,
    run_shards,
    usable_cores,
)
from genreflow.model.files import model_audio
from genreflow.storage.errors import GenreflowError
from genreflow.storage.root import DataRoot, StorageError
from genreflow.tasks.predict import (
    ModelRef,
    PredictPlan,
    PredictShard,
    PredictShardResult,
    PredictSummary,
    classifier_cache,
    collect_files,
    plan_prediction,
    predict_shard_task,
    predict_stage,
    read_predictions,
)

if TYPE_CHECKING:
    from genreflow.model.predict import Classifier

AHEAD_PER_THREAD = 2  # shards queued per worker thread: one running, one ready to start


class PredictFailed(GenreflowError, RuntimeError):
    """Some shards failed; the finished ones are kept, and a rerun predicts only the rest."""


# --------------------------------------------------------------------------- table runs, shared by both executors


def check_destinations(options: PredictOptions) -> None:
    """Fail before any work when the table or the work root cannot be written, naming which."""
    for flag, url in (("--out", parent_url(options.out)), ("--work", options.work_root)):
        try:
            DataRoot(url).ensure_writable()
        except StorageError as exc:
            raise ConfigError(f"{flag}: {exc}") from None


def parent_url(path: str) -> str:
    """The folder (path or URL) that holds ``path``; "." for a bare file name."""
    return posixpath.dirname(path) or "."


def plan_for(options: PredictOptions, files: list[str], tf_threads: int | None) -> PredictPlan:
    """The shards of this run (tasks.predict.plan_prediction) with the model's own audio settings."""
    model = ModelRef.of(Path(options.model_dir), tf_threads)
    return plan_prediction(files, model, model_audio(options.model_dir), options.top_k, options.windows,
                           options.shard_size)


def write_table(options: PredictOptions, plan: PredictPlan) -> tuple[PredictSummary, pd.DataFrame]:
    """Merge the finished shards into the one table at --out (atomically) and summarise it."""
    table = read_predictions(options.work_root, plan)
    out_root = DataRoot(parent_url(options.out))
    out_root.write_parquet(out_root.join(posixpath.basename(options.out)), table)
    return PredictSummary.of(table, plan.model.name), table


def print_summary(summary: PredictSummary, options: PredictOptions, seconds: float) -> None:
    for line in summary.lines():
        print(line)
    print(f"table: {options.out} ({seconds:.1f} s); shards kept in {options.work_root} for a rerun")


def local_table_predict(options: PredictOptions, files: list[str]) -> PredictSummary:
    """A table of a handful of files, predicted here: the library run's shards without a flow or cluster."""
    from genreflow.model.predict import load_classifier  # TensorFlow: only in a process that predicts

    start = time.perf_counter()
    check_destinations(options)
    plan = plan_for(options, files, tf_threads=None)
    loaded: list[Classifier] = []

    def classifier() -> Classifier:
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


# --------------------------------------------------------------------------- the library flow on Dask


def tf_threads_per_worker(client: distributed.Client) -> int | None:
    """TensorFlow threads for each worker: its share of its machine's cores, the smallest share of any worker.

    Two worker processes on two cores, each with TensorFlow's default pool of a
    thread per core, would run four busy threads on two cores. None (TensorFlow's
    default) when the workers cannot be asked.
    """
    try:
        cores = client.run(usable_cores)
        workers = client.scheduler_info(n_workers=-1)["workers"]
    except (OSError, ValueError, KeyError, distributed.TimeoutError):
        return None
    per_host = Counter(info["host"] for info in workers.values())
    shares = [max(1, int(cores[address]) // per_host[info["host"]])
              for address, info in workers.items() if address in cores]
    return min(shares) if shares else None


@flow(name="predict")
def predict_flow(options: PredictOptions) -> PredictSummary:
    """Predict every file of ``options.inputs`` in shards on Dask, then write the one table at ``options.out``."""
    logger = get_run_logger()
    client = dask_client()
    files = collect_files(options.inputs)
    plan = plan_for(options, files, tf_threads_per_worker(client) if client is not None else None)
    logger.info("predict: %d files in %d shards of up to %d with %s; run %s, shards in %s", plan.files,
                len(plan.shards), options.shard_size, plan.model.name, plan.run_id, options.work_root)
    with plugin_on_workers(classifier_cache(plan.model)), data_root_lock(options.work_root), \
            FileProgress(logger, plan.files, len(plan.shards)) as progress:
        failures, results = _run_shards(options, plan, client, progress)
    if failures:
        raise PredictFailed(_failure_message(failures, len(plan.shards)))
    summary, _ = write_table(options, plan)
    summary = replace(summary, model_loads=sum(r.model_loaded for r in results),
                      load_s=sum(r.load_s for r in results), worker_s=sum(r.seconds for r in results))
    logger.info(summary.lines(max_failures=0)[0])
    create_markdown_artifact(markdown=summary.markdown(options.out), key=f"genreflow-{plan.run_id}",
                             description=f"genreflow predictions of {summary.files} files with {summary.model}")
    return summary


def _run_shards(options: PredictOptions, plan: PredictPlan, client: distributed.Client | None,
                progress: FileProgress) -> tuple[list[tuple[str, str]], list[PredictShardResult]]:
    """Submit the shards a few ahead of the workers, advance the progress.

    Returns (shard, reason) of each failed shard, and the results of the others.
    """
    if client is None:
        raise PredictFailed("the predict flow needs a Dask task runner (flows/runner.py make_task_runner)")
    results: list[PredictShardResult] = []

    def record(_: PredictShard, result: PredictShardResult) -> None:
        results.append(result)
        progress.advance(result.shard, result.files, result.failed, result.skipped)

    failed = run_shards(predict_shard_task, options.retries, plan.shards,
                        lambda shard: (options.work_root, shard, plan.model, plan.audio, plan.top_k, plan.windows),
                        record, ahead=max(2, AHEAD_PER_THREAD * sum(client.nthreads().values())))
    get_run_logger().info("predict: %d shard(s) on %d worker(s): %.1f worker-seconds, of which %.1f loading the "
                          "model (%d time(s))", len(plan.shards), len(client.nthreads()),
                          sum(r.seconds for r in results), sum(r.load_s for r in results),
                          sum(r.model_loaded for r in results))
    return [(shard.spec.key, reason) for shard, reason in failed], results


def _failure_message(failures: list[tuple[str, str]], shards: int) -> str:
    """One line: how many shards failed and why, each distinct reason once (a broken model fails them all alike)."""
    reasons = Counter(reason for _, reason in failures)
    why = "; ".join(f"{reason} ({n} shard{'s' if n > 1 else ''})" for reason, n in reasons.most_common(3))
    names = ", ".join(sorted(key for key, _ in failures)[:5]) + (" ..." if len(failures) > 5 else "")
    return (f"{len(failures)} of {shards} prediction shard(s) failed ({names}): {why}; finished shards are "
            "kept, rerun to predict only the rest")


def run_library_predict(options: PredictOptions) -> PredictSummary:
    """The library flow on a LocalCluster (or ``--dask-address``), with checks before anything starts."""
    check_destinations(options)
    check_unlocked(options.work_root)
    start = time.perf_counter()
    runner = make_task_runner(options)
    with prefect_api(), cluster_settings():
        summary = predict_flow.with_options(task_runner=runner)(options=options)
    print_summary(summary, options, time.perf_counter() - start)
    return summary
