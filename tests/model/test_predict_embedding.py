"""Prediction with an embedding classifier (model/embedding.py): whole files, many files, settings it refuses.

The model folder is what the embedding family's training leaves: one
model.keras (a tiny musicnn with random weights, tests/model/musicnn_tiny.py,
under a logistic-regression head fitted on its embeddings of three kinds of
synthetic music), labels.json, audio.json and embedding.json. Its windows are
6 s at 22,050 Hz: two musicnn patches each. Every expectation is the Keras
model run directly on musicnn's patches of windows cut here by the rule the
predictions promise, independently of model/predict.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from genreflow.model.embedding import build_classifier, fit_head, patches_per_window, window_patches
from genreflow.model.files import AUDIO_FILE, EMBEDDING_FILE, LABELS_FILE, MODEL_FILE
from genreflow.model.musicnn import MusicnnEmbedder
from genreflow.model.params import AudioConfig
from genreflow.model.predict import (
    EMBEDDING_BATCH,
    Classifier,
    PredictError,
    check_audio_settings,
    file_windows,
    load_classifier,
    predict_clips,
    predict_file,
    predict_files,
)
from tests.model.musicnn_tiny import TINY, save_tf1_checkpoint, tiny_variables

SR = 22_050
AUDIO = AudioConfig(sample_rate=SR, clip_seconds=6.0)  # 6 s windows: two back-to-back 3 s musicnn patches
GENRES = ["bass", "treble", "noise"]
KIND_TONES = {"bass": (55.0, 82.5, 110.0), "treble": (1760.0, 2637.0, 3520.0)}


def music(seconds: float, kind: str, seed: int = 0, sr: int = SR) -> np.ndarray:
    """Mono float32 audio of one kind: a low chord, a high chord (both pulsing) or noise, with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    if kind in KIND_TONES:
        pulse = 1.0 + 0.5 * np.sin(2 * np.pi * (1.5 + seed / 4) * t)
        y = pulse * sum(np.sin(2 * np.pi * f * (1 + seed / 50) * t) for f in KIND_TONES[kind])
    else:
        y = rng.standard_normal(len(t))
    y = y + 0.02 * np.abs(y).max() * rng.standard_normal(len(t))
    return (rng.uniform(0.3, 0.8) * y / np.abs(y).max()).astype(np.float32)


def write_music(path: Path, seconds: float, kind: str, seed: int = 0, sr: int = SR) -> Path:
    sf.write(path, music(seconds, kind, seed, sr), sr)
    return path


def save_embedding_model_dir(folder: Path, audio: AudioConfig = AUDIO) -> Path:
    """An embedding model folder as training leaves it, its head fitted on two clips of each kind."""
    prefix = save_tf1_checkpoint(tiny_variables(TINY, seed=3), folder.parent / f"{folder.name}-musicnn" / "variables")
    embedder = MusicnnEmbedder(prefix, labels=[f"tag{i}" for i in range(TINY.n_classes)], arch=TINY)
    kinds = [kind for kind in GENRES for _ in range(2)]
    clips = np.stack([music(audio.clip_seconds, kind, seed, audio.sample_rate) for seed, kind in enumerate(kinds)])
    index = pd.DataFrame({"track_id": [f"t{i}" for i in range(len(kinds))], "genre": kinds})
    embeddings = embedder.embed_clips(clips, audio.sample_rate).vectors
    head = fit_head(embeddings, index, embeddings, index, GENRES)
    folder.mkdir(parents=True)
    build_classifier(embedder, head, patches_per_window(audio)).save(folder / MODEL_FILE)
    (folder / LABELS_FILE).write_text(json.dumps(GENRES))
    (folder / AUDIO_FILE).write_text(audio.model_dump_json())
    weights = hashlib.sha256(Path(f"{prefix}.data-00000-of-00001").read_bytes()).hexdigest()
    (folder / EMBEDDING_FILE).write_text(json.dumps({"embedder": "MSD_musicnn", "feature": embedder.feature,
                                                     "weights_sha256": weights, "C": head.c}))
    return folder


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    return load_classifier(save_embedding_model_dir(tmp_path_factory.mktemp("models") / "run-embedding"))


def reference_windows(path: Path, audio: AudioConfig = AUDIO) -> np.ndarray:
    """The file's windows by the documented rule, read with soundfile: whole windows from the start, one more
    flush with the end when more than 5 % of a window is left, a file shorter than a window zero-padded."""
    y, sr = sf.read(path, dtype="float32")
    assert sr == audio.sample_rate and y.ndim == 1
    n, tolerance = audio.clip_samples, int(0.05 * audio.clip_samples)
    starts = list(range(0, len(y) - n + 1, n)) or [0]
    if len(y) >= n and len(y) - (starts[-1] + n) > tolerance:
        starts.append(len(y) - n)
    return np.stack([np.pad(y[i : i + n], (0, n - len(y[i : i + n]))) for i in starts])


def model_probs(classifier: Classifier, path: Path) -> np.ndarray:
    """The Keras model itself on musicnn's patches of the file's reference windows: [shape=(windows, genres)]."""
    return np.asarray(classifier.model.predict_on_batch(window_patches(reference_windows(path), SR)))


def test_the_classifier_knows_its_family_and_input(classifier: Classifier) -> None:
    assert classifier.is_embedding and classifier.patches_per_window == 2 == patches_per_window(AUDIO)
    assert classifier.genres == GENRES
    with pytest.raises(PredictError, match="musicnn patches, not log-mel"):
        _ = classifier.clip_shape


def test_predict_file_is_the_model_on_musicnn_patches_of_its_windows(classifier: Classifier, tmp_path: Path) -> None:
    cases = {"bass": (13.0, 3), "treble": (6.0, 1), "noise": (9.0, 2)}  # 13 s: two windows and one flush with the end
    means = []
    for kind, (seconds, windows) in cases.items():
        path = write_music(tmp_path / f"{kind}.wav", seconds, kind, seed=7)
        expected = model_probs(classifier, path)
        assert expected.shape == (windows, len(GENRES))
        x, duration = file_windows(path, AUDIO, classifier)
        assert x.shape == (windows, 2, 187, 96) and x.dtype == np.float32 and duration == pytest.approx(seconds)
        result = predict_file(classifier, path, AUDIO)
        mean = expected.mean(axis=0)
        order = np.argsort(-mean, kind="stable")
        assert result.n_windows == windows and result.path == path
        assert [g for g, _ in result.genres] == [GENRES[i] for i in order]
        np.testing.assert_allclose([p for _, p in result.genres], mean[order], atol=1e-5)
        means.append(mean)
    assert np.ptp(np.array(means), axis=0).max() > 0.05  # the files move the model: equal numbers prove something
    assert [GENRES[int(np.argmax(m))] for m in means] == list(cases)  # the head tells the kinds apart


def test_a_file_shorter_than_a_window_is_zero_padded_to_one(classifier: Classifier, tmp_path: Path) -> None:
    path = write_music(tmp_path / "short.wav", 2.5, "treble", seed=3)
    y, _ = sf.read(path, dtype="float32")
    padded = np.pad(y, (0, AUDIO.clip_samples - len(y)))[None, :]
    x, duration = file_windows(path, AUDIO, classifier)
    assert duration == pytest.approx(2.5)
    np.testing.assert_allclose(x, window_patches(padded, SR), atol=1e-6)  # the zeros are heard, not repeated audio
    result = predict_file(classifier, path, AUDIO)
    expected = np.asarray(classifier.model.predict_on_batch(window_patches(padded, SR)))[0]
    assert result.n_windows == 1
    np.testing.assert_allclose(dict(result.genres)[GENRES[int(np.argmax(expected))]], expected.max(), atol=1e-5)


def test_predict_files_batches_windows_across_files_with_the_models_numbers(classifier: Classifier,
                                                                             tmp_path: Path) -> None:
    lengths = {"bass": 13.0, "noise": 2.5, "treble": 6.5}
    paths = [write_music(tmp_path / f"{kind}.wav", seconds, kind, seed=11) for kind, seconds in lengths.items()]
    broken = tmp_path / "broken.mp3"
    broken.write_text("not audio")
    order = [paths[0], broken, paths[1], tmp_path / "missing.wav", paths[2]]
    results = list(predict_files(classifier, order, AUDIO, batch_size=2))  # batches cut across files
    assert [r.path for r in results] == [str(p) for p in order]
    assert [r.error == "" for r in results] == [True, False, True, False, True]
    assert results[3].error == "no such file" and results[1].probs is None
    for result, path, seconds in zip([results[i] for i in (0, 2, 4)], paths, lengths.values(), strict=True):
        expected = model_probs(classifier, path)
        assert result.probs.shape == expected.shape and result.duration_s == pytest.approx(seconds)
        np.testing.assert_allclose(result.probs, expected, atol=1e-5)
        top = predict_file(classifier, path, AUDIO).genres
        assert [g for g, _ in top] == [GENRES[i] for i in np.argsort(-result.mean, kind="stable")[:3]]
    assert [len(results[i].probs) for i in (0, 2, 4)] == [3, 1, 2]  # 6.5 s: one window and one flush with the end


def test_predict_clips_runs_at_most_embedding_batch_windows_at_once(classifier: Classifier,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).uniform(0.0, 3.0, (EMBEDDING_BATCH + 5, 2, 187, 96)).astype(np.float32)
    direct = np.concatenate([np.asarray(classifier.model.predict_on_batch(x[i : i + 4])) for i in range(0, len(x), 4)])
    sizes: list[int] = []
    run = classifier.model.predict_on_batch

    def spy(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        return run(batch)

    monkeypatch.setattr(classifier.model, "predict_on_batch", spy)
    probs = predict_clips(classifier.model, x, batch_size=64)
    assert sizes == [EMBEDDING_BATCH, 5]  # 64 windows of 10 s would be 192 patches: gigabytes of activations
    assert probs.shape == (len(x), len(GENRES)) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, direct, atol=1e-5)
    with pytest.raises(PredictError, match=r"musicnn patches of shape \(n, 2, 187, 96\), got shape \(21, 187, 96\)"):
        predict_clips(classifier.model, x[:, 0])


def test_settings_that_give_another_patch_count_are_refused(classifier: Classifier, tmp_path: Path) -> None:
    path = write_music(tmp_path / "song.wav", 7.0, "bass")
    message = r"the audio settings give 10 s windows of 3 musicnn patch\(es\), the model takes 2 patch\(es\) a window"
    with pytest.raises(PredictError, match=message):
        check_audio_settings(classifier, AudioConfig(sample_rate=SR))
    with pytest.raises(PredictError, match="give 3 s windows of 1 musicnn patch"):
        predict_file(classifier, path, AudioConfig(sample_rate=SR, clip_seconds=3.0))
    with pytest.raises(PredictError, match="use the settings the model was trained with"):
        next(predict_files(classifier, [path], AudioConfig(sample_rate=16_000, clip_seconds=12.0)))
    # The CNN's log-mel settings mean nothing to musicnn's front end: other n_mels or hop are not refused.
    check_audio_settings(classifier, AUDIO.model_copy(update={"n_mels": 64, "hop_length": 256}))
    check_audio_settings(classifier, AudioConfig(sample_rate=16_000, clip_seconds=6.0))
