"""Short audio excerpts for the reports: the window of a track that a model got most wrong, as a small mp3.

Why: people who keep music collections judge a classifier by listening to
what it got wrong, and a track's label is checked fastest by ear. The excerpt
is the clip the model scored, cut from the track as the decode stage cut it
(model/audio.py: the same decoding, the same windows), so it is what the
model heard: mono, at the model's sample rate, ``clip_seconds`` long.

MP3, because every browser's ``<audio>`` plays it (Chromium, Firefox and
Safari; Safari has no Ogg Vorbis before version 17) and libsndfile writes it
(the demo synthesiser's encoder). At compression level 0.8 a 10 s mono
excerpt at 22,050 Hz is about 40 KB.

Plain functions: a path and a clip index in, bytes out; the stages write the
bytes through their output (storage/outputs.py), so a killed report never
leaves a manifest that claims an excerpt.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from genreflow.model.audio import AudioError, decode_audio, pad_tolerance, window_starts
from genreflow.model.metrics import prob_columns
from genreflow.model.params import AudioConfig

EXCERPTS_DIR = "excerpts"  # reports/<run>/excerpts/, beside the report that plays them
EXCERPT_SUFFIX = ".mp3"
MP3_COMPRESSION = 0.8  # libsndfile's MP3 compression level: 0 is the best quality, 1 the smallest file
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_LENGTH = 48  # characters of the track id kept in a file name; a hash keeps names unique


@dataclass(frozen=True)
class Excerpt:
    """A window of a track: samples : np.ndarray [shape=(clip_samples,), float32], mono at ``sr`` Hz,
    starting ``offset`` seconds into the track."""

    samples: np.ndarray
    sr: int
    offset: float


def cut_excerpt(path: str, clip_index: int, audio: AudioConfig) -> Excerpt:
    """Clip ``clip_index`` of the track at ``path``, decoded and windowed as the decode stage does.

    Raises AudioError when the track cannot be decoded any more (moved,
    deleted, damaged) or has no such clip.
    """
    if clip_index < 0:
        raise AudioError(f"no clip {clip_index}")
    max_seconds = None if audio.clips_per_track is None else audio.clips_per_track * audio.clip_seconds
    y = decode_audio(path, audio.sample_rate, max_seconds)
    clip = audio.clip_samples
    starts = window_starts(len(y), clip, audio.clips_per_track, pad_tolerance(clip))
    if clip_index >= len(starts):
        raise AudioError(f"the track has {len(starts)} clip(s), not a clip {clip_index}")
    start = int(starts[clip_index])
    window = y[start:start + clip]
    if len(window) < clip:  # a track a little shorter than one clip, zero-padded as decode pads it
        window = np.pad(window, (0, clip - len(window)))
    return Excerpt(np.ascontiguousarray(window, dtype=np.float32), audio.sample_rate, start / audio.sample_rate)


def encode_mp3(samples: np.ndarray, sr: int) -> bytes:
    """``samples`` [shape=(n,)] float in [-1, 1] as MP3 bytes (libsndfile's LAME writer)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1.0, 1.0), sr, format="MP3", compression_level=MP3_COMPRESSION)
    return buffer.getvalue()


def excerpt_name(track_id: Any, clip_index: int) -> str:
    """A file name for a track's excerpt, safe on every filesystem and in a URL: part of the track id, a hash
    of all of it (two ids that differ only in dropped characters never share a name), and the clip."""
    text = str(track_id)
    slug = _NAME_CHARS.sub("-", text).strip("-.")[:_NAME_LENGTH] or "track"
    digest = hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
    return f"{slug}-{digest}-clip{int(clip_index)}{EXCERPT_SUFFIX}"


def worst_clips(predictions: pd.DataFrame, genres: list[str], reference: Mapping[Any, str]) -> dict[Any, int]:
    """track_id -> the clip_index of its clip that gave the least probability to ``reference[track_id]`` (the
    genre the model should have seen: the true one of a mistake, the given one of a suspect label).

    predictions : one row a clip, with track_id, clip_index and prob_<genre> (tasks/evaluate.py).
    """
    rows = predictions[predictions["track_id"].isin(list(reference))]
    if rows.empty:
        return {}
    position = {genre: i for i, genre in enumerate(genres)}
    wanted = np.array([position[reference[track]] for track in rows["track_id"]])
    against = rows[prob_columns(genres)].to_numpy()[np.arange(len(rows)), wanted]
    order = np.lexsort((rows["clip_index"].to_numpy(), against))  # least probability first, then the earlier clip
    first = rows.iloc[order].drop_duplicates("track_id")
    return {track: int(clip) for track, clip in zip(first["track_id"], first["clip_index"], strict=True)}


def add_excerpts(rows: Iterable[dict[str, Any]], audio: AudioConfig, write: Callable[[str, bytes], None]
                 ) -> list[dict[str, Any]]:
    """Each row (track_id, path, clip_index) with its excerpt written through ``write(name, bytes)`` as
    ``excerpts/<name>.mp3``: the row gains ``excerpt`` (that relative path, None where the track could not be
    cut), ``offset`` (seconds into the track) and, on failure, ``excerpt_error``. One file per (track, clip)."""
    done: dict[str, dict[str, Any]] = {}
    result = []
    for row in rows:
        name = f"{EXCERPTS_DIR}/{excerpt_name(row['track_id'], row['clip_index'])}"
        if name not in done:
            try:
                excerpt = cut_excerpt(str(row["path"]), int(row["clip_index"]), audio)
            except AudioError as exc:
                done[name] = {"excerpt": None, "offset": None, "excerpt_error": str(exc)}
            else:
                write(name, encode_mp3(excerpt.samples, excerpt.sr))
                done[name] = {"excerpt": name, "offset": round(excerpt.offset, 3)}
        result.append({**row, **done[name]})
    return result
