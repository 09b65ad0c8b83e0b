"""kill -9 in the middle of preprocessing, rerun: the same outputs, finished shards untouched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from genreflow.flows.rebuild import run_command
from tests.flows.conftest import small_config

pytestmark = pytest.mark.timeout(600)


def _manifests(root: Path) -> dict[str, int]:
    """Finished shard outputs and their manifest mtimes."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.glob("*/*.manifest.json")}


def _outputs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for stage in ("decode", "mel", "augment") for p in sorted((root / stage).glob("*[0-9].npy"))}


def test_sigkill_mid_stage_then_rerun_matches_a_clean_run(tmp_path: Path, demo_dir: Path) -> None:
    clean_root, killed_root = tmp_path / "clean", tmp_path / "killed"
    options = {"shard_size": 2}
    run_command("preprocess", small_config(clean_root, demo_dir, **options))

    command = [sys.executable, "-m", "genreflow.flows.cli", "preprocess", "--source", "folder",
               "--input", str(demo_dir), "--data-root", str(killed_root), "--shard-size", "2",
               "--workers", "2", "--retries", "0"]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while not list((killed_root / "augment").glob("*.manifest.json")):
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no shard finished in time"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    finished = _manifests(killed_root)
    expected = len(_manifests(clean_root))
    assert 0 < len(finished) < expected, "the kill must land mid-stage"

    run_command("preprocess", small_config(killed_root, demo_dir, **options))

    after = _manifests(killed_root)
    assert len(after) == expected
    assert {name: after[name] for name in finished} == finished, "finished shards were recomputed"
    assert _outputs(killed_root) == _outputs(clean_root)
    for name in ("tracks.parquet", "quarantine.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(killed_root / name), pd.read_parquet(clean_root / name))
    assert not list(killed_root.rglob("*.tmp-*")), "half-written files of killed writes were left behind"
