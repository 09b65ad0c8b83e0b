"""Training asks for a GPU worker when the cluster declares one, and for any worker otherwise."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
from distributed import Nanny, Scheduler, SpecCluster, get_worker
from prefect import flow, task
from prefect_dask import DaskTaskRunner

from genreflow.flows.train import gpu_annotation


@task
def worker_name() -> str:
    return str(get_worker().name)


@flow
def probe() -> list[str]:
    with gpu_annotation():
        futures = [worker_name.submit() for _ in range(4)]
    return [f.result() for f in futures]


def _cluster(gpu: bool) -> SpecCluster:
    workers = {
        "cpu": {"cls": Nanny, "options": {"nthreads": 1}},
        "other": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"GPU": 1} if gpu else {}}},
    }
    return SpecCluster(scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}}, workers=workers)


def test_training_tasks_land_on_the_gpu_worker() -> None:
    with _cluster(gpu=True) as cluster:
        names = probe.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))()
    assert names == ["other"] * 4


@pytest.mark.timeout(180)  # a GPU request on this cluster would wait forever for a worker
def test_without_gpu_workers_tasks_run_on_a_cpu_worker() -> None:
    """A cluster of one worker without resources still runs them: nothing asked for a GPU."""
    cluster = SpecCluster(scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
                          workers={"cpu": {"cls": Nanny, "options": {"nthreads": 1}}})
    with cluster:
        names = probe.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))()
    assert len(names) == 4 and names == ["cpu"] * 4


def test_outside_a_dask_run_the_annotation_asks_for_nothing() -> None:
    assert isinstance(gpu_annotation(), nullcontext)
