"""Log-mel spectrograms of clips, in batches, with one cached filterbank and window per process.

Matches the seed's ``librosa.power_to_db(librosa.feature.melspectrogram(y=clip,
sr=sr), ref=np.max)`` clip by clip (to float32 rounding, well under 1e-3 dB),
but reuses the mel filterbank and window instead of rebuilding them for every
clip, and frames each clip itself for one real FFT over contiguous frames:
``librosa.stft`` of a batch cuts it into blocks of a few frames (its
MAX_MEM_BLOCK), which made the mel stage twice as slow as necessary
(docs/benchmarks.md).
"""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

from genreflow.model.params import AudioConfig

TOP_DB = 80.0
AMIN = 1e-10


@lru_cache(maxsize=8)
def mel_filterbank(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa's Slaney mel filterbank [shape=(n_mels, 1 + n_fft // 2)], float32, read-only."""
    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, dtype=np.float32)
    basis.setflags(write=False)
    return basis


@lru_cache(maxsize=8)
def hann_window(n_fft: int) -> np.ndarray:
    """librosa.stft's analysis window: periodic Hann [shape=(n_fft,)], float32, read-only."""
    window = librosa.filters.get_window("hann", n_fft, fftbins=True).astype(np.float32)
    window.setflags(write=False)
    return window


def power_spectrum(clip: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """Power STFT of one clip as ``librosa.stft`` frames it (centred, zero-padded), frames first.

    clip : np.ndarray [shape=(samples,)], float32
    Returns np.ndarray [shape=(1 + samples // hop_length, 1 + n_fft // 2)], float32.
    """
    padded = np.pad(clip, n_fft // 2)
    frames = sliding_window_view(padded, n_fft)[::hop_length] * hann_window(n_fft)
    return np.abs(scipy.fft.rfft(frames, axis=-1)) ** 2


def log_mel(
    clips: np.ndarray, sr: int, n_fft: int = 2048, hop_length: int = 512, n_mels: int = 128
) -> np.ndarray:
    """Log-mel power of each clip, in dB relative to the clip's peak, floored at -80 dB.

    clips : np.ndarray [shape=(n, samples)], float (int16 PCM is scaled to [-1, 1])
    Returns np.ndarray [shape=(n, n_mels, 1 + samples // hop_length)], float32.
    """
    clips = np.atleast_2d(clips)
    if clips.dtype == np.int16:
        clips = clips.astype(np.float32) / 32768.0
    clips = clips.astype(np.float32, copy=False)
    basis = mel_filterbank(sr, n_fft, n_mels)
    power = np.empty((len(clips), n_mels, 1 + clips.shape[1] // hop_length), dtype=np.float32)
    for i, clip in enumerate(clips):
        power[i] = basis @ power_spectrum(clip, n_fft, hop_length).T
    db = 10.0 * np.log10(np.maximum(power, AMIN))
    peak = db.max(axis=(1, 2), keepdims=True)
    return np.maximum(db - peak, -TOP_DB).astype(np.float32)


def mel_batches(
    clips: np.ndarray, audio: AudioConfig, batch: int = 16
) -> np.ndarray:
    """Log-mel of every clip, float16, computed ``batch`` clips at a time to bound memory."""
    out = np.empty((len(clips), audio.n_mels, audio.frames), dtype=np.float16)
    for start in range(0, len(clips), batch):
        out[start : start + batch] = log_mel(
            np.asarray(clips[start : start + batch]), audio.sample_rate, audio.n_fft, audio.hop_length,
            audio.n_mels,
        )
    return out
