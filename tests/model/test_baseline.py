"""The MFCC + SVM baseline: its features and its fit, on synthetic clips whose genre the MFCCs can see."""

from __future__ import annotations

import librosa
import numpy as np
import pandas as pd
import pytest

from genreflow.model.baseline import N_MFCC, NAME, features_of, mfcc_features, run_baseline
from genreflow.model.metrics import evaluate_predictions

N_MELS, FRAMES = 32, 64
GENRES = ["bright", "dark", "mid"]


def genre_clips(genre: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """dB clips whose spectral envelope and its beat tell the genre, under noise: what MFCC statistics see."""
    k = GENRES.index(genre) + 1
    bands = np.linspace(0, 1, N_MELS)[:, None]
    frames = np.linspace(0, 1, FRAMES)[None, :]
    envelope = 12 * np.sin(k * np.pi * bands) * (1 + 0.5 * np.sin(4 * np.pi * k * frames))
    clips = -40 + envelope + rng.normal(0, 3, size=(n, N_MELS, FRAMES))
    return np.minimum(clips, 0).astype(np.float16)


def test_mfcc_features_are_per_clip_librosa_statistics() -> None:
    rng = np.random.default_rng(0)
    clips = genre_clips("bright", 3, rng).astype(np.float32)
    features = mfcc_features(clips)
    assert features.shape == (3, 4 * N_MFCC) and features.dtype == np.float32
    mfcc = librosa.feature.mfcc(S=clips[1], n_mfcc=N_MFCC)
    delta = librosa.feature.delta(mfcc)
    expected = np.concatenate([mfcc.mean(1), mfcc.std(1), delta.mean(1), delta.std(1)])
    np.testing.assert_allclose(features[1], expected, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="too short for MFCC deltas"):
        mfcc_features(clips[:, :, :5])


def test_baseline_learns_separable_genres_and_reports_like_the_cnn() -> None:
    rng = np.random.default_rng(1)

    def part(split: str, n: int) -> tuple[np.ndarray, pd.DataFrame]:
        clips = [(pd.DataFrame({"track_id": [f"{split}-{g}-{i}" for i in range(n)], "genre": g,
                                "row": np.arange(n)}), genre_clips(g, n, rng)) for g in GENRES]
        return features_of(clips)

    predictions, metrics = run_baseline(part("train", 12), part("val", 4), part("test", 5), GENRES, seed=0)
    assert metrics["name"] == NAME and metrics["C"] in (1.0, 10.0, 100.0)
    assert metrics["track_accuracy"] == 1.0 and metrics["n_tracks"] == 15
    # The same keys as the CNN's evaluation, so the report can set them side by side.
    _, cnn = evaluate_predictions(predictions, np.full((15, 3), 1 / 3), GENRES)
    assert set(cnn) <= set(metrics)
