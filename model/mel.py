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
import scipy.sparse
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
def sparse_filterbank(sr: int, n_fft: int, n_mels: int) -> scipy.sparse.csr_array:
    """mel_filterbank as a sparse matrix: 2,018 of its 131,200 weights (128 bands) are non-zero.

    A copy's projection (genreflow.model.augment_copies) then costs a seventh of the dense
    product's time. The mel stage keeps the dense product, so that its output and the waveform
    path's stay bit for bit what they were.
    """
    return scipy.sparse.csr_array(mel_filterbank(sr, n_fft, n_mels))


@lru_cache(maxsize=8)
def hann_window(n_fft: int) -> np.ndarray:
    """librosa.stft's analysis window: periodic Hann [shape=(n_fft,)], float32, read-only."""
    window = librosa.filters.get_window("hann", n_fft, fftbins=True).astype(np.float32)
    window.setflags(write=False)
    return window


def windowed_frames(clip: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """The clip's STFT frames as ``librosa.stft`` cuts them (centred, zero-padded), Hann-windowed.

    The one framing both power spectra use, so the mel stage's spectra and the
    augmented copies' come from the same frames.
    clip : np.ndarray [shape=(samples,)], float32
    Returns np.ndarray [shape=(1 + samples // hop_length, n_fft)], float32.
    """
    padded = np.pad(clip, n_fft // 2)
    return sliding_window_view(padded, n_fft)[::hop_length] * hann_window(n_fft)


def power_spectrum(clip: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """Power STFT of one clip as ``librosa.stft`` frames it (centred, zero-padded), frames first.

    clip : np.ndarray [shape=(samples,)], float32
    Returns np.ndarray [shape=(1 + samples // hop_length, 1 + n_fft // 2)], float32.
    """
    return np.abs(scipy.fft.rfft(windowed_frames(clip, n_fft, hop_length), axis=-1)) ** 2


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
    return to_db(power)


def to_db(power: np.ndarray) -> np.ndarray:
    """Mel power [shape=(n, n_mels, frames)] in dB relative to each clip's peak, floored at -TOP_DB.

    log_mel's scaling (the seed's ``power_to_db(ref=np.max)``), shared so that
    augmented copies made from spectra are scaled exactly as clips are.
    Returns np.ndarray [shape=(n, n_mels, frames)], float32.
    """
    db = 10.0 * np.log10(np.maximum(power, AMIN))
    peak = db.max(axis=(1, 2), keepdims=True)
    return np.maximum(db - peak, -TOP_DB).astype(np.float32)


DB_PER_NEPER = 10.0 / np.log(10.0)  # 10 log10(x) = DB_PER_NEPER * ln(x)


def to_db_inplace(power: np.ndarray) -> np.ndarray:
    """to_db's scaling, computed in ``power``'s own float32 buffer, which it returns.

    Equal to to_db to float32 rounding (about 1e-5 dB), and about three times
    faster: numpy's natural logarithm is vectorised, its log10 is not, and no
    temporaries are made. For augmented copies, whose log-mel is not bound to
    match the mel stage's bit for bit.
    power : np.ndarray [shape=(n, n_mels, frames)], float32, C-contiguous
    """
    if power.dtype != np.float32 or not power.flags.c_contiguous:
        raise ValueError("to_db_inplace needs a C-contiguous float32 array")
    np.maximum(power, AMIN, out=power)
    np.log(power, out=power)
    power *= np.float32(DB_PER_NEPER)
    power -= power.max(axis=(1, 2), keepdims=True)
    np.maximum(power, np.float32(-TOP_DB), out=power)
    return power


def power_spectrum_bins_first(clip: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """power_spectrum's values, bins first and C-contiguous, ready for a (sparse) filterbank product.

    clip : np.ndarray [shape=(samples,)], float32
    Returns np.ndarray [shape=(1 + n_fft // 2, 1 + samples // hop_length)], float32.
    """
    spectrum = scipy.fft.rfft(windowed_frames(clip, n_fft, hop_length), axis=-1)
    power = np.square(spectrum.real)
    power += np.square(spectrum.imag)
    return np.ascontiguousarray(power.T)  # one transposing copy beats squaring through strided views


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
