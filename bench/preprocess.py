"""genreflow's preprocessing through Prefect and Dask, and the same work without them.

Both sides run on worker processes that were started and warmed beforehand
(modules imported, one track decoded), so a comparison measures the work and
the orchestration, not process start-up; the one-off costs (a fresh
LocalCluster, the temporary Prefect API) are measured on their own.

- ``WarmCluster``: a Dask LocalCluster like ``flows.runner.make_task_runner``
  builds (processes, one thread each), handed to the flow with
  ``--dask-address``, so the flow and its tasks are exactly genreflow's.
- ``PlainPool``: a ``ProcessPoolExecutor`` of as many spawned processes that
  runs the shard task's own stage functions (``decode_stage``, ``mel_stage``,
  ``augment_stage``: skip check, stage function, shard write) over the same
  shards, in the same dependency order, writing the same files.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from genreflow.flows.config import Config, build_config

# A shard of the seed's default size: one Prefect task costs ~0.1 s, a shard ~1 s of work.
SHARD_SIZE = 50


def bench_config(source: Path, data_root: Path, workers: int, *, dask_address: str | None = None,
                 augment: bool = False, clips_per_track: int | None = 1, shard_size: int = SHARD_SIZE,
                 source_kind: str = "folder", augment_domain: str | None = None) -> Config:
    """A preprocessing configuration for a folder source (or a label CSV: ``source_kind="csv"``).

    ``augment`` False stops after the mel stage with augmentation off (the
    comparisons with the seed, which had none in its loop); True is the full
    default preprocessing (decode, mel, and the seed's four augmentations, in
    ``augment_domain``, the default recipe's when None).
    """
    values: dict[str, Any] = {
        "source": source_kind, "input": str(source), "data_root": str(data_root), "workers": workers,
        "dask_address": dask_address, "shard_size": shard_size, "retries": 0,
        "clips_per_track": clips_per_track,
    }
    if not augment:
        values.update(to_stage="mel", time_stretch=[], pitch_shift=[])
    else:
        values.update(to_stage="augment")
        if augment_domain is not None:
            values.update(augment_domain=augment_domain)
    return build_config(None, **values)


def shard_sizes(source: Path, shard_size: int, source_kind: str = "folder") -> list[int]:
    """Tracks per shard of a source, as genreflow's ingest cuts it (per split, near-equal)."""
    from genreflow.tasks.ingest import ingest
    from genreflow.tasks.sources.factory import read_source

    split = bench_config(source, source, 1, shard_size=shard_size, source_kind=source_kind).split
    tracks, _ = ingest(read_source(source_kind, source), split.val_fraction, split.test_fraction, split.split_seed,
                       shard_size)
    return [int(n) for n in tracks.groupby("shard").size()]


def granularity_bound(sizes: list[int], workers: int) -> float:
    """The most ``workers`` can speed up whole shards of these sizes over one worker.

    A shard is one task: dealt longest first (as the flow submits them), the
    busiest worker's share of the tracks bounds the wall time, whatever the
    scheduler does. 11 equal shards on 2 workers: 11 / 6 = 1.83.
    """
    loads = [0] * workers
    for size in sorted(sizes, reverse=True):
        loads[loads.index(min(loads))] += size
    return sum(sizes) / max(loads)


def balanced_shard_size(source: Path, workers: int, near: int, source_kind: str = "folder") -> int:
    """The smallest shard size from ``near`` up whose shards ``workers`` can share evenly.

    So that a scaling comparison measures genreflow and not how a small set
    happens to divide; ``near`` itself when no size up to twice it does.
    """
    for size in range(near, 2 * near):
        if granularity_bound(shard_sizes(source, size, source_kind), workers) >= 0.99 * workers:
            return size
    return near


def fresh_root(parent: Path, label: str) -> Path:
    """A new, empty data root under ``parent``."""
    root = parent / f"{label}-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    return root


@contextlib.contextmanager
def quiet_stderr() -> Iterator[io.StringIO]:
    """Hide progress bars and worker chatter during a timed run (they are for terminals)."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield buffer


def _quiet_logs() -> None:
    for name in ("distributed", "prefect", "asyncio", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)


def warm_worker(path: str) -> int:
    """Import the stage modules and decode and mel one track, so that no timed task pays for it."""
    _quiet_logs()
    import numpy as np

    from genreflow.model.audio import decode_audio
    from genreflow.model.augment_copies import augment_clip  # noqa: F401  (imports librosa.effects)
    from genreflow.model.mel import log_mel
    from genreflow.model.params import AudioConfig
    from genreflow.tasks.shard import preprocess_shard_task  # noqa: F401  (imports prefect and every stage)

    audio = AudioConfig()
    clip = decode_audio(path, audio.sample_rate, audio.clip_seconds)[: audio.clip_samples]
    log_mel(np.asarray(clip)[None, :], audio.sample_rate)
    return os.getpid()


class WarmCluster:
    """A started, warmed Dask LocalCluster of ``workers`` single-threaded processes."""

    def __init__(self, workers: int, warm_path: Path) -> None:
        from distributed import Client, LocalCluster

        from genreflow.flows.runner import cluster_settings

        _quiet_logs()
        start = time.perf_counter()
        with cluster_settings():  # Dask settings and workers' malloc, as the flow's LocalCluster gets them
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=":0", silence_logs=logging.ERROR)
        # Not the default client: prefect-dask's DaskTaskRunner takes the process's default
        # client over its ``address``, so a flow would run on whichever cluster was made last.
        self.client = Client(self.cluster, set_as_default=False)
        self.client.run(warm_worker, str(warm_path))
        self.start_s = time.perf_counter() - start
        self.workers = workers

    @property
    def address(self) -> str:
        return self.cluster.scheduler_address

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


def run_flow(config: Config) -> dict[str, Any]:
    """``genreflow preprocess`` with ``config``, as the CLI runs it; its summary."""
    from genreflow.flows.rebuild import run_command

    with quiet_stderr():
        return run_command("preprocess", config)


def timed_flow(config: Config) -> float:
    start = time.perf_counter()
    run_flow(config)
    return time.perf_counter() - start


# ---- the same work without Prefect and Dask ---------------------------------------------------


def _plain_decode(root_url: str, spec: Any, tracks: Any, audio: Any) -> str:
    from genreflow.tasks.decode import decode_stage

    decode_stage(root_url, spec, tracks, audio, False)
    return spec.key


def _plain_mel(root_url: str, spec: Any, audio: Any) -> None:
    from genreflow.tasks.mel import mel_stage

    mel_stage(root_url, spec, audio, False)


def _plain_augment(root_url: str, spec: Any, audio: Any, augment: Any) -> None:
    from genreflow.tasks.augment import augment_stage

    augment_stage(root_url, spec, audio, augment, False)


def plain_ingest(config: Config) -> Any:
    """ingest without Prefect: the ingest stage's own function (read, split, shard, write its output)."""
    from genreflow.tasks.ingest import ingest_stage

    return ingest_stage(config.run.data_root, config.source, config.split, config.run.shard_size, 1).tracks


class PlainPool:
    """``workers`` spawned, warmed processes that run the stage tasks' plain functions."""

    def __init__(self, workers: int, warm_path: Path) -> None:
        start = time.perf_counter()
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        seen: set[int] = set()
        while len(seen) < workers:  # one warm-up per process: submit a round until each has done one
            seen |= set(self.pool.map(warm_worker, [str(warm_path)] * workers))
        self.start_s = time.perf_counter() - start
        self.workers = workers

    def run(self, config: Config) -> None:
        """ingest, then decode every shard and each shard's mel (and augment) once its decode is done."""
        from genreflow.flows.plan import plan_shards
        from genreflow.storage.root import DataRoot
        from genreflow.tasks.decode import write_quarantine

        root = DataRoot(config.run.data_root)
        tracks = plain_ingest(config)
        plans = {plan.shard: plan for plan in plan_shards(tracks, config)}
        stages = config.stages_to_run()
        pending: set[Future] = set()
        for plan in plans.values():
            pending.add(self.pool.submit(_plain_decode, root.url, plan.decode, plan.tracks, config.audio))
        decodes = set(pending)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                shard = future.result()
                if future not in decodes:
                    continue
                plan = plans[shard]
                if "mel" in stages:
                    pending.add(self.pool.submit(_plain_mel, root.url, plan.mel, config.audio))
                if "augment" in stages and plan.augment is not None:
                    pending.add(self.pool.submit(_plain_augment, root.url, plan.augment, config.audio, config.augment))
        write_quarantine(root, list(plans.values()))

    def timed(self, config: Config) -> float:
        start = time.perf_counter()
        self.run(config)
        return time.perf_counter() - start

    def close(self) -> None:
        self.pool.shutdown()


def remove_root(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
