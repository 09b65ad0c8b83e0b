"""Augmentation: stretch keeps pitch, pitch shift moves it, and only training clips are ever augmented."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genreflow.model.audio_augment import augment_clip, augment_shard, augmentations
from genreflow.model.mel import mel_batches
from genreflow.model.params import AudioConfig, AugmentConfig

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
    with pytest.raises(ValueError, match="unknown augmentation 'reverse'"):
        augment_clip(sine(0.5), SR, "reverse", 1.0)


def test_augmentations_in_config_order() -> None:
    assert augmentations(AugmentConfig()) == [
        ("stretch0.8", "stretch", 0.8), ("stretch0.9", "stretch", 0.9),
        ("pitch+2", "pitch", 2.0), ("pitch-2", "pitch", -2.0),
    ]


# --------------------------------------------------------------------------- a shard


@pytest.fixture(scope="module")
def pcm() -> np.ndarray:
    """Three int16 clips of SMALL: tones at 300, 500 and 700 Hz."""
    t = np.arange(SMALL.clip_samples) / SMALL.sample_rate
    tones = np.stack([0.4 * np.sin(2 * np.pi * f * t) for f in (300, 500, 700)])
    return np.round(tones * 32767).astype(np.int16)


def test_augment_shard_rows_per_name_in_config_order(pcm: np.ndarray) -> None:
    augment = AugmentConfig(time_stretch=[0.9], pitch_shift=[-2.0, 3.0])
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
    expected = mel_batches(augment_clip(second, SMALL.sample_rate, "pitch", -2.0)[None], SMALL)
    np.testing.assert_array_equal(mel[4], expected[0])


def test_augment_shard_refuses_clips_outside_training(pcm: np.ndarray) -> None:
    index = train_index(3)
    index.loc[2, "split"] = "test"
    with pytest.raises(ValueError, match="leak"):
        augment_shard(pcm, index, SMALL, AugmentConfig())


def test_augment_shard_with_no_augmentations_is_empty(pcm: np.ndarray) -> None:
    mel, table = augment_shard(pcm, train_index(3), SMALL, AugmentConfig(time_stretch=[], pitch_shift=[]))
    assert mel.shape == (0, SMALL.n_mels, SMALL.frames)
    assert len(table) == 0
