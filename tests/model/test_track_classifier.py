"""An embedding classifier with a track-level head (issue 22): saved, loaded in safe mode, predicting and exported.

For each head kind the model folder is what the embedding family's training
leaves: a tiny musicnn with random weights (tests/model/musicnn_tiny.py) under
a track-level head (model/track_head.py) fitted on the mean embeddings of
synthetic tracks of three kinds, 6 s windows of two musicnn patches. Every
expectation is computed apart from model/predict.py: the embedder's own
numpy-side embeddings of a file's windows, their mean, the head's arrays.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genreflow.model.embedding import (
    build_track_classifier,
    describe_track_head,
    fit_track_level_head,
    is_track_classifier,
    patches_per_window,
)
from genreflow.model.export import FORMATS, RUNNERS, export_model
from genreflow.model.files import AUDIO_FILE, EMBEDDING_FILE, LABELS_FILE, MODEL_FILE
from genreflow.model.musicnn import MusicnnEmbedder
from genreflow.model.predict import Classifier, file_windows, load_classifier, predict_file, predict_files
from genreflow.model.track_head import HEAD_KINDS, TrackHead
from tests.model.musicnn_tiny import TINY, save_tf1_checkpoint, tiny_variables
from tests.model.test_predict_embedding import AUDIO, GENRES, SR, music, reference_windows, write_music

TOLERANCE = 1e-4


def save_track_model_dir(folder: Path, kind: str) -> tuple[Path, MusicnnEmbedder, TrackHead]:
    """A track-level embedding model folder: its head fitted on 5 tracks a kind, two windows a track."""
    prefix = save_tf1_checkpoint(tiny_variables(TINY, seed=3), folder.parent / f"{folder.name}-musicnn" / "variables")
    embedder = MusicnnEmbedder(prefix, labels=[f"tag{i}" for i in range(TINY.n_classes)], arch=TINY)
    kinds = [g for g in GENRES for _ in range(5)]
    clips = np.concatenate([music(2 * AUDIO.clip_seconds, g, seed, SR).reshape(2, -1) for seed, g in enumerate(kinds)])
    index = pd.DataFrame({"track_id": np.repeat([f"t{i:02d}" for i in range(len(kinds))], 2),
                          "genre": np.repeat(kinds, 2)})
    head = fit_track_level_head(embedder.embed_clips(clips, SR).vectors, index, GENRES, kinds=[kind])
    folder.mkdir(parents=True)
    build_track_classifier(embedder, head, patches_per_window(AUDIO)).save(folder / MODEL_FILE)
    (folder / LABELS_FILE).write_text(json.dumps(GENRES))
    (folder / AUDIO_FILE).write_text(AUDIO.model_dump_json())
    (folder / EMBEDDING_FILE).write_text(json.dumps({"embedder": "MSD_musicnn", "feature": embedder.feature,
                                                     **describe_track_head(head)}))
    return folder, embedder, head


@pytest.fixture(scope="module", params=HEAD_KINDS)
def fitted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Classifier, MusicnnEmbedder, TrackHead]:
    folder, embedder, head = save_track_model_dir(tmp_path_factory.mktemp("models") / f"emb-{request.param}",
                                                  request.param)
    return load_classifier(folder), embedder, head


def expected_file_probs(embedder: MusicnnEmbedder, head: TrackHead, path: Path) -> np.ndarray:
    """The file's decision computed apart: the embedder's embedding of each window, their mean, the head's arrays."""
    vectors = embedder.embed_clips(reference_windows(path), SR).vectors
    return head.probabilities(vectors.mean(axis=0, keepdims=True))[0]


def test_the_saved_model_is_a_track_level_embedding_classifier(fitted: tuple) -> None:
    classifier, _, head = fitted
    assert classifier.is_embedding and classifier.is_track_level and is_track_classifier(classifier.model)
    assert classifier.patches_per_window == 2 and classifier.genres == GENRES
    assert head.kind in HEAD_KINDS and head.temperature > 0 and head.cv["folds"] == 4
    described = json.loads((classifier.model_dir / EMBEDDING_FILE).read_text())
    assert described["head"] == head.kind and described["head_level"] == "track"


def test_a_file_is_decided_by_the_head_on_its_windows_mean_embedding(fitted: tuple, tmp_path: Path) -> None:
    classifier, embedder, head = fitted
    cases = {"bass": (13.0, 3), "treble": (6.0, 1), "noise": (9.0, 2)}
    for kind, (seconds, windows) in cases.items():
        path = write_music(tmp_path / f"{kind}.wav", seconds, kind, seed=21)
        expected = expected_file_probs(embedder, head, path)
        result = predict_file(classifier, path, AUDIO)
        got = dict(result.genres)  # all three genres; the order of two near-zero ones is rounding
        assert result.n_windows == windows and result.genres[0][0] == GENRES[int(np.argmax(expected))] == kind
        np.testing.assert_allclose([got[g] for g in GENRES], expected, atol=TOLERANCE)


def test_the_library_path_decides_files_as_predict_file_does(fitted: tuple, tmp_path: Path) -> None:
    classifier, embedder, head = fitted
    lengths = {"bass": 13.0, "noise": 2.5, "treble": 6.5}
    paths = [write_music(tmp_path / f"{kind}.wav", seconds, kind, seed=4) for kind, seconds in lengths.items()]
    results = list(predict_files(classifier, [paths[0], tmp_path / "missing.wav", *paths[1:]], AUDIO, batch_size=2))
    assert results[1].error == "no such file" and results[1].mean is None
    for result, path in zip([results[0], *results[2:]], paths, strict=True):
        np.testing.assert_allclose(result.mean, expected_file_probs(embedder, head, path), atol=TOLERANCE)
        single = np.asarray(classifier.model.predict_on_batch(file_windows(path, AUDIO, classifier)[0]))
        np.testing.assert_allclose(result.probs, single, atol=TOLERANCE)  # each window: a one-window file's decision
    assert [len(r.probs) for r in (results[0], *results[2:])] == [3, 1, 2]


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_export_is_the_file_graph_and_round_trips(fitted: tuple, fmt: str, tmp_path: Path) -> None:
    if fmt == "onnx":
        pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx: pip install 'genreflow[export]'")
        pytest.importorskip("onnxruntime", reason="running an ONNX export needs onnxruntime")
    classifier, embedder, head = fitted
    result = export_model(classifier, AUDIO, fmt, tmp_path / "out")
    info = json.loads(result.info_path.read_text())
    assert info["model_family"] == "embedding" and "file_graph" in info and info["file_graph"]["head"]["head"] == \
        head.kind
    assert info["verified"]["max_abs_diff"] <= TOLERANCE
    song = write_music(tmp_path / "song.wav", 14.5, "bass", seed=9)  # three windows
    got = RUNNERS[fmt](result.model_path, file_windows(song, AUDIO, classifier)[0])
    assert got.shape == (1, len(GENRES))
    np.testing.assert_allclose(got[0], expected_file_probs(embedder, head, song), atol=TOLERANCE)
