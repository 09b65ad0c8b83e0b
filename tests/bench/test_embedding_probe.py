"""bench.embedding_probe: its cross-validation tells separable embeddings from noise, and it embeds every clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genreflow.bench import embedding_probe
from genreflow.model.musicnn import FEATURES, MusicnnEmbedder
from tests.model.musicnn_tiny import TINY, save_tf1_checkpoint, tiny_variables


def _clips(genres: np.ndarray, clips_per_track: int) -> np.ndarray:
    return np.repeat(np.arange(len(genres)), clips_per_track)


def test_cross_validation_scores_separable_embeddings_high_and_noise_near_chance() -> None:
    rng = np.random.default_rng(0)
    genres = np.repeat(np.array(["a", "b", "c", "d"]), 15)
    clip_track = _clips(genres, 2)
    centres = {g: rng.normal(0, 5, 8) for g in "abcd"}
    separable = np.stack([centres[genres[t]] + rng.normal(0, 1, 8) for t in clip_track])
    assert embedding_probe.cross_validate(separable, clip_track, genres) == [1.0] * 5
    noise = rng.normal(0, 1, (len(clip_track), 8))
    assert np.mean(embedding_probe.cross_validate(noise, clip_track, genres)) < 0.5  # chance is 0.25


def test_embed_collection_gives_one_row_per_clip_for_each_model_and_layer(tmp_path: Path) -> None:
    sr = 22_050
    rng = np.random.default_rng(1)
    for genre, seconds in (("rock", [21.0, 12.0]), ("jazz", [5.0])):
        (tmp_path / genre).mkdir()
        for i, length in enumerate(seconds):
            sf.write(tmp_path / genre / f"{genre}{i}.wav", rng.normal(0, 0.1, int(length * sr)), sr)
    prefix = save_tf1_checkpoint(tiny_variables(TINY), tmp_path / "variables")
    embedder = MusicnnEmbedder(prefix, [str(i) for i in range(TINY.n_classes)], arch=TINY)
    data = embedding_probe.embed_collection(tmp_path, {"tiny": embedder})
    assert data["tracks"] == ["jazz0", "rock0", "rock1"]
    # 5 s is padded to one clip; 21 s gives two whole clips and a third flush with its end, 12 s two
    assert data["clip_track"].tolist() == [0, 1, 1, 1, 2, 2]
    assert set(data["features"]) == {f"tiny:{f}" for f in FEATURES}
    assert data["features"]["tiny:penultimate"].shape == (6, TINY.backend_units)
    assert data["cpu_s_per_clip"] > 0



def test_the_dense_head_learns_separable_embeddings_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedding_probe, "DENSE_EPOCHS", 30)  # separable data: a few epochs do; keeps the test quick
    rng = np.random.default_rng(0)
    genres = np.repeat(np.array(["a", "b", "c"]), 10)
    clip_track = _clips(genres, 2)
    centres = {g: rng.normal(0, 5, 8) for g in "abc"}
    separable = np.stack([centres[genres[t]] + rng.normal(0, 1, 8) for t in clip_track])
    assert np.mean(embedding_probe.cross_validate(separable, clip_track, genres, folds=3, head="dense")) >= 0.9
