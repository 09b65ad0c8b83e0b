"""Optional MLflow tracking: each rebuild's report and each cross-validation fold, copied to an MLflow store.

Why: teams that already compare experiments in MLflow want genreflow's runs
there beside their own. genreflow's registry (models/registry.json) stays the
source of truth for what ``predict`` uses; MLflow gets copies: the
parameters (the configuration, flattened), the metrics, the report's files
and the model's folder.

On when ``--mlflow-uri`` or ``GENREFLOW_MLFLOW_URI`` names a tracking URI
(``sqlite:///mlflow.db``, ``http://host:5000``, a folder). MLflow is an
extra (``pip install genreflow[mlflow]``), imported only then. Each logged
run carries the fingerprint of the output it copies (tag
``genreflow.fingerprint``), and an output already logged to the store is
not logged again: a rerun that finds everything done adds nothing.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from genreflow.storage.errors import GenreflowError
from genreflow.storage.root import DataRoot

MLFLOW_ENV = "GENREFLOW_MLFLOW_URI"
EXPERIMENT = "genreflow"
FINGERPRINT_TAG = "genreflow.fingerprint"
# Top-level evaluation numbers worth a metric each; the validation split's get a "val_" prefix.
METRIC_KEYS = ("track_accuracy", "clip_accuracy", "top2_accuracy", "macro_f1", "log_loss", "ece", "chance",
               "n_tracks", "n_clips")
_NAME = re.compile(r"[^A-Za-z0-9_\-. /]+")  # what MLflow accepts in a metric or parameter name


class TrackingError(GenreflowError, RuntimeError):
    """MLflow tracking was asked for and cannot be done (the extra is not installed)."""


def tracking_uri(config: Mapping[str, Any] | None = None) -> str | None:
    """The tracking URI: the configuration's ``run.mlflow_uri`` (``--mlflow-uri``), else GENREFLOW_MLFLOW_URI;
    None: tracking is off."""
    run = (config or {}).get("run") or {}
    return run.get("mlflow_uri") or os.environ.get(MLFLOW_ENV) or None


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested configuration as MLflow parameters: ``train.epochs`` -> "6"."""
    params: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            params.update(flat_params(value, f"{name}."))
        else:
            params[_NAME.sub("_", name)] = str(value)[:6000]
    return params


def run_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The evaluation's numbers as MLflow metrics: METRIC_KEYS, the validation split's as ``val_*``, each
    genre's test track accuracy (recall) as ``recall/<genre>``; a missing or non-finite number is left out."""
    found: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found[_NAME.sub("_", f"{prefix}{name}")] = float(value)

    for key in METRIC_KEYS:
        put(key, metrics.get(key))
    for key, value in (metrics.get("validation") or {}).items():
        put(f"val_{key}", value)
    for genre, scores in (metrics.get("per_genre") or {}).items():
        if scores.get("support"):
            put(f"recall/{genre}", scores.get("recall"))
    return found


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise TrackingError(f"MLflow tracking is on ({MLFLOW_ENV} or --mlflow-uri) but mlflow is not installed: "
                            "pip install 'genreflow[mlflow]'") from None
    return mlflow


def already_logged(uri: str, fingerprint: str) -> bool:
    """Whether the store holds a run of the output with ``fingerprint``."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return False
    runs = client.search_runs([experiment.experiment_id], f"tags.`{FINGERPRINT_TAG}` = '{fingerprint}'",
                              max_results=1)
    return bool(runs)


def log_run(uri: str, name: str, fingerprint: str, params: Mapping[str, str], metrics: Mapping[str, float],
            root: DataRoot, artifacts: Mapping[str, Mapping[str, str]], tags: Mapping[str, str] | None = None
            ) -> str | None:
    """One MLflow run named ``name``: ``params``, ``metrics``, and the data-root files of ``artifacts``
    (artifact folder -> {name inside it: path}) copied in; its id, or None when the output was logged before."""
    if already_logged(uri, fingerprint):
        return None
    mlflow = _mlflow()
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    run = client.create_run(experiment_id, run_name=name,
                            tags={FINGERPRINT_TAG: fingerprint, "genreflow.output": name, **(tags or {})})
    run_id = run.info.run_id
    try:
        for key, value in params.items():
            client.log_param(run_id, key, value)
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        with tempfile.TemporaryDirectory() as staging:  # the data root may be an object store: copy through here
            for folder, files in artifacts.items():
                base = Path(staging) / folder
                for relative, path in files.items():
                    local = base / relative
                    local.parent.mkdir(parents=True, exist_ok=True)
                    local.write_bytes(root.read_bytes(path))
                if base.exists():
                    client.log_artifacts(run_id, str(base), artifact_path=folder)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def folder_files(root: DataRoot, folder: str, names: Iterable[str] | None = None) -> dict[str, str]:
    """{name relative to ``folder``: path} of every file under it (a model's folder), or of ``names`` only (a
    report's manifest lists its own files in a folder it shares with evaluate's)."""
    if names is not None:
        return {name: f"{folder}/{name}" for name in sorted(names)}
    if not root.exists(folder):
        return {}
    return {path[len(folder) + 1:]: path for path in sorted(root.fs.find(folder))}
