"""The library path of ``genreflow predict``: shards of files as Prefect tasks on Dask workers.

One task per shard of files (``--shard-size``), never one per file (a Prefect
task costs about 0.1 s of a worker's time). Each worker loads the model once:
the flow registers a worker plugin (tasks/predict.py classifier_cache) for the run and
removes it at the end. Shards are submitted a few at a time ahead of the
workers rather than all at once, so a library of 100,000 files does not first
spend minutes creating task runs, and the progress bar moves from the start.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import distributed
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from genreflow.flows.config import RunConfig
from genreflow.flows.lock import check_unlocked, data_root_lock
from genreflow.flows.predict import PredictOptions, check_destinations, plan_for, print_summary, write_table
from genreflow.flows.progress import FileProgress
from genreflow.flows.runner import cluster_settings, dask_client, make_task_runner, plugin_on_workers, prefect_api
from genreflow.storage.errors import GenreflowError
from genreflow.tasks.predict import (
    PredictPlan,
    PredictShardResult,
    PredictSummary,
    classifier_cache,
    collect_files,
    predict_shard_task,
)

RETRY_DELAY_S = 2
AHEAD_PER_THREAD = 2  # shards queued per worker thread: one running, one ready to start


class PredictFailed(GenreflowError, RuntimeError):
    """Some shards failed; the finished ones are kept, and a rerun predicts only the rest."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container or SLURM sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
    task = predict_shard_task.with_options(retries=options.retries, retry_delay_seconds=RETRY_DELAY_S)
    pending = list(reversed(plan.shards))

    def submit() -> Any:
        shard = pending.pop()
        return task.submit(options.work_root, shard, plan.model, plan.audio, plan.top_k, plan.windows), shard

    if client is None:
        raise PredictFailed("the predict flow needs a Dask task runner (flows/runner.py make_task_runner)")
    ahead = max(2, AHEAD_PER_THREAD * sum(client.nthreads().values()))
    running: dict[Any, tuple[Any, Any]] = {}
    completed = distributed.as_completed(loop=client.loop)
    for _ in range(min(ahead, len(pending))):
        future, shard = submit()
        running[future.wrapped_future] = (future, shard)
        completed.add(future.wrapped_future)
    failures: list[tuple[str, str]] = []
    results: list[PredictShardResult] = []
    for done in completed:
        future, shard = running.pop(done)
        future.wait()
        state = future.state
        if state.is_completed():
            result = future.result()
            results.append(result)
            progress.advance(result.shard, result.files, result.failed, result.skipped)
        else:
            failures.append((shard.spec.key, state.message or state.name))
        if pending:
            future, shard = submit()
            running[future.wrapped_future] = (future, shard)
            completed.add(future.wrapped_future)
    get_run_logger().info("predict: %d shard(s) on %d worker(s): %.1f worker-seconds, of which %.1f loading the "
                          "model (%d time(s))", len(plan.shards), len(client.nthreads()),
                          sum(r.seconds for r in results), sum(r.load_s for r in results),
                          sum(r.model_loaded for r in results))
    return failures, results


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
    runner = make_task_runner(RunConfig(workers=options.workers, dask_address=options.dask_address))
    with prefect_api(), cluster_settings():
        summary = predict_flow.with_options(task_runner=runner)(options=options)
    print_summary(summary, options, time.perf_counter() - start)
    return summary
