"""Augmented copies of training clips: time-stretched and pitch-shifted, straight to log-mel.

Augmented audio is turned into log-mel at once rather than stored, since only
its spectrogram is ever used.
"""

from __future__ import annotations

import librosa
import numpy as np
import pandas as pd

from genreflow.model.mel import mel_batches
from genreflow.model.params import AudioConfig, AugmentConfig


def augment_clip(clip: np.ndarray, sr: int, kind: str, amount: float) -> np.ndarray:
    """One augmented copy of ``clip`` [shape=(samples,)], same length as the input.

    kind "stretch": librosa time stretch at rate ``amount`` (0.8 = slower), cut or
    zero-padded back to the clip length; kind "pitch": shift by ``amount`` semitones.
    """
    if kind == "stretch":
        out = librosa.effects.time_stretch(clip, rate=amount)
    elif kind == "pitch":
        out = librosa.effects.pitch_shift(clip, sr=sr, n_steps=amount)
    else:
        raise ValueError(f"unknown augmentation {kind!r}")
    return librosa.util.fix_length(out, size=len(clip))


def augmentations(augment: AugmentConfig) -> list[tuple[str, str, float]]:
    """(name, kind, amount) for each configured augmentation, names as in the mel index."""
    stretches = [("stretch", rate) for rate in augment.time_stretch]
    shifts = [("pitch", step) for step in augment.pitch_shift]
    pairs = zip(augment.names(), stretches + shifts, strict=True)
    return [(name, kind, amount) for name, (kind, amount) in pairs]


def augment_shard(
    clips: np.ndarray, index: pd.DataFrame, audio: AudioConfig, augment: AugmentConfig
) -> tuple[np.ndarray, pd.DataFrame]:
    """Log-mel of every augmented copy of every clip: (mel float16, index with augmentation)."""
    if (index["split"] != "train").any():
        raise ValueError("augment got clips outside the training split; that would leak into training")
    mels: list[np.ndarray] = []
    frames: list[pd.DataFrame] = []
    for name, kind, amount in augmentations(augment):
        copies = np.stack([
            augment_clip(np.asarray(clip, dtype=np.float32) / 32768.0, audio.sample_rate, kind, amount)
            for clip in clips
        ]) if len(clips) else np.zeros((0, audio.clip_samples), np.float32)
        mels.append(mel_batches(copies, audio))
        frames.append(index.assign(augmentation=name))
    if not mels:
        return np.zeros((0, audio.n_mels, audio.frames), np.float16), index.iloc[0:0].assign(augmentation="")
    table = pd.concat(frames, ignore_index=True)
    table["row"] = np.arange(len(table), dtype=np.int64)
    return np.concatenate(mels), table
