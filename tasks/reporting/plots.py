"""The report's plots as PNG bytes: the confusion-matrix heatmap, the learning curves, the reliability diagram.

Drawn on matplotlib's Figure and Agg canvas, never pyplot: no display and no
global state. matplotlib is imported inside the functions, so importing the
renderer does not load it.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd

DPI = 110  # sharp enough to read 10 genre names, small enough to embed in HTML
ANNOTATED_GENRES = 30  # confusion cells carry their count up to this many genres
MAX_SIDE_INCHES = 22.0  # the confusion heatmap's largest side (about 2,500 pixels at DPI), reached at 30 genres


def _png(fig: Any) -> bytes:
    """A figure as PNG bytes via the Agg canvas: no pyplot, no display, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def render_confusion_png(confusion: dict[str, Any]) -> bytes:
    """Heatmap of the track-level confusion matrix, counts written in each cell.

    Colour is the share of the true genre's tracks, so a small genre's errors are
    as visible as a large one's; the numbers are the counts, written up to
    ANNOTATED_GENRES genres. Beyond, the figure stops growing (MAX_SIDE_INCHES) and
    the cells carry colour only (the report's confusion table has the counts):
    fma_full's 161 genres as written cells made a 12,000-pixel square PNG with
    26,000 texts that took 87 s to draw (docs/benchmarks.md, fma_full's size).
    """
    from matplotlib.figure import Figure

    labels = [str(label) for label in confusion["labels"]]
    matrix = np.asarray(confusion["matrix"], dtype=np.int64).reshape(len(labels), len(labels))
    n = len(labels)
    row_sums = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, row_sums, out=np.zeros(matrix.shape), where=row_sums > 0)

    side = min(max(4.5, 0.65 * n + 2.5), MAX_SIDE_INCHES)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    font = 11 if n <= 8 else 9
    for i in range(n if n <= ANNOTATED_GENRES else 0):
        for j in range(n):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=font,
                color="white" if shares[i, j] > 0.55 else "black",
            )
    ticks = {} if n <= ANNOTATED_GENRES else {"fontsize": max(3.0, 9 * ANNOTATED_GENRES / n)}
    ax.set_xticks(range(n), labels, rotation=40, ha="right", rotation_mode="anchor", **ticks)
    ax.set_yticks(range(n), labels, **ticks)
    ax.set_xlabel("Predicted genre")
    ax.set_ylabel("True genre")
    ax.set_title(f"Confusion matrix ({int(matrix.sum())} test tracks)")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label("share of the true genre's tracks")
    return _png(fig)


def render_curves_png(history: pd.DataFrame) -> bytes:
    """Training and validation accuracy and loss per epoch, side by side.

    history : one row an epoch with epoch, accuracy, loss, val_accuracy, val_loss;
    any of them may be missing (no validation set, or a history cut short).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = history["epoch"].to_numpy() if "epoch" in history.columns else np.arange(1, len(history) + 1)
    marker = "o" if len(history) <= 30 else None
    fig = Figure(figsize=(11, 4.2))
    for position, (metric, title) in enumerate((("accuracy", "Accuracy"), ("loss", "Loss")), start=1):
        ax = fig.add_subplot(1, 2, position)
        plotted = False
        for column, label, style in ((metric, "training", "-"), (f"val_{metric}", "validation", "--")):
            if column in history.columns and history[column].notna().any():
                ax.plot(
                    epochs,
                    history[column].to_numpy(dtype=float),
                    style,
                    marker=marker,
                    markersize=3,
                    label=label,
                )
                plotted = True
        if plotted:
            ax.legend()
        else:
            ax.text(0.5, 0.5, f"no {metric} recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    fig.suptitle("Learning curves")
    return _png(fig)



def render_reliability_png(bins: list[dict[str, Any]], uncalibrated: list[dict[str, Any]] | None = None) -> bytes:
    """Reliability diagram of the test tracks: accuracy against mean top probability per confidence bin.

    bins (model/track_head.py ``reliability_table``): lo, hi, count, confidence, accuracy per bin. A
    calibrated model's points lie on the diagonal; the marker's area is the bin's share of the tracks.
    ``uncalibrated`` draws the same head without its temperature beside it.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 4.6))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    series = [("as predicted", bins, "tab:blue")]
    if uncalibrated:
        series.insert(0, ("before calibration", uncalibrated, "tab:orange"))
    for label, rows, colour in series:
        used = [r for r in rows if r["count"]]
        total = max(sum(r["count"] for r in used), 1)
        ax.plot([r["confidence"] for r in used], [r["accuracy"] for r in used], color=colour, linewidth=1.2,
                label=label)
        ax.scatter([r["confidence"] for r in used], [r["accuracy"] for r in used], color=colour,
                   s=[20 + 400 * r["count"] / total for r in used], alpha=0.7)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean top probability in the bin")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title("Reliability (test tracks, 10 bins)")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def render_open_set_png(open_set: dict[str, Any]) -> bytes:
    """Accuracy against coverage of the test tracks as the open-set threshold moves (tasks/evaluate.py
    ``open_set_metrics``): each point a threshold, labelled; the threshold saved with the model ringed."""
    from matplotlib.figure import Figure

    rows = [r for r in open_set["curve"] if r["accuracy"] is not None]
    chosen = open_set.get("threshold")
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.add_subplot()
    ax.plot([r["coverage"] for r in rows], [r["accuracy"] for r in rows], marker="o", markersize=4,
            color="tab:blue", linewidth=1.2)
    for r in rows:
        ax.annotate(f"{r['threshold']:.2f}", (r["coverage"], r["accuracy"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7, color="0.3")
    at = open_set.get("at_threshold")
    if chosen is not None and at and at["accuracy"] is not None:
        ax.scatter([at["coverage"]], [at["accuracy"]], s=160, facecolors="none", edgecolors="tab:red",
                   linewidths=1.5, label=f"saved threshold {chosen:.2f}", zorder=3)
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xlim(-0.02, 1.05)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("coverage (share of test tracks not unknown)")
    ax.set_ylabel("accuracy of the covered tracks")
    ax.set_title("Open set: coverage against accuracy")
    ax.grid(True, alpha=0.3)
    return _png(fig)
