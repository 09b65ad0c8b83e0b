"""report stage: reports/<run>/ (markdown, a self-contained HTML page, metrics JSON, plots) and Prefect artifacts.

The stage reads what the report shows (the tracks, the quarantine, the clip
counts of the shards, the evaluation, the training history) and writes the
files that the renderer (tasks/reporting/) makes of them, with the excerpts
its Mistakes play (tasks/mistakes.py, tasks/excerpts.py) written through the
same output, so that its manifest seals them too. After it, every time:
reports/index.html (tasks/runs.py) and, where asked, a copy in MLflow
(tasks/tracking.py).
"""

from __future__ import annotations

import posixpath
from typing import Any

import pandas as pd
from prefect import task

from genreflow.model.files import EMBEDDING_FILE, HISTORY_FILE
from genreflow.model.params import AudioConfig, AugmentConfig
from genreflow.storage.manifest import read_manifest
from genreflow.storage.outputs import (
    Output,
    OutputSpec,
    manifest_path,
    open_output,
    output_location,
    output_path,
    tracks_path,
)
from genreflow.storage.root import QUARANTINE_COLUMNS, DataRoot
from genreflow.storage.shards import read_shard_index
from genreflow.tasks.evaluate import EVALUATION_FILE, PREDICTIONS_FILE
from genreflow.tasks.excerpts import EXCERPTS_DIR, add_excerpts
from genreflow.tasks.mistakes import confident_mistakes
from genreflow.tasks.reporting.render import (
    artifact_key,
    dataset_summary,
    render_report,
    summary_markdown,
    summary_table,
)
from genreflow.tasks.runs import write_index
from genreflow.tasks.tracking import flat_params, folder_files, log_run, run_metrics, tracking_uri


def clip_counts(root: DataRoot, shards: list[tuple[str, str]]) -> pd.DataFrame:
    """Clips per split and augmentation over the (stage, shard) indexes given."""
    frames = [read_shard_index(root, stage, shard).groupby(["split", "augmentation"]).size()
              .rename("clips").reset_index() for stage, shard in shards]
    if not frames:
        return pd.DataFrame(columns=["split", "augmentation", "clips"])
    return pd.concat(frames).groupby(["split", "augmentation"], as_index=False)["clips"].sum()


def track_paths(tracks: pd.DataFrame) -> dict[Any, str]:
    """track_id -> its file, for the rows a listener checks by ear."""
    return dict(zip(tracks["track_id"], tracks["path"].astype(str), strict=True)) if "path" in tracks else {}


def report_mistakes(root: DataRoot, run: str, metrics: dict[str, Any], paths: dict[Any, str], audio: AudioConfig,
                    out: Output) -> list[dict[str, Any]] | None:
    """The run's confident mistakes, each with its excerpt written into ``out`` (excerpts/); None without
    evaluate's per-clip predictions (an evaluation from before they were kept)."""
    predictions_file = output_path(root, "evaluate", run, PREDICTIONS_FILE)
    if not root.exists(predictions_file):
        return None
    root.remove(posixpath.join(out.folder, EXCERPTS_DIR), recursive=True)  # a previous report's, not in the manifest
    mistakes = confident_mistakes(root.read_parquet(predictions_file), list(metrics["genres"]), paths)
    return add_excerpts(mistakes, audio, out.write_bytes)


def track_report(root: DataRoot, spec: OutputSpec, config: dict[str, Any], uri: str,
                 promotion: dict[str, Any] | None = None) -> str | None:
    """Copy the report of ``spec`` to MLflow (tasks/tracking.py): the configuration, the evaluation's metrics,
    the report's files and the model's folder; None when the store has it already."""
    run = spec.key
    manifest = read_manifest(root, manifest_path(root, "report", run))
    if manifest is None:
        return None
    metrics = root.read_json(output_path(root, "evaluate", run, EVALUATION_FILE))
    folder = output_location(root, "report", run)[0]
    artifacts = {"report": folder_files(root, folder, manifest.files),
                 "model": folder_files(root, output_location(root, "train", run)[0])}
    tags = {"genreflow.run": run, "genreflow.family": str(metrics.get("family", "cnn"))}
    if promotion:
        tags["genreflow.promotion"] = str(promotion.get("decision"))
    return log_run(uri, run, spec.fingerprint, flat_params(config), run_metrics(metrics), root, artifacts, tags)


@task(name="report")
def report_task(
    root_url: str, spec: OutputSpec, config: dict[str, Any], shards: list[tuple[str, str]],
    baseline: dict[str, Any] | None = None, promotion: dict[str, Any] | None = None,
    changes: dict[str, Any] | None = None, selection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write reports/<run>/ (unless done for ``spec``) and publish the summaries as Prefect artifacts."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    root = DataRoot(root_url)
    run = spec.key
    tracks = root.read_parquet(tracks_path(root))
    quarantine = (root.read_parquet(root.quarantine_path()) if root.exists(root.quarantine_path())
                  else pd.DataFrame(columns=list(QUARANTINE_COLUMNS)))
    augmentations = AugmentConfig.model_validate(config["augment"]).names()
    summary = dataset_summary(tracks, quarantine, clip_counts(root, shards), augmentations)
    with open_output(root, spec) as out:
        if not out.done:
            metrics = root.read_json(output_path(root, "evaluate", run, EVALUATION_FILE))
            history_file, model_file = (output_path(root, "train", run, name) for name in (HISTORY_FILE,
                                                                                          EMBEDDING_FILE))
            history = pd.read_csv(root.fs.open(history_file)) if root.exists(history_file) else pd.DataFrame()
            model = root.read_json(model_file) if root.exists(model_file) else None
            mistakes = report_mistakes(root, run, metrics, track_paths(tracks),
                                       AudioConfig.model_validate(config["audio"]), out)
            for name, payload in render_report(run, metrics, history, summary, config, baseline=baseline,
                                               promotion=promotion, changes=changes, selection=selection,
                                               model=model, mistakes=mistakes).items():
                out.write_bytes(name.removeprefix("report") if name.startswith("report.") else name, payload)
    report_md = root.read_bytes(out.path(".md")).decode()
    create_markdown_artifact(markdown=report_md, key=artifact_key("report", run),
                             description=f"genreflow evaluation report of {run}")
    create_table_artifact(table=summary_table(summary), key="genreflow-dataset",
                          description="tracks per genre and split")
    create_markdown_artifact(markdown=summary_markdown(summary), key="genreflow-dataset-summary",
                             description="data-set summary: tracks, clips, augmentations, quarantine")
    write_index(root)  # reports/index.html: every run, this one included, side by side
    uri = tracking_uri(config)
    if uri:
        track_report(root, spec, config, uri, promotion)
    manifest = out.manifest()
    return {"dir": out.folder, "files": sorted(manifest.files) if manifest else []}
