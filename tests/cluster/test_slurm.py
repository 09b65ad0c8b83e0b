"""deploy/slurm_cluster.py against a real SLURM: a one-node cluster on localhost, run as root.

dask-jobqueue submits the Dask workers with ``sbatch`` to a real slurmctld, slurmd
runs them as batch jobs, and genreflow preprocesses a small demo collection on
them. The shards must be the bytes a LocalCluster run writes, the worker jobs'
logs must show that those workers ran the shard tasks, and no job may outlive
the run. Skips without root or the slurm-wlm and munge packages; fails under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import REPO, executable, log_tail, wait_until
from tests.cluster.slurm import Slurm, one_node_slurm, processes_of, require_slurm

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

# 8 demo tracks (one per genre) in 4 shards, decoded and turned into mel spectrograms: a few
# shard tasks for the two worker processes of the one job, and the whole test in about 3 minutes.
DEMO_ARGS = ["--source", "demo", "--tracks-per-genre", "1", "--shard-size", "2", "--to-stage", "mel"]
SHARD_STAGES = ("decode", "mel")
COMPLETED_TASK = re.compile(r"Task run '([^']+)' - Finished in state Completed\(\)")


def clean_env(tmp: Path) -> dict[str, str]:
    """The test's environment without the caller's Prefect settings: a temporary Prefect API per run."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "SLURM_", "DASK_"))}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    """munged, slurmctld and slurmd on localhost; every job cancelled and every daemon stopped afterwards."""
    require_slurm()
    with one_node_slurm(tmp_path_factory.mktemp("slurm"), clean_env(tmp_path_factory.mktemp("env"))) as cluster:
        yield cluster


class QueueWatcher(threading.Thread):
    """Polls ``squeue`` while the run goes on: every job seen, with the states it was seen in."""

    def __init__(self, slurm: Slurm, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.slurm, self.interval = slurm, interval
        self.seen: dict[str, dict[str, Any]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for job in self.slurm.queue():
                self.seen.setdefault(job["id"], {"name": job["name"], "states": set()})["states"].add(job["state"])
            self.done.wait(self.interval)

    def stop(self) -> dict[str, dict[str, Any]]:
        self.done.set()
        self.join(timeout=30)
        return self.seen


def shard_manifests(root: Path) -> dict[str, Any]:
    """What a run in another data root must reproduce, per shard manifest: code, rows, files' sizes and checksums.

    Not the fingerprint: it hashes the track table, whose paths name the data root
    (``--source demo`` writes the collection into it).
    """
    found = {}
    for stage in SHARD_STAGES:
        for path in sorted((root / stage).glob("*.manifest.json")):
            manifest = json.loads(path.read_text())
            found[manifest["name"]] = {
                "code": manifest["code"], "rows": manifest["rows"],
                "files": {name: (file["size"], file["checksum"]) for name, file in manifest["files"].items()},
            }
    return found


def job_processes(slurm: Slurm) -> list[int]:
    """Processes still running inside a job of this cluster (with a SLURM_JOB_ID), daemons aside."""
    import psutil

    left = []
    for pid in processes_of(slurm.conf):
        try:
            if "SLURM_JOB_ID" in psutil.Process(pid).environ():
                left.append(pid)
        except psutil.Error:
            continue
    return left


def test_slurm_cluster_runs_the_shards_as_slurm_jobs(slurm: Slurm, tmp_path: Path) -> None:
    logs, root, reference = tmp_path / "worker-logs", tmp_path / "slurm-root", tmp_path / "local-root"
    command = [sys.executable, str(REPO / "deploy" / "slurm_cluster.py"), "--jobs", "1", "--cores", "2",
               "--memory", "4GB", "--walltime", "00:20:00", "--log-directory", str(logs),
               "--", "rebuild", *DEMO_ARGS, "--data-root", str(root)]
    watcher = QueueWatcher(slurm)
    watcher.start()
    started = time.monotonic()
    try:
        run = subprocess.run(command, env=slurm.env, cwd=tmp_path, capture_output=True, text=True, timeout=480)
    finally:
        seen = watcher.stop()
    slurm_seconds = time.monotonic() - started
    job_logs = "\n".join(f"--- {path.name}\n{log_tail(path)}" for path in sorted(logs.glob("*")))
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-4000:]}\n{job_logs}\n{slurm.daemon_logs()}"

    # dask-jobqueue submitted one job with sbatch, and SLURM ran it.
    jobs = {job_id: job for job_id, job in seen.items() if job["name"] == "dask-worker"}
    assert len(jobs) == 1, seen
    [(job_id, job)] = jobs.items()
    assert "RUNNING" in job["states"], job

    # The jobs are gone: nothing queued, no process of a job left, and SLURM recorded the job as ended.
    wait_until(lambda: not slurm.queue(), 60, "the SLURM queue to empty after the run", interval=1)
    wait_until(lambda: not job_processes(slurm), 30, "the worker jobs' processes to end", interval=1)
    record = (slurm.base / "log" / "jobcomp.txt").read_text()
    assert re.search(rf"JobId={job_id} .*Name=dask-worker JobState=(CANCELLED|COMPLETED) ", record), record

    # The job's log (dask-jobqueue names it after the SLURM job id) shows its two worker processes joining
    # this run's scheduler and finishing every shard task; the flow process itself finished none of them.
    address = re.search(r"Dask scheduler: (tcp://\S+)", run.stdout)
    assert address, run.stdout
    worker_log = (logs / f"dask-worker-{job_id}.err").read_text(errors="replace")
    assert len(re.findall(r"Registered to:\s+" + re.escape(address.group(1)), worker_log)) == 2, worker_log
    on_workers = set(COMPLETED_TASK.findall(worker_log))
    in_flow = set(COMPLETED_TASK.findall(run.stdout + run.stderr))
    shards = {name.split("/", 1)[1] for name in shard_manifests(root)}
    assert len(shards) == 4, shards
    assert len(on_workers) >= len(shards), (on_workers, worker_log)
    assert not on_workers & in_flow

    # The same rebuild on a LocalCluster writes the same shards.
    started = time.monotonic()
    local = subprocess.run([executable("genreflow"), "rebuild", *DEMO_ARGS, "--workers", "2",
                            "--data-root", str(reference)], env=slurm.env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=480)
    local_seconds = time.monotonic() - started
    assert local.returncode == 0, f"{local.stdout[-4000:]}\n{local.stderr[-4000:]}"
    expected = shard_manifests(reference)
    assert len(expected) == len(SHARD_STAGES) * len(shards)
    assert shard_manifests(root) == expected
    print(f"SLURM run {slurm_seconds:.0f} s (job {job_id}), LocalCluster run {local_seconds:.0f} s")
