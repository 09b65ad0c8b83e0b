"""Tests of the demo-set generator: real MP3s, reproducible, resumable and learnable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from genreflow.tasks.sources import demo_synth
from genreflow.tasks.sources.demo_synth import (
    DEMO_GENRES,
    DemoError,
    demo_path,
    generate_demo_set,
    is_demo_set,
    synthesize_track,
    track_rng,
)

SR = 44100
SECONDS = 12.0  # long enough for a 10 s feature window, short enough to keep the tests fast
TRACKS = 3  # per genre in the shared set


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """One small demo set shared by the read-only tests (3 tracks x 8 genres x 12 s)."""
    root = tmp_path_factory.mktemp("demo")
    return root, generate_demo_set(root, tracks_per_genre=TRACKS, seed=0, seconds=SECONDS)


def _features(path: Path) -> np.ndarray:
    """Spectral shape, per-band fluctuation and onset density of the first 10 s at 22,050 Hz.

    A cheap stand-in for what the CNN sees: 16 coarse mel bands, so a change of
    key does not move the features, and loudness removed from the shape.
    """
    y, sr = librosa.load(path, sr=22050, mono=True, duration=10.0)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=512, n_mels=128)
    coarse = librosa.power_to_db(mel).reshape(16, 8, -1).mean(axis=1)
    rise = np.maximum(np.diff(coarse, axis=1), 0.0).mean(axis=1)
    return np.concatenate([coarse.mean(axis=1) - coarse.mean(), coarse.std(axis=1), rise])


def test_layout_is_one_folder_per_genre(demo_set: tuple[Path, list[Path]]) -> None:
    root, paths = demo_set
    expected = [root / g / f"{g.lower()}-{i:04d}.mp3" for g in DEMO_GENRES for i in range(TRACKS)]
    assert paths == expected
    assert sorted(p.name for p in root.iterdir()) == sorted(DEMO_GENRES)
    assert sorted(root.rglob("*")) == sorted([*expected, *(root / g for g in DEMO_GENRES)])  # no temp files
    assert demo_path(root, "Hip-Hop", 2) == root / "Hip-Hop" / "hip-hop-0002.mp3"


def test_files_are_stereo_mp3_at_44100(demo_set: tuple[Path, list[Path]]) -> None:
    for path in demo_set[1]:
        info = sf.info(path)
        assert (info.format, info.samplerate, info.channels) == ("MP3", SR, 2)
        assert info.duration == pytest.approx(SECONDS, abs=0.05)
        assert path.stat().st_size > 50_000


def test_no_clipping_and_loudness_varies(demo_set: tuple[Path, list[Path]]) -> None:
    peaks = []
    for path in demo_set[1]:
        audio, sr = sf.read(path, dtype="float32")
        assert sr == SR and audio.shape == (round(SECONDS * SR), 2)
        assert np.isfinite(audio).all()
        peaks.append(float(np.abs(audio).max()))
    assert max(peaks) < 1.0
    assert max(peaks) / min(peaks) > 1.5


def test_genres_are_distinguishable(demo_set: tuple[Path, list[Path]]) -> None:
    """Leave-one-out nearest centroid on cheap features: a proxy for a CNN learning them easily."""
    paths = demo_set[1]
    feats = np.stack([_features(p) for p in paths])
    feats = (feats - feats.mean(axis=0)) / (feats.std(axis=0) + 1e-9)
    labels = np.array([p.parent.name for p in paths])
    correct = 0
    for i in range(len(paths)):
        others = np.arange(len(paths)) != i
        centroids = {g: feats[others & (labels == g)].mean(axis=0) for g in DEMO_GENRES}
        guess = min(centroids, key=lambda g: float(np.linalg.norm(feats[i] - centroids[g])))
        correct += guess == labels[i]
    assert correct / len(paths) >= 0.9


def test_same_seed_gives_identical_files_other_seed_differs(tmp_path: Path) -> None:
    kwargs = {"tracks_per_genre": 1, "seconds": 3.0, "genres": ("Rock", "Folk")}
    first = generate_demo_set(tmp_path / "a", seed=7, **kwargs)
    again = generate_demo_set(tmp_path / "b", seed=7, **kwargs)
    other = generate_demo_set(tmp_path / "c", seed=8, **kwargs)
    for a, b, c in zip(first, again, other, strict=True):
        assert a.read_bytes() == b.read_bytes()  # libmp3lame's output is deterministic
        assert a.read_bytes() != c.read_bytes()
        assert not np.allclose(sf.read(a)[0], sf.read(c)[0], atol=1e-3)


def test_a_track_does_not_depend_on_set_size_or_genres(demo_set: tuple[Path, list[Path]], tmp_path: Path) -> None:
    root = demo_set[0]
    alone = generate_demo_set(tmp_path, tracks_per_genre=1, seed=0, seconds=SECONDS, genres=("Folk",))
    assert alone[0].read_bytes() == demo_path(root, "Folk", 0).read_bytes()


def test_existing_files_are_kept_and_progress_is_reported(tmp_path: Path) -> None:
    kept = demo_path(tmp_path, "Pop", 0)
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"already here")
    calls: list[tuple[int, int]] = []
    paths = generate_demo_set(
        tmp_path, tracks_per_genre=2, seconds=2.0, genres=("Pop",), progress=lambda d, t: calls.append((d, t))
    )
    assert paths == [kept, demo_path(tmp_path, "Pop", 1)]
    assert kept.read_bytes() == b"already here"
    assert sf.info(paths[1]).frames == 2 * SR
    assert calls == [(1, 2), (2, 2)]


def test_a_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash_midway(file: str, *args: object, **kwargs: object) -> None:
        Path(file).write_bytes(b"half an mp3")
        raise OSError("disk full")

    monkeypatch.setattr(demo_synth.sf, "write", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        generate_demo_set(tmp_path, tracks_per_genre=1, seconds=1.0, genres=("Rock",))
    assert list((tmp_path / "Rock").iterdir()) == []
    assert not is_demo_set(tmp_path)


def test_synthesize_track_shape_range_and_seeding() -> None:
    for genre in DEMO_GENRES:
        audio = synthesize_track(genre, track_rng(3, genre, 0), seconds=2.0, sr=22050)
        assert audio.shape == (44100, 2) and audio.dtype == np.float32
        assert 0.25 < np.abs(audio).max() < 0.9
        again = synthesize_track(genre, track_rng(3, genre, 0), seconds=2.0, sr=22050)
        np.testing.assert_array_equal(audio, again)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: synthesize_track("Polka", np.random.default_rng(0)), "unknown demo genre"),
        (lambda: generate_demo_set("unused", genres=("Rock", "Polka")), "unknown demo genres"),
        (lambda: generate_demo_set("unused", tracks_per_genre=0), "tracks_per_genre"),
        (lambda: generate_demo_set("unused", seed=-1), "seed >= 0"),
        (lambda: track_rng(-1, "Rock", 0), "must be >= 0"),
    ],
)
def test_bad_requests_raise_demo_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(DemoError, match=message):
        call()


def test_is_demo_set(demo_set: tuple[Path, list[Path]], tmp_path: Path) -> None:
    assert is_demo_set(demo_set[0])
    assert not is_demo_set(tmp_path / "missing")
    assert not is_demo_set(tmp_path)
    (tmp_path / "Jazz").mkdir()
    (tmp_path / "Jazz" / "a.mp3").write_bytes(b"x")
    (tmp_path / "Rock").mkdir()
    (tmp_path / "Rock" / "a.wav").write_bytes(b"x")
    assert not is_demo_set(tmp_path)
    (tmp_path / "Rock" / "a.mp3").write_bytes(b"x")
    assert is_demo_set(tmp_path)
    assert not is_demo_set(tmp_path / "Rock" / "a.mp3")
