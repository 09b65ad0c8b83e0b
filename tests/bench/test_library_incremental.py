"""bench/library_incremental.py at a small size: one round on 20 files, the figures it reports.

The bench's own model child (the default recipe's CNN) would cost most of a
minute here; the test's tiny CNN on 1 s windows stands in (the bench measures
whatever model folder it is given). A smoke run of the harness, not a figure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from genreflow.bench.inputs import BenchSet
from genreflow.bench.library_incremental import measure
from tests.model.test_export import save_model

pytestmark = pytest.mark.timeout(900)


def test_a_small_round_predicts_only_the_new_files(tmp_path: Path) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from genreflow.flows.runner import prefect_api
    from genreflow.tasks.sources.demo_synth import generate_demo_set

    demo = tmp_path / "demo"
    generate_demo_set(demo, tracks_per_genre=2, seed=1, seconds=10.5, genres=["Folk", "Pop"])
    base = BenchSet(demo, tuple(sorted(demo.rglob("*.mp3"))))  # 4 files, linked 5 times over
    model = save_model(tmp_path / "model" / "run-bench", "genreflow")
    lines: list[str] = []
    with prefect_test_harness(server_startup_timeout=120), prefect_api():
        ratios, figures = measure(base, files=20, rounds=1, workdir=tmp_path / "work", log=lines.append,
                                  model=model)
    assert figures["files"] == 20 and figures["new_files"] == 1  # every 20th file is the new one
    assert figures["predicted"] == {"incremental": [1], "cold": [20]}
    assert 0 < ratios["library_incremental_fraction"] < 1.5 and len(lines) == 1
    assert not list((tmp_path / "work").glob("library-[0-9]*"))  # the rounds' libraries are removed
