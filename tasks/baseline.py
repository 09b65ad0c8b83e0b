"""baseline stage: the MFCC + SVM baseline (model/baseline.py) trained and scored on the mel shards.

It is trained on the original training clips (not the augmented copies), its
C is picked on the validation tracks, and it is scored on the test clips:
baseline/<id>/metrics.json and predictions.parquet, done once per spec.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from genreflow.model.baseline import features_of, run_baseline
from genreflow.storage.outputs import OutputSpec, open_output
from genreflow.storage.root import DataRoot
from genreflow.tasks.evaluate import PREDICTIONS_FILE, original_clips

METRICS_FILE = "metrics.json"


@task(name="baseline")
def baseline_task(root_url: str, genres: list[str], train_shards: list[tuple[str, str]],
                  val_shards: list[tuple[str, str]], test_shards: list[tuple[str, str]], spec: OutputSpec,
                  force: bool, seed: int) -> dict[str, Any]:
    """The baseline's test metrics (baseline/<id>/metrics.json and predictions.parquet), unless done for ``spec``."""
    root = DataRoot(root_url)
    with open_output(root, spec, force) as out:
        if out.done:
            return out.read_json(METRICS_FILE)
        predictions, metrics = run_baseline(*(features_of(original_clips(root, shards))
                                              for shards in (train_shards, val_shards, test_shards)), genres, seed)
        out.write_parquet(PREDICTIONS_FILE, predictions)
        out.write_json(METRICS_FILE, metrics)
        out.rows = len(predictions)
    return metrics
