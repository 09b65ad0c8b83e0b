"""The three ways to turn an mp3 into the seed's 10 s log-mel clip, for side-by-side timing.

- the seed's way: ``librosa.load(path, duration=10)``, ``melspectrogram``,
  ``power_to_db(ref=np.max)``, one file at a time in one process; with its
  four augmentations (``seed_augmented_loop``), also librosa's time stretch
  and pitch shift of the clip and each copy's log-mel;
- the floor: the fewest and fastest calls we know for the same clip (read only
  the frames the clip needs, average the channels, soxr, one real FFT of all
  frames, a filterbank built once), so that genreflow's per-core cost can be
  judged against what the machine can do at all;
- genreflow: the decode and mel stage functions (``decode_shard``,
  ``mel_batches``) as its tasks call them, on a shard of tracks.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import scipy.fft
import soundfile as sf
import soxr
from numpy.lib.stride_tricks import sliding_window_view

from genreflow.bench.timing import interleaved
from genreflow.model.augment_copies import augment_shard
from genreflow.model.mel import mel_batches
from genreflow.model.params import AudioConfig, AugmentConfig
from genreflow.tasks.decode import decode_shard

SEED_DURATION_S = 10.0  # the seed loaded the first 10 s of each file
TOP_DB = 80.0
AMIN = 1e-10


def seed_clip(path: str | Path, duration: float = SEED_DURATION_S) -> np.ndarray:
    """The seed's clip: ``librosa.load`` at librosa's default 22,050 Hz, mono, soxr_hq."""
    y, _ = librosa.load(path, duration=duration)
    return y


def seed_mel(path: str | Path, duration: float = SEED_DURATION_S) -> np.ndarray:
    """The seed's log-mel [shape=(128, 431)] of the first ``duration`` seconds of ``path``, dB re peak."""
    y, sr = librosa.load(path, duration=duration)
    return librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr), ref=np.max)


def seed_loop(paths: Sequence[str | Path]) -> int:
    """The seed's sequential loop over ``paths``; returns the clips made (the mels are discarded)."""
    for path in paths:
        seed_mel(path)
    return len(paths)


SEED_STRETCH_RATES = (0.8, 0.9)
SEED_PITCH_STEPS = (2.0, -2.0)


def seed_augmented_mels(path: str | Path, duration: float = SEED_DURATION_S) -> list[np.ndarray]:
    """The seed's clip of ``path`` and its four augmented copies, each a log-mel [shape=(128, 431)].

    Each copy is librosa's time stretch or pitch shift of the clip, cut or
    zero-padded to the clip's length (so every copy has the clip's 431
    frames), then its own melspectrogram and power_to_db.
    """
    y, sr = librosa.load(path, duration=duration)
    copies = [librosa.effects.time_stretch(y, rate=rate) for rate in SEED_STRETCH_RATES]
    copies += [librosa.effects.pitch_shift(y, sr=sr, n_steps=steps) for steps in SEED_PITCH_STEPS]
    clips = [y] + [librosa.util.fix_length(copy, size=len(y)) for copy in copies]
    return [librosa.power_to_db(librosa.feature.melspectrogram(y=clip, sr=sr), ref=np.max) for clip in clips]


def seed_augmented_loop(paths: Sequence[str | Path]) -> int:
    """The seed's loop with its augmentations: every file's clip and four copies, sequentially; clips made."""
    return sum(len(seed_augmented_mels(path)) for path in paths)


class Floor:
    """The cheapest single-process recipe for genreflow's clip and log-mel, for one configuration.

    Everything that does not depend on the file (Hann window, mel filterbank)
    is built once here, outside any timed loop.
    """

    def __init__(self, audio: AudioConfig) -> None:
        self.audio = audio
        self.window = librosa.filters.get_window("hann", audio.n_fft, fftbins=True).astype(np.float32)
        self.filterbank = librosa.filters.mel(sr=audio.sample_rate, n_fft=audio.n_fft, n_mels=audio.n_mels,
                                              dtype=np.float32)

    def clip(self, path: str | Path) -> np.ndarray:
        """The first clip of ``path``, mono float32 at the configured rate [shape=(clip_samples,)]."""
        audio = self.audio
        with sf.SoundFile(path) as handle:
            native = handle.samplerate
            data = handle.read(frames=int(np.ceil(audio.clip_seconds * native)), dtype="float32", always_2d=True)
        # Adding columns beats ndarray.mean(axis=1), whose reduction over a 2-wide axis is ~20x slower.
        mono = data[:, 0].copy()
        for channel in range(1, data.shape[1]):
            mono += data[:, channel]
        if data.shape[1] > 1:
            mono *= np.float32(1.0 / data.shape[1])
        if native != audio.sample_rate:
            mono = soxr.resample(mono, native, audio.sample_rate, quality="HQ")
        return mono[: audio.clip_samples]

    def log_mel(self, clip: np.ndarray) -> np.ndarray:
        """Log-mel [shape=(n_mels, frames)] of one clip: centred frames, one batched rfft, dB re peak."""
        audio = self.audio
        padded = np.pad(clip, audio.n_fft // 2)
        frames = sliding_window_view(padded, audio.n_fft)[:: audio.hop_length] * self.window
        spectrum = scipy.fft.rfft(frames, axis=1)
        power = spectrum.real**2 + spectrum.imag**2
        db = 10.0 * np.log10(np.maximum(self.filterbank @ power.T, AMIN))
        return np.maximum(db - db.max(), -TOP_DB)

    def mel(self, path: str | Path) -> np.ndarray:
        return self.log_mel(self.clip(path))

    def loop(self, paths: Sequence[str | Path]) -> int:
        for path in paths:
            self.mel(path)
        return len(paths)


def genreflow_shard(tracks: pd.DataFrame, audio: AudioConfig) -> np.ndarray:
    """genreflow's decode and mel stage functions on one shard, in this process: mel float16."""
    decoded = decode_shard(tracks, audio)
    return mel_batches(decoded.clips, audio)


def genreflow_loop(shards: Sequence[pd.DataFrame], audio: AudioConfig) -> int:
    """genreflow's stage functions over every shard in turn, on one core; returns the clips made."""
    return sum(len(genreflow_shard(tracks, audio)) for tracks in shards)


def stage_costs(paths: Sequence[str | Path], audio: AudioConfig, augment: AugmentConfig,
                rounds: int = 3) -> dict[str, float]:
    """One-core seconds of each stage function on ``paths``: per track, per clip, best of ``rounds``.

    For projecting a collection's preprocessing time: decode per track (every
    window ``audio`` asks for), mel per clip, augment per clip (all of
    ``augment``'s copies of it, straight to log-mel) in ``augment``'s domain and
    in the other. The mel and both augmentations run interleaved on the same
    clips, after one untimed round, so that their ratios (``copy_vs_mel``: one
    augmented copy over one clip's mel) are side by side.
    """
    tracks = track_table(paths)
    decode_shard(tracks, audio)  # warm: page cache, first calls
    start = time.perf_counter()
    decoded = decode_shard(tracks, audio)
    decode_s = time.perf_counter() - start
    domains = {augment.domain: augment,
               **{d: augment.model_copy(update={"augment_domain": d}) for d in ("spectral", "waveform")}}
    sides: dict[str, Callable[[], object]] = {"mel": lambda: mel_batches(decoded.clips, audio)}
    for domain, config in domains.items():
        sides[domain] = partial(augment_shard, decoded.clips, decoded.index, audio, config)
    best = {name: timing.best for name, timing in interleaved(sides, rounds=rounds).items()}
    clips, copies = len(decoded.clips), len(augment.names())
    out = {"tracks": len(tracks), "clips": clips, "decode_per_track_s": decode_s / len(tracks),
           "mel_per_clip_s": best["mel"] / clips, "augment_per_clip_s": best[augment.domain] / clips,
           "augmentations": copies, "augment_domain": augment.domain}
    for domain in ("spectral", "waveform"):
        out[f"augment_{domain}_per_clip_s"] = best[domain] / clips
        out[f"copy_vs_mel_{domain}"] = best[domain] / copies / best["mel"] if copies else float("nan")
    return out


def checksum_bytes_per_s(size: int = 64 * 2**20) -> float:
    """blake2b throughput, as storage's manifests hash every output file on a rerun's check."""
    data = np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8).tobytes()
    start = time.perf_counter()
    hashlib.blake2b(data, digest_size=16).hexdigest()
    return size / (time.perf_counter() - start)


def track_table(paths: Sequence[str | Path]) -> pd.DataFrame:
    """A minimal track table (track_id, path, genre, split) as decode_shard takes it."""
    return pd.DataFrame({
        "track_id": [f"{Path(p).parent.name}/{Path(p).stem}" for p in paths],
        "path": [str(p) for p in paths],
        "genre": [Path(p).parent.name for p in paths],
        "split": "train",
    })
