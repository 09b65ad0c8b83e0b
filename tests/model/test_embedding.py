"""The embedding family's head and its one-file classifier, on a tiny musicnn with random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genreflow.model.embedding import (
    EmbeddingError,
    HeadFit,
    build_classifier,
    fit_head,
    head_model,
    is_embedding_classifier,
    patches_per_window,
    window_patches,
)
from genreflow.model.musicnn import MusicnnEmbedder
from genreflow.model.params import AudioConfig
from tests.model.musicnn_tiny import TINY, save_tf1_checkpoint, tiny_variables

SR = 22_050


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> MusicnnEmbedder:
    prefix = save_tf1_checkpoint(tiny_variables(TINY, seed=3), tmp_path_factory.mktemp("tiny") / "variables")
    return MusicnnEmbedder(prefix, labels=[f"tag{i}" for i in range(TINY.n_classes)], arch=TINY)


def _index(tracks: list[str], genres: list[str], clips_per_track: int = 2) -> pd.DataFrame:
    return pd.DataFrame({"track_id": np.repeat(tracks, clips_per_track), "genre": np.repeat(genres, clips_per_track)})


def _separable(n_tracks: int, genres: list[str], seed: int, dims: int = 6) -> tuple[np.ndarray, pd.DataFrame]:
    """Embeddings whose first dims say the genre, plus noise; two clips a track."""
    rng = np.random.default_rng(seed)
    labels = [genres[i % len(genres)] for i in range(n_tracks)]
    index = _index([f"t{seed}-{i}" for i in range(n_tracks)], labels)
    x = rng.normal(0, 1, (len(index), dims))
    for g, genre in enumerate(genres):
        x[index["genre"].to_numpy() == genre, g] += 3.0
    return x.astype(np.float32), index


def test_the_head_learns_separable_embeddings_and_picks_c_on_validation() -> None:
    genres = ["blues", "jazz", "rock"]
    x_train, train = _separable(30, genres, seed=0)
    x_val, val = _separable(12, genres, seed=1)
    x_test, test = _separable(12, genres, seed=2)
    head = fit_head(x_train, train, x_val, val, genres)
    assert head.genres == tuple(genres) and head.c in (0.01, 0.1, 1.0)
    assert head.val_track_accuracy is not None and head.val_track_accuracy >= 0.9
    probs = head.probabilities(x_test)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (np.array(genres)[probs.argmax(axis=1)] == test["genre"].to_numpy()).mean() >= 0.9
    # The same fit as sklearn's own predict_proba on the standardised embeddings (the head is not reinvented).
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train.astype(np.float64))
    reference = LogisticRegression(C=head.c, max_iter=3000, random_state=0).fit(
        scaler.transform(x_train.astype(np.float64)), train["genre"])
    np.testing.assert_allclose(probs, reference.predict_proba(scaler.transform(x_test.astype(np.float64))),
                               atol=1e-5)


def test_without_validation_tracks_the_default_c_is_used() -> None:
    x_train, train = _separable(20, ["a", "b"], seed=0)
    head = fit_head(x_train, train, np.zeros((0, 6), np.float32), train.iloc[:0], ["a", "b"])
    assert head.c == 0.1 and head.val_track_accuracy is None


def test_two_genres_give_two_probabilities_in_the_genres_order() -> None:
    x_train, train = _separable(20, ["pop", "metal"], seed=0)
    head = fit_head(x_train, train, x_train, train, ["metal", "pop"])
    probs = head.probabilities(x_train)
    assert probs.shape == (len(x_train), 2)
    assert (np.array(["metal", "pop"])[probs.argmax(axis=1)] == train["genre"].to_numpy()).mean() > 0.9


def test_a_genre_without_training_clips_is_refused() -> None:
    x_train, train = _separable(10, ["a", "b"], seed=0)
    with pytest.raises(EmbeddingError, match=r"no training clips of genre\(s\) \['c'\]"):
        fit_head(x_train, train, x_train, train, ["a", "b", "c"])
    with pytest.raises(EmbeddingError, match="no training clips"):
        fit_head(x_train[:0], train.iloc[:0], x_train, train, ["a"])


def test_a_10_s_window_is_three_patches() -> None:
    audio = AudioConfig()
    clips = np.random.default_rng(0).normal(0, 0.1, (2, audio.clip_samples)).astype(np.float32)
    assert patches_per_window(audio) == 3
    assert window_patches(clips, audio.sample_rate).shape == (2, 3, 187, 96)
    assert patches_per_window(AudioConfig(clip_seconds=1.0)) == 1  # shorter than a patch: repeat-padded to one


def test_the_saved_classifier_reproduces_the_head_on_the_stage_embeddings(embedder: MusicnnEmbedder,
                                                                          tmp_path: Path) -> None:
    import keras

    rng = np.random.default_rng(4)
    clips = (rng.normal(0, 0.2, (6, SR * 10)) * 32767).astype(np.int16)
    clips[3:] //= 8  # quieter clips: embeddings that differ
    embeddings = embedder.embed_clips(clips, SR, chunk=4).vectors
    assert embeddings.shape == (6, embedder.dims) and np.isfinite(embeddings).all()
    index = pd.DataFrame({"track_id": list("abcdef"), "genre": ["loud"] * 3 + ["quiet"] * 3})
    head = fit_head(embeddings, index, embeddings, index, ["loud", "quiet"])
    model = build_classifier(embedder, head, patches_per_window(AudioConfig()))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert is_embedding_classifier(loaded)
    expected = head.probabilities(embeddings)
    # From audio: musicnn on each patch, the mean, the head, in one model.
    from_audio = np.asarray(loaded.predict_on_batch(window_patches(clips, SR)))
    np.testing.assert_allclose(from_audio, expected, atol=1e-4)
    # From the stored embeddings: the head alone, as the evaluation runs it.
    np.testing.assert_allclose(np.asarray(head_model(loaded).predict_on_batch(embeddings)), expected, atol=1e-5)
    assert np.ptp(expected[:, 0]) > 1e-3  # not a constant answer


def test_clips_are_embedded_a_chunk_at_a_time_with_the_same_numbers(embedder: MusicnnEmbedder) -> None:
    clips = (np.random.default_rng(5).normal(0, 0.2, (5, SR * 4)) * 32767).astype(np.int16)
    whole, chunked = embedder.embed_clips(clips, SR), embedder.embed_clips(clips, SR, chunk=2)
    np.testing.assert_allclose(chunked.vectors, whole.vectors, rtol=1e-5, atol=1e-6)
    assert chunked.patches_per_clip.tolist() == [1] * 5  # 4 s: one 3 s patch
    none = embedder.embed_clips(clips[:0], SR)
    assert none.vectors.shape == (0, embedder.dims) and none.tags.shape == (0, TINY.n_classes)


def test_a_cnn_is_not_an_embedding_classifier() -> None:
    from genreflow.model.cnn import build_cnn

    assert not is_embedding_classifier(build_cnn(n_classes=3, input_shape=(16, 40, 1)))


def test_head_fit_is_plain_data() -> None:
    head = HeadFit(("a", "b"), np.zeros(2), np.ones(2), np.array([[1.0, 0.0], [0.0, 1.0]]), np.zeros(2), 1.0, None)
    np.testing.assert_allclose(head.probabilities(np.array([[5.0, 0.0]])).argmax(), 0)
