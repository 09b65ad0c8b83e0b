"""Excerpts: the clip a model scored, cut from the track as decode cut it, and encoded as an mp3 that decodes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from genreflow.model.audio import AudioError, clip_windows, decode_audio, pad_tolerance
from genreflow.model.params import AudioConfig
from genreflow.tasks.excerpts import (
    EXCERPTS_DIR,
    add_excerpts,
    cut_excerpt,
    encode_mp3,
    excerpt_name,
    worst_clips,
)

SR = 8000
AUDIO = AudioConfig(sample_rate=SR, clip_seconds=1.0, clips_per_track=None)


@pytest.fixture
def track(tmp_path: Path) -> Path:
    """2.5 s whose loudness steps up each half second: every window of it is different."""
    steps = np.repeat(np.arange(1, 6, dtype=np.float32) / 10, SR // 2)
    path = tmp_path / "steps.wav"
    sf.write(path, steps * np.sin(np.arange(len(steps)) * 0.3).astype(np.float32), SR, subtype="FLOAT")
    return path


def test_cut_excerpt_is_the_clip_decode_made(track: Path) -> None:
    y = decode_audio(track, SR)
    clips = clip_windows(y, AUDIO.clip_samples, None, tolerance=pad_tolerance(AUDIO.clip_samples))
    assert len(clips) == 3  # 0-1 s, 1-2 s, and 1.5-2.5 s flush with the end
    for index, offset in enumerate((0.0, 1.0, 1.5)):
        excerpt = cut_excerpt(str(track), index, AUDIO)
        assert excerpt.offset == pytest.approx(offset)
        np.testing.assert_array_equal(excerpt.samples, clips[index])


def test_cut_excerpt_refuses_a_missing_clip_or_file(track: Path, tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="3 clip"):
        cut_excerpt(str(track), 3, AUDIO)
    with pytest.raises(AudioError, match="not readable"):
        cut_excerpt(str(tmp_path / "gone.wav"), 0, AUDIO)


def test_mp3_decodes_to_the_excerpts_length() -> None:
    samples = (0.5 * np.sin(np.arange(22050 * 10) * 2 * np.pi * 440 / 22050)).astype(np.float32)
    data = encode_mp3(samples, 22050)
    assert data[:3] == b"ID3" or data[0] == 0xFF
    assert len(data) < 80_000  # small: 10 s in well under 100 KB
    decoded, rate = sf.read(io.BytesIO(data))
    assert rate == 22050 and abs(len(decoded) - len(samples)) < 2048


def test_excerpt_names_are_safe_and_unique() -> None:
    names = {excerpt_name(track, 0) for track in ("Rock/a b", "Rock/a_b", "Rock/a?b", "../../etc", "Ünïcode/x")}
    assert len(names) == 5
    assert all(name.endswith("-clip0.mp3") and "/" not in name and ".." not in name.split("-")[0] for name in names)
    assert all(c.isalnum() or c in "._-" for name in names for c in name)


def test_worst_clip_is_the_one_least_like_the_reference_genre() -> None:
    predictions = pd.DataFrame({"track_id": ["a", "a", "a", "b", "b"], "clip_index": [0, 1, 2, 0, 1],
                                "prob_Rock": [0.6, 0.2, 0.2, 0.9, 0.9], "prob_Jazz": [0.4, 0.8, 0.8, 0.1, 0.1]})
    assert worst_clips(predictions, ["Rock", "Jazz"], {"a": "Rock", "b": "Jazz"}) == {"a": 1, "b": 0}
    assert worst_clips(predictions, ["Rock", "Jazz"], {"a": "Jazz"}) == {"a": 0}


def test_add_excerpts_writes_each_clip_once_and_reports_failures(track: Path, tmp_path: Path) -> None:
    written: dict[str, bytes] = {}
    rows = [{"track_id": "t", "path": str(track), "clip_index": 2}, {"track_id": "t", "path": str(track),
                                                                     "clip_index": 2},
            {"track_id": "gone", "path": str(tmp_path / "gone.wav"), "clip_index": 0}]
    result = add_excerpts(rows, AUDIO, written.__setitem__)
    assert list(written) == [f"{EXCERPTS_DIR}/{excerpt_name('t', 2)}"]
    assert result[0]["excerpt"] == result[1]["excerpt"] == next(iter(written)) and result[0]["offset"] == 1.5
    assert result[2]["excerpt"] is None and "not readable" in result[2]["excerpt_error"]
    decoded, rate = sf.read(io.BytesIO(written[result[0]["excerpt"]]))
    assert rate == SR and abs(len(decoded) - SR) < 1200
