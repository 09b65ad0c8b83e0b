"""Augmentation in both domains: a stretch keeps the pitch and changes the length, a shift moves the
pitch by the semitones asked, copies are scaled like clips, bad amounts are refused, and only training
clips are ever augmented."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genreflow.model.augment_copies import (
    AugmentError,
    augment_clip,
    augment_shard,
    augmentations,
    shift_bins,
    shift_matrix,
    shifted_filterbank,
    spectral_copies,
    stretch_frames,
)
from genreflow.model.mel import log_mel, mel_batches, mel_filterbank, power_spectrum
from genreflow.model.params import AudioConfig, AugmentConfig
from genreflow.storage.errors import GenreflowError

SR = 22050
# A small clip keeps the shard tests quick: 0.5 s at 8 kHz, 32 bands, 32 frames.
SMALL = AudioConfig(sample_rate=8000, clip_seconds=0.5, n_mels=32, n_fft=512, hop_length=128)


def sine(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(y: np.ndarray, sr: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spectrum) * sr / len(y))


def train_index(n: int, split: str = "train") -> pd.DataFrame:
    return pd.DataFrame({"track_id": np.arange(n) // 2 + 10, "clip_index": np.arange(n) % 2,
                         "split": split, "genre": "Rock", "row": np.arange(n)})


# --------------------------------------------------------------------------- one clip


@pytest.mark.parametrize(("kind", "amount"), [("stretch", 0.8), ("stretch", 1.25), ("pitch", 2.0),
                                               ("pitch", -2.0)])
def test_augment_clip_keeps_the_length(kind: str, amount: float) -> None:
    clip = sine(1.0)
    assert augment_clip(clip, SR, kind, amount).shape == clip.shape


def test_stretch_keeps_the_pitch() -> None:
    clip = sine(2.0)
    stretched = augment_clip(clip, SR, "stretch", 0.8)
    assert peak_hz(stretched) == pytest.approx(440.0, abs=1.0)
    assert np.abs(stretched[-SR // 10 :]).max() > 0.3  # slower: the end is still music, not padding


def test_faster_stretch_is_zero_padded_at_the_end() -> None:
    clip = sine(2.0)
    stretched = augment_clip(clip, SR, "stretch", 1.25)  # 1.6 s of audio in a 2 s clip
    assert peak_hz(stretched[: SR]) == pytest.approx(440.0, abs=2.0)
    assert np.abs(stretched[round(1.65 * SR) :]).max() == 0.0


@pytest.mark.parametrize("steps", [2.0, -2.0])
def test_pitch_shift_moves_the_peak_by_the_semitones(steps: float) -> None:
    shifted = augment_clip(sine(2.0), SR, "pitch", steps)
    assert peak_hz(shifted) / 440.0 == pytest.approx(2 ** (steps / 12), rel=0.005)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(AugmentError, match="unknown augmentation 'reverse': expected one of stretch, pitch"):
        augment_clip(sine(0.5), SR, "reverse", 1.0)


def test_augmentations_in_config_order() -> None:
    assert augmentations(AugmentConfig()) == [
        ("stretch0.8", "stretch", 0.8), ("stretch0.9", "stretch", 0.9),
        ("pitch+2", "pitch", 2.0), ("pitch-2", "pitch", -2.0),
    ]


# --------------------------------------------------------------------------- spectral domain

AUDIO = AudioConfig()  # 10 s at 22,050 Hz: 128 bands x 431 frames, n_fft 2048, hop 512
FRAMES_PER_S = SR / AUDIO.hop_length


def burst(seconds_on: float, freq: float = 440.0) -> np.ndarray:
    """A 10 s clip: a tone for the first ``seconds_on`` seconds, then silence."""
    y = sine(10.0, freq)
    y[round(seconds_on * SR) :] = 0.0
    return y


def active_frames(db: np.ndarray) -> int:
    """Frames whose loudest band is within 30 dB of the copy's peak."""
    return int((db.max(axis=0) > -30.0).sum())


def test_stretch_frames_reads_position_j_times_rate() -> None:
    ramp = np.tile(np.arange(10, dtype=np.float32), (2, 1))  # value = frame index
    np.testing.assert_allclose(stretch_frames(ramp, 0.5)[0], [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5])
    faster = stretch_frames(ramp, 1.5)[1]  # positions 0, 1.5, ..., 9: then past the end, silence
    np.testing.assert_allclose(faster, [0, 1.5, 3, 4.5, 6, 7.5, 9, 0, 0, 0])
    assert stretch_frames(ramp, 0.5).shape == ramp.shape


@pytest.mark.parametrize("rate", [0.8, 0.9, 1.25])
def test_stretched_tone_keeps_its_pitch_and_lasts_1_over_rate_as_long(rate: float) -> None:
    clip = burst(4.0)
    original = log_mel(clip[None], SR)[0]
    copy = spectral_copies(clip[None], AUDIO, [("stretch", rate)])[0, 0]
    assert copy.shape == original.shape == (128, 431)
    on = original.max(axis=0) > -30.0
    assert np.argmax(copy[:, 10]) == np.argmax(original[:, 10])  # same band: the same pitch
    assert active_frames(original) == pytest.approx(4.0 * FRAMES_PER_S, abs=3)
    assert active_frames(copy) == pytest.approx(active_frames(original) / rate, abs=2)
    assert on.sum() < active_frames(copy) if rate < 1 else on.sum() > active_frames(copy)


@pytest.mark.parametrize("steps", [2.0, -2.0, 7.0, -12.0])
def test_shift_bins_moves_a_peak_by_the_expected_bins(steps: float) -> None:
    """A peak at bin 200 moves to bin 200 * 2^(n/12), and its width in bins scales by the same factor."""
    factor = 2 ** (steps / 12)
    bins = np.arange(1025)
    line = np.zeros((1025, 3), np.float32)
    line[200] = 1.0
    assert abs(np.argmax(shift_bins(line, steps)[:, 0]) - 200 * factor) < 1.0
    broad = np.repeat(np.exp(-(((bins - 200) / 12.0) ** 2))[:, None], 3, axis=1).astype(np.float32)
    shifted = shift_bins(broad, steps)[:, 1]
    assert abs(np.argmax(shifted) - 200 * factor) < 1.0
    half_width = 2 * 12.0 * np.sqrt(np.log(2))  # of the input, in bins (continuous)
    assert (shifted > 0.5).sum() == pytest.approx(half_width * factor, abs=1.5)


@pytest.mark.parametrize("steps", [2.0, -2.0])
def test_shifted_tone_lands_in_the_band_of_a_real_tone_at_the_shifted_pitch(steps: float) -> None:
    """A 440 Hz tone shifted by n semitones peaks in the band where a real 440 * 2^(n/12) Hz tone does."""
    copy = spectral_copies(sine(10.0)[None], AUDIO, [("pitch", steps)])[0, 0]
    real = log_mel(sine(10.0, 440.0 * 2 ** (steps / 12))[None], SR)[0]
    unshifted = log_mel(sine(10.0)[None], SR)[0]
    assert np.argmax(copy[:, 200]) == np.argmax(real[:, 200]) != np.argmax(unshifted[:, 200])
    waveform = log_mel(augment_clip(sine(10.0), SR, "pitch", steps)[None], SR)[0]
    assert np.argmax(copy[:, 200]) == np.argmax(waveform[:, 200])


def test_shift_is_folded_into_the_filterbank() -> None:
    """filterbank @ shift == the filterbank of the shifted spectrum: one projection a copy."""
    power = power_spectrum(burst(3.0, 1000.0) + 0.01 * sine(10.0, 3000.0), 2048, 512).T
    two_steps = mel_filterbank(SR, 2048, 128) @ shift_bins(power, 3.0)
    folded = shifted_filterbank(SR, 2048, 128, 3.0) @ power
    np.testing.assert_allclose(folded, two_steps, rtol=1e-4, atol=1e-6 * two_steps.max())


def test_a_spectral_copy_is_scaled_like_a_clip() -> None:
    """dB relative to the copy's own peak, floored at -80; a rate of 1 gives the clip's own log-mel."""
    clip = burst(3.0) + 1e-4 * np.random.default_rng(0).standard_normal(10 * SR).astype(np.float32)
    copies = spectral_copies(np.stack([clip, clip * 0.01]), AUDIO, [("stretch", 1.0), ("pitch", 2.0)])
    assert copies.shape == (2, 2, 128, 431) and copies.dtype == np.float32
    assert copies.max(axis=(2, 3)).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert copies.min() >= -80.0
    np.testing.assert_allclose(copies[0, 0], log_mel(clip[None], SR)[0], atol=1e-3)
    np.testing.assert_allclose(copies[:, 0], copies[:, 1], atol=1e-3)  # loudness does not matter


def test_spectral_copies_differ_from_waveform_copies_by_a_few_db() -> None:
    """A chord of partials: the two domains agree on where the energy is, to a few dB on average."""
    t = np.arange(10 * SR) / SR
    chord = sum(np.sin(2 * np.pi * f * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t)) for f in (220, 277, 330, 1100))
    clip = (0.1 * chord).astype(np.float32)
    for kind, amount in (("stretch", 0.8), ("pitch", -2.0)):
        spectral = spectral_copies(clip[None], AUDIO, [(kind, amount)])[0, 0]
        waveform = log_mel(augment_clip(clip, SR, kind, amount)[None], SR)[0]
        loud = waveform > -40
        assert np.abs(spectral - waveform)[loud].mean() < 3.0, kind
        assert np.abs(log_mel(clip[None], SR)[0] - waveform)[loud].mean() > np.abs(spectral - waveform)[loud].mean()


@pytest.mark.parametrize(("call", "message"), [
    (lambda: stretch_frames(np.ones((2, 5), np.float32), 0.0), "time-stretch rate 0.0 is outside 0.25..4"),
    (lambda: stretch_frames(np.ones((2, 5), np.float32), float("nan")), "time-stretch rate nan is outside"),
    (lambda: shift_matrix(1025, 0.0), "pitch shift 0.0 must be non-zero"),
    (lambda: shift_matrix(1025, 30.0), "within \\+-24 semitones"),
    (lambda: spectral_copies(np.zeros((1, 22050), np.float32), AUDIO, [("reverse", 1.0)]),
     "unknown augmentation 'reverse'"),
    (lambda: spectral_copies(np.zeros((1, 22050), np.float32), AUDIO, [("stretch", 5.0)]),
     "time-stretch rate 5.0"),
])
def test_bad_rates_steps_and_kinds_are_clear_errors(call, message: str) -> None:
    with pytest.raises(AugmentError, match=message) as info:
        call()
    assert isinstance(info.value, GenreflowError) and isinstance(info.value, ValueError)


def test_unknown_domain_is_refused() -> None:
    augment = AugmentConfig.model_construct(time_stretch=[0.9], pitch_shift=[], augment_domain="fourier")
    with pytest.raises(AugmentError, match="augmentation domain 'fourier' is not one of spectral, waveform"):
        augment_shard(np.zeros((1, 4000), np.int16), train_index(1), SMALL, augment)


# --------------------------------------------------------------------------- a shard


@pytest.fixture(scope="module")
def pcm() -> np.ndarray:
    """Three int16 clips of SMALL: tones at 300, 500 and 700 Hz."""
    t = np.arange(SMALL.clip_samples) / SMALL.sample_rate
    tones = np.stack([0.4 * np.sin(2 * np.pi * f * t) for f in (300, 500, 700)])
    return np.round(tones * 32767).astype(np.int16)


@pytest.mark.parametrize("domain", ["spectral", "waveform"])
def test_augment_shard_rows_per_name_in_config_order(pcm: np.ndarray, domain: str) -> None:
    augment = AugmentConfig(time_stretch=[0.9], pitch_shift=[-2.0, 3.0], augment_domain=domain)
    index = train_index(3)
    mel, table = augment_shard(pcm, index, SMALL, augment)
    assert mel.dtype == np.float16
    assert mel.shape == (9, SMALL.n_mels, SMALL.frames)
    assert table["augmentation"].tolist() == ["stretch0.9"] * 3 + ["pitch-2"] * 3 + ["pitch+3"] * 3
    assert table["row"].tolist() == list(range(9))
    assert table["track_id"].tolist() == index["track_id"].tolist() * 3
    assert table["clip_index"].tolist() == index["clip_index"].tolist() * 3
    # row 4 is the second clip pitched down 2 semitones
    second = pcm[1].astype(np.float32) / 32768.0
    if domain == "waveform":  # the seed's way, bit for bit: librosa on the audio, then the clip's mel stage
        expected = mel_batches(augment_clip(second, SMALL.sample_rate, "pitch", -2.0)[None], SMALL)
    else:
        expected = spectral_copies(second[None], SMALL, [("pitch", -2.0)])[0].astype(np.float16)
    np.testing.assert_array_equal(mel[4], expected[0])


def test_the_default_domain_is_spectral(pcm: np.ndarray) -> None:
    index = train_index(3)
    default, _ = augment_shard(pcm, index, SMALL, AugmentConfig(time_stretch=[0.8], pitch_shift=[]))
    spectral, _ = augment_shard(pcm, index, SMALL, AugmentConfig(time_stretch=[0.8], pitch_shift=[],
                                                                 augment_domain="spectral"))
    waveform, _ = augment_shard(pcm, index, SMALL, AugmentConfig(time_stretch=[0.8], pitch_shift=[],
                                                                 augment_domain="waveform"))
    np.testing.assert_array_equal(default, spectral)
    assert not np.array_equal(default, waveform)


def test_augment_shard_refuses_clips_outside_training(pcm: np.ndarray) -> None:
    index = train_index(3)
    index.loc[2, "split"] = "test"
    with pytest.raises(ValueError, match="leak"):
        augment_shard(pcm, index, SMALL, AugmentConfig())


def test_augment_shard_with_no_augmentations_is_empty(pcm: np.ndarray) -> None:
    mel, table = augment_shard(pcm, train_index(3), SMALL, AugmentConfig(time_stretch=[], pitch_shift=[]))
    assert mel.shape == (0, SMALL.n_mels, SMALL.frames)
    assert len(table) == 0
