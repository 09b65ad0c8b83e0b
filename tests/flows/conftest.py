"""Flow tests share one Prefect test harness and one small demo set per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.settings import get_current_settings
from prefect.testing.utilities import prefect_test_harness

from genreflow.flows.config import Config, build_config

DEMO_TRACKS_PER_GENRE = 3
DEMO_SECONDS = 10.25  # one 10 s clip per track (the tail is within the pad tolerance) keeps the flow tests quick


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


# Where small_config finds the session's shared cluster. Tests only: genreflow itself never reads it, so a
# `genreflow` subprocess (the kill tests) still starts a cluster of its own.
SHARED_SCHEDULER_ENV = "GENREFLOW_TESTS_SHARED_SCHEDULER"


@pytest.fixture(scope="session", autouse=True)
def shared_cluster(prefect_harness: None) -> Iterator[str]:
    """One 2-worker LocalCluster, started as a flow starts its own, for every flow run of the session.

    A small rebuild on a cluster of its own spends most of its time starting that cluster and importing
    TensorFlow in its workers: measured side by side here, 240 s on its own against 76 s on warm shared
    workers. Workers see the harness's Prefect API (PREFECT_API_URL, inherited when they are spawned).
    """
    from distributed import LocalCluster

    from genreflow.flows.runner import cluster_settings

    exported = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = get_current_settings().api.url or ""
    try:
        with cluster_settings():
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    finally:
        if exported is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = exported
    os.environ[SHARED_SCHEDULER_ENV] = cluster.scheduler_address
    try:
        yield cluster.scheduler_address
    finally:
        os.environ.pop(SHARED_SCHEDULER_ENV, None)
        cluster.close()


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from genreflow.tasks.sources.demo_synth import generate_demo_set

    folder = tmp_path_factory.mktemp("demo")
    generate_demo_set(folder, tracks_per_genre=DEMO_TRACKS_PER_GENRE, seed=7, seconds=DEMO_SECONDS)
    return folder


def small_config(data_root: Path, source_dir: Path, own_cluster: bool = False, **overrides: object) -> Config:
    """A configuration for a quick flow test: small shards, 2 workers, one clip per track, on the session's
    shared cluster (``own_cluster``: a LocalCluster of the flow's own, whose workers inherit the environment
    the test set, as a `genreflow` command's do)."""
    values: dict[str, object] = {"source": "folder", "input": str(source_dir), "data_root": str(data_root),
                                 "shard_size": 4, "workers": 2, "retries": 0}
    shared = os.environ.get(SHARED_SCHEDULER_ENV)
    if shared and not own_cluster and "dask_address" not in overrides:
        values["dask_address"] = shared
    values.update(overrides)
    return build_config(None, **values)
