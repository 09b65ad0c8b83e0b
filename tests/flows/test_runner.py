"""The LocalCluster a flow starts gets genreflow's Dask settings and worker environment."""

from __future__ import annotations

import os
from typing import Any

import dask

from genreflow.flows.runner import DASK_SETTINGS, WORKER_ENVIRON, cluster_settings


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
