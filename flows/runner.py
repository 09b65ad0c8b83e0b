"""The Dask task runner a flow runs its shard tasks on."""

from __future__ import annotations

from prefect_dask import DaskTaskRunner

from flows.config import RunConfig


def make_task_runner(run: RunConfig) -> DaskTaskRunner:
    """An existing scheduler when ``--dask-address`` is set, else a LocalCluster of processes.

    One thread per worker process: decoding and STFTs hold the GIL often enough
    that processes, not threads, give the parallelism.
    """
    if run.dask_address:
        return DaskTaskRunner(address=run.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": run.workers, "threads_per_worker": 1, "processes": True,
                        "dashboard_address": None},
    )
