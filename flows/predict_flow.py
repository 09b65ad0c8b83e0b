"""Table runs of ``genreflow predict``: the library flow on Dask, or its buckets in this process.

A table run (``--out``, ``--windows``, ``--playlists``, or more files than
``--local-max``) lists the library (tasks/library.py), plans hash buckets of
its files against the last completed run in the work root (``--work``, by
default ``<out>.parts`` beside the table; tasks/predict.py), brings each bucket
that changed up to date through the output protocol, then merges them into one
table (Parquet, or CSV for ``x.csv``) and the playlists. So a rerun predicts
only what was added or changed, and a killed run resumes with the buckets that
finished. flows/predict.py, the CLI, decides which way a run goes; this module
imports nothing from it.

The library flow runs one task per group of buckets with about ``--shard-size``
files to predict, never one per file (a Prefect task costs about 0.1 s of a
worker's time), and none for a bucket that is done. Each worker loads the model
once: the flow registers a worker plugin (tasks/predict.py classifier_cache)
for the run and removes it at the end. Tasks are submitted a few at a time
ahead of the workers rather than all at once, so a library of 100,000 files
does not first spend minutes creating task runs, and the progress bar moves
from the start.
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
from genreflow.flows.predict_options import LibraryOptions
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
from genreflow.model.open_set import effective_rule
from genreflow.storage.errors import GenreflowError
from genreflow.storage.files import display_path
from genreflow.storage.root import DataRoot, StorageError
from genreflow.storage.space import bucket_need, check_space
from genreflow.tasks.library import Listing, identities, list_library
from genreflow.tasks.playlists import PlaylistReport, csv_table, with_decision, write_playlists
from genreflow.tasks.predict import (
    ModelRef,
    PredictPlan,
    PredictShard,
    PredictShardResult,
    PredictSummary,
    classifier_cache,
    finished_shard,
    group_shards,
    plan_prediction,
    predict_buckets,
    predict_shard_task,
    read_last_run,
    read_predictions,
    write_last_run,
)

if TYPE_CHECKING:
    from genreflow.model.predict import Classifier

AHEAD_PER_THREAD = 2  # shards queued per worker thread: one running, one ready to start


class PredictFailed(GenreflowError, RuntimeError):
    """Some shards failed; the finished ones are kept, and a rerun predicts only the rest."""


# --------------------------------------------------------------------------- table runs, shared by both executors


def check_destinations(options: LibraryOptions) -> None:
    """Fail before any work when the table, the work root or the playlists cannot be written, naming which."""
    places = [("--out", parent_url(options.out)), ("--work", options.work_root)]
    if options.playlists:
        places.append(("--playlists", options.playlists))
    for flag, url in places:
        try:
            DataRoot(url).ensure_writable()
        except StorageError as exc:
            raise ConfigError(f"{flag}: {exc}") from None


def parent_url(path: str) -> str:
    """The folder (path or URL) that holds ``path``; "." for a bare file name."""
    return posixpath.dirname(path) or "."


def as_library(options: PredictOptions | LibraryOptions) -> LibraryOptions:
    """The options of a library run, whichever the caller built (PredictOptions: every library default)."""
    return options if isinstance(options, LibraryOptions) else LibraryOptions(**options.model_dump())


def plan_for(options: LibraryOptions, listing: Listing, tf_threads: int | None) -> PredictPlan:
    """The buckets of this run (tasks.predict.plan_prediction) with the model's own audio settings, against
    the last completed run in the work root."""
    model = ModelRef.of(Path(options.model_dir), tf_threads)
    file_ids = identities(listing.files, listing.stats, options.content_hash)
    return plan_prediction(listing.files, model, model_audio(options.model_dir), options.top_k, options.windows,
                           options.shard_size, file_ids, read_last_run(options.work_root), options.retry_failed)


def stale_shards(options: LibraryOptions, plan: PredictPlan) -> list[PredictShard]:
    """The buckets that are not done: the only ones a task is made for."""
    root = DataRoot(options.work_root)
    return [shard for shard in plan.shards if finished_shard(root, shard, plan.retry_failed) is None]


def check_bucket_space(options: LibraryOptions, stale: list[PredictShard]) -> None:
    """Refuse, with the estimate, a run whose buckets clearly will not fit in the work root (storage/space.py):
    at the bytes a file took in the buckets sealed there, or a small floor a bucket; before any model loads."""
    work = DataRoot(options.work_root)
    check_space(work, [bucket_need(work, "predict", "predict-*/b*", sum(len(s.files) for s in stale), len(stale))],
                "predicting")


def write_table(options: LibraryOptions, plan: PredictPlan, listing: Listing, computed: int
                ) -> tuple[PredictSummary, pd.DataFrame, PlaylistReport | None]:
    """Merge the buckets into the one table at --out (atomically; CSV for ``.csv``), record the run in the
    work root, write the playlists, and summarise it."""
    table = with_decision(read_predictions(options.work_root, plan),
                          effective_rule(options.model_dir, options.min_confidence, options.max_novelty))
    out_root = DataRoot(parent_url(options.out))
    target = out_root.join(posixpath.basename(options.out))
    if options.csv:
        out_root.write_bytes(target, csv_table(table).to_csv(index=False).encode())
    else:
        out_root.write_parquet(target, table)
    write_last_run(options.work_root, plan, table)
    playlists = None
    if options.playlists:
        playlists = write_playlists(table, options.playlists, {display_path(p): p for p in plan.order})
    not_listed = listing.problems + listing.duplicates + (playlists.skipped if playlists else [])
    summary = replace(PredictSummary.of(table, plan.model.name), changes=plan.changes, computed=computed,
                      not_listed=not_listed, notes=[playlists.line()] if playlists else [])
    return summary, table, playlists


def print_summary(summary: PredictSummary, options: LibraryOptions, seconds: float) -> None:
    for line in summary.lines():
        print(line)
    print(f"table: {options.out} ({seconds:.1f} s); buckets kept in {options.work_root} for the next run")


def local_table_predict(options: PredictOptions | LibraryOptions, files: list[str] | Listing) -> PredictSummary:
    """A table of a handful of files, predicted here: the library run's buckets without a flow or cluster."""
    from genreflow.model.predict import load_classifier  # TensorFlow: only in a process that predicts

    options = as_library(options)
    start = time.perf_counter()
    check_destinations(options)
    listing = files if isinstance(files, Listing) else list_library(files)
    loaded: list[Classifier] = []

    def classifier() -> Classifier:
        if not loaded:
            loaded.append(load_classifier(Path(options.model_dir)))
        return loaded[0]

    with data_root_lock(options.work_root):
        plan = plan_for(options, listing, tf_threads=None)
        _log_plan_start(logging.getLogger("genreflow.predict"), plan)
        stale = stale_shards(options, plan)
        check_bucket_space(options, stale)
        computed = 0
        with FileProgress(logging.getLogger("genreflow.predict"), sum(len(s.files) for s in stale),
                          len(stale)) as progress:
            for group in group_shards(stale, {s.key: plan.work(s) for s in stale}, 1, options.shard_size):
                for result in predict_buckets(options.work_root, group, classifier, plan.audio, plan.top_k,
                                              plan.windows, plan.model.name, plan.retry_failed):
                    computed += result.predicted
                    progress.advance(result.shard, result.files, result.failed, result.skipped)
        summary, _, _ = write_table(options, plan, listing, computed)
    print_summary(summary, options, time.perf_counter() - start)
    return summary


def _log_plan_start(logger: logging.Logger | logging.LoggerAdapter, plan: PredictPlan) -> None:
    if plan.changes is not None and plan.changes.why_all:
        logger.warning("predict: %s", plan.changes.why_all)


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
def predict_flow(options: LibraryOptions) -> PredictSummary:
    """Bring the predictions of ``options.inputs`` up to date in buckets on Dask, then write the one table."""
    logger = get_run_logger()
    client = dask_client()
    listing = list_library(options.inputs)
    with data_root_lock(options.work_root):
        plan = plan_for(options, listing, tf_threads_per_worker(client) if client is not None else None)
        _log_plan_start(logger, plan)
        stale = stale_shards(options, plan)
        check_bucket_space(options, stale)
        threads = sum(client.nthreads().values()) if client is not None else 1
        groups = group_shards(stale, {s.key: plan.work(s) for s in stale}, threads, options.shard_size)
        logger.info("predict: %d files in %d buckets with %s (state %s); %d bucket(s) to bring up to date in %d "
                    "task(s), in %s", len(plan.order), len(plan.shards), plan.model.name, plan.run_id, len(stale),
                    len(groups), options.work_root)
        results: list[PredictShardResult] = []
        if groups:
            with plugin_on_workers(classifier_cache(plan.model)), \
                    FileProgress(logger, sum(len(s.files) for s in stale), len(stale)) as progress:
                failures, results = _run_shards(options, plan, groups, client, progress)
            if failures:
                raise PredictFailed(_failure_message(failures, len(stale)))
        summary, _, _ = write_table(options, plan, listing, sum(r.predicted for r in results))
    summary = replace(summary, model_loads=sum(r.model_loaded for r in results),
                      load_s=sum(r.load_s for r in results), worker_s=sum(r.seconds for r in results))
    for line in summary.lines(max_failures=0)[:2]:
        logger.info(line)
    create_markdown_artifact(markdown=summary.markdown(options.out), key=f"genreflow-{plan.run_id}",
                             description=f"genreflow predictions of {summary.files} files with {summary.model}")
    return summary


def _run_shards(options: LibraryOptions, plan: PredictPlan, groups: list[tuple[PredictShard, ...]],
                client: distributed.Client | None, progress: FileProgress
                ) -> tuple[list[tuple[str, str]], list[PredictShardResult]]:
    """Submit the groups of buckets a few ahead of the workers, advance the progress.

    Returns (bucket, reason) of each bucket of a failed task, and the results of the others.
    """
    if client is None:
        raise PredictFailed("the predict flow needs a Dask task runner (flows/runner.py make_task_runner)")
    results: list[PredictShardResult] = []

    def record(_: tuple[PredictShard, ...], done: list[PredictShardResult]) -> None:
        for result in done:
            results.append(result)
            progress.advance(result.shard, result.files, result.failed, result.skipped)

    failed = run_shards(predict_shard_task, options.retries, groups,
                        lambda group: (options.work_root, group, plan.model, plan.audio, plan.top_k, plan.windows,
                                       plan.retry_failed),
                        record, ahead=max(2, AHEAD_PER_THREAD * sum(client.nthreads().values())))
    get_run_logger().info("predict: %d task(s) on %d worker(s): %.1f worker-seconds, of which %.1f loading the "
                          "model (%d time(s)); %d file(s) predicted", len(groups), len(client.nthreads()),
                          sum(r.seconds for r in results), sum(r.load_s for r in results),
                          sum(r.model_loaded for r in results), sum(r.predicted for r in results))
    return [(shard.key, reason) for group, reason in failed for shard in group
            if not any(r.shard == shard.key for r in results)], results


def _failure_message(failures: list[tuple[str, str]], shards: int) -> str:
    """One line: how many buckets failed and why, each distinct reason once (a broken model fails them all alike)."""
    reasons = Counter(reason for _, reason in failures)
    why = "; ".join(f"{reason} ({n} bucket{'s' if n > 1 else ''})" for reason, n in reasons.most_common(3))
    names = ", ".join(sorted(key for key, _ in failures)[:5]) + (" ..." if len(failures) > 5 else "")
    return (f"{len(failures)} of {shards} prediction bucket(s) failed ({names}): {why}; finished buckets are "
            "kept, rerun to predict only the rest")


def run_library_predict(options: PredictOptions | LibraryOptions) -> PredictSummary:
    """The library flow on a LocalCluster (or ``--dask-address``), with checks before anything starts."""
    options = as_library(options)
    check_destinations(options)
    check_unlocked(options.work_root)
    start = time.perf_counter()
    runner = make_task_runner(options)
    with prefect_api(), cluster_settings():
        summary = predict_flow.with_options(task_runner=runner)(options=options)
    print_summary(summary, options, time.perf_counter() - start)
    return summary

