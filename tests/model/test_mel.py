"""log_mel matches the seed's per-clip librosa recipe, batched; mel_batches stores it as float16."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from genreflow.model.mel import (
    log_mel,
    mel_batches,
    mel_filterbank,
    power_spectrum,
    power_spectrum_bins_first,
    sparse_filterbank,
    to_db,
    to_db_inplace,
)
from genreflow.model.params import AudioConfig

SR = 22050


@pytest.fixture(scope="module")
def clips() -> np.ndarray:
    """Three different 10 s clips: a sine, noise, and a decaying tone after a second of silence."""
    rng = np.random.default_rng(0)
    t = np.arange(10 * SR) / SR
    tone = 0.2 * np.sin(2 * np.pi * 1000 * t) * np.exp(-t / 3) * (t >= 1.0)
    return np.stack([
        0.3 * np.sin(2 * np.pi * 440 * t),
        rng.normal(0, 0.1, t.size),
        tone + 1e-3 * rng.normal(size=t.size),
    ]).astype(np.float32)


@pytest.fixture(scope="module")
def seed_mel(clips: np.ndarray) -> np.ndarray:
    """The seed's recipe, clip by clip."""
    return np.stack([
        librosa.power_to_db(
            librosa.feature.melspectrogram(y=clip, sr=SR, n_fft=2048, hop_length=512, n_mels=128), ref=np.max
        )
        for clip in clips
    ])


def test_log_mel_equals_the_seed_recipe_per_clip(clips: np.ndarray, seed_mel: np.ndarray) -> None:
    mel = log_mel(clips, SR)
    assert mel.shape == (3, 128, 431) == seed_mel.shape
    assert mel.dtype == np.float32
    np.testing.assert_allclose(mel, seed_mel, atol=1e-3, rtol=0)


def test_clips_are_scaled_to_their_own_peak(clips: np.ndarray) -> None:
    mel = log_mel(clips, SR)
    loud_and_quiet = log_mel(np.stack([clips[0], clips[0] * 0.01]), SR)
    np.testing.assert_allclose(loud_and_quiet[0], loud_and_quiet[1], atol=1e-3)  # ref=np.max per clip
    np.testing.assert_allclose(loud_and_quiet[0], mel[0], atol=1e-3)  # batch mates do not matter


def test_range_is_minus_80_to_0_db(clips: np.ndarray) -> None:
    mel = log_mel(clips, SR)
    assert mel.max(axis=(1, 2)).tolist() == [0.0, 0.0, 0.0]
    assert mel.min() >= -80.0
    assert mel[2].min() == -80.0  # the silent first second is floored


def test_int16_input_equals_float_input_over_32768(clips: np.ndarray) -> None:
    pcm = np.round(clips[:2] * 32767).astype(np.int16)
    np.testing.assert_array_equal(log_mel(pcm, SR), log_mel(pcm.astype(np.float32) / 32768.0, SR))


def test_single_clip_gets_a_batch_axis(clips: np.ndarray, seed_mel: np.ndarray) -> None:
    mel = log_mel(clips[0], SR)
    assert mel.shape == (1, 128, 431)
    np.testing.assert_allclose(mel[0], seed_mel[0], atol=1e-3, rtol=0)


def test_mel_batches_float16_with_the_same_values(clips: np.ndarray, seed_mel: np.ndarray) -> None:
    out = mel_batches(clips, AudioConfig(), batch=2)  # 3 clips: a full batch and a partial one
    assert out.dtype == np.float16
    assert out.shape == (3, 128, 431)
    # float16 keeps 11 significant bits: half a step is 2**-11 relative
    np.testing.assert_allclose(out.astype(np.float32), seed_mel, rtol=2**-11, atol=1e-3)


def test_mel_batches_follows_the_audio_config() -> None:
    audio = AudioConfig(sample_rate=8000, clip_seconds=0.5, n_mels=32, n_fft=512, hop_length=128)
    clip = np.random.default_rng(3).normal(0, 0.1, (2, audio.clip_samples)).astype(np.float32)
    out = mel_batches(clip, audio)
    assert out.shape == (2, 32, 1 + 4000 // 128) == (2, audio.n_mels, audio.frames)
    expected = log_mel(clip, 8000, n_fft=512, hop_length=128, n_mels=32)
    np.testing.assert_array_equal(out, expected.astype(np.float16))


def test_the_copies_helpers_agree_with_the_mel_stage(clips: np.ndarray) -> None:
    """Bins-first spectra, the sparse filterbank and the in-place dB scaling: the same values to float32."""
    spectrum = power_spectrum(clips[1], 2048, 512)
    bins_first = power_spectrum_bins_first(clips[1], 2048, 512)
    assert bins_first.shape == (1025, 431) and bins_first.flags.c_contiguous
    np.testing.assert_allclose(bins_first, spectrum.T, rtol=1e-5, atol=1e-6 * spectrum.max())
    dense = mel_filterbank(SR, 2048, 128)
    np.testing.assert_array_equal(sparse_filterbank(SR, 2048, 128).toarray(), dense)
    power = np.stack([dense @ power_spectrum(c, 2048, 512).T for c in clips])
    expected = to_db(power)
    np.testing.assert_allclose(to_db_inplace(power.copy()), expected, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(to_db(power), log_mel(clips, SR))  # log_mel's own scaling, bit for bit
    with pytest.raises(ValueError, match="C-contiguous float32"):
        to_db_inplace(power.astype(np.float64))
