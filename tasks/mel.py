"""Log-mel spectrograms of clips, in batches, with one cached filterbank per process.

Matches the seed's ``librosa.power_to_db(librosa.feature.melspectrogram(y=clip,
sr=sr), ref=np.max)`` clip by clip, but computes one batched STFT and reuses
the mel filterbank instead of rebuilding it for every clip.
"""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np
from prefect import task

from flows.config import AudioConfig
from storage.root import DataRoot
from storage.shards import open_shard_array, read_shard_index, write_shard
from tasks.common import ShardResult, retry_transient, skip_if_done

TOP_DB = 80.0
AMIN = 1e-10


@lru_cache(maxsize=8)
def mel_filterbank(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa's Slaney mel filterbank [shape=(n_mels, 1 + n_fft // 2)], float32, read-only."""
    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, dtype=np.float32)
    basis.setflags(write=False)
    return basis


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
    spectrum = np.abs(librosa.stft(clips, n_fft=n_fft, hop_length=hop_length)) ** 2
    power = np.matmul(mel_filterbank(sr, n_fft, n_mels), spectrum)
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


@task(name="mel", retry_condition_fn=retry_transient)
def mel_task(root_url: str, shard: str, audio: AudioConfig, fingerprint: str, force: bool) -> ShardResult:
    """Log-mel of one decoded shard, unless already done for ``fingerprint``."""
    root = DataRoot(root_url)
    if (done := skip_if_done(root, "mel", shard, fingerprint, force)) is not None:
        return done
    index = read_shard_index(root, "audio", shard)
    mel = mel_batches(open_shard_array(root, "audio", shard), audio)
    index = index.assign(augmentation="original")
    tracks = index["track_id"].nunique()
    write_shard(root, "mel", shard, array=mel, index=index, fingerprint=fingerprint, extra={"tracks": tracks})
    return ShardResult("mel", shard, False, tracks, len(index))
