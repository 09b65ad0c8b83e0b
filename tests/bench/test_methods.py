"""The benchmark's three recipes make the same clip and (nearly) the same log-mel of the same mp3.

If they did not, the benchmark would compare different work. The seed's
``librosa.load`` reads the same frames, downmixes and resamples with soxr_hq
as genreflow does, so the clips agree to int16 rounding; the log-mels differ
only by that rounding (visible in the quietest bins) and float16 storage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genreflow.bench import methods
from genreflow.model.params import AudioConfig, AugmentConfig
from genreflow.tasks.sources.demo_synth import generate_demo_set

AUDIO = AudioConfig(clips_per_track=1)  # the seed's one clip: the first 10 s
GENRES = ["Experimental", "Rock"]  # the noisiest and a percussive one


@pytest.fixture(scope="module")
def mp3s(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Real 44.1 kHz stereo demo mp3s, 11 s: one 10 s clip each."""
    folder = tmp_path_factory.mktemp("bench-demo")
    return generate_demo_set(folder, tracks_per_genre=1, seed=3, seconds=11.0, genres=GENRES)


def test_seed_and_genreflow_cut_the_same_clip(mp3s: list[Path]) -> None:
    decoded = methods.decode_shard(methods.track_table(mp3s), AUDIO)
    assert decoded.clips.shape == (len(mp3s), AUDIO.clip_samples)
    for path, pcm in zip(mp3s, decoded.clips, strict=True):
        seed = methods.seed_clip(path)
        assert seed.shape == (AUDIO.clip_samples,)
        # genreflow stores round(x * 32767) as int16: within one step of the seed's float samples
        assert np.abs(seed - pcm / 32767.0).max() <= 1.0 / 32767


def test_seed_and_genreflow_mels_are_close_in_db(mp3s: list[Path]) -> None:
    genreflow = methods.genreflow_shard(methods.track_table(mp3s), AUDIO).astype(np.float32)
    for path, mel in zip(mp3s, genreflow, strict=True):
        seed = methods.seed_mel(path)
        assert seed.shape == mel.shape == (AUDIO.n_mels, AUDIO.frames)
        diff = np.abs(seed - mel)
        assert diff.mean() < 0.05  # dB
        assert diff[seed > -60.0].max() < 0.5  # where int16 rounding noise is far below the signal
        assert diff.max() < 2.0
        assert mel.max() == 0.0 and mel.min() >= -80.0


def test_floor_makes_the_seed_clip_and_mel(mp3s: list[Path]) -> None:
    floor = methods.Floor(AUDIO)
    for path in mp3s:
        np.testing.assert_allclose(floor.clip(path), methods.seed_clip(path), rtol=0, atol=1e-6)
        np.testing.assert_allclose(floor.mel(path), methods.seed_mel(path), rtol=0, atol=1e-2)


def test_loops_count_the_clips_they_make(mp3s: list[Path]) -> None:
    assert methods.seed_loop(mp3s) == len(mp3s)
    assert methods.Floor(AUDIO).loop(mp3s) == len(mp3s)
    shards = [methods.track_table(mp3s[:1]), methods.track_table(mp3s[1:])]
    assert methods.genreflow_loop(shards, AUDIO) == len(mp3s)


def test_track_table_names_tracks_by_genre_folder(mp3s: list[Path]) -> None:
    table = methods.track_table(mp3s)
    assert list(table.columns) == ["track_id", "path", "genre", "split"]
    assert sorted(table["genre"]) == GENRES
    assert all(tid.startswith(f"{genre}/") for tid, genre in zip(table["track_id"], table["genre"], strict=True))


def test_the_seeds_augmented_loop_makes_the_clip_and_four_copies_of_it(mp3s: list[Path]) -> None:
    """The same work genreflow's augment stage does: the seed's clip, then each of its copies' log-mel."""
    mels = methods.seed_augmented_mels(mp3s[0])
    assert len(mels) == 5 and all(m.shape == (AUDIO.n_mels, AUDIO.frames) for m in mels)
    np.testing.assert_array_equal(mels[0], methods.seed_mel(mp3s[0]))
    decoded = methods.decode_shard(methods.track_table(mp3s[:1]), AUDIO)
    ours, table = methods.augment_shard(decoded.clips, decoded.index, AUDIO, AugmentConfig(augment_domain="waveform"))
    assert table["augmentation"].tolist() == ["stretch0.8", "stretch0.9", "pitch+2", "pitch-2"]
    for seed, mine in zip(mels[1:], ours.astype(np.float32), strict=True):
        assert np.abs(seed - mine)[seed > -60.0].mean() < 0.1  # the same copies, but for int16 and float16
    assert methods.seed_augmented_loop(mp3s) == 5 * len(mp3s)


def test_stage_costs_time_both_domains_side_by_side(mp3s: list[Path]) -> None:
    costs = methods.stage_costs(mp3s[:1], AUDIO, AugmentConfig(), rounds=1)
    assert costs["clips"] == 1 and costs["augmentations"] == 4 and costs["augment_domain"] == "spectral"
    assert costs["augment_per_clip_s"] == costs["augment_spectral_per_clip_s"]
    for domain in ("spectral", "waveform"):
        expected = costs[f"augment_{domain}_per_clip_s"] / 4 / costs["mel_per_clip_s"]
        assert costs[f"copy_vs_mel_{domain}"] == pytest.approx(expected)
