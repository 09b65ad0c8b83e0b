"""decode_audio on files of every format and rate the sources hold, its refusals, and the window rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genreflow.model.audio import AudioError, clip_windows, decode_audio, pad_tolerance, track_clips, window_starts
from genreflow.model.params import AudioConfig

SR = 22050


def sine(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path: Path, data: np.ndarray, sr: int, **kwargs: str) -> Path:
    sf.write(path, data, sr, **kwargs)
    return path


def peak_hz(y: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spectrum) * sr / len(y))


# --------------------------------------------------------------------------- decoding


def test_stereo_44k_wav_becomes_mono_at_22050_of_the_right_length(tmp_path: Path) -> None:
    left = sine(3.0, 44100)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)  # mono = left / 2
    y = decode_audio(write(tmp_path / "a.wav", stereo, 44100, subtype="FLOAT"), SR)
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == 3 * SR
    assert np.abs(y).max() == pytest.approx(0.25, abs=0.01)
    assert peak_hz(y, SR) == pytest.approx(440.0, abs=1.0)


def test_native_rate_wav_is_returned_unchanged(tmp_path: Path) -> None:
    data = sine(1.0, SR)
    y = decode_audio(write(tmp_path / "a.wav", data, SR, subtype="FLOAT"), SR)
    np.testing.assert_array_equal(y, data)


@pytest.mark.parametrize("native_sr", [8000, 96000])
def test_other_rates_are_resampled_to_the_right_length(tmp_path: Path, native_sr: int) -> None:
    y = decode_audio(write(tmp_path / f"r{native_sr}.wav", sine(2.0, native_sr), native_sr), SR)
    assert len(y) == 2 * SR
    assert peak_hz(y, SR) == pytest.approx(440.0, abs=1.0)


def test_8_bit_unsigned_wav(tmp_path: Path) -> None:
    data = sine(1.0, SR)
    y = decode_audio(write(tmp_path / "u8.wav", data, SR, subtype="PCM_U8"), SR)
    assert len(y) == SR
    np.testing.assert_allclose(y, data, atol=1 / 64)  # 8-bit steps are 1/128


def test_six_channels_are_averaged(tmp_path: Path) -> None:
    base = sine(1.0, SR)
    gains = np.array([1.0, 0.5, 0.0, -0.25, 0.25, 0.5], dtype=np.float32)
    y = decode_audio(write(tmp_path / "c6.wav", base[:, None] * gains, SR, subtype="FLOAT"), SR)
    np.testing.assert_allclose(y, base * gains.mean(), atol=1e-6)


@pytest.mark.parametrize(("name", "kwargs"), [("a.flac", {}), ("a.ogg", {"format": "OGG"}),
                                                ("a.mp3", {"format": "MP3"})])
def test_compressed_formats(tmp_path: Path, name: str, kwargs: dict[str, str]) -> None:
    y = decode_audio(write(tmp_path / name, sine(2.0, 44100), 44100, **kwargs), SR)
    assert abs(len(y) - 2 * SR) <= 0.02 * SR  # lossy coders may pad a few ms
    assert peak_hz(y, SR) == pytest.approx(440.0, abs=1.0)
    assert np.abs(y).max() == pytest.approx(0.5, abs=0.05)


def test_max_seconds_reads_only_that_much(tmp_path: Path) -> None:
    path = write(tmp_path / "long.wav", sine(30.0, 44100), 44100)
    assert len(decode_audio(path, SR, max_seconds=10)) == 10 * SR
    assert len(decode_audio(path, SR, max_seconds=2.5)) == round(2.5 * SR)
    assert len(decode_audio(path, SR, max_seconds=60)) == 30 * SR  # the whole file when shorter


def test_max_seconds_limits_the_frames_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "long.wav", sine(30.0, 44100), 44100)
    requested: list[int] = []
    real_read = sf.SoundFile.read

    def spy(self: sf.SoundFile, frames: int = -1, *args: object, **kwargs: object) -> np.ndarray:
        requested.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    decode_audio(path, SR, max_seconds=10)
    decode_audio(path, SR)
    assert requested == [10 * 44100, -1]


def test_max_seconds_of_native_rate_is_exactly_the_first_samples(tmp_path: Path) -> None:
    data = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * SR).astype(np.float32)
    y = decode_audio(write(tmp_path / "n.wav", data, SR, subtype="FLOAT"), SR, max_seconds=1)
    np.testing.assert_array_equal(y, data[:SR])


# --------------------------------------------------------------------------- refusals


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp3"
    path.touch()
    with pytest.raises(AudioError, match=r"empty file \(0 bytes\)"):
        decode_audio(path, SR)


def test_text_renamed_mp3(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp3"
    path.write_text("these are not the samples you are looking for\n" * 40)
    with pytest.raises(AudioError, match="not decodable audio"):
        decode_audio(path, SR)


def test_wav_with_broken_header(tmp_path: Path) -> None:
    good = write(tmp_path / "good.wav", sine(1.0, SR), SR).read_bytes()
    path = tmp_path / "broken.wav"
    garbage = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(good[:12] + garbage)  # "RIFF" <size> "WAVE", then noise where chunks should be
    with pytest.raises(AudioError, match="not decodable audio"):
        decode_audio(path, SR)


def test_silent_track(tmp_path: Path) -> None:
    quiet = sine(1.0, SR, amp=5e-5)  # below -80 dBFS everywhere
    with pytest.raises(AudioError, match="silent"):
        decode_audio(write(tmp_path / "silent.wav", quiet, SR, subtype="FLOAT"), SR)


def test_nan_samples(tmp_path: Path) -> None:
    data = sine(1.0, SR)
    data[1000] = np.nan
    with pytest.raises(AudioError, match="NaN or Inf"):
        decode_audio(write(tmp_path / "nan.wav", data, SR, subtype="FLOAT"), SR)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="file not readable: No such file"):
        decode_audio(tmp_path / "missing.wav", SR)


# --------------------------------------------------------------------------- clip windows


def test_thirty_seconds_make_three_windows_in_order() -> None:
    clip = 10 * SR
    y = np.arange(30 * SR, dtype=np.float32)
    windows = clip_windows(y, clip)
    assert windows.shape == (3, clip)
    np.testing.assert_array_equal(windows[1], y[clip : 2 * clip])
    np.testing.assert_array_equal(windows.ravel(), y)


def test_the_last_window_ends_with_the_signal_and_overlaps_the_one_before() -> None:
    windows = clip_windows(np.arange(25, dtype=np.float32), 10)
    assert windows.shape == (3, 10)
    np.testing.assert_array_equal(windows[:2].ravel(), np.arange(20))
    np.testing.assert_array_equal(windows[2], np.arange(15, 25))


def test_a_tail_within_the_tolerance_is_left_out() -> None:
    y = np.arange(24, dtype=np.float32)
    assert clip_windows(y, 10, tolerance=4).shape == (2, 10)
    np.testing.assert_array_equal(clip_windows(y, 10, tolerance=3)[2], np.arange(14, 24))


@pytest.mark.parametrize(("n", "cap", "starts"), [
    (30, None, [0, 10, 20]), (29, None, [0, 10, 19]), (10, None, [0]), (7, None, [0]), (11, None, [0, 1]),
    (29, 2, [0, 10]), (29, 1, [0]), (15, 5, [0, 5]),
])
def test_window_starts(n: int, cap: int | None, starts: list[int]) -> None:
    assert window_starts(n, 10, cap).tolist() == starts


def test_one_clip_per_track_is_exactly_the_first_samples() -> None:
    y = np.arange(30 * SR, dtype=np.float32)
    windows = clip_windows(y, 10 * SR, clips_per_track=1)
    assert windows.shape == (1, 10 * SR)
    np.testing.assert_array_equal(windows[0], y[: 10 * SR])
    assert clip_windows(y, 10 * SR, clips_per_track=5).shape == (3, 10 * SR)  # capped by the audio


def test_too_short_raises() -> None:
    with pytest.raises(AudioError, match=r"too short for one clip \(9 samples, a clip needs 10\)"):
        clip_windows(np.ones(9, np.float32), 10)
    with pytest.raises(AudioError, match=r"too short for one clip \(7 samples, a clip needs 10, or 8 with padding\)"):
        clip_windows(np.ones(7, np.float32), 10, tolerance=2)


def test_pad_short_zero_pads_to_one_clip() -> None:
    windows = clip_windows(np.ones(7, np.float32), 10, pad_short=True)
    np.testing.assert_array_equal(windows, [[1, 1, 1, 1, 1, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(clip_windows(np.ones(8, np.float32), 10, tolerance=2), [[1] * 8 + [0, 0]])


def test_fma_track_of_29_98_s_gives_three_clips_covering_it(tmp_path: Path) -> None:
    """FMA's "30 s" tracks hold 1,321,967 samples at 44.1 kHz (mdeff/fma's NB_AUDIO_SAMPLES): 29.976 s.

    Whole windows alone would give 2 clips and drop a third of the track; the
    rule gives 3, the last flush with the end. Decode and predict cut alike.
    """
    n = 1_321_967
    rng = np.random.default_rng(7)
    stereo = (0.1 * rng.standard_normal((n, 2))).astype(np.float32)
    path = write(tmp_path / "fma.wav", stereo, 44100, subtype="FLOAT")
    assert sf.info(path).frames == n
    audio = AudioConfig()  # 10 s clips at 22,050 Hz
    y = decode_audio(path, audio.sample_rate)
    assert len(y) == round(n / 2)  # 660,984 samples
    clips = track_clips(y, audio)
    assert clips.shape == (3, 220_500)
    np.testing.assert_array_equal(clips[1], y[220_500:441_000])
    np.testing.assert_array_equal(clips[2], y[-220_500:])
    capped = track_clips(decode_audio(path, audio.sample_rate, max_seconds=20.0), AudioConfig(clips_per_track=2))
    assert capped.shape == (2, 220_500)  # the cap keeps the first windows
    np.testing.assert_array_equal(capped[0], clips[0])
    # Reading 20 s, the resampler's filter sees the cut in the last ms or so of the second clip.
    np.testing.assert_allclose(capped[1, :-256], clips[1, :-256], atol=1e-6)
    predicted = clip_windows(y, audio.clip_samples, pad_short=True, tolerance=pad_tolerance(audio.clip_samples))
    np.testing.assert_array_equal(predicted, clips)
