"""The second half of the DAG: stats -> baseline -> train -> evaluate -> report, on finished shards.

With ``--folds K`` the training part is K-fold cross-validation instead
(tasks/crossval.py): one task per fold, then one report of mean and std.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import dask
import pandas as pd
from prefect import flow, get_run_logger
from prefect.context import FlowRunContext

from genreflow.flows.config import Config
from genreflow.flows.lock import data_root_lock
from genreflow.flows.plan import (
    baseline_fingerprint,
    crossval_name,
    plan_shards,
    run_name,
    stats_fingerprint,
    training_inputs,
)
from genreflow.storage.errors import GenreflowError
from genreflow.storage.fingerprint import fingerprint
from genreflow.storage.manifest import output_state
from genreflow.storage.root import SPLITS, DataRoot
from genreflow.storage.shards import shard_state
from genreflow.tasks.baseline import baseline_task
from genreflow.tasks.common import ShardPlan
from genreflow.tasks.crossval import crossval_report_task, fold_task
from genreflow.tasks.evaluate import evaluate_task
from genreflow.tasks.folds import make_folds
from genreflow.tasks.report import report_task
from genreflow.tasks.stats import stats_task
from genreflow.tasks.train import model_manifest_path, train_task


class TrainingError(GenreflowError, RuntimeError):
    """Training cannot start: its inputs are missing or incomplete."""


def load_plans(config: Config) -> list[ShardPlan]:
    """Plans from the ingest table under the data root; an error if preprocessing never ran."""
    root = DataRoot(config.run.data_root)
    if not root.exists(root.tracks_path()):
        raise TrainingError(f"no tracks.parquet under {root.url}: run `genreflow preprocess` first")
    return plan_shards(root.read_parquet(root.tracks_path()), config)


def check_shards_ready(root: DataRoot, plans: list[ShardPlan], config: Config) -> None:
    """Refuse to train on shards that are missing, stale or corrupt, naming them."""
    needed = [("mel", p.shard, p.mel) for p in plans]
    needed += [("mel-aug", p.shard, p.augment) for p in plans if p.augment is not None]
    bad = [f"{stage}/{shard} ({state})" for stage, shard, fp in needed
           if (state := shard_state(root, stage, shard, fp)) != "done"]
    if bad:
        raise TrainingError(f"{len(bad)} shard(s) not ready: {', '.join(bad[:8])}"
                            f"{' ...' if len(bad) > 8 else ''}; run `genreflow preprocess` first")


def gpu_annotation() -> Any:
    """Ask for a GPU worker when the cluster declares GPU resources; any worker otherwise."""
    context = FlowRunContext.get()
    runner = getattr(context, "task_runner", None) if context else None
    client = getattr(runner, "client", None)
    if client is None:
        return nullcontext()
    workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
    if any("GPU" in (w.get("resources") or {}) for w in workers):
        return dask.annotate(resources={"GPU": 1})
    return nullcontext()


def run_training(config: Config, plans: list[ShardPlan]) -> dict[str, Any]:
    """stats, baseline, train, evaluate and report as configured by ``--from-stage``/``--to-stage``;
    with ``--folds``, cross-validation instead of the single split."""
    root = DataRoot(config.run.data_root)
    stages = config.stages_to_run()
    check_shards_ready(root, plans, config)
    tracks = root.read_parquet(root.tracks_path())
    genres = sorted(tracks["genre"].unique())
    if config.train.folds:
        return run_crossval(config, plans, tracks, genres) if "train" in stages else {}
    stats_fp = stats_fingerprint(plans)
    stats = stats_task(root.url, training_inputs(plans), stats_fp, config.forced("stats"))
    outcome: dict[str, Any] = {"stats_clips": stats["clips"]}
    baseline = None
    if "baseline" in stages and config.train.baseline:
        baseline = baseline_task(root.url, genres, *(split_shards(plans, split) for split in SPLITS),
                                 baseline_fingerprint(plans, config.train.seed), config.forced("baseline"),
                                 config.train.seed)
        outcome["baseline"] = baseline
    if "train" not in stages:
        return outcome
    run = run_name(plans, config)
    train_fp = fingerprint("trained", run)
    if not config.forced("train") and config.run.from_stage in ("evaluate", "report") and output_state(
            root, model_manifest_path(root, run), train_fp) != "done":
        raise TrainingError(f"no finished model {run} for these shards and settings; "
                            "run `genreflow train` first")
    val = [("mel", p.shard) for p in plans if p.split == "val"]
    with gpu_annotation():
        trained = train_task.submit(root.url, run, genres, stats, training_inputs(plans), val, config.train,
                                    config.audio, train_fp, config.forced("train")).result()
    outcome["train"] = trained
    if "evaluate" not in stages:
        return outcome
    test = [("mel", p.shard) for p in plans if p.split == "test"]
    with gpu_annotation():
        metrics = evaluate_task.submit(root.url, run, test, fingerprint("evaluate", run, test),
                                       config.forced("evaluate")).result()
    outcome["metrics"] = metrics
    if "report" in stages:
        shards = [("mel", p.shard) for p in plans] + [("mel-aug", p.shard) for p in plans if p.augment]
        outcome["report"] = report_task(root.url, run, config.model_dump(mode="json"), shards, baseline)
    return outcome


def split_shards(plans: list[ShardPlan], split: str) -> list[tuple[str, str]]:
    """(stage, shard) of the original mel clips of one split."""
    return [("mel", p.shard) for p in plans if p.split == split]


def run_crossval(config: Config, plans: list[ShardPlan], tracks: pd.DataFrame, genres: list[str]) -> dict[str, Any]:
    """K folds over every track, each trained and scored (CNN and baseline) on Dask, then one report."""
    root = DataRoot(config.run.data_root)
    folds = make_folds(tracks, int(config.train.folds or 0), config.split.val_fraction, config.split.split_seed)
    run = crossval_name(plans, config)
    mel = [("mel", p.shard) for p in plans]
    train_inputs = mel + [("mel-aug", p.shard) for p in plans if p.augment is not None]
    with gpu_annotation():
        futures = [fold_task.submit(root.url, run, fold, genres, train_inputs, mel, config.train, config.audio,
                                    fingerprint("fold", run, fold.number, fold.train, fold.val, fold.test),
                                    config.forced("train"), config.forced("evaluate")) for fold in folds]
        results = [future.result() for future in futures]
    report = crossval_report_task(root.url, run, results, config.model_dump(mode="json"))
    summary = report["summary"]
    logger = get_run_logger()
    for model in ("cnn", "baseline"):
        if model in summary:
            accuracy = summary[model]["track_accuracy"]
            logger.info("cross-validation, %s: track accuracy %.3f ± %.3f over %d folds", model,
                        accuracy["mean"], accuracy["std"], len(folds))
    return {"crossval": run, "report": report}


@flow(name="train-evaluate")
def train_flow(config: Config) -> dict[str, Any]:
    """stats, train, evaluate and report on the shards under the data root."""
    with data_root_lock(config.run.data_root):
        outcome = run_training(config, load_plans(config))
    if "train" in outcome:
        get_run_logger().info("training part done: %s", outcome["train"])
    return outcome

