"""The LocalCluster a flow starts gets genreflow's Dask settings and worker environment; shard tasks are waited on
with retries, a failure does not stop the rest, and a library's shards are submitted only a few ahead."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import dask
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from genreflow.flows.runner import DASK_SETTINGS, WORKER_ENVIRON, cluster_settings, run_shards
from genreflow.tasks.workers import retry_transient


def _worker_view() -> dict[str, Any]:
    return {"environ": {name: os.environ.get(name) for name in WORKER_ENVIRON},
            "dask": {key: dask.config.get(key) for key in DASK_SETTINGS}}


def test_local_cluster_workers_start_with_the_settings() -> None:
    from distributed import Client, LocalCluster

    with cluster_settings():
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0")
    try:
        with Client(cluster, set_as_default=False) as client:
            views = list(client.run(_worker_view).values())
            scheduler_tick = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler._tick_interval)
    finally:
        cluster.close()
    assert views == [{"environ": WORKER_ENVIRON, "dask": DASK_SETTINGS}]
    assert scheduler_tick == 1.0  # the scheduler's timers were set when it started, inside the context


def test_settings_are_scoped_to_the_context() -> None:
    before = {key: dask.config.get(key) for key in DASK_SETTINGS}
    with cluster_settings():
        assert {key: dask.config.get(key) for key in DASK_SETTINGS} == DASK_SETTINGS
    assert {key: dask.config.get(key) for key in DASK_SETTINGS} == before


_lock = threading.Lock()
_running: list[int] = [0, 0]  # tasks running now, the most at once
_attempts: dict[int, int] = {}


@task(retry_condition_fn=retry_transient)
def _shard(number: int) -> int:
    with _lock:
        _attempts[number] = _attempts.get(number, 0) + 1
        _running[0] += 1
        _running[1] = max(_running)
        first = _attempts[number] == 1
    try:
        time.sleep(0.2)  # long enough for the thread pool to run several at once when allowed
        if number == 3:
            raise ValueError("shard 3 is broken")  # not transient: no retry
        if number == 5 and first:
            raise ConnectionError("the share hiccuped")  # transient: retried
        return number * number
    finally:
        with _lock:
            _running[0] -= 1


def test_run_shards_retries_goes_past_a_failure_and_stays_a_few_ahead() -> None:
    @flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
    def shards(ahead: int | None) -> tuple[dict[int, int], list[tuple[int, str]]]:
        results: dict[int, int] = {}
        failed = run_shards(_shard, 1, range(8), lambda number: (number,), results.__setitem__, ahead=ahead)
        return results, failed

    results, failed = shards(2)
    assert results == {n: n * n for n in range(8) if n != 3}
    assert [shard for shard, _ in failed] == [3] and "shard 3 is broken" in failed[0][1]
    assert _attempts == {**{n: 1 for n in range(8)}, 3: 1, 5: 2}
    assert _running[1] <= 2  # never more than `ahead` submitted and unfinished

    _attempts.clear()
    _running[:] = [0, 0]
    results, failed = shards(None)  # all at once
    assert len(results) == 7 and [shard for shard, _ in failed] == [3] and _running[1] > 2
