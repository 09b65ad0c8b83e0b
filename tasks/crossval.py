"""Cross-validation: per fold, each model family and the baseline trained on the fold's tracks, the family
to promote chosen on its validation tracks, all scored on its test tracks, by the functions a rebuild's stages
call (tasks/train.py, tasks/train_embedding.py, tasks/evaluate.py, model/baseline.py, tasks/select.py), given
the fold's tracks where a rebuild gives each split's shards.

It runs on the shards preprocessing wrote (no new preprocessing): a fold's
training clips are the mel and augmented clips of its training tracks, its
validation and test clips their original clips only. Augmented copies exist
for the tracks that ingest put in the training split, so with an augmenting
recipe a fold trains on the copies of those of its training tracks
(docs/model.md says what that means for the numbers).

Plain functions first; fold_task and crossval_report_task are the thin
wrappers that read shards and write results; the report is drawn by
tasks/reporting/.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task

from genreflow.model.baseline import features_of, run_baseline
from genreflow.model.params import AudioConfig, TrainConfig
from genreflow.storage.manifest import read_manifest
from genreflow.storage.outputs import (
    OutputSpec,
    manifest_path,
    open_output,
    output_location,
    output_path,
    tracks_path,
)
from genreflow.storage.root import DataRoot
from genreflow.tasks.evaluate import original_clips, scores_with_validation
from genreflow.tasks.excerpts import EXCERPTS_DIR, add_excerpts, worst_clips
from genreflow.tasks.folds import Fold
from genreflow.tasks.label_issues import (
    LABEL_ISSUES_FILE,
    SHOWN_IN_REPORT,
    label_issues_csv,
    out_of_fold_tracks,
    suspect_labels,
)
from genreflow.tasks.reporting.render import artifact_key, render_crossval_report
from genreflow.tasks.select import choose_model
from genreflow.tasks.stats import band_stats
from genreflow.tasks.tracking import flat_params, folder_files, log_run, run_metrics, tracking_uri
from genreflow.tasks.train import cnn_clips, fit_model
from genreflow.tasks.train_embedding import embedding_clips, fit_embedding_model

# Summarised per fold: each family, the one the fold's validation tracks chose (what a rebuild would promote),
# and the baseline.
MODELS = ("cnn", "embedding", "chosen", "baseline")
SUMMARY_METRICS = ("track_accuracy", "macro_f1", "clip_accuracy", "top2_accuracy")
# Summarised too where every fold of a model has them: the test tracks' ECE, and before calibration (issue 22).
OPTIONAL_METRICS = ("ece", "ece_uncalibrated")
FOLD_FILE = ".json"  # reports/<cv>/fold-<n>.json
# reports/<cv>/fold-<n>.parquet: one row a clip of the fold's test tracks and a family, its out-of-fold
# probabilities (prob_<genre>) and ``family``; ``chosen`` marks the family the fold's validation tracks chose.
FOLD_PREDICTIONS = ".parquet"


def fold_stats(sources: Sequence[Any]) -> dict:
    """Band statistics of the selected clips of ``sources`` (model.dataset.ClipSource), not whole shards."""
    return band_stats(np.load(s.path, mmap_mode="r", allow_pickle=False)[np.sort(s.index["row"].to_numpy())]
                      for s in sources)


def summarize_folds(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std (ddof 1) over folds of each summary metric, per model."""
    summary: dict[str, Any] = {"folds": len(results)}
    for model in MODELS:
        scored = [r[model] for r in results if r.get(model)]
        if not scored:
            continue
        summary[model] = {}
        present = [metric for metric in OPTIONAL_METRICS if all(m.get(metric) is not None for m in scored)]
        for metric in (*SUMMARY_METRICS, *present):
            values = np.array([float(m[metric]) for m in scored], dtype=np.float64)
            summary[model][metric] = {"mean": float(values.mean()),
                                      "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                                      "values": values.tolist()}
    return summary


def score_on(root: DataRoot, run: str, shards: list[str], fold: Fold) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Test predictions and metrics of the fold's model ``run``, with its scores on the fold's validation tracks."""
    return scores_with_validation(root, run, shards, fold.test, shards, fold.val)


def fold_predictions(predictions: dict[str, pd.DataFrame], chosen: str, fold: int) -> pd.DataFrame:
    """Every family's test predictions of one fold in one table (FOLD_PREDICTIONS): the out-of-fold
    probabilities that suspect labels are found from (tasks/label_issues.py)."""
    frames = [frame.assign(family=family, chosen=family == chosen, fold=fold) for family, frame in predictions.items()]
    return pd.concat(frames, ignore_index=True)


def chosen_predictions(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The out-of-fold clip predictions of the family each fold chose, all folds in one table."""
    table = pd.concat(frames, ignore_index=True)
    return table[table["chosen"]].reset_index(drop=True)


@task(name="fold")
def fold_task(root_url: str, fold: Fold, genres: list[str], train_shards: list[tuple[str, str]], shards: list[str],
              train: TrainConfig, audio: AudioConfig,
              models: tuple[OutputSpec | None, OutputSpec | None, OutputSpec], force_train: bool,
              force_evaluate: bool) -> dict[str, Any]:
    """Train, choose and score one fold; ``models`` are (CNN, embedding model, result) as
    flows.plan.crossval_specs plans them: models/<cv>/fold-<n>[-embedding]/, reports/<cv>/fold-<n>.json.

    The result's spec has the models' as inputs, plus whether the baseline is
    asked for: that changes the result, not the models.
    """
    cnn_spec, embedding_spec, result = models
    root = DataRoot(root_url)
    logger = get_run_logger()
    with open_output(root, result, force_train or force_evaluate) as out:
        if out.done:
            return out.read_json(FOLD_FILE)
        scored: dict[str, dict[str, Any]] = {}
        predicted: dict[str, pd.DataFrame] = {}
        runs: dict[str, str] = {}
        summary: dict[str, Any] = {
            "fold": fold.number, "training": {}, "baseline": None,
            "tracks": {"train": len(fold.train), "val": len(fold.val), "test": len(fold.test)},
            "train_tracks": list(fold.train), "val_tracks": list(fold.val), "test_tracks": list(fold.test)}
        mel = [("mel", shard) for shard in shards]
        if cnn_spec is not None:
            train_sources, val_sources = cnn_clips(root, train_shards, mel, fold.train, fold.val)
            summary["training"] = fit_model(root, cnn_spec, genres, fold_stats(train_sources), train_sources,
                                            val_sources, train, audio, force_train, logger.info)
            summary["train_clips"] = sum(len(s) for s in train_sources)
            runs["cnn"] = cnn_spec.key
            predicted["cnn"], scored["cnn"] = score_on(root, cnn_spec.key, shards, fold)
        if embedding_spec is not None:
            summary["embedding_training"] = fit_embedding_model(
                root, embedding_spec, genres, *embedding_clips(root, shards, shards, fold.train, fold.val), train,
                audio, force_train)
            runs["embedding"] = embedding_spec.key
            predicted["embedding"], scored["embedding"] = score_on(root, embedding_spec.key, shards, fold)
        if train.baseline:
            _, summary["baseline"] = run_baseline(*(features_of(original_clips(root, mel, tracks))
                                                    for tracks in (fold.train, fold.val, fold.test)), genres,
                                                  train.seed)
        selection = choose_model(scored, runs, summary["baseline"])
        summary.update(scored, run=runs[selection["chosen"]], chosen=scored[selection["chosen"]],
                       selection={key: selection[key] for key in ("chosen", "run", "reason")})
        logger.info("fold %d: %s; chosen %s%s", fold.number, ", ".join(
            f"{family} track accuracy {metrics['track_accuracy']:.3f}" for family, metrics in scored.items()),
            selection["chosen"], f"; baseline {summary['baseline']['track_accuracy']:.3f}" if summary["baseline"]
            else "")
        out.write_parquet(FOLD_PREDICTIONS, fold_predictions(predicted, selection["chosen"], fold.number))
        out.write_json(FOLD_FILE, summary)
        out.rows = len(fold.test)
    return summary


def label_issues(root: DataRoot, cv: str, results: Sequence[dict[str, Any]]) -> pd.DataFrame | None:
    """The suspect labels of the cross-validation ``cv`` from its folds' out-of-fold predictions, ranked
    (tasks/label_issues.py), with the clip to listen to (the one least like the given genre); None where a
    fold kept no predictions."""
    frames = []
    for result in results:
        path = output_path(root, "fold", f"{cv}/fold-{result['fold']}", FOLD_PREDICTIONS)
        if not root.exists(path):
            return None
        frames.append(root.read_parquet(path))
    predictions = chosen_predictions(frames)
    genres = list(results[0]["chosen"]["genres"])  # every fold's models know every genre, in one order
    tracks = root.read_parquet(tracks_path(root))
    paths = dict(zip(tracks["track_id"], tracks["path"].astype(str), strict=True))
    issues = suspect_labels(out_of_fold_tracks(predictions, genres), genres, paths)
    clips = worst_clips(predictions, genres, dict(zip(issues["track_id"], issues["given_genre"], strict=True)))
    return issues.assign(clip_index=[clips[track] for track in issues["track_id"]])


def track_fold(root: DataRoot, cv: str, result: dict[str, Any], config: dict[str, Any], uri: str) -> str | None:
    """Copy one fold to MLflow (tasks/tracking.py): the configuration and fold number, the chosen family's test
    metrics (and each family's, prefixed), the fold's files and its chosen model's folder; None when the store
    has it already."""
    key = f"{cv}/fold-{result['fold']}"
    manifest = read_manifest(root, manifest_path(root, "fold", key))
    if manifest is None:
        return None
    metrics = run_metrics(result.get("chosen") or {})
    for family in ("cnn", "embedding", "baseline"):
        if result.get(family):
            metrics.update(run_metrics(result[family], prefix=f"{family}."))
    folder = output_location(root, "fold", key)[0]
    artifacts = {"fold": folder_files(root, folder, manifest.files),
                 "model": folder_files(root, output_location(root, "train", result["run"])[0])}
    params = {**flat_params(config), "fold": str(result["fold"])}
    tags = {"genreflow.crossval": cv, "genreflow.run": str(result["run"]),
            "genreflow.family": str((result.get("selection") or {}).get("chosen"))}
    return log_run(uri, key, manifest.fingerprint, params, metrics, root, artifacts, tags)


@task(name="crossval-report")
def crossval_report_task(root_url: str, spec: OutputSpec, results: list[dict[str, Any]], config: dict[str, Any]
                         ) -> dict[str, Any]:
    """reports/<cv>/crossval.{md,html,json}, and the summary as a Prefect markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    root = DataRoot(root_url)
    summary = summarize_folds(results)
    with open_output(root, spec, force=True) as out:
        issues = label_issues(root, spec.key, results)
        shown = None
        if issues is not None:
            out.write_bytes(LABEL_ISSUES_FILE, label_issues_csv(issues))
            root.remove(posixpath.join(out.folder, EXCERPTS_DIR), recursive=True)  # an earlier report's
            shown = add_excerpts(issues.head(SHOWN_IN_REPORT).to_dict(orient="records"),
                                 AudioConfig.model_validate(config["audio"]), out.write_bytes)
        files = render_crossval_report(spec.key, summary, results, config, label_issues=shown,
                                       n_label_issues=None if issues is None else len(issues))
        for file, payload in files.items():
            out.write_bytes(file.removeprefix("crossval"), payload)
        out.rows = len(results)
    create_markdown_artifact(markdown=files["crossval.md"].decode(), key=artifact_key("crossval", spec.key),
                             description=f"genreflow cross-validation {spec.key}")
    uri = tracking_uri(config)
    if uri:
        for result in results:
            track_fold(root, spec.key, result, config, uri)
    return {"dir": out.folder, "files": sorted(files), "summary": summary}
