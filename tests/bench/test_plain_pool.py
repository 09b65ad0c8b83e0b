"""The plain side of orchestration_overhead writes what the flow would write.

Its shards must be "done" by the flow's own plan, or the comparison would time
different work. One spawned process and two short demo tracks keep it quick.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from genreflow.bench import preprocess
from genreflow.flows.plan import plan_shards
from genreflow.storage.outputs import state_of, tracks_path
from genreflow.storage.root import DataRoot
from genreflow.tasks.sources.demo_synth import generate_demo_set


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plain-demo")
    generate_demo_set(folder, tracks_per_genre=2, seed=1, seconds=10.5, genres=["Folk", "Pop"])
    return folder


def test_plain_pool_writes_the_flows_outputs(demo: Path, tmp_path: Path) -> None:
    pool = preprocess.PlainPool(1, next(demo.glob("*/*.mp3")))
    try:
        assert pool.start_s > 0
        config = preprocess.bench_config(demo, tmp_path / "root", 1, shard_size=2)
        seconds = pool.timed(config)
    finally:
        pool.close()
    assert seconds > 0
    root = DataRoot(str(tmp_path / "root"))
    plans = plan_shards(root.read_parquet(tracks_path(root)), config)
    assert len(plans) >= 2
    for plan in plans:
        assert state_of(root, plan.decode) == "done"
        assert state_of(root, plan.mel) == "done"
    assert root.exists(root.quarantine_path())
