"""band_stats: per-band mean and std over all clips and frames, streamed in chunks."""

from __future__ import annotations

import numpy as np
import pytest

from genreflow.tasks.stats import STATS_CHUNK, band_stats

N_MELS, FRAMES = 4, 6


def arrays(*lengths: int, seed: int = 0) -> list[np.ndarray]:
    """float16 (clips, N_MELS, FRAMES) arrays with a different mean and spread per band, like log-mel dB."""
    rng = np.random.default_rng(seed)
    means = np.array([-60.0, -40.0, -20.0, -5.0])[:, None]
    spreads = np.array([1.0, 5.0, 10.0, 2.0])[:, None]
    return [(means + spreads * rng.standard_normal((n, N_MELS, FRAMES))).astype(np.float16) for n in lengths]


def expected(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    whole = np.concatenate(parts).astype(np.float64)
    return whole.mean(axis=(0, 2)), whole.std(axis=(0, 2))


@pytest.mark.parametrize("lengths", [(3,), (5, 1, 7), (STATS_CHUNK + 45, 2, STATS_CHUNK * 2 + 1)])
def test_band_stats_equal_numpy_over_the_concatenation(lengths: tuple[int, ...]) -> None:
    parts = arrays(*lengths)
    stats = band_stats(iter(parts))  # a generator is enough: shards are opened one by one
    mean, std = expected(parts)
    np.testing.assert_allclose(stats["mean"], mean, rtol=1e-9)
    np.testing.assert_allclose(stats["std"], std, rtol=1e-6)
    assert stats["clips"] == sum(lengths)
    assert len(stats["mean"]) == len(stats["std"]) == N_MELS


def test_band_stats_reads_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("genreflow.tasks.stats.STATS_CHUNK", 4)
    parts = arrays(10, 3)
    mean, std = expected(parts)
    stats = band_stats(parts)
    np.testing.assert_allclose(stats["mean"], mean, rtol=1e-9)
    np.testing.assert_allclose(stats["std"], std, rtol=1e-6)


def test_band_stats_known_answer() -> None:
    ones_and_threes = np.stack([np.ones((2, 3)), np.full((2, 3), 3.0)])  # 2 clips, 2 bands, 3 frames
    stats = band_stats([ones_and_threes])
    assert stats == {"mean": [2.0, 2.0], "std": [1.0, 1.0], "clips": 2}


def test_constant_band_gets_a_floor_std() -> None:
    stats = band_stats([np.full((3, 2, 5), -80.0)])
    assert stats["mean"] == [-80.0, -80.0]
    assert stats["std"] == [1e-3, 1e-3]  # never divide by zero when normalising


@pytest.mark.parametrize("inputs", [[], [np.zeros((0, N_MELS, FRAMES), np.float16)]])
def test_band_stats_without_clips_raises(inputs: list[np.ndarray]) -> None:
    with pytest.raises(ValueError, match="no training clips"):
        band_stats(inputs)
