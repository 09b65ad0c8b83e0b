"""A data root's trained runs side by side: ``genreflow runs`` and reports/index.html.

Why: a user who rebuilds every week wants to know whether this week's model
is better than last week's, and where. Everything needed is already in the
data root: each run's model manifest (when it finished), its evaluation
(validation and test track accuracy, per-genre recall, ECE where evaluate
computes it), its report (the collection's size) and the registry (which run
is promoted). Nothing new is stored; this reads and lays out.

Two runs are compared genre by genre only when they are of the same family
and were tested on the same tracks (the same test-set id as the promotion
gate's, tasks/ingest.py evaluation_set_id): accuracies on other tracks do not
subtract.
"""

from __future__ import annotations

import hashlib
from typing import Any

from genreflow.storage.manifest import read_manifest
from genreflow.storage.outputs import manifest_path, output_path
from genreflow.storage.registry import read_registry
from genreflow.storage.root import DataRoot, StorageError

EVALUATION_FILE = "evaluation.json"  # tasks/evaluate.py's; named here so that listing runs loads no Keras
PREDICTIONS_FILE = "predictions.parquet"
INDEX_FILE = "reports/index.html"
ECE_KEYS = ("ece", "expected_calibration_error")  # where evaluate's metrics keep the ECE, once computed


def evaluation_tracks_id(track_ids: Any) -> str:
    """A short hash of the test tracks' ids, as tasks/ingest.py evaluation_set_id makes it."""
    ids = sorted({str(track) for track in track_ids})
    return hashlib.blake2b("\n".join(ids).encode(), digest_size=6).hexdigest()


def _ece(metrics: dict[str, Any]) -> float | None:
    for key in ECE_KEYS:
        value = metrics.get(key)
        if isinstance(value, dict):  # {"ece": {"test": ..}} or a calibration summary
            value = value.get("test", value.get("value"))
        if isinstance(value, (int, float)):
            return float(value)
    return None


def _read_json(root: DataRoot, path: str) -> dict[str, Any] | None:
    try:
        return root.read_json(path) if root.exists(path) else None
    except (OSError, ValueError):
        return None


def trained_run_names(root: DataRoot) -> list[str]:
    """Runs under models/ whose training finished (a manifest was sealed); cross-validation folds are not runs."""
    names = []
    for name in root.listdir("models"):
        try:
            path = manifest_path(root, "train", name)
        except StorageError:
            continue
        if not name.startswith("cv-") and root.exists(path):
            names.append(name)
    return names


def list_runs(root: DataRoot) -> list[dict[str, Any]]:
    """One dict a trained run, newest first: run, family, date (when training finished), tracks (the
    collection's size when its report was made), val_track_accuracy, test_track_accuracy, ece, promoted,
    report (reports/<run>/report.html, relative to the data root, where there is one), test_set and
    per_genre (test track accuracy, i.e. recall, per genre). A number not recorded is None."""
    registry = read_registry(root)
    documents: dict[str, dict[str, Any]] = {}
    for name in root.listdir("reports"):
        document = _read_json(root, output_path(root, "report", name, "metrics.json"))
        if document:
            documents[name] = document
    sizes = {}  # a run's collection size: its own report's, or that of the report that chose between it and others
    for name, document in documents.items():
        tracks = (document.get("dataset") or {}).get("tracks")
        for candidate in (document.get("selection") or {}).get("candidates") or []:
            if candidate.get("run"):
                sizes.setdefault(candidate["run"], tracks)
        sizes[name] = tracks
    runs = []
    for name in trained_run_names(root):
        manifest = read_manifest(root, manifest_path(root, "train", name))
        if manifest is None:
            continue
        evaluation = _read_json(root, output_path(root, "evaluate", name, EVALUATION_FILE)) or {}
        predictions = output_path(root, "evaluate", name, PREDICTIONS_FILE)
        test_set = None
        if root.exists(predictions):
            test_set = evaluation_tracks_id(root.read_parquet(predictions)["track_id"])
        report = output_path(root, "report", name, ".html")
        runs.append({
            "run": name,
            "family": evaluation.get("family") or manifest.extra.get("family") or
            ("embedding" if name.startswith("emb-") else "cnn"),
            "date": manifest.created_at,
            "tracks": sizes.get(name),
            "val_track_accuracy": (evaluation.get("validation") or {}).get("track_accuracy"),
            "test_track_accuracy": evaluation.get("track_accuracy"),
            "ece": _ece(evaluation),
            "promoted": registry.promoted == name,
            "report": f"reports/{name}/report.html" if root.exists(report) else None,
            "test_set": test_set,
            "per_genre": {genre: m.get("recall") for genre, m in (evaluation.get("per_genre") or {}).items()
                          if m.get("support")},  # a genre without test tracks has no accuracy
        })
    return sorted(runs, key=lambda run: (run["date"], run["run"]), reverse=True)


def genre_changes(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each run, newest first, beside the run of its family trained before it on the same test tracks: the
    change in test track accuracy per genre (a genre either lacks: None). ``runs`` as list_runs gives them."""
    pairs = []
    for i, run in enumerate(runs):
        if run["test_set"] is None:
            continue
        earlier = next((other for other in runs[i + 1:] if other["family"] == run["family"]
                        and other["test_set"] == run["test_set"]), None)
        if earlier is None:
            continue
        genres = sorted(set(run["per_genre"]) | set(earlier["per_genre"]))
        change = {genre: None if run["per_genre"].get(genre) is None or earlier["per_genre"].get(genre) is None
                  else run["per_genre"][genre] - earlier["per_genre"][genre] for genre in genres}
        overall = (None if run["test_track_accuracy"] is None or earlier["test_track_accuracy"] is None
                   else run["test_track_accuracy"] - earlier["test_track_accuracy"])
        pairs.append({"run": run["run"], "previous": earlier["run"], "family": run["family"],
                      "test_set": run["test_set"], "track_accuracy": overall, "per_genre": change})
    return pairs


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def runs_lines(runs: list[dict[str, Any]]) -> list[str]:
    """One line a run, as ``genreflow runs`` prints them, under a header."""
    rows = [("run", "family", "finished", "tracks", "val acc", "test acc", "ECE", "promoted")]
    for run in runs:
        rows.append((run["run"], run["family"], str(run["date"])[:16].replace("T", " "),
                     "–" if run["tracks"] is None else str(run["tracks"]), _number(run["val_track_accuracy"]),
                     _number(run["test_track_accuracy"]), _number(run["ece"]), "yes" if run["promoted"] else "no"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def write_index(root: DataRoot) -> str:
    """reports/index.html from list_runs and genre_changes, written atomically; its path. Rewritten after every
    rebuild's report, so it is never older than the newest report."""
    from genreflow.tasks.reporting.render import render_index

    runs = list_runs(root)
    path = root.join(INDEX_FILE)
    root.write_bytes(path, render_index(runs, genre_changes(runs)))
    return path

