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

from genreflow.model.params import AudioConfig
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


# A track shorter than one clip by at most this share of a clip (0.5 s of a 10 s clip) is zero-padded
# to it rather than refused, and a tail at most this long after the last whole window is left out
# rather than given a window of its own, which would repeat all but that much of the window before it.
# FMA's "30 s" tracks are 29.98 s: 2 whole windows, and a third flush with the end.
PAD_TOLERANCE = 0.05


def window_starts(
    n_samples: int, clip_samples: int, clips_per_track: int | None = None, tolerance: int = 0
) -> np.ndarray:
    """First sample of each clip window of a signal of ``n_samples``, so that the windows cover it.

    Whole windows follow each other from the start; when more than
    ``tolerance`` samples remain after the last of them, one more window ends
    exactly at the signal's end, overlapping the one before it. A signal
    shorter than one window gets one window at 0 (to be zero-padded). At most
    ``clips_per_track`` windows, the first ones. Returns int64 [shape=(n,)].
    """
    whole = n_samples // clip_samples
    starts = list(range(0, whole * clip_samples, clip_samples)) or [0]
    if whole >= 1 and n_samples - whole * clip_samples > tolerance:
        starts.append(n_samples - clip_samples)
    if clips_per_track is not None:
        starts = starts[:clips_per_track]
    return np.asarray(starts, dtype=np.int64)


def clip_windows(
    y: np.ndarray, clip_samples: int, clips_per_track: int | None = None, pad_short: bool = False,
    tolerance: int = 0,
) -> np.ndarray:
    """The clips of ``y`` (window_starts): whole windows from the start, the last one flush with the end.

    Returns clips : np.ndarray [shape=(n, clip_samples)]; at most
    ``clips_per_track`` of them. A signal shorter than one window is zero-padded
    to one when it lacks at most ``tolerance`` samples, or any number with
    ``pad_short``; otherwise it raises AudioError.
    """
    if len(y) < clip_samples:
        if not pad_short and clip_samples - len(y) > tolerance:
            raise AudioError(f"too short for one clip ({len(y)} samples, a clip needs {clip_samples}"
                             + (f", or {clip_samples - tolerance} with padding)" if tolerance else ")"))
        return np.pad(y, (0, clip_samples - len(y)))[None, :]
    starts = window_starts(len(y), clip_samples, clips_per_track, tolerance)
    if len(starts) * clip_samples == starts[-1] + clip_samples:  # contiguous whole windows: a view
        return y[: len(starts) * clip_samples].reshape(len(starts), clip_samples)
    return np.stack([y[start : start + clip_samples] for start in starts])


def pad_tolerance(clip_samples: int) -> int:
    """Samples a track may lack of one clip and still be padded to it; also the longest tail left out."""
    return int(PAD_TOLERANCE * clip_samples)


def track_clips(y: np.ndarray, audio: AudioConfig) -> np.ndarray:
    """A decoded track's training clips under ``audio``: clip_windows with PAD_TOLERANCE of a clip.

    Raises AudioError naming the track's length when it is too short even with padding.
    """
    clip = audio.clip_samples
    tolerance = pad_tolerance(clip)
    if len(y) < clip - tolerance:
        raise AudioError(f"too short: {len(y) / audio.sample_rate:.2f} s, a clip needs {audio.clip_seconds:g} s "
                         f"({(clip - tolerance) / audio.sample_rate:g} s or more is padded)")
    return clip_windows(y, clip, audio.clips_per_track, tolerance=tolerance)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
