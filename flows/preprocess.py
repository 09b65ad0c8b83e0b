"""The preprocessing half of the DAG: ingest -> decode -> mel, and decode -> augment (train only).

One Prefect task per shard and stage, fanned out on Dask. A shard's mel and
augment tasks wait only for that shard's decode, so stages overlap across
shards. Every shard task skips work whose manifest matches its plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture, as_completed

from flows.config import Config
from flows.lock import data_root_lock
from flows.plan import ShardPlan, plan_shards
from flows.progress import StageProgress
from storage.root import DataRoot
from storage.shards import read_side_table, shard_state
from tasks.augment import augment_task
from tasks.common import ShardResult
from tasks.decode import QUARANTINE_COLUMNS, decode_task
from tasks.ingest import ingest_task
from tasks.mel import mel_task


class StageFailed(RuntimeError):
    """Some shards failed; the ones that succeeded are kept for the rerun."""


@dataclass
class PreprocessResult:
    tracks: pd.DataFrame
    plans: list[ShardPlan]
    results: list[ShardResult] = field(default_factory=list)

    def computed(self, stage: str) -> int:
        return sum(1 for r in self.results if r.stage == stage and not r.skipped)


def run_preprocess(config: Config, progress: StageProgress) -> PreprocessResult:
    """Submit every shard task of the preprocessing stages and wait for them all."""
    root = DataRoot(config.run.data_root)
    stages = config.stages_to_run()
    tracks = ingest_task(config.run.data_root, config, force=config.forced("ingest"))
    plans = plan_shards(tracks, config)
    outcome = PreprocessResult(tracks, plans)
    if "decode" not in stages:
        return outcome
    retries = config.run.retries
    decode = decode_task.with_options(retries=retries, retry_delay_seconds=2)
    futures: dict[PrefectFuture, str] = {}
    totals: dict[str, tuple[int, int]] = {}

    def submit(stage: str, future: PrefectFuture, plan: ShardPlan) -> None:
        futures[future] = f"{stage} {plan.shard}"
        shards, n_tracks = totals.get(stage, (0, 0))
        totals[stage] = (shards + 1, n_tracks + len(plan.tracks))

    for plan in plans:
        decoded = decode.submit(root.url, plan.shard, plan.tracks, config.audio, plan.decode,
                                config.forced("decode"))
        submit("audio", decoded, plan)
        if "mel" in stages:
            submit("mel", mel_task.with_options(retries=retries).submit(
                root.url, plan.shard, config.audio, plan.mel, config.forced("mel"), wait_for=[decoded]), plan)
        if "augment" in stages and plan.augment is not None:
            submit("mel-aug", augment_task.with_options(retries=retries).submit(
                root.url, plan.shard, config.audio, config.augment, plan.augment, config.forced("augment"),
                wait_for=[decoded]), plan)
    for stage, (shards, n_tracks) in totals.items():
        progress.add_stage(stage, shards, n_tracks)
    failures = []
    for future in as_completed(list(futures)):
        future.wait()
        state = future.state
        if state.is_completed():
            result = future.result()
            outcome.results.append(result)
            progress.advance(result)
        else:
            failures.append(f"{futures[future]}: {state.message or state.name}")
    write_quarantine(root, plans)
    if failures:
        raise StageFailed(f"{len(failures)} shard task(s) failed (finished shards are kept; rerun to "
                          "redo only these): " + "; ".join(sorted(failures)))
    return outcome


def write_quarantine(root: DataRoot, plans: list[ShardPlan]) -> pd.DataFrame:
    """quarantine.parquet: tracks skipped at ingest plus those each finished decode shard rejected."""
    tables = []
    skipped = root.join("ingest-skipped.parquet")
    if root.exists(skipped):
        tables.append(root.read_parquet(skipped).assign(stage="ingest"))
    for plan in plans:
        if shard_state(root, "audio", plan.shard, plan.decode, verify=False) == "done":
            tables.append(read_side_table(root, "audio", plan.shard, "quarantine").assign(stage="decode"))
    columns = [*QUARANTINE_COLUMNS, "stage"]
    table = pd.concat([t for t in tables if len(t)], ignore_index=True) if any(len(t) for t in tables) \
        else pd.DataFrame(columns=columns)
    table = table[columns].astype(str)
    root.write_parquet(root.quarantine_path(), table)
    return table


@flow(name="preprocess", log_prints=True)
def preprocess_flow(config: Config) -> dict[str, int]:
    """ingest, decode, mel and augment into shards under the data root."""
    logger = get_run_logger()
    with data_root_lock(config.run.data_root), StageProgress(logger) as progress:
        outcome = run_preprocess(config, progress)
    summary = {stage: outcome.computed(stage) for stage in ("audio", "mel", "mel-aug")}
    logger.info("preprocessing done: %d tracks in %d shards; shards computed: %s",
                len(outcome.tracks), len(outcome.plans), summary)
    return summary

