"""Audio decoding: any file libsndfile reads, to mono float32 PCM at the model's rate.

Only the samples the clips need are decoded and resampled, since decoding and
resampling dominate the cost of a track. Files that cannot be used raise
AudioError with a reason, which the decode stage records in the quarantine
table instead of failing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from genreflow.storage.errors import GenreflowError

AUDIO_EXTENSIONS: frozenset[str] = frozenset({".mp3", ".wav", ".flac", ".ogg", ".au"})
SILENCE_PEAK = 1e-4  # a track whose peak stays below this (-80 dBFS) carries no music


class AudioError(GenreflowError, ValueError):
    """A track that cannot be used; the message is the quarantine reason."""


def decode_audio(path: str | Path, sr: int, max_seconds: float | None = None) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sr`` Hz, at most ``max_seconds`` of it.

    Returns y : np.ndarray [shape=(samples,), dtype=float32].
    Raises AudioError for empty, unreadable, non-finite or silent audio.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise AudioError(f"file not readable: {exc.strerror or exc}") from None
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        with sf.SoundFile(path) as handle:
            native_sr = handle.samplerate
            frames = -1 if max_seconds is None else int(np.ceil(max_seconds * native_sr))
            data = handle.read(frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        # libsndfile's mp3 reader says "does not exist" of a file it cannot parse; the file does exist.
        detail = "unrecognised format or corrupt data" if "does not exist" in str(exc) else _short(exc)
        raise AudioError(f"not decodable audio: {detail}") from None
    if data.size == 0:
        raise AudioError("no audio frames")
    mono = downmix(data)
    if not np.isfinite(mono).all():
        raise AudioError("decoded samples contain NaN or Inf")
    if float(np.abs(mono).max()) < SILENCE_PEAK:
        raise AudioError("silent (peak below -80 dBFS)")
    if native_sr != sr:
        mono = soxr.resample(mono, native_sr, sr, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def downmix(data: np.ndarray) -> np.ndarray:
    """Mean of the channels of ``data`` [shape=(frames, channels)], float32 [shape=(frames,)].

    Adds whole columns instead of calling ``data.mean(axis=1)``: numpy's
    reduction over a 2-wide inner axis took as long as decoding the mp3 itself
    (bench/, docs/benchmarks.md). Stereo gives the same values bit for bit.
    """
    channels = data.shape[1]
    if channels == 1:
        return data[:, 0]
    mono = data[:, 0].copy()
    for channel in range(1, channels):
        mono += data[:, channel]
    mono *= np.float32(1.0 / channels)
    return mono


def clip_windows(
    y: np.ndarray, clip_samples: int, clips_per_track: int | None = None, pad_short: bool = False
) -> np.ndarray:
    """Non-overlapping windows of ``clip_samples`` from the start of ``y``.

    Returns clips : np.ndarray [shape=(n, clip_samples)]; at most
    ``clips_per_track`` of them (all whole windows when None). A signal shorter
    than one window raises AudioError, or is zero-padded to one with ``pad_short``.
    """
    n = len(y) // clip_samples
    if clips_per_track is not None:
        n = min(n, clips_per_track)
    if n == 0:
        if not pad_short:
            raise AudioError(f"too short for one clip ({len(y)} samples, a clip needs {clip_samples})")
        return np.pad(y, (0, clip_samples - len(y)))[None, :]
    return y[: n * clip_samples].reshape(n, clip_samples)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
