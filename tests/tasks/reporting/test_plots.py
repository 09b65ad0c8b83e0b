"""The report's PNGs: valid images, drawn whatever the history holds and for ten genres."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from genreflow.tasks.reporting.plots import render_confusion_png, render_curves_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_pixels(data: bytes) -> np.ndarray:
    """The PNG ``data`` decoded to pixels [shape=(height, width, channels)], after checking its signature."""
    from matplotlib.image import imread

    assert data.startswith(PNG_MAGIC)
    return imread(io.BytesIO(data), format="png")


def test_curves_handle_missing_columns() -> None:
    for history in (
        pd.DataFrame({"accuracy": [0.3, 0.5], "loss": [1.2, 1.0]}),
        pd.DataFrame(columns=["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]),
    ):
        assert png_pixels(render_curves_png(history)).ndim == 3


def test_confusion_png_ten_genres() -> None:
    labels = [f"genre {i}" for i in range(10)]
    matrix = (np.eye(10, dtype=int) * 8 + 1).tolist()
    matrix[3] = [0] * 10  # a genre with no test track
    pixels = png_pixels(render_confusion_png({"labels": labels, "matrix": matrix}))
    assert pixels.shape[0] > 500
