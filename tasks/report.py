"""report stage: reports/<run>/ (markdown, a self-contained HTML page, metrics JSON, plots) and Prefect artifacts.

The stage reads what the report shows (the tracks, the quarantine, the clip
counts of the shards, the evaluation, the training history) and writes the
files that the renderer (tasks/reporting/) makes of them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import task

from genreflow.model.files import EMBEDDING_FILE, HISTORY_FILE
from genreflow.model.params import AugmentConfig
from genreflow.storage.outputs import OutputSpec, open_output, output_path, tracks_path
from genreflow.storage.root import QUARANTINE_COLUMNS, DataRoot
from genreflow.storage.shards import read_shard_index
from genreflow.tasks.evaluate import EVALUATION_FILE
from genreflow.tasks.reporting.render import (
    artifact_key,
    dataset_summary,
    render_report,
    summary_markdown,
    summary_table,
)


def clip_counts(root: DataRoot, shards: list[tuple[str, str]]) -> pd.DataFrame:
    """Clips per split and augmentation over the (stage, shard) indexes given."""
    frames = [read_shard_index(root, stage, shard).groupby(["split", "augmentation"]).size()
              .rename("clips").reset_index() for stage, shard in shards]
    if not frames:
        return pd.DataFrame(columns=["split", "augmentation", "clips"])
    return pd.concat(frames).groupby(["split", "augmentation"], as_index=False)["clips"].sum()


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
            for name, payload in render_report(run, metrics, history, summary, config, baseline=baseline,
                                               promotion=promotion, changes=changes, selection=selection,
                                               model=model).items():
                out.write_bytes(name.removeprefix("report") if name.startswith("report.") else name, payload)
    report_md = root.read_bytes(out.path(".md")).decode()
    create_markdown_artifact(markdown=report_md, key=artifact_key("report", run),
                             description=f"genreflow evaluation report of {run}")
    create_table_artifact(table=summary_table(summary), key="genreflow-dataset",
                          description="tracks per genre and split")
    create_markdown_artifact(markdown=summary_markdown(summary), key="genreflow-dataset-summary",
                             description="data-set summary: tracks, clips, augmentations, quarantine")
    manifest = out.manifest()
    return {"dir": out.folder, "files": sorted(manifest.files) if manifest else []}
