"""The evaluation report and the cross-validation report as bytes: markdown, a self-contained HTML page, JSON.

The numbers are formatted once, into Table cells and short strings, and the
Jinja2 templates in templates/ only lay them out as markdown and as HTML, so the
two files can never disagree. Plain functions, no Prefect and no data root: the
report and crossval stages (tasks/report.py, tasks/crossval.py) read the inputs,
write these bytes through the storage layer and publish the Prefect artifacts.
The PNG plots are drawn by plots.py.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from genreflow.tasks.changes import changes_lines
from genreflow.tasks.reporting.plots import (
    render_confusion_png,
    render_curves_png,
    render_open_set_png,
    render_reliability_png,
)
from genreflow.tasks.select import FAMILY_NAMES

SPLITS: tuple[str, ...] = ("train", "val", "test")
MISSING = "–"  # shown where a number does not exist (a baseline without clip accuracy)

# (metrics key, label) of the headline table, in the order the seed reported them.
HEADLINE: tuple[tuple[str, str], ...] = (
    ("clip_accuracy", "Clip accuracy"),
    ("track_accuracy", "Track accuracy (mean-probability vote)"),
    ("top2_accuracy", "Top-2 accuracy (track)"),
    ("macro_f1", "Macro-F1 (track)"),
    ("chance", "Chance (1 / genres)"),
)
# Calibration rows (issue 22) added under the headline where evaluate's metrics have them: the expected
# calibration error of the test tracks' probabilities, 10 bins, as the model gives them and without its
# temperature (a track-level embedding head only).
CALIBRATION: tuple[tuple[str, str], ...] = (
    ("ece", "ECE, 10 bins (track)"),
    ("ece_uncalibrated", "ECE before calibration (track)"),
)


# --- tables and templates --------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A table as text cells, formatted once for both the markdown and the HTML template."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    # In the HTML only: per cell, the href its text links to (None: plain text), e.g. a confusion cell's mistakes.
    links: tuple[tuple[str | None, ...], ...] | None = None

    @cached_property
    def numeric(self) -> tuple[bool, ...]:
        """Columns to right-align: all but the first, where every present value is a number.

        Computed once a table: the HTML template asks it for every cell, and recomputed each time it made
        fma_full's 161 x 161 confusion table a 16-minute render (docs/benchmarks.md, fma_full's size).
        """
        return tuple(
            i > 0 and all(_is_number(row[i]) or row[i] == MISSING for row in self.rows)
            for i in range(len(self.header))
        )


def _table(header: list[Any], rows: list[list[Any]]) -> Table:
    return Table(tuple(_cell(h) for h in header), tuple(tuple(_cell(v) for v in row) for row in rows))


def _cell(value: Any) -> str:
    """One value as table text: floats to 3 decimals, missing values as a dash."""
    if value is None:
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return MISSING if math.isnan(value) else f"{float(value):.3f}"
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _md_inline(text: Any) -> str:
    """Keep a user string on one line and out of the table syntax (the md filter of the templates)."""
    return str(text).replace("\r", " ").replace("\n", " ").replace("|", "\\|")


# Autoescape only the *.html.j2 templates: markdown wants the raw text. StrictUndefined turns a
# misspelt variable into an error rather than an empty cell.
_TEMPLATES = Environment(
    loader=PackageLoader("genreflow.tasks.reporting", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_TEMPLATES.filters["md"] = _md_inline


def _render(template: str, **context: Any) -> str:
    """One template rendered; every document goes through here so all share one Environment."""
    return _TEMPLATES.get_template(template).render(**context)


# --- data-set summary -----------------------------------------------------


def _split_order(splits: list[str]) -> list[str]:
    """train, val, test first (always, even when empty), then any other split name."""
    return list(SPLITS) + sorted(set(splits) - set(SPLITS))


def _plain(value: Any) -> Any:
    """A value JSON can hold: numpy scalars unwrapped, NaN as None, paths as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, PurePath):
        return str(value)
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def dataset_summary(
    tracks: pd.DataFrame,
    quarantine: pd.DataFrame,
    clip_counts: pd.DataFrame,
    augmentations: list[str],
) -> dict[str, Any]:
    """What the model was trained and tested on, as a JSON-serialisable dict.

    tracks : track_id, genre, split (one row a usable track).
    quarantine : track_id, path, genre, reason (may be empty).
    clip_counts : split, augmentation, clips (clips per split and augmentation).
    augmentations : the augmentation names of the run, in config order.

    Returns tracks_per_genre_split {genre: {split: n}} (train, val and test always
    present), tracks, clips {split: {augmentation: n}}, augmentations and
    quarantined [{track_id, path, genre, reason}].
    """
    missing = {"genre", "split"} - set(tracks.columns)
    if missing:
        raise ValueError(f"tracks table lacks column(s) {sorted(missing)}")
    genres = sorted(tracks["genre"].astype(str).unique())
    splits = _split_order(list(tracks["split"].astype(str).unique()))
    counts = tracks.groupby([tracks["genre"].astype(str), tracks["split"].astype(str)]).size()
    per_genre = {genre: {split: int(counts.get((genre, split), 0)) for split in splits} for genre in genres}

    clips: dict[str, dict[str, int]] = {}
    if len(clip_counts):
        totals = clip_counts.groupby(
            [clip_counts["split"].astype(str), clip_counts["augmentation"].astype(str)], sort=False
        )["clips"].sum()
        # The original clips first, then the augmentations in their config order.
        names = list(dict.fromkeys(name for _, name in totals.index))
        order = [n for n in names if n not in augmentations] + [n for n in augmentations if n in names]
        for split in _split_order([split for split, _ in totals.index]):
            row = {name: int(totals[(split, name)]) for name in order if (split, name) in totals.index}
            if row:
                clips[split] = row

    columns = ["track_id", "path", "genre", "reason"]
    quarantined = [
        {column: _plain(record.get(column)) for column in columns}
        for record in quarantine.to_dict(orient="records")
    ]
    return {
        "tracks_per_genre_split": per_genre,
        "tracks": len(tracks),
        "clips": clips,
        "augmentations": [str(name) for name in augmentations],
        "quarantined": quarantined,
    }


def _summary_splits(summary: dict[str, Any]) -> list[str]:
    seen = [split for counts in summary["tracks_per_genre_split"].values() for split in counts]
    return _split_order(seen)


def summary_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Tracks per genre as rows (genre, train, val, test, total) for a Prefect table artifact."""
    splits = _summary_splits(summary)
    return [
        {
            "genre": genre,
            **{split: int(counts.get(split, 0)) for split in splits},
            "total": int(sum(counts.values())),
        }
        for genre, counts in summary["tracks_per_genre_split"].items()
    ]


def _dataset_context(summary: dict[str, Any]) -> dict[str, Any]:
    """The data-set section's tables, as dataset.md.j2 and report.html.j2 lay them out."""
    rows = summary_table(summary)
    splits = _summary_splits(summary)
    totals = ["all", *(sum(row[s] for row in rows) for s in splits), sum(row["total"] for row in rows)]
    columns = ["genre", *splits, "total"]

    clips = summary.get("clips", {})
    names = list(dict.fromkeys(name for counts in clips.values() for name in counts))
    clip_rows = [
        [split, *(counts.get(name, 0) for name in names), sum(counts.values())] for split, counts in clips.items()
    ]
    quarantined = summary.get("quarantined", [])
    quarantine_rows = [[q.get("track_id"), q.get("path"), q.get("genre"), q.get("reason")] for q in quarantined]
    return {
        "tracks": _table(columns, [[row[c] for c in columns] for row in rows] + [totals]),
        "clips": _table(["split", *names, "total"], clip_rows) if clips else None,
        "augmentations": [str(name) for name in summary.get("augmentations", [])],
        "n_quarantined": len(quarantined),
        "quarantined": _table(["track_id", "path", "genre", "reason"], quarantine_rows) if quarantined else None,
    }


def summary_markdown(summary: dict[str, Any]) -> str:
    """The data-set section as markdown, for a Prefect markdown artifact."""
    return _render("dataset.md.j2", dataset=_dataset_context(summary))


# --- the report ------------------------------------------------------------


def training_summary(history: pd.DataFrame) -> dict[str, Any]:
    """Epochs run and the best validation accuracy (and its epoch), None where not recorded."""
    result: dict[str, Any] = {
        "epochs": len(history),
        "best_val_accuracy": None,
        "best_epoch": None,
        "final_accuracy": None,
        "final_loss": None,
    }
    if "val_accuracy" in history.columns and history["val_accuracy"].notna().any():
        best = history["val_accuracy"].astype(float).idxmax()
        result["best_val_accuracy"] = float(history.loc[best, "val_accuracy"])
        result["best_epoch"] = _plain(history.loc[best, "epoch"]) if "epoch" in history.columns else None
    for column in ("accuracy", "loss"):
        if column in history.columns and len(history) and pd.notna(history[column].iloc[-1]):
            result[f"final_{column}"] = float(history[column].iloc[-1])
    return result


def _headline_table(metrics: dict[str, Any], baseline: dict[str, Any] | None, name: str = "CNN") -> Table:
    """The headline metrics of the model ``name``, the baseline (when given) in a column beside it."""
    header = ["Metric", name]
    if baseline is not None:
        header.append(str(baseline.get("name", "baseline")))
    rows = []
    for key, label in (*HEADLINE, *((k, label) for k, label in CALIBRATION if metrics.get(k) is not None)):
        row = [label, metrics.get(key)]
        if baseline is not None:
            row.append(baseline.get(key))
        rows.append(row)
    return _table(header, rows)


def _per_genre_table(metrics: dict[str, Any]) -> Table:
    """Precision, recall, F1 and support per genre: where the headline numbers come from."""
    return _table(
        ["genre", "precision", "recall", "F1", "support"],
        [
            [genre, m.get("precision"), m.get("recall"), m.get("f1"), m.get("support")]
            for genre, m in metrics.get("per_genre", {}).items()
        ],
    )


def _confusion_table(confusion: dict[str, Any], anchors: dict[tuple[str, str], str] | None = None) -> Table:
    """The confusion counts as text, for readers (and diff tools) that cannot see the heatmap. ``anchors``:
    (true, predicted) -> the id of the first Mistakes row of that pair, which the HTML cell links to."""
    labels = [str(label) for label in confusion["labels"]]
    table = _table(
        ["true \\ predicted", *labels],
        [[label, *row] for label, row in zip(labels, confusion["matrix"], strict=True)],
    )
    if not anchors:
        return table
    links = tuple((None, *(f"#{anchors[(true, predicted)]}" if (true, predicted) in anchors else None
                           for predicted in labels)) for true in labels)
    return Table(table.header, table.rows, links)


def mistake_anchor(genres: list[str], true: str, predicted: str) -> str:
    """The HTML id of the first Mistakes row of a (true, predicted) pair: genre positions, since a genre name
    may hold any character."""
    return f"mistakes-{genres.index(true)}-{genres.index(predicted)}"


def _clock(seconds: float) -> str:
    """Seconds as m:ss, as a player shows a position."""
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def _window(row: dict[str, Any], clip_seconds: float | None) -> str:
    """Where in the track an excerpt is: "0:10–0:20"."""
    if row.get("offset") is None:
        return MISSING
    start = float(row["offset"])
    return _clock(start) + (f"–{_clock(start + clip_seconds)}" if clip_seconds else "")


def _top_text(top: list[dict[str, Any]]) -> str:
    return ", ".join(f"{entry['genre']} {entry['probability']:.3f}" for entry in top)


def _listen_rows(rows: list[dict[str, Any]], clip_seconds: float | None) -> list[dict[str, Any]]:
    """What every row with a player shares, formatted once for both templates: its window and excerpt."""
    return [{"window": _window(row, clip_seconds), "excerpt": row.get("excerpt"),
             "excerpt_error": row.get("excerpt_error")} for row in rows]


def _mistakes_context(mistakes: list[dict[str, Any]] | None, genres: list[str], clip_seconds: float | None
                      ) -> tuple[list[dict[str, Any]] | None, dict[tuple[str, str], str]]:
    """The Mistakes rows as text, and the anchor of each (true, predicted) pair's first row."""
    if mistakes is None:
        return None, {}
    anchors: dict[tuple[str, str], str] = {}
    rows = []
    for row, listen in zip(mistakes, _listen_rows(mistakes, clip_seconds), strict=True):
        pair = (row["genre"], row["predicted"])
        anchor = None
        if pair not in anchors and row["genre"] in genres and row["predicted"] in genres:
            anchor = anchors[pair] = mistake_anchor(genres, *pair)
        rows.append({**listen, "anchor": anchor, "genre": str(row["genre"]), "path": str(row["path"]),
                     "predicted": f"{row['predicted']} ({row['confidence']:.3f})",
                     "true_probability": f"{row['true_probability']:.3f}", "top3": _top_text(row["top3"])})
    return rows, anchors


def _training_context(training: dict[str, Any]) -> dict[str, str]:
    """The training bullets' values, formatted here so both templates print the same text."""
    best = training["best_val_accuracy"]
    best_text = (
        MISSING
        if best is None
        else f"{best:.3f}"
        + (f" (epoch {training['best_epoch']})" if training["best_epoch"] is not None else "")
    )
    return {
        "epochs": str(training["epochs"]),
        "best": best_text,
        "final_accuracy": _cell(training["final_accuracy"]),
        "final_loss": _cell(training["final_loss"]),
    }


def _promotion_context(promotion: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run beside the promoted one, on the same test tracks, and the gate's decision.

    The rows are the headline metrics that the promotion compared: those its
    ``run_metrics`` holds (tasks/promote.py COMPARED), so the renderer need not
    import the promote stage.
    """
    if not promotion:
        return None
    compared = promotion.get("run_metrics") or {}
    header, columns = ["Metric", f"This run ({promotion['run']})"], [compared]
    if promotion.get("previous") and promotion["previous"] != promotion["run"]:
        header.append(f"Promoted before ({promotion['previous']}), same test tracks")
        columns.append(promotion.get("previous_metrics") or {})
    rows = [[label, *(_cell(column.get(key)) for column in columns)] for key, label in HEADLINE if key in compared]
    return {"table": _table(header, rows), "decision": str(promotion["decision"]), "reason": str(promotion["reason"]),
            "promoted": str(promotion.get("promoted") or "none"), "policy": str(promotion.get("policy", ""))}


def _selection_context(selection: dict[str, Any] | None) -> dict[str, Any] | None:
    """Every candidate model on the validation and test splits side by side, and which was chosen and why."""
    if not selection:
        return None
    rows = [[row["name"] + (" (chosen)" if row["chosen"] else ""), row["run"] or MISSING,
             row["val_track_accuracy"], row["test_track_accuracy"], row["test_macro_f1"], row["test_clip_accuracy"]]
            for row in selection["candidates"]]
    header = ["Model", "Run", "Validation track acc.", "Test track acc.", "Test macro-F1", "Test clip acc."]
    chosen = next(row for row in selection["candidates"] if row["chosen"])
    return {"table": _table(header, rows), "chosen": str(chosen["name"]), "reason": str(selection["reason"])}


def _embedding_context(model: dict[str, Any] | None) -> dict[str, str] | None:
    """What an embedding model stands on and what its fit chose, for the training section."""
    if not model:
        return None
    return {"embedder": f"{model.get('embedder')} ({model.get('feature')})", "c": _cell(model.get("C")),
            "val": _cell(model.get("val_track_accuracy")), "dims": _cell(model.get("dims"))}


def _open_set_context(open_set: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Open set section (issue 23): coverage and accuracy of the test tracks per threshold, the saved one
    marked; None for an evaluation from before it."""
    if not open_set or not open_set.get("curve"):
        return None
    chosen = open_set.get("threshold")
    rows = [[_cell(r["threshold"]) + (" (saved)" if r["threshold"] == chosen else ""), r["coverage"], r["accuracy"],
             r["tracks"]] for r in open_set["curve"]]
    return {"table": _table(["threshold", "coverage", "accuracy of covered", "tracks covered"], rows),
            "threshold": _cell(chosen) if chosen is not None else None,
            "rule": open_set.get("chosen_on") or "", "validation_tracks": _cell(open_set.get("validation_tracks")),
            "novelty": {key: _cell(value) for key, value in open_set["novelty"].items()}
            if open_set.get("novelty") else None}


def _config_text(config: dict[str, Any]) -> str:
    """The run's configuration as JSON, so a report says how it was made."""
    return json.dumps(_plain(config), indent=2, default=str)


def render_report(
    run: str,
    metrics: dict[str, Any],
    history: pd.DataFrame,
    summary: dict[str, Any],
    config: dict[str, Any],
    baseline: dict[str, Any] | None = None,
    promotion: dict[str, Any] | None = None,
    changes: dict[str, Any] | None = None,
    selection: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    mistakes: list[dict[str, Any]] | None = None,
) -> dict[str, bytes]:
    """Every file of reports/<run>/ as bytes, keyed by file name (the excerpts the Mistakes rows play are
    written by the report stage, not here).

    Returns report.md, report.html (self-contained), metrics.json, confusion.png
    and (without ``model``) curves.png. baseline, when given, holds metrics under the same keys
    (track_accuracy, macro_f1, ...) and a name; it is shown beside the CNN.
    promotion (tasks.promote.decide) shows the run beside the promoted one and
    the gate's decision; changes (tasks.changes.rebuild_changes) what this
    rebuild changed since the previous one. selection (tasks.select.choose_model)
    lists every model family trained, on validation and test, and why this run
    was chosen; model (embedding.json) describes an embedding model, which has
    no epochs to plot. mistakes (tasks.mistakes.confident_mistakes, with the
    excerpt and offset tasks.excerpts.add_excerpts gives each row) makes the
    Mistakes section, its rows linked from the confusion matrix's cells.
    """
    genres = [str(label) for label in metrics["confusion"]["labels"]]
    clip_seconds = (config.get("audio") or {}).get("clip_seconds")
    mistake_rows, anchors = _mistakes_context(mistakes, genres, clip_seconds)
    images = {"confusion.png": render_confusion_png(metrics["confusion"])}
    if model is None:  # an embedding model has no epochs: its report shows no curves
        images["curves.png"] = render_curves_png(history)
    if metrics.get("reliability"):  # evaluate's calibration bins (issue 22)
        images["reliability.png"] = render_reliability_png(metrics["reliability"],
                                                           metrics.get("reliability_uncalibrated"))
    open_set = _open_set_context(metrics.get("open_set"))
    if open_set:
        images["open_set.png"] = render_open_set_png(metrics["open_set"])
    training = training_summary(history)
    context: dict[str, Any] = {
        "title": f"genreflow report: {run}",
        "headline": _headline_table(metrics, baseline, FAMILY_NAMES[metrics.get("family", "cnn")]),
        "n_tracks": _cell(metrics.get("n_tracks")),
        "n_clips": _cell(metrics.get("n_clips")),
        "per_genre": _per_genre_table(metrics),
        "absent": [str(genre) for genre in metrics.get("absent_genres") or []],
        "confusion": _confusion_table(metrics["confusion"], anchors),
        "mistakes": mistake_rows,
        "training": _training_context(training),
        "dataset": _dataset_context(summary),
        "config": _config_text(config),
        "promotion": _promotion_context(promotion),
        "changes": changes_lines(changes) if changes else [],
        "selection": _selection_context(selection),
        "embedding": _embedding_context(model),
        "reliability": "reliability.png" in images,
        "open_set": open_set,
    }
    # The HTML embeds the PNGs as data URIs, so the page needs no file beside it.
    embedded = {name: base64.b64encode(data).decode("ascii") for name, data in images.items()}

    dataset = {
        key: summary[key]
        for key in ("tracks", "tracks_per_genre_split", "clips", "augmentations")
        if key in summary
    }
    dataset["quarantined"] = len(summary.get("quarantined", []))
    document: dict[str, Any] = {"run": run, "metrics": metrics, "training": training, "dataset": dataset}
    optional = {"baseline": baseline, "promotion": promotion, "changes": changes, "selection": selection,
                "model": model, "mistakes": mistakes}
    document.update({key: value for key, value in optional.items() if value is not None})
    metrics_json = json.dumps(_plain(document), indent=2, allow_nan=False, default=str) + "\n"

    return {
        "report.md": _render("report.md.j2", **context).encode("utf-8"),
        "report.html": _render("report.html.j2", **context, images=embedded).encode("utf-8"),
        "metrics.json": metrics_json.encode("utf-8"),
        **images,
    }


CROSSVAL_METRICS: tuple[tuple[str, str], ...] = (
    ("track_accuracy", "Track accuracy"),
    ("macro_f1", "Macro-F1 (track)"),
    ("clip_accuracy", "Clip accuracy"),
    ("top2_accuracy", "Top-2 accuracy (track)"),
)


# The columns of a cross-validation report, in order, where the summary has them.
CROSSVAL_MODELS: dict[str, str] = {"cnn": "CNN", "embedding": "Embedding", "chosen": "Chosen on validation",
                                   "baseline": "MFCC + SVM"}


def _mean_std(entry: dict[str, Any] | None) -> str:
    return MISSING if not entry else f"{entry['mean']:.3f} ± {entry['std']:.3f}"


def _suspects_context(issues: list[dict[str, Any]] | None, total: int | None, clip_seconds: float | None
                      ) -> dict[str, Any] | None:
    """The Suspect labels section: the first ranked rows (tasks/label_issues.py) with their players."""
    if issues is None:
        return None
    rows = [{**listen, "rank": str(row["rank"]), "path": str(row["path"]), "given": str(row["given_genre"]),
             "given_probability": f"{row['given_probability']:.3f}",
             "suggested": f"{row['suggested_genre']} ({row['suggested_probability']:.3f})",
             "fold": _cell(row.get("fold")), "confident": _cell(bool(row.get("confident_learning")))}
            for row, listen in zip(issues, _listen_rows(issues, clip_seconds), strict=True)]
    return {"rows": rows, "total": total if total is not None else len(rows)}


def render_crossval_report(run: str, summary: dict[str, Any], folds: list[dict[str, Any]],
                           config: dict[str, Any], label_issues: list[dict[str, Any]] | None = None,
                           n_label_issues: int | None = None) -> dict[str, bytes]:
    """crossval.md, crossval.html and crossval.json: mean ± std over folds, then each fold, each model family
    (and, with more than one, the one each fold's validation tracks chose) beside the baseline.

    label_issues: the first rows of the suspect labels (tasks/label_issues.py, each with the excerpt
    tasks/excerpts.add_excerpts gave it), of ``n_label_issues`` in all; None leaves the section out.
    """
    shown = [model for model in CROSSVAL_MODELS if model in summary]
    if "embedding" not in summary:
        shown = [model for model in shown if model != "chosen"]  # one family: the chosen one is the CNN
    header = ["Metric (mean ± std over folds)", *(CROSSVAL_MODELS[model] for model in shown)]
    rows = [[label, *(_mean_std(summary[model].get(key)) for model in shown)] for key, label in CROSSVAL_METRICS]
    rows += [[label, *(_mean_std(summary[model].get(key)) for model in shown)] for key, label in CALIBRATION
             if any(summary[model].get(key) for model in shown)]  # where the folds had them (issue 22)
    families = [model for model in shown if model in ("cnn", "embedding")]
    fold_header = ["fold", "train / val / test tracks", "epochs"]
    for model in families:
        fold_header += [f"{CROSSVAL_MODELS[model]} track acc.", f"{CROSSVAL_MODELS[model]} macro-F1"]
    if "chosen" in shown:
        fold_header.append("chosen")
    if "baseline" in shown:
        fold_header += ["baseline track acc.", "baseline macro-F1"]
    fold_rows = []
    for fold in sorted(folds, key=lambda f: f["fold"]):
        tracks = fold["tracks"]
        row = [fold["fold"], f"{tracks['train']} / {tracks['val']} / {tracks['test']}",
               fold.get("training", {}).get("epochs_run")]
        for model in families:
            row += [fold[model]["track_accuracy"], fold[model]["macro_f1"]]
        if "chosen" in shown:
            row.append((fold.get("selection") or {}).get("chosen"))
        if "baseline" in shown:
            row += [fold["baseline"]["track_accuracy"], fold["baseline"]["macro_f1"]]
        fold_rows.append(row)
    context: dict[str, Any] = {
        "title": f"genreflow cross-validation: {run}",
        "n_folds": _cell(summary["folds"]),
        "metrics": _table(header, rows),
        "folds": _table(fold_header, fold_rows),
        "config": _config_text(config),
        "suspects": _suspects_context(label_issues, n_label_issues,
                                      (config.get("audio") or {}).get("clip_seconds")),
    }
    document: dict[str, Any] = {"run": run, "summary": summary, "folds": folds}
    if label_issues is not None:
        document["label_issues"] = {"total": n_label_issues, "shown": label_issues}
    return {
        "crossval.md": _render("crossval.md.j2", **context).encode("utf-8"),
        "crossval.html": _render("crossval.html.j2", **context).encode("utf-8"),
        "crossval.json": (json.dumps(_plain(document), indent=2, allow_nan=False, default=str) + "\n").encode(),
    }


# --- the index of runs ------------------------------------------------------------------------


def _signed(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.3f}"


def render_index(runs: list[dict[str, Any]], changes: list[dict[str, Any]]) -> bytes:
    """reports/index.html: every trained run, newest first, linking its report, then the change in test track
    accuracy per genre of each run beside the one before it on the same test tracks (tasks/runs.py)."""
    header = ["Run", "Family", "Finished", "Tracks", "Validation track acc.", "Test track acc.", "ECE", "Promoted"]
    rows = [[run["run"], run["family"], str(run["date"])[:16].replace("T", " "), run["tracks"],
             run["val_track_accuracy"], run["test_track_accuracy"], run["ece"], bool(run["promoted"])]
            for run in runs]
    table = _table(header, rows)
    # A run's report is beside index.html in reports/: link it relative to the index.
    links = tuple((run["report"].removeprefix("reports/") if run["report"] else None, *([None] * 7)) for run in runs)
    pairs = [{"run": pair["run"], "previous": pair["previous"], "family": pair["family"],
              "test_set": pair["test_set"], "overall": _signed(pair["track_accuracy"]),
              "table": _table(["genre", "change in test track accuracy"],
                              [[genre, _signed(change)] for genre, change in pair["per_genre"].items()])}
             for pair in changes]
    page = _render("index.html.j2", title="genreflow runs", runs=Table(table.header, table.rows, links or None),
                   n_runs=len(runs), pairs=pairs)
    return page.encode("utf-8")


# --- Prefect artifact keys -------------------------------------------------------------------


def artifact_key(kind: str, name: str) -> str:
    """The key of the Prefect artifact ``kind`` (report, crossval) of the run ``name``: Prefect takes only
    lower-case letters, digits and dashes, so everything else becomes a dash."""
    return f"genreflow-{kind}-" + "".join(c if c.isalnum() else "-" for c in name.lower())
