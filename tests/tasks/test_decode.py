"""decode_shard on a tiny track table (good, short and empty tracks), to_pcm16, and the retry rule."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from prefect.states import Completed, Failed, State, exception_to_failed_state

from genreflow.model.params import AudioConfig
from genreflow.storage.root import QUARANTINE_COLUMNS
from genreflow.tasks.decode import INDEX_COLUMNS, decode_shard, to_pcm16
from genreflow.tasks.workers import retry_transient

SR = 22050
CLIP = 10 * SR


def tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t) * np.linspace(0.2, 1.0, t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def tracks(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """Two good 25 s tracks, a 5 s one and an empty file; the signals written, by track id."""
    folder = tmp_path_factory.mktemp("tracks")
    signals = {1: tone(25.0, 220.0), 2: tone(5.0, 330.0), 4: tone(25.0, 550.0)}
    for track_id, y in signals.items():
        sf.write(folder / f"{track_id}.wav", y, SR, subtype="FLOAT")
    (folder / "3.wav").touch()
    table = pd.DataFrame({
        "track_id": [1, 2, 3, 4],
        "path": [str(folder / f"{i}.wav") for i in (1, 2, 3, 4)],
        "genre": ["Rock", "Pop", "Folk", "Jazz"],
        "split": ["train", "train", "val", "test"],
    })
    return table, signals


def test_clips_cover_every_second_of_good_tracks(tracks: tuple[pd.DataFrame, dict[int, np.ndarray]]) -> None:
    table, signals = tracks
    decoded = decode_shard(table, AudioConfig())
    assert decoded.clips.dtype == np.int16
    assert decoded.clips.shape == (6, CLIP)  # 25 s: two whole windows and the last 10 s
    index = decoded.index
    assert list(index.columns) == INDEX_COLUMNS
    assert index["track_id"].tolist() == [1, 1, 1, 4, 4, 4]
    assert index["clip_index"].tolist() == [0, 1, 2, 0, 1, 2]
    assert index["split"].tolist() == ["train"] * 3 + ["test"] * 3
    assert index["genre"].tolist() == ["Rock"] * 3 + ["Jazz"] * 3
    assert index["row"].tolist() == list(range(len(decoded.clips)))
    assert index["clip_index"].dtype == np.int32 and index["row"].dtype == np.int64
    starts = [0, CLIP, 15 * SR]  # the third window overlaps the second by 5 s and ends with the track
    for row in index.itertuples():
        window = signals[row.track_id][starts[row.clip_index] : starts[row.clip_index] + CLIP]
        np.testing.assert_array_equal(decoded.clips[row.row], to_pcm16(window))


def test_short_and_empty_tracks_are_quarantined_with_reasons(
    tracks: tuple[pd.DataFrame, dict[int, np.ndarray]],
) -> None:
    table, _ = tracks
    quarantine = decode_shard(table, AudioConfig()).quarantine
    assert list(quarantine.columns) == list(QUARANTINE_COLUMNS)
    assert quarantine["track_id"].tolist() == [2, 3]
    assert quarantine["path"].tolist() == table["path"].iloc[[1, 2]].tolist()
    assert quarantine["genre"].tolist() == ["Pop", "Folk"]
    assert quarantine["reason"].tolist() == ["too short: 5.00 s, a clip needs 10 s (9.5 s or more is padded)",
                                             "empty file (0 bytes)"]


def test_one_clip_per_track(tracks: tuple[pd.DataFrame, dict[int, np.ndarray]]) -> None:
    table, signals = tracks
    decoded = decode_shard(table, AudioConfig(clips_per_track=1))
    assert decoded.clips.shape == (2, CLIP)
    assert decoded.index["track_id"].tolist() == [1, 4]
    assert decoded.index["clip_index"].tolist() == [0, 0]
    assert decoded.index["row"].tolist() == [0, 1]
    np.testing.assert_array_equal(decoded.clips[1], to_pcm16(signals[4][:CLIP]))
    assert decoded.quarantine["track_id"].tolist() == [2, 3]


def test_all_quarantined_gives_an_empty_typed_shard(
    tracks: tuple[pd.DataFrame, dict[int, np.ndarray]],
) -> None:
    table, _ = tracks
    decoded = decode_shard(table.iloc[[1, 2]], AudioConfig())
    assert decoded.clips.shape == (0, CLIP) and decoded.clips.dtype == np.int16
    assert len(decoded.index) == 0 and list(decoded.index.columns) == INDEX_COLUMNS
    assert len(decoded.quarantine) == 2


def test_to_pcm16_scales_rounds_and_clips() -> None:
    floats = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 1e-5, 2e-5])
    expected = [-32768, -32767, -16384, 0, 16384, 32767, 32767, 0, 1]
    out = to_pcm16(floats)
    assert out.dtype == np.int16
    assert out.tolist() == expected


# --------------------------------------------------------------------------- retry rule


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (ConnectionError("reset by peer"), True),
        (TimeoutError("read timed out"), True),
        (BlockingIOError("busy"), True),
        (OSError(5, "Input/output error"), True),
        (FileNotFoundError(2, "No such file"), False),
        (PermissionError(13, "Permission denied"), False),
        (IsADirectoryError(21, "Is a directory"), False),
        (ValueError("bad data"), False),
        (KeyError("bug"), False),
    ],
)
def test_retry_transient_on_failed_states(error: BaseException, retry: bool) -> None:
    assert retry_transient(None, None, Failed(data=error)) is retry


def test_retry_transient_on_states_from_raised_exceptions() -> None:
    def failed_state(error: Exception) -> State:
        try:
            raise error
        except Exception as exc:
            return asyncio.run(exception_to_failed_state(exc))

    assert retry_transient(None, None, failed_state(ConnectionResetError("reset"))) is True
    assert retry_transient(None, None, failed_state(FileNotFoundError("gone.mp3"))) is False


def test_retry_transient_never_retries_a_success() -> None:
    assert retry_transient(None, None, Completed(data=1)) is False


@pytest.mark.parametrize(("seconds", "starts"), [(9.5, [0]), (10.4, [0]), (10.6, [0, round(0.6 * SR)])])
def test_padding_and_tail_tolerance_of_half_a_second(tmp_path: Path, seconds: float, starts: list[int]) -> None:
    """9.5 s is padded to one clip; a 0.4 s tail is left out; a 0.6 s tail gets a window of its own."""
    y = tone(seconds, 440.0)
    sf.write(tmp_path / "t.wav", y, SR, subtype="FLOAT")
    table = pd.DataFrame({"track_id": [7], "path": [str(tmp_path / "t.wav")], "genre": ["Rock"], "split": ["train"]})
    decoded = decode_shard(table, AudioConfig())
    assert decoded.quarantine.empty
    assert decoded.clips.shape == (len(starts), CLIP)
    padded = np.pad(y, (0, max(0, CLIP - len(y))))
    for clip, start in zip(decoded.clips, starts, strict=True):
        np.testing.assert_array_equal(clip, to_pcm16(padded[start : start + CLIP]))


def test_just_under_the_padding_tolerance_is_quarantined(tmp_path: Path) -> None:
    sf.write(tmp_path / "t.wav", tone(9.45, 440.0), SR, subtype="FLOAT")
    table = pd.DataFrame({"track_id": [7], "path": [str(tmp_path / "t.wav")], "genre": ["Rock"], "split": ["train"]})
    decoded = decode_shard(table, AudioConfig())
    assert decoded.quarantine["reason"].tolist() == ["too short: 9.45 s, a clip needs 10 s (9.5 s or more is padded)"]
