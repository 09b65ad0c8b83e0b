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

from collections.abc import Sequence
from typing import Any

import numpy as np
from prefect import get_run_logger, task

from genreflow.model.baseline import features_of, run_baseline
from genreflow.model.params import AudioConfig, TrainConfig
from genreflow.storage.outputs import OutputSpec, open_output
from genreflow.storage.root import DataRoot
from genreflow.tasks.evaluate import original_clips, scores_with_validation
from genreflow.tasks.folds import Fold
from genreflow.tasks.reporting.render import artifact_key, render_crossval_report
from genreflow.tasks.select import choose_model
from genreflow.tasks.stats import band_stats
from genreflow.tasks.train import cnn_clips, fit_model
from genreflow.tasks.train_embedding import embedding_clips, fit_embedding_model

# Summarised per fold: each family, the one the fold's validation tracks chose (what a rebuild would promote),
# and the baseline.
MODELS = ("cnn", "embedding", "chosen", "baseline")
SUMMARY_METRICS = ("track_accuracy", "macro_f1", "clip_accuracy", "top2_accuracy")
FOLD_FILE = ".json"  # reports/<cv>/fold-<n>.json


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
        for metric in SUMMARY_METRICS:
            values = np.array([float(m[metric]) for m in scored], dtype=np.float64)
            summary[model][metric] = {"mean": float(values.mean()),
                                      "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                                      "values": values.tolist()}
    return summary


def score_on(root: DataRoot, run: str, shards: list[str], fold: Fold) -> dict[str, Any]:
    """Test metrics of the fold's model ``run``, with its scores on the fold's validation tracks."""
    return scores_with_validation(root, run, shards, fold.test, shards, fold.val)[1]


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
            runs["cnn"], scored["cnn"] = cnn_spec.key, score_on(root, cnn_spec.key, shards, fold)
        if embedding_spec is not None:
            summary["embedding_training"] = fit_embedding_model(
                root, embedding_spec, genres, *embedding_clips(root, shards, shards, fold.train, fold.val), train,
                audio, force_train)
            runs["embedding"], scored["embedding"] = embedding_spec.key, score_on(root, embedding_spec.key, shards,
                                                                                  fold)
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
        out.write_json(FOLD_FILE, summary)
        out.rows = len(fold.test)
    return summary


@task(name="crossval-report")
def crossval_report_task(root_url: str, spec: OutputSpec, results: list[dict[str, Any]], config: dict[str, Any]
                         ) -> dict[str, Any]:
    """reports/<cv>/crossval.{md,html,json}, and the summary as a Prefect markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    root = DataRoot(root_url)
    summary = summarize_folds(results)
    with open_output(root, spec, force=True) as out:
        files = render_crossval_report(spec.key, summary, results, config)
        for file, payload in files.items():
            out.write_bytes(file.removeprefix("crossval"), payload)
        out.rows = len(results)
    create_markdown_artifact(markdown=files["crossval.md"].decode(), key=artifact_key("crossval", spec.key),
                             description=f"genreflow cross-validation {spec.key}")
    return {"dir": out.folder, "files": sorted(files), "summary": summary}
