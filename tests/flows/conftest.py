"""Flow tests share one Prefect test harness and one small demo set per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from genreflow.flows.config import Config, build_config

DEMO_TRACKS_PER_GENRE = 3
DEMO_SECONDS = 10.25  # one 10 s clip per track (the tail is within the pad tolerance) keeps the flow tests quick


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from genreflow.tasks.sources.demo_synth import generate_demo_set

    folder = tmp_path_factory.mktemp("demo")
    generate_demo_set(folder, tracks_per_genre=DEMO_TRACKS_PER_GENRE, seed=7, seconds=DEMO_SECONDS)
    return folder


def small_config(data_root: Path, source_dir: Path, **overrides: object) -> Config:
    """A configuration for a quick flow test: small shards, 2 workers, one clip per track."""
    values: dict[str, object] = {"source": "folder", "input": str(source_dir), "data_root": str(data_root),
                                 "shard_size": 4, "workers": 2, "retries": 0}
    values.update(overrides)
    return build_config(None, **values)
