"""The Dask task runner a flow runs its shard tasks on, and how a flow waits for its shard tasks."""

from __future__ import annotations

import itertools
import os
import queue
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import dask
from prefect import Task
from prefect.futures import PrefectFuture
from prefect.logging.handlers import APILogWorker
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    get_current_settings,
    temporary_settings,
)
from prefect_dask import DaskTaskRunner

from genreflow.flows.config import PredictOptions, RunConfig
from genreflow.storage.errors import DiskFull, disk_full_error

# Dask's nanny starts every worker with MALLOC_TRIM_THRESHOLD_=65536, and setting any
# malloc tunable turns off glibc's dynamic mmap threshold: each array over 128 KiB then
# comes from a fresh mmap, zero-filled page by page on first touch, and the mel stage
# ran 2.7x slower in a worker than in a plain process (docs/benchmarks.md). Below this
# size arrays come from the heap again; Dask's trimming of the heap stays as it is.
WORKER_ENVIRON: dict[str, str] = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20)}

# Dask's housekeeping timers, tuned for interactive clusters of many small tasks, cost a
# 2-core machine 5 % of a core in the scheduler and nannies and 7 % in two idle workers
# (the 20 ms event-loop tick alone most of it); busy workers also pay the 10 ms profiler.
# genreflow runs few long tasks (a shard each, seconds to minutes), so coarser timers lose
# nothing it needs: the unresponsive-loop warning and memory limits still work, at 1 s
# and 0.5 s resolution (docs/benchmarks.md).
DASK_SETTINGS: dict[str, str | bool] = {
    "distributed.admin.tick.interval": "1s",  # default 20ms
    "distributed.admin.system-monitor.interval": "2s",  # default 500ms
    "distributed.worker.memory.monitor-interval": "500ms",  # default 100ms
    "distributed.worker.profile.enabled": False,  # the dashboard's statistical profiler
}

# Prefect waits 20 s for its temporary API by default; on a busy 2-core machine
# starting it took longer than that (the bench saw it time out beside training runs).
API_START_TIMEOUT_S = 120
RETRY_DELAY_S = 2  # before a shard task's retry of a transient error

S = TypeVar("S")  # a shard, as the flow describes it
R = TypeVar("R")  # what its task returns


def dask_environ() -> dict[str, str]:
    """DASK_SETTINGS as the environment variables Dask reads them from (for external clusters)."""
    return {"DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
            for key, value in DASK_SETTINGS.items()}


@contextmanager
def cluster_settings() -> Iterator[None]:
    """Dask configuration for the LocalCluster a flow starts: DASK_SETTINGS, workers with WORKER_ENVIRON.

    The nannies hand the configuration to the worker processes they spawn.
    Workers of an external cluster (``dask worker``) take the same settings from
    their environment (``dask_environ()`` and WORKER_ENVIRON; deploy/ sets them).
    """
    with dask.config.set({**DASK_SETTINGS, **{f"distributed.nanny.pre-spawn-environ.{name}": value
                                              for name, value in WORKER_ENVIRON.items()},
                          "distributed.worker.preload": [__name__]}):
        yield


def dask_setup(worker: Any) -> None:
    """Run by each worker of a LocalCluster the flow starts (Dask's preload): a task that fails on a user
    error (a full disk) logs one line there too, as in the flow's process, not a traceback above the CLI's line."""
    from genreflow.flows.quiet import quiet_user_error_tracebacks

    quiet_user_error_tracebacks()


def make_task_runner(run: RunConfig | PredictOptions) -> DaskTaskRunner:
    """An existing scheduler when ``--dask-address`` is set, else a LocalCluster of processes.

    One thread per worker process: decoding and STFTs hold the GIL often enough
    that processes, not threads, give the parallelism.
    """
    if run.dask_address:
        return DaskTaskRunner(address=run.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": run.workers, "threads_per_worker": 1, "processes": True,
                        "dashboard_address": ":0"},
    )


@contextmanager
def prefect_api() -> Iterator[str]:
    """Make one Prefect API visible to this process and to the workers it starts.

    Without PREFECT_API_URL each process starts its own temporary API, so every
    LocalCluster worker would spend seconds starting one and record its task runs
    where the flow's never look. Start one temporary API here (or reuse the
    configured one) and export its URL, so that worker processes inherit it.
    """
    url = get_current_settings().api.url
    exported = os.environ.get("PREFECT_API_URL")
    server = None
    updates: dict[Any, Any] = {}
    if not url:
        # Prefect's server (FastAPI, SQLAlchemy: about 2 s to import) only when one is started here.
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
        server.start(timeout=max(get_current_settings().server.ephemeral.startup_timeout_seconds,
                                 API_START_TIMEOUT_S))
        url = server.api_url
        # Flow-run heartbeats let a server's automations mark a dead run as crashed; the
        # temporary API runs none, and stopping the heartbeat thread costs a flow up to 1 s.
        updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url, **updates}):
            yield url
    finally:
        if exported is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = exported
        if server is not None:
            APILogWorker.drain_all(timeout=5)  # ship the last log lines before the API goes away
            server.stop()


def dask_client() -> Any:
    """The Dask client of the running flow's task runner, or None (no flow, or another task runner)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    runner = getattr(context, "task_runner", None) if context else None
    return getattr(runner, "client", None)


@contextmanager
def plugin_on_workers(plugin: Any) -> Iterator[None]:
    """``plugin`` (a Dask WorkerPlugin with a ``name``) on every worker of the flow's cluster while the block
    runs, then dropped with what it holds; nothing outside Dask (tasks then load what they need themselves)."""
    import logging

    client = dask_client()
    if client is None:
        yield
        return
    client.register_plugin(plugin, name=plugin.name)
    try:
        yield
    finally:
        try:
            client.unregister_worker_plugin(plugin.name)
        except (ValueError, KeyError, OSError) as exc:  # a worker that left: nothing to drop there
            logging.getLogger(__name__).debug("unregistering %s: %s", plugin.name, exc)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container or SLURM sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_shards(task: Task[..., R], retries: int, shards: Iterable[S], arguments: Callable[[S], tuple[Any, ...]],
               on_result: Callable[[S, R], None], ahead: int | None = None) -> list[tuple[S, str]]:
    """Submit ``task(*arguments(shard))`` for each shard and hand each result to ``on_result`` as it finishes.

    Returns (shard, reason) of each task that failed after ``retries`` retries
    (RETRY_DELAY_S apart, on the errors the task's retry condition allows): the
    others go on, so that every finished shard is kept for the rerun. A task
    that found the disk full raises DiskFull here, once every task has ended. Results
    come in the order tasks finish. With ``ahead``, at most that many tasks are
    submitted before the first finishes, and one more as each finishes, so that
    a library of 100,000 files does not first spend minutes creating task runs;
    without it, every shard at once (``shards`` is read as they are submitted).
    """
    retried = task.with_options(retries=retries, retry_delay_seconds=RETRY_DELAY_S)
    finished: queue.SimpleQueue[PrefectFuture[R]] = queue.SimpleQueue()
    running: dict[PrefectFuture[R], S] = {}
    pending = iter(shards)

    def start(count: int | None) -> None:
        for shard in itertools.islice(pending, count):  # count None: every shard
            future = retried.submit(*arguments(shard))
            running[future] = shard
            future.add_done_callback(finished.put)

    start(ahead)
    failures: list[tuple[S, str]] = []
    disk_full: DiskFull | None = None
    while running:
        future = finished.get()
        shard = running.pop(future)
        future.wait()
        state = future.state
        if state.is_completed():
            on_result(shard, future.result())
        else:
            failures.append((shard, state.message or state.name))
            disk_full = disk_full or disk_full_error(failed_with(state))
        if ahead is not None:
            start(1)
    if disk_full is not None:  # the other shards could not have fitted either: one line saying so, not a list
        raise disk_full
    return failures


def failed_with(state: Any) -> BaseException | None:
    """The exception a failed task run raised (on a worker: its cause chain comes with it), or None."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # a result that cannot be read back: the state's message is all there is
        return None
    return error if isinstance(error, BaseException) else None
