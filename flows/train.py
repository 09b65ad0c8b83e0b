"""The second half of the DAG: stats -> baseline -> train -> evaluate -> promote -> report, on finished shards.

train fits each model family the configuration asks for (the CNN; the
embedding model where there are embed shards), evaluate scores each on the
validation and test splits, and the best on validation (tasks/select.py) is
the one promoted and reported, the others beside it.

With ``--folds K`` the training part is K-fold cross-validation instead
(tasks/crossval.py): one task per fold, then one report of mean and std.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import dask
import pandas as pd
from prefect import flow, get_run_logger

from genreflow.flows.config import Config
from genreflow.flows.lock import data_root_lock
from genreflow.flows.plan import (
    baseline_spec,
    crossval_specs,
    embedding_model_spec,
    evaluate_spec,
    plan_shards,
    promote_spec,
    report_spec,
    shard_names,
    split_shards,
    stats_spec,
    train_spec,
    training_inputs,
)
from genreflow.flows.runner import dask_client
from genreflow.storage.errors import GenreflowError
from genreflow.storage.manifest import read_manifest
from genreflow.storage.outputs import OutputSpec, manifest_path, state_of, tracks_path
from genreflow.storage.root import SPLITS, DataRoot
from genreflow.storage.space import check_space, output_need
from genreflow.tasks.baseline import baseline_task
from genreflow.tasks.crossval import MODELS, crossval_report_task, fold_task
from genreflow.tasks.evaluate import evaluate_task, model_family
from genreflow.tasks.folds import make_folds
from genreflow.tasks.ingest import evaluation_set_id
from genreflow.tasks.promote import is_finished_model, promote_task
from genreflow.tasks.report import report_task
from genreflow.tasks.select import choose_model
from genreflow.tasks.stats import stats_task
from genreflow.tasks.train import train_task
from genreflow.tasks.train_embedding import train_embedding_task
from genreflow.tasks.workers import ShardPlan


class TrainingError(GenreflowError, RuntimeError):
    """Training cannot start: its inputs are missing or incomplete."""


def load_plans(config: Config, root: DataRoot) -> list[ShardPlan]:
    """Plans from the ingest table under the data root; an error if preprocessing never ran."""
    if not root.exists(tracks_path(root)):
        raise TrainingError(f"no tracks.parquet under {root.url}: run `genreflow preprocess` first")
    return plan_shards(root.read_parquet(tracks_path(root)), config)


def check_shards_ready(root: DataRoot, plans: list[ShardPlan]) -> None:
    """Refuse to train on shards that are missing, stale or corrupt, naming them."""
    needed = [p.mel for p in plans] + [p.output(stage) for p in plans for stage in ("augment", "embed")
                                       if p.output(stage) is not None]
    bad = [f"{spec.name} ({state})" for spec in needed if (state := state_of(root, spec)) != "done"]
    if bad:
        raise TrainingError(f"{len(bad)} shard(s) not ready: {', '.join(bad[:8])}"
                            f"{' ...' if len(bad) > 8 else ''}; run `genreflow preprocess` first")


def gpu_annotation() -> Any:
    """Ask for a GPU worker when the cluster declares GPU resources; any worker otherwise."""
    client = dask_client()
    if client is None:
        return nullcontext()
    workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
    if any("GPU" in (w.get("resources") or {}) for w in workers):
        return dask.annotate(resources={"GPU": 1})
    return nullcontext()


def run_training(config: Config, root: DataRoot, plans: list[ShardPlan], changes: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """stats, baseline, train, evaluate, promote and report as ``--from-stage``/``--to-stage`` say;
    with ``--folds``, cross-validation instead of the single split. ``root``: the flow's DataRoot (tasks get
    its url). ``changes``: what this rebuild changed (tasks/changes.py), for the report."""
    stages = config.stages_to_run()
    check_shards_ready(root, plans)
    if config.train.family == "embedding" and not any(p.embed for p in plans):
        raise TrainingError("--family embedding: musicnn's weights are not in the cache, so there are no embed "
                            "shards; `genreflow rebuild --family embedding` fetches them and embeds")
    tracks = root.read_parquet(tracks_path(root))
    genres = sorted(tracks["genre"].unique())
    if config.train.folds:
        return run_crossval(config, root, plans, tracks, genres) if "train" in stages else {}
    stats = stats_task(root.url, training_inputs(plans), stats_spec(plans), config.forced("stats"))
    outcome: dict[str, Any] = {"stats_clips": stats["clips"]}
    baseline, baseline_out = None, None
    if "baseline" in stages and config.train.baseline:
        baseline_out = baseline_spec(plans, config.train.seed)
        baseline = baseline_task(root.url, genres, *(split_shards(plans, split) for split in SPLITS), baseline_out,
                                 config.forced("baseline"), config.train.seed)
        outcome["baseline"] = baseline
    if "train" not in stages:
        return outcome
    runs = trained_models(root, plans, config, genres, stats, outcome)
    if "evaluate" not in stages:
        return outcome
    evaluations, scored = evaluate_models(root, plans, config, runs)
    selection = choose_model(scored, {family: run for family, (run, _) in runs.items()}, baseline)
    chosen = selection["chosen"]
    get_run_logger().info("model chosen on the validation split: %s (%s)", selection["run"], selection["reason"])
    evaluation, outcome["metrics"] = evaluations[chosen], scored[chosen]
    outcome["train"], outcome["selection"] = outcome["trained"][chosen], selection
    test = shard_names(plans, "test")
    promotion = None
    if "promote" in stages:
        promotion = promote_spec(evaluation, config)
        with gpu_annotation():
            outcome["promotion"] = promote_task.submit(
                root.url, promotion, scored[chosen], test, config.run.promote, config.run.promote_tolerance,
                evaluation_set_id(tracks), config.forced("promote")).result()
    if "report" in stages:
        shards = [("mel", p.shard) for p in plans] + [("augment", p.shard) for p in plans if p.augment]
        others = [spec for family, spec in evaluations.items() if family != chosen]
        report = report_spec(evaluation, [baseline_out, promotion, *others], config, changes, outcome.get("promotion"))
        if config.forced("report") or state_of(root, report, verify=False) != "done":
            check_space(root, [output_need(root, "report")], "the report")
        outcome["report"] = report_task(root.url, report, config.model_dump(mode="json"), shards, baseline,
                                        outcome.get("promotion"), changes, selection)
    return outcome


def evaluate_models(root: DataRoot, plans: list[ShardPlan], config: Config, runs: dict[str, tuple[str, str]]
                    ) -> tuple[dict[str, OutputSpec], dict[str, dict[str, Any]]]:
    """Each trained model scored on the validation and test splits, side by side on the workers: family ->
    its evaluation's spec, and family -> its metrics."""
    evaluations = {family: evaluate_spec(plans, run, fingerprint, family)
                   for family, (run, fingerprint) in runs.items()}
    test, val = shard_names(plans, "test"), shard_names(plans, "val")
    with gpu_annotation():
        futures = {family: evaluate_task.submit(root.url, test, val, spec, config.forced("evaluate"))
                   for family, spec in evaluations.items()}
    return evaluations, {family: future.result() for family, future in futures.items()}


def trained_models(root: DataRoot, plans: list[ShardPlan], config: Config, genres: list[str], stats: dict,
                   outcome: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """family -> (run, fingerprint) of the models to evaluate: ``--evaluate-run``'s, or those this configuration
    trains (trained, resumed or found finished here): the CNN unless ``--family embedding``, the embedding
    model where the plan has embed shards. Their summaries go to ``outcome["trained"]``."""
    trained: dict[str, dict[str, Any]] = {}
    outcome["trained"] = trained
    if config.run.evaluate_run:
        run = config.run.evaluate_run
        manifest = read_manifest(root, manifest_path(root, "train", run))
        if manifest is None or not is_finished_model(root, run):
            raise TrainingError(f"no finished model {run} under {root.url}")
        family = model_family(root, run)
        trained[family] = outcome["train"] = {**manifest.extra, "run": run, "skipped": True}
        return {family: (run, manifest.fingerprint)}
    models = {"cnn": train_spec(plans, config) if config.train.family != "embedding" else None,
              "embedding": embedding_model_spec(plans, config)}
    runs = {family: (model.key, model.fingerprint) for family, model in models.items() if model is not None}
    missing = [model.key for model in models.values() if model is not None and state_of(root, model) != "done"]
    check_space(root, [output_need(root, "train", len(missing))], "training")
    if missing and not config.forced("train") and config.run.from_stage in ("evaluate", "promote", "report"):
        raise TrainingError(f"no finished model {', '.join(missing)} for these shards and settings; "
                            "run `genreflow train` first")
    futures = {}
    with gpu_annotation():  # both families side by side on the workers
        if models["cnn"] is not None:
            futures["cnn"] = train_task.submit(root.url, models["cnn"], genres, stats, training_inputs(plans),
                                               split_shards(plans, "val"), config.train, config.audio,
                                               config.forced("train"))
        if models["embedding"] is not None:
            futures["embedding"] = train_embedding_task.submit(
                root.url, models["embedding"], genres, shard_names(plans, "train"), shard_names(plans, "val"),
                config.train, config.audio, config.forced("train"))
    trained.update({family: future.result() for family, future in futures.items()})
    outcome["train"] = next(iter(trained.values()))  # until evaluate chooses: the CNN where it trained
    return runs


def run_crossval(config: Config, root: DataRoot, plans: list[ShardPlan], tracks: pd.DataFrame, genres: list[str]
                 ) -> dict[str, Any]:
    """K folds over every track, each trained, chosen on its validation tracks and scored (CNN, embedding
    model, baseline) on Dask, then one report."""
    folds = make_folds(tracks, int(config.train.folds or 0), config.split.val_fraction, config.split.split_seed)
    report_out, per_fold = crossval_specs(plans, config, folds)
    mel = [("mel", p.shard) for p in plans]
    train_inputs = mel + [("augment", p.shard) for p in plans if p.augment is not None]
    with gpu_annotation():
        futures = [fold_task.submit(root.url, fold, genres, train_inputs, [p.shard for p in plans], config.train,
                                    config.audio, models, config.forced("train"), config.forced("evaluate"))
                   for fold, models in zip(folds, per_fold, strict=True)]
        results = [future.result() for future in futures]
    report = crossval_report_task(root.url, report_out, results, config.model_dump(mode="json"))
    summary = report["summary"]
    logger = get_run_logger()
    for name in MODELS:
        if name in summary:
            accuracy = summary[name]["track_accuracy"]
            logger.info("cross-validation, %s: track accuracy %.3f ± %.3f over %d folds", name,
                        accuracy["mean"], accuracy["std"], len(folds))
    return {"crossval": report_out.key, "report": report}


@flow(name="train-evaluate")
def train_flow(config: Config) -> dict[str, Any]:
    """stats, train, evaluate and report on the shards under the data root."""
    root = DataRoot(config.run.data_root)
    with data_root_lock(root):
        outcome = run_training(config, root, load_plans(config, root))
    if "train" in outcome:
        get_run_logger().info("training part done: %s", outcome["train"])
    return outcome

