"""The Keras musicnn: same outputs as the TF1 graph computed in numpy, musicnn's exact input, clip embeddings.

The check against the real MTT_musicnn weights runs where the user cache holds
them (`genreflow weights fetch musicnn`) and gtzan-mini is beside the project;
it skips otherwise.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import librosa
import numpy as np
import pytest

from genreflow.model.musicnn import (
    FEATURES,
    HOP_LENGTH,
    MTT_LABELS,
    N_FFT,
    N_MELS,
    PATCH_FRAMES,
    SAMPLE_RATE,
    MusicnnEmbedder,
    MusicnnError,
    build_network,
    load_checkpoint,
    log_compressed_mel,
    patches,
)
from genreflow.model.weights import MUSICNN, find_weights, user_weights_dir
from tests.model.musicnn_tiny import TINY, reference_forward, save_tf1_checkpoint, tiny_variables

GTZAN = Path(__file__).resolve().parents[3] / "shared" / "data" / "gtzan-mini"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    variables = tiny_variables(TINY, seed=1)
    prefix = save_tf1_checkpoint(variables, tmp_path_factory.mktemp("tiny") / "variables")
    return prefix, variables


@pytest.fixture(scope="module")
def tiny_embedder(tiny_checkpoint: tuple[Path, dict[str, np.ndarray]]) -> MusicnnEmbedder:
    return MusicnnEmbedder(tiny_checkpoint[0], labels=[f"tag{i}" for i in range(TINY.n_classes)], arch=TINY)


def test_port_matches_the_tf1_graph_computed_in_numpy(
    tiny_checkpoint: tuple[Path, dict[str, np.ndarray]], tiny_embedder: MusicnnEmbedder
) -> None:
    # 41 frames: odd, and long enough for every temporal kernel; log-mel-like values in 0..6.
    batch = np.random.default_rng(2).uniform(0, 6, (3, 41, N_MELS)).astype(np.float32)
    expected = reference_forward(tiny_checkpoint[1], batch)
    got = tiny_embedder.features(batch)
    for name in FEATURES:
        assert got[name].shape == expected[name].shape, name
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-4, err_msg=name)
    # Not a vacuous match: the outputs vary across inputs and the tags are not saturated.
    assert np.ptp(got["max_pool"], axis=0).max() > 0.1
    assert 0.01 < got["taggram"].mean() < 0.99


def test_a_checkpoint_without_a_variable_is_refused(tmp_path: Path) -> None:
    variables = tiny_variables(TINY)
    del variables["conv2d_3/kernel"]
    prefix = save_tf1_checkpoint(variables, tmp_path / "variables")
    with pytest.raises(MusicnnError, match="no variable conv2d_3/kernel"):
        load_checkpoint(build_network(TINY), prefix)


def test_a_checkpoint_of_other_sizes_is_refused(tmp_path: Path) -> None:
    prefix = save_tf1_checkpoint(tiny_variables(TINY), tmp_path / "variables")
    bigger = replace(TINY, backend_units=7)
    with pytest.raises(MusicnnError, match=r"dense/kernel has shape \[\d+, 5\], the network needs \[\d+, 7\]"):
        load_checkpoint(build_network(bigger), prefix)


def test_a_missing_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MusicnnError, match="cannot read the checkpoint"):
        load_checkpoint(build_network(TINY), tmp_path / "nothing")


def test_log_compressed_mel_is_musicnns_input_and_stays_finite_when_loud() -> None:
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    y = (0.99 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    spec = log_compressed_mel(y, SAMPLE_RATE)
    assert spec.shape == (1 + len(y) // HOP_LENGTH, N_MELS)
    assert np.isfinite(spec).all()
    # musicnn under NumPy 1: float16 power, product and log in float32. Above log10(10000 * 6.55 + 1) = 4.82
    # NumPy 2's float16 product would have overflowed to inf.
    assert spec.max() > 4.9
    power = librosa.feature.melspectrogram(y=y, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS,
                                           pad_mode="reflect").T
    expected = np.log10(10000.0 * power.astype(np.float16).astype(np.float64) + 1.0)
    np.testing.assert_allclose(spec, expected, rtol=1e-5, atol=1e-5)
    # The 440 Hz band is the loudest one, in every frame.
    mel_freqs = librosa.mel_frequencies(N_MELS + 2, fmax=SAMPLE_RATE / 2)[1:-1]
    assert abs(mel_freqs[np.bincount(spec.argmax(axis=1)).argmax()] - 440) < 60


def test_log_compressed_mel_resamples_to_16_khz_first() -> None:
    sr = 22_050
    y = np.random.default_rng(0).normal(0, 0.1, 10 * sr).astype(np.float32)
    assert log_compressed_mel(y, sr).shape == (1 + 10 * SAMPLE_RATE // HOP_LENGTH, N_MELS)  # 626 frames for 10 s


def test_patches_are_back_to_back_and_short_input_is_repeated() -> None:
    spec = np.arange(626 * 2, dtype=np.float32).reshape(626, 2)
    cut = patches(spec)
    assert cut.shape == (3, PATCH_FRAMES, 2)  # the trailing 65 frames are dropped, as musicnn does
    np.testing.assert_array_equal(cut[1], spec[PATCH_FRAMES : 2 * PATCH_FRAMES])
    assert patches(spec, hop_frames=100).shape == (5, PATCH_FRAMES, 2)
    short = patches(spec[:50])
    assert short.shape == (1, PATCH_FRAMES, 2)
    np.testing.assert_array_equal(short[0, 50:100], spec[:50])
    with pytest.raises(MusicnnError, match="empty"):
        patches(spec[:0])


def test_embed_clips_averages_each_clips_patches(tiny_embedder: MusicnnEmbedder) -> None:
    sr = 22_050
    rng = np.random.default_rng(3)
    clips = (rng.normal(0, 0.2, (2, 10 * sr)) * 32767).astype(np.int16)
    out = tiny_embedder.embed_clips(clips, sr)
    assert tiny_embedder.feature == "max_pool+taggram"  # the default embedding: both layers side by side
    assert out.vectors.shape == (2, TINY.pool_dims + TINY.n_classes) and out.tags.shape == (2, TINY.n_classes)
    assert tiny_embedder.dims == TINY.pool_dims + TINY.n_classes
    assert out.patches_per_clip.tolist() == [3, 3]
    per_patch = tiny_embedder.features(patches(log_compressed_mel(clips[1].astype(np.float32) / 32768.0, sr)))
    expected = np.concatenate([per_patch["max_pool"].mean(axis=0), per_patch["taggram"].mean(axis=0)])
    np.testing.assert_allclose(out.vectors[1], expected, rtol=1e-5, atol=1e-5)
    patch_features = tiny_embedder.feature_model()(patches(log_compressed_mel(
        clips[1].astype(np.float32) / 32768.0, sr)), training=False)
    np.testing.assert_allclose(np.asarray(patch_features).mean(axis=0), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.tags[1], per_patch["taggram"].mean(axis=0), rtol=1e-5, atol=1e-5)
    assert not np.allclose(out.vectors[0], out.vectors[1])
    one = tiny_embedder.embed_audio(clips[0].astype(np.float32) / 32768.0, sr)
    np.testing.assert_allclose(one, out.vectors[0], rtol=1e-5, atol=1e-5)


def test_unknown_feature_and_bad_audio_are_refused(tiny_checkpoint: tuple[Path, dict[str, np.ndarray]],
                                                   tiny_embedder: MusicnnEmbedder) -> None:
    with pytest.raises(MusicnnError, match="unknown musicnn feature"):
        MusicnnEmbedder(tiny_checkpoint[0], labels=["a"] * TINY.n_classes, arch=TINY, feature="logits")
    with pytest.raises(MusicnnError, match="unknown musicnn feature"):
        MusicnnEmbedder(tiny_checkpoint[0], labels=["a"] * TINY.n_classes, arch=TINY, feature="max_pool+max_pool")
    with pytest.raises(MusicnnError, match="NaN"):
        tiny_embedder.embed_audio(np.full(SAMPLE_RATE, np.nan, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(MusicnnError, match="mono"):
        log_compressed_mel(np.zeros((2, SAMPLE_RATE), dtype=np.float32), SAMPLE_RATE)


# ---------------------------------------------------------------- the real weights


@pytest.fixture(scope="module")
def mtt() -> MusicnnEmbedder:
    if find_weights(MUSICNN, user_weights_dir()) is None:
        pytest.skip("musicnn weights not in the user cache (genreflow weights fetch musicnn)")
    return MusicnnEmbedder.from_cache("MTT_musicnn", user_weights_dir(), fetch=False)


def _gtzan(genre: str, n: int) -> list[np.ndarray]:
    import soundfile as sf

    files = sorted((GTZAN / genre).glob("*.wav"))[:n]
    if not files:
        pytest.skip(f"gtzan-mini ({GTZAN}) is not here")
    return [sf.read(f, dtype="float32")[0] for f in files]


def test_real_mtt_musicnn_scores_classical_music_as_classical(mtt: MusicnnEmbedder) -> None:
    """The issue's check: high "classical" on classical recordings, low on others, finite features."""
    sr = 22_050
    classical = [dict(mtt.top_tags(y, sr, n=50))["classical"] for y in _gtzan("classical", 4)]
    others = [dict(mtt.top_tags(y, sr, n=50))["classical"]
              for genre in ("metal", "disco", "hiphop", "rock") for y in _gtzan(genre, 1)]
    assert min(classical) > 0.5, classical
    assert max(others) < 0.2, others
    assert mtt.top_tags(_gtzan("classical", 1)[0], sr, n=1)[0][0] == "classical"
    features = mtt.features(patches(log_compressed_mel(_gtzan("metal", 1)[0], sr)))
    assert all(np.isfinite(v).all() for v in features.values())


def test_real_mtt_musicnn_hears_a_loud_synthetic_tone_without_overflow(mtt: MusicnnEmbedder) -> None:
    t = np.arange(10 * 22_050) / 22_050
    y = (0.95 * np.sign(np.sin(2 * np.pi * 110 * t))).astype(np.float32)  # a full-scale square wave
    out = mtt.embed_clips(y[None, :], 22_050)
    assert np.isfinite(out.vectors).all() and np.isfinite(out.tags).all()
    assert out.tags.max() - out.tags.min() > 0.3  # tags are not flat
    assert len(MTT_LABELS) == out.tags.shape[1]


def test_real_msd_musicnn_names_the_genre_of_blues_and_jazz() -> None:
    """MSD_musicnn, the same network with the Million Song Dataset's tags, on two unambiguous excerpts."""
    if find_weights(MUSICNN, user_weights_dir()) is None:
        pytest.skip("musicnn weights not in the user cache (genreflow weights fetch musicnn)")
    msd = MusicnnEmbedder.from_cache("MSD_musicnn", user_weights_dir(), fetch=False)
    for genre in ("blues", "jazz"):
        assert msd.top_tags(_gtzan(genre, 1)[0], 22_050, n=1)[0][0] == genre
