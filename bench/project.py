"""What the measured per-track and per-clip costs mean for FMA-sized collections.

A projection is cost arithmetic, not a measurement: one-core stage costs
times the collection's tracks and clips, spread over the workers, times the
measured orchestration overhead; an epoch is its clips over the measured
training rate. It assumes the same CPU, free cores and audio as measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from genreflow.model.audio import pad_tolerance, window_starts

CLIP_SECONDS = 10.0
TRACK_SECONDS = 30.0  # the demo tracks whose decode was measured
AUDIO_CLIP_BYTES = 220_500 * 2  # int16 PCM of a 10 s clip at 22,050 Hz
MEL_CLIP_BYTES = 128 * 431 * 2  # float16 log-mel of a clip


@dataclass(frozen=True)
class Collection:
    """A collection's size: tracks by split, and the seconds of audio per track."""

    name: str
    train: int
    val: int
    test: int
    seconds_per_track: float

    @property
    def tracks(self) -> int:
        return self.train + self.val + self.test

    @property
    def windows(self) -> int:
        """genreflow's default clips per track (every window, the last flush with the end) of a track
        of the average length: for fma_full an estimate, since real lengths vary around it."""
        rate = 22_050  # any rate: the rule compares lengths in samples
        clip = round(CLIP_SECONDS * rate)
        return len(window_starts(round(self.seconds_per_track * rate), clip, tolerance=pad_tolerance(clip)))


# fma_small: FMA's official split, tracks of 1,321,967 samples at 44.1 kHz (mdeff/fma's NB_AUDIO_SAMPLES,
# 29.98 s). fma_full: 106,574 untrimmed tracks, 343 days of audio (FMA paper), about 278 s a track, split
# 80/10/10 here for the arithmetic.
FMA_SMALL = Collection("fma_small", 6400, 800, 800, 1_321_967 / 44_100)
FMA_FULL = Collection("fma_full", 85_259, 10_657, 10_658, 343 * 86_400 / 106_574)


def project(collection: Collection, stage: dict[str, float], workers: int, overhead: float,
            train_clips_per_s: float) -> dict[str, Any]:
    """Preprocessing hours (with augmentation) and CPU minutes per training epoch for ``collection``.

    ``stage``: bench.methods.stage_costs of 30 s tracks; decoding scales with
    the seconds decoded. ``overhead``: flow time over plain-function time.
    """
    windows = collection.windows
    decode_s = stage["decode_per_track_s"] * collection.seconds_per_track / TRACK_SECONDS
    per_train = decode_s + windows * (stage["mel_per_clip_s"] + stage["augment_per_clip_s"])
    per_other = decode_s + windows * stage["mel_per_clip_s"]
    cpu_s = collection.train * per_train + (collection.val + collection.test) * per_other
    wall_s = cpu_s / workers * overhead
    epoch_clips = collection.train * windows * (1 + int(stage["augmentations"]))
    return {
        "collection": asdict(collection), "windows_per_track": windows,
        "preprocess_cpu_hours": cpu_s / 3600, "preprocess_hours": wall_s / 3600, "workers": workers,
        "epoch_clips": epoch_clips, "epoch_minutes_cpu": epoch_clips / train_clips_per_s / 60,
        "audio_gib": collection.tracks * windows * AUDIO_CLIP_BYTES / 2**30,
        "mel_gib": (collection.tracks * windows + collection.train * windows * int(stage["augmentations"]))
        * MEL_CLIP_BYTES / 2**30,
    }
