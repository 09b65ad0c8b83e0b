"""Augmented copies of training clips: time-stretched and pitch-shifted, straight to log-mel.

Only the log-mel of a copy is ever stored, so a copy can be made in either of
two domains (``AugmentConfig.augment_domain``):

- ``waveform`` (the seed's recipe, and ``--recipe seed``'s): librosa's time
  stretch (STFT, phase vocoder, inverse STFT) or pitch shift (the same, then a
  resample) of the audio, then the copy's own log-mel: five transforms a copy.
- ``spectral`` (the default): one STFT per clip, shared by all its copies. A
  time stretch by rate r reads the clip's mel power at frame positions j * r,
  linearly interpolated between frames (the phase vocoder interpolates
  magnitudes between frames the same way); a pitch shift of n semitones reads
  the power spectrum at bin positions k / 2^(n/12), linearly interpolated
  between bins. Both are linear maps of the power spectrogram, so the shift is
  folded into the mel filterbank (one sparse projection a copy) and the
  stretch is applied to the projected mel power (128 rows instead of 1,025).
  A copy then costs a fraction of the clip's own mel (docs/benchmarks.md); its
  log-mel differs from the waveform copy's by the amounts docs/model.md
  measures on real music, mostly the phase vocoder's smearing, which the
  spectral copy does not have.

Copies have the clip's shape (n_mels x frames) and log_mel's scaling (dB
relative to the copy's own peak, floored at -80 dB). A faster stretch (r > 1)
runs out of clip before the copy ends and is padded with silence, as the
waveform path pads its shorter audio.
"""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np
import pandas as pd
import scipy.sparse

from genreflow.model.mel import mel_batches, mel_filterbank, power_spectrum_bins_first, to_db_inplace
from genreflow.model.params import (
    AudioConfig,
    AugmentConfig,
    AugmentError,
    check_domain,
    check_pitch_steps,
    check_stretch_rate,
)

__all__ = [
    "AugmentError", "augment_clip", "augment_shard", "augmentations", "shift_bins", "shift_matrix",
    "shifted_filterbank", "spectral_copies", "stretch_frames",
]

KINDS: tuple[str, ...] = ("stretch", "pitch")
BATCH_CLIPS = 16  # clips whose copies are scaled to dB together: bounds the float32 working set


def _check(kind: str, amount: float) -> float:
    if kind == "stretch":
        return check_stretch_rate(amount)
    if kind == "pitch":
        return check_pitch_steps(amount)
    raise AugmentError(f"unknown augmentation {kind!r}: expected one of {', '.join(KINDS)}")


# --------------------------------------------------------------------------- waveform domain


def augment_clip(clip: np.ndarray, sr: int, kind: str, amount: float) -> np.ndarray:
    """One augmented copy of ``clip`` [shape=(samples,)], same length as the input (waveform domain).

    kind "stretch": librosa time stretch at rate ``amount`` (0.8 = slower), cut or
    zero-padded back to the clip length; kind "pitch": shift by ``amount`` semitones.
    """
    amount = _check(kind, amount)
    if kind == "stretch":
        out = librosa.effects.time_stretch(clip, rate=amount)
    else:
        out = librosa.effects.pitch_shift(clip, sr=sr, n_steps=amount)
    return librosa.util.fix_length(out, size=len(clip))


# --------------------------------------------------------------------------- spectral domain


@lru_cache(maxsize=64)
def _stretch_taps(frames: int, rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, weight) of output frame j = input position j * rate; index ``frames`` is silence."""
    position = np.arange(frames, dtype=np.float64) * rate
    lo = np.floor(position).astype(np.intp)
    weight = (position - lo).astype(np.float32)
    hi = np.minimum(lo + 1, frames)
    lo = np.minimum(lo, frames)
    for array in (lo, hi, weight):
        array.setflags(write=False)
    return lo, hi, weight


def stretch_frames(power: np.ndarray, rate: float) -> np.ndarray:
    """Time stretch of a power spectrogram by ``rate`` along its last axis, keeping its frame count.

    power : np.ndarray [shape=(..., frames)], float
    Output frame j is the input at position j * rate, linearly interpolated
    between frames (rate 0.8: 20 % slower, the copy shows the first 80 % of the
    clip); positions past the last frame, which a rate above 1 reaches, are
    silence. Returns np.ndarray [shape=(..., frames)], float32.
    """
    rate = check_stretch_rate(rate)
    frames = power.shape[-1]
    lo, hi, weight = _stretch_taps(frames, rate)
    padded = np.concatenate([power, np.zeros((*power.shape[:-1], 1), dtype=power.dtype)], axis=-1)
    low = padded[..., lo]
    out = padded[..., hi]
    out -= low
    out *= weight
    out += low
    return out.astype(np.float32, copy=False)


@lru_cache(maxsize=32)
def shift_matrix(n_bins: int, steps: float) -> scipy.sparse.csr_array:
    """(n_bins, n_bins) linear map of a spectrum's bins for a pitch shift of ``steps`` semitones.

    Row k reads the input at bin position k / 2^(steps/12), linearly
    interpolated between bins; positions past the last bin (a downward shift
    brings in frequencies above Nyquist, which the clip does not have) read
    silence. Two weights a row, float32.
    """
    steps = check_pitch_steps(steps)
    position = np.arange(n_bins, dtype=np.float64) / 2.0 ** (steps / 12.0)
    lo = np.floor(position).astype(np.int64)
    weight = position - lo
    rows = np.concatenate([np.arange(n_bins), np.arange(n_bins)])
    cols = np.concatenate([lo, lo + 1])
    values = np.concatenate([1.0 - weight, weight])
    keep = (cols < n_bins) & (values > 0)
    matrix = scipy.sparse.coo_array((values[keep].astype(np.float32), (rows[keep], cols[keep])),
                                    shape=(n_bins, n_bins))
    return scipy.sparse.csr_array(matrix)


def shift_bins(power: np.ndarray, steps: float) -> np.ndarray:
    """Pitch shift of a power spectrogram [shape=(n_bins, frames)] by ``steps`` semitones along its bins.

    A tone at bin k moves to bin k * 2^(steps/12). Returns float32 [shape=(n_bins, frames)].
    """
    return np.asarray(shift_matrix(power.shape[0], steps) @ np.asarray(power, dtype=np.float32))


@lru_cache(maxsize=32)
def shifted_filterbank(sr: int, n_fft: int, n_mels: int, steps: float) -> scipy.sparse.csr_array:
    """The mel filterbank of a spectrum shifted by ``steps`` semitones: filterbank @ shift_matrix.

    Its product with a clip's power spectrum is the mel power of the shifted
    copy, in one sparse projection. [shape=(n_mels, 1 + n_fft // 2)], float32.
    """
    bank = scipy.sparse.csr_array(mel_filterbank(sr, n_fft, n_mels))
    return scipy.sparse.csr_array(bank @ shift_matrix(1 + n_fft // 2, steps)).astype(np.float32)


@lru_cache(maxsize=16)
def _projection(sr: int, n_fft: int, n_mels: int, steps: tuple[float, ...]) -> scipy.sparse.csr_array:
    """The plain filterbank stacked over the shifted ones: one sparse product gives every mel power a clip needs."""
    banks = [scipy.sparse.csr_array(mel_filterbank(sr, n_fft, n_mels))]
    banks += [shifted_filterbank(sr, n_fft, n_mels, step) for step in steps]
    return scipy.sparse.csr_array(scipy.sparse.vstack(banks, format="csr")).astype(np.float32)


def spectral_copies(clips: np.ndarray, audio: AudioConfig, copies: list[tuple[str, float]]) -> np.ndarray:
    """Log-mel of each (kind, amount) copy of each clip, from one STFT per clip.

    clips : np.ndarray [shape=(n, clip_samples)], float32 in [-1, 1]
    copies : [("stretch", rate) | ("pitch", semitones)], each checked first
    Returns np.ndarray [shape=(len(copies), n, n_mels, frames)], float32, dB re
    each copy's peak, floored at -80 dB (log_mel's scaling).
    """
    checked = [(kind, _check(kind, amount)) for kind, amount in copies]
    clips = np.atleast_2d(np.asarray(clips, dtype=np.float32))
    n_mels, frames = audio.n_mels, 1 + clips.shape[1] // audio.hop_length
    steps = tuple(amount for kind, amount in checked if kind == "pitch")
    bank = _projection(audio.sample_rate, audio.n_fft, n_mels, steps)
    power = np.empty((len(checked), len(clips), n_mels, frames), dtype=np.float32)
    for i, clip in enumerate(clips):
        spectrum = power_spectrum_bins_first(clip, audio.n_fft, audio.hop_length)
        mels = (bank @ spectrum).reshape(1 + len(steps), n_mels, frames)
        shifted = 1
        for c, (kind, amount) in enumerate(checked):
            if kind == "stretch":
                power[c, i] = stretch_frames(mels[0], amount)
            else:
                power[c, i] = mels[shifted]
                shifted += 1
    return to_db_inplace(power.reshape(-1, n_mels, frames)).reshape(power.shape)


# --------------------------------------------------------------------------- a shard


def augmentations(augment: AugmentConfig) -> list[tuple[str, str, float]]:
    """(name, kind, amount) for each configured augmentation, names as in the mel index."""
    stretches = [("stretch", rate) for rate in augment.time_stretch]
    shifts = [("pitch", step) for step in augment.pitch_shift]
    pairs = zip(augment.names(), stretches + shifts, strict=True)
    return [(name, kind, amount) for name, (kind, amount) in pairs]


def augment_shard(
    clips: np.ndarray, index: pd.DataFrame, audio: AudioConfig, augment: AugmentConfig
) -> tuple[np.ndarray, pd.DataFrame]:
    """Log-mel of every augmented copy of every clip: (mel float16, index with augmentation).

    Rows are grouped by augmentation, in configuration order, each group in the
    clips' order; ``augment.domain`` decides how the copies are made.
    """
    if (index["split"] != "train").any():
        raise ValueError("augment got clips outside the training split; that would leak into training")
    domain = check_domain(augment.domain)
    plan = augmentations(augment)
    if not plan:
        return np.zeros((0, audio.n_mels, audio.frames), np.float16), index.iloc[0:0].assign(augmentation="")
    frames = [index.assign(augmentation=name) for name, _, _ in plan]
    if domain == "waveform":
        mel = _waveform_shard(clips, audio, plan)
    else:
        mel = np.empty((len(plan), len(clips), audio.n_mels, audio.frames), dtype=np.float16)
        for start in range(0, len(clips), BATCH_CLIPS):
            batch = np.asarray(clips[start : start + BATCH_CLIPS], dtype=np.float32) / 32768.0
            mel[:, start : start + len(batch)] = spectral_copies(batch, audio, [(k, a) for _, k, a in plan])
        mel = mel.reshape(-1, audio.n_mels, audio.frames)
    table = pd.concat(frames, ignore_index=True)
    table["row"] = np.arange(len(table), dtype=np.int64)
    return mel, table


def _waveform_shard(clips: np.ndarray, audio: AudioConfig, plan: list[tuple[str, str, float]]) -> np.ndarray:
    """The seed's way, unchanged: each copy's audio through librosa, then its log-mel afresh."""
    mels: list[np.ndarray] = []
    for _, kind, amount in plan:
        copies = np.stack([
            augment_clip(np.asarray(clip, dtype=np.float32) / 32768.0, audio.sample_rate, kind, amount)
            for clip in clips
        ]) if len(clips) else np.zeros((0, audio.clip_samples), np.float32)
        mels.append(mel_batches(copies, audio))
    return np.concatenate(mels)
