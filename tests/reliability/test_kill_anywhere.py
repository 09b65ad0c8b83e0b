"""Issues 6.3 (kill -9 anywhere) and 6.8 (concurrent runs), on real ``genreflow rebuild`` processes.

An uninterrupted rebuild is the reference; while it runs, a second rebuild on
the same data root must be refused at once, naming the first. Then another
data root is rebuilt by a chain of processes, each SIGKILLed (with its Dask
workers: the whole process group) at the next of a list of seeded kill points
spread over the stages, and rerun; the last rerun runs to the end. Every output
must then equal the reference's: shards, stats, model weights, history and
metrics, bit for bit.

Kill points wait for an on-disk marker (a manifest, the history row of an
epoch, ...) and then a delay drawn from a seeded RNG, so each lands at a
reproducible phase of its stage. Bit-identical weights after a resume mid-training
need the clip order and dropout masks of each epoch to be a function of (seed,
epoch) (model/dataset.py EpochOrder, model/train.py _EpochSeeds), with TF op
determinism on. Quick mode (CI) uses 3 kill points, GENREFLOW_FULL_RELIABILITY=1 12.
tests/flows/test_resume_after_kill.py kills preprocessing once; tests/model/test_train.py
kills training once in-process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.reliability.conftest import FULL, cli_env

pytestmark = [pytest.mark.timeout(1800 if FULL else 900), pytest.mark.slow]

SEED = 20240611
EPOCHS = 3 if FULL else 2
RUN_DEADLINE_S = 400


def rebuild_args(root: Path, source: Path, epochs: int = EPOCHS) -> list[str]:
    return [sys.executable, "-m", "genreflow.flows.cli", "rebuild", "--source", "folder", "--input", str(source),
            "--data-root", str(root), "--shard-size", "3", "--clips-per-track", "1", "--epochs", str(epochs),
            "--batch-size", "4", "--patience", "10", "--retries", "0", "--workers", "2",
            "--time-stretch", "0.9", "--pitch-shift", "2", "--promote", "always"]


# --------------------------------------------------------------------------- progress markers


def count(pattern: str) -> Callable[[Path], int]:
    return lambda root: len(list(root.glob(pattern)))


def history_rows(root: Path) -> int:
    """Finished epochs recorded in the (single) run's history.csv."""
    files = list(root.glob("models/run-*/history.csv"))
    if not files:
        return 0
    lines = [line for line in files[0].read_text().splitlines()[1:] if line.strip()]
    return len(lines)


@dataclass(frozen=True)
class KillPoint:
    """Kill when ``marker`` has grown by ``step`` during the run, after a delay in ``delay`` seconds.

    Without a marker the delay counts from the process start.
    """

    stage: str
    marker: Callable[[Path], int] | None
    step: int
    delay: tuple[float, float]


MANIFESTS = {stage: count(f"{stage}/*.manifest.json") for stage in ("decode", "mel", "augment")}
ALL_POINTS = [
    KillPoint("start-up and ingest", None, 0, (1.5, 6.0)),
    KillPoint("decode", MANIFESTS["decode"], 1, (0.0, 0.3)),
    KillPoint("mel", MANIFESTS["mel"], 1, (0.0, 0.3)),
    KillPoint("augment", MANIFESTS["augment"], 1, (0.0, 0.6)),
    KillPoint("mel, later shards", MANIFESTS["mel"], 2, (0.0, 0.5)),
    # One point for both: a kill that lands after stats leaves no marker that a later run could
    # wait on to land in the baseline (its outputs all appear at its end).
    KillPoint("stats and baseline", count("stats.json"), 1, (0.0, 0.8)),
    KillPoint("train, mid epoch 1", count("models/run-*/history.csv"), 1, (0.3, 1.5)),
    KillPoint("train, between epochs", history_rows, 1, (0.0, 0.02)),
    KillPoint("train, mid epoch", history_rows, 1, (0.05, 0.4)),
    KillPoint("evaluate", count("models/run-*/manifest.json"), 1, (0.0, 2.0)),
    KillPoint("promote and report", count("reports/run-*/evaluate.manifest.json"), 1, (0.0, 0.8)),
    KillPoint("after the report", count("reports/run-*/metrics.json"), 1, (0.0, 0.02)),
]
QUICK_POINTS = ["augment", "train, mid epoch", "evaluate"]
POINTS = ALL_POINTS if FULL else [p for p in ALL_POINTS if p.stage in QUICK_POINTS]


def where(root: Path) -> str:
    """The first unfinished stage on disk, as the kill left it."""
    if not (root / "tracks.manifest.json").exists():
        return "ingest"
    tracks = pd.read_parquet(root / "tracks.parquet")
    total = {"decode": tracks["shard"].nunique(), "mel": tracks["shard"].nunique(),
             "augment": tracks.loc[tracks["split"] == "train", "shard"].nunique()}
    done = {stage: MANIFESTS[stage](root) for stage in total}
    if done != total:  # the shard stages overlap: say how far each got
        return "preprocessing: " + ", ".join(f"{stage} {done[stage]}/{total[stage]}" for stage in total)
    if not (root / "stats.manifest.json").exists():
        return "stats"
    if not list(root.glob("baseline/*/manifest.json")):
        return "baseline"
    if not list(root.glob("models/run-*/manifest.json")):
        return f"train, {history_rows(root)}/{EPOCHS} epochs done"
    if not list(root.glob("reports/run-*/evaluate.manifest.json")):
        return "evaluate"
    if not list(root.glob("reports/run-*/promotion.manifest.json")):
        return "promote"
    if not list(root.glob("reports/run-*/report.html")):
        return "report"
    return "after the report"


@dataclass
class Outcome:
    killed: bool
    returncode: int | None
    seconds: float
    state: str
    log: str
    promoted: str | None = None  # the registry's promoted run after the process ended


def promoted(root: Path) -> str | None:
    from genreflow.storage.registry import read_registry
    from genreflow.storage.root import DataRoot

    return read_registry(DataRoot(str(root))).promoted

def run(root: Path, source: Path, env: dict[str, str], log: Path, point: KillPoint | None = None,
        rng: random.Random | None = None, epochs: int = EPOCHS) -> Outcome:
    """One ``genreflow rebuild`` process, SIGKILLed (process group) at ``point`` if it gets there."""
    start = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(rebuild_args(root, source, epochs), env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    base = point.marker(root) if point and point.marker else 0
    fire_at = start + rng.uniform(*point.delay) if point and point.marker is None and rng else None
    try:
        while process.poll() is None:
            now = time.monotonic()
            assert now - start < RUN_DEADLINE_S, f"rebuild did not finish in {RUN_DEADLINE_S} s: {log}"
            if point and rng and fire_at is None and point.marker(root) >= base + point.step:
                fire_at = now + rng.uniform(*point.delay)
            if fire_at is not None and now >= fire_at:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return Outcome(True, None, now - start, where(root), log.read_text(), promoted(root))
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return Outcome(False, process.returncode, time.monotonic() - start, where(root), log.read_text(),
                   promoted(root))


# --------------------------------------------------------------------------- the runs


@dataclass
class Runs:
    reference: Path
    killed: Path
    outcomes: list[tuple[str, Outcome]]
    refusal: subprocess.CompletedProcess
    first_pid: int
    upgrade: tuple[Outcome, Outcome]  # a new model killed after training, before promotion; and its rerun


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Runs:
    base = tmp_path_factory.mktemp("kill")
    env = cli_env(base)
    reference, killed = base / "reference", base / "killed"

    # The reference run, and a second rebuild of the same root while it holds the lock.
    start = time.monotonic()
    with open(base / "reference.log", "w") as out:
        first = subprocess.Popen(rebuild_args(reference, demo_dir), env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    lock = reference / ".genreflow.lock"
    while not (lock.exists() and str(first.pid) in lock.read_text()):
        assert first.poll() is None and time.monotonic() - start < 120, (base / "reference.log").read_text()
        time.sleep(0.05)
    refusal = subprocess.run(rebuild_args(reference, demo_dir), env=env, capture_output=True, text=True,
                             timeout=120)
    assert first.wait(timeout=RUN_DEADLINE_S) == 0, (base / "reference.log").read_text()[-5000:]

    rng = random.Random(SEED)
    outcomes: list[tuple[str, Outcome]] = []
    for i, point in enumerate(POINTS):
        outcome = run(killed, demo_dir, env, base / f"run-{i:02d}.log", point, rng)
        outcomes.append((point.stage, outcome))
        if not outcome.killed:
            assert outcome.returncode == 0, outcome.log[-5000:]
    final = run(killed, demo_dir, env, base / "final.log")
    outcomes.append(("(final rerun, no kill)", final))
    assert final.returncode == 0, final.log[-5000:]
    # Then a model with one more epoch, killed as soon as it is trained: the old one must stay promoted.
    old_model = promoted(killed)
    after_training = KillPoint("between training and promotion", count("models/run-*/manifest.json"), 1, (0.0, 0.0))
    interrupted = run(killed, demo_dir, env, base / "upgrade-killed.log", after_training, rng, epochs=EPOCHS + 1)
    finished = run(killed, demo_dir, env, base / "upgrade.log", epochs=EPOCHS + 1)
    assert old_model is not None and finished.returncode == 0, finished.log[-5000:]
    outcomes += [("new model, killed", interrupted), ("new model, rerun", finished)]
    report = [f"{stage:24} {'killed' if o.killed else 'finished':8} after {o.seconds:5.1f} s at: {o.state}"
              for stage, o in outcomes]
    (base / "kills.txt").write_text("\n".join(report) + "\n")
    print("\n" + "\n".join(report))
    return Runs(reference, killed, outcomes[:-2], refusal, first.pid, (interrupted, finished))


def test_second_rebuild_on_a_held_root_is_refused_at_once(runs: Runs) -> None:
    refusal = runs.refusal
    lines = [line for line in refusal.stderr.splitlines() if line.strip()]
    assert refusal.returncode == 1 and len(lines) == 1, refusal.stderr
    assert "is in use by another genreflow run" in lines[0] and f'"pid": {runs.first_pid}' in lines[0]
    assert "Traceback" not in refusal.stderr


def test_kills_landed_across_the_stages(runs: Runs) -> None:
    killed = [(stage, o) for stage, o in runs.outcomes if o.killed]
    assert len(killed) >= max(2, len(POINTS) - 2), [(s, o.state) for s, o in runs.outcomes]
    assert len({o.state.split(",")[0].split(" ")[0] for _, o in killed}) >= min(3, len(killed))


def _files(root: Path, patterns: list[str]) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for pattern in patterns for p in sorted(root.glob(pattern))}


def test_shards_and_tables_are_byte_identical(runs: Runs) -> None:
    patterns = ["tracks.parquet", "quarantine.parquet", "*/*[0-9].npy", "*/*[0-9].parquet", "*/*.quarantine.parquet",
                "stats.json"]
    reference, killed = _files(runs.reference, patterns), _files(runs.killed, patterns)
    assert sorted(killed) == sorted(reference) and len(reference) > 20
    different = [name for name in reference if reference[name] != killed[name]]
    assert different == []


def test_model_weights_history_and_metrics_are_identical(runs: Runs) -> None:
    import keras

    (run_dir,) = runs.reference.glob("models/run-*")
    killed_dir = runs.killed / "models" / run_dir.name
    assert runs.outcomes[-1][1].promoted == run_dir.name  # the chain's run is the model predict uses
    for name in ("history.csv", "labels.json", "audio.json"):
        assert (killed_dir / name).read_bytes() == (run_dir / name).read_bytes(), name
    assert len(pd.read_csv(run_dir / "history.csv")) == EPOCHS
    expected = keras.saving.load_model(run_dir / "model.keras", safe_mode=True).get_weights()
    got = keras.saving.load_model(killed_dir / "model.keras", safe_mode=True).get_weights()
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)

    report = runs.reference / "reports" / run_dir.name
    killed_report = runs.killed / "reports" / run_dir.name
    for name in ("evaluation.json", "predictions.parquet"):
        assert (killed_report / name).read_bytes() == (report / name).read_bytes(), name
    metrics = json.loads((report / "metrics.json").read_text())
    killed_metrics = json.loads((killed_report / "metrics.json").read_text())
    for key in ("metrics", "training", "dataset", "baseline"):
        assert killed_metrics[key] == metrics[key], key


def test_no_partial_files_or_checkpoints_are_left(runs: Runs) -> None:
    assert not list(runs.killed.rglob("*.tmp*")) and not list(runs.killed.rglob("*.part"))
    assert not list(runs.killed.glob("models/*/backup"))


def test_a_kill_before_promotion_never_promotes_and_leaves_the_old_model_promoted(runs: Runs) -> None:
    from genreflow.storage.registry import read_registry
    from genreflow.storage.root import DataRoot

    before_promotion = ("ingest", "preprocessing", "stats", "baseline", "train", "evaluate", "promote")
    for stage, outcome in runs.outcomes:
        if outcome.killed and outcome.state.startswith(before_promotion):
            assert outcome.promoted is None, (stage, outcome.state)  # the chain's first rebuild had no model
    interrupted, finished = runs.upgrade
    (old,) = (p.name for p in runs.reference.glob("models/run-*"))
    assert interrupted.killed and interrupted.promoted == old  # with --promote always, only the kill kept it out
    registry = read_registry(DataRoot(str(runs.killed)))
    new = registry.history[-1].run
    assert new != old and registry.history[-1].decision == "promoted" and finished.promoted == new
    assert [record.run for record in registry.history].count(new) == 1
