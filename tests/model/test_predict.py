"""Prediction: clip arrays, whole files of any length, folders with broken files."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genreflow.model.audio import pad_tolerance, window_starts
from genreflow.model.cnn import build_seed_cnn
from genreflow.model.params import AudioConfig
from genreflow.model.predict import (
    Classifier,
    FilePrediction,
    PredictError,
    PredictionFailure,
    load_classifier,
    predict_clips,
    predict_file,
    predict_paths,
)

GENRES = ["blues", "jazz", "rock", "pop"]
# 1 s clips at 8 kHz, hop 256: 16 mel bands x 32 frames, the tiny model's input.
AUDIO = AudioConfig(sample_rate=8000, clip_seconds=1.0, n_mels=16, n_fft=256, hop_length=256)


def save_model_dir(directory: Path, genres: list[str] = GENRES) -> Path:
    """An untrained tiny model saved as a finished training run would be."""
    directory.mkdir(parents=True, exist_ok=True)
    model = build_seed_cnn(len(genres), input_shape=(AUDIO.n_mels, AUDIO.frames, 1), seed=0)
    model.save(directory / "model.keras")
    (directory / "labels.json").write_text(json.dumps(genres))
    return directory


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    return load_classifier(save_model_dir(tmp_path_factory.mktemp("models") / "run1"))


def write_tone(path: Path, seconds: float, sr: int = 22050) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    return path


def test_predict_clips_matches_the_model(classifier: Classifier) -> None:
    x = np.random.default_rng(0).uniform(-80, 0, (70, 16, 32)).astype(np.float16)
    probs = predict_clips(classifier.model, x, batch_size=32)
    assert probs.shape == (70, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    direct = classifier.model.predict_on_batch(x[:5, ..., None].astype(np.float32))
    np.testing.assert_allclose(probs[:5], direct, rtol=1e-5)
    assert predict_clips(classifier.model, x[:0]).shape == (0, 4)
    with pytest.raises(PredictError, match="n_mels, frames"):
        predict_clips(classifier.model, x[0])


def test_predict_file_averages_windows(classifier: Classifier, tmp_path: Path) -> None:
    result = predict_file(classifier, write_tone(tmp_path / "tone.wav", 3.5), AUDIO)
    assert result.n_windows == 4  # three whole 1 s windows and the last second, as training cuts a track
    near_whole = predict_file(classifier, write_tone(tmp_path / "near.wav", 3.04), AUDIO)
    assert near_whole.n_windows == 3  # a tail within the tolerance (5 % of a window) is left out, as in training
    assert len(result.genres) == 3
    probs = [p for _, p in result.genres]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    assert {g for g, _ in result.genres} <= set(GENRES)
    short = predict_file(classifier, write_tone(tmp_path / "short.wav", 0.4), AUDIO)
    assert short.n_windows == 1  # zero-padded to one window


def test_predict_file_rejects_other_audio_settings(classifier: Classifier, tmp_path: Path) -> None:
    with pytest.raises(PredictError, match="settings"):
        predict_file(classifier, write_tone(tmp_path / "t.wav", 1.0), AudioConfig())


def test_predict_paths_reports_broken_files_and_goes_on(classifier: Classifier, tmp_path: Path) -> None:
    folder = tmp_path / "music"
    folder.mkdir()
    write_tone(folder / "song.wav", 2.0)
    (folder / "broken.mp3").write_text("this is not audio")
    (folder / "notes.txt").write_text("not an audio extension, skipped")
    results = list(predict_paths(classifier, [folder, tmp_path / "missing.flac"], AUDIO))
    assert [type(r) for r in results] == [PredictionFailure, FilePrediction, PredictionFailure]
    broken, song, missing = results
    assert broken.path == folder / "broken.mp3" and broken.reason
    assert song.path == folder / "song.wav" and song.n_windows == 2
    assert missing.reason == "no such file"


def test_load_classifier_checks_the_directory(tmp_path: Path) -> None:
    with pytest.raises(PredictError, match="not found"):
        load_classifier(tmp_path)
    run = save_model_dir(tmp_path / "run")
    (run / "labels.json").write_text(json.dumps(["only", "two"]))
    with pytest.raises(PredictError, match="must list 4 genres"):
        load_classifier(run)


def test_predict_files_batches_across_files_with_the_same_numbers(classifier: Classifier, tmp_path: Path) -> None:
    from genreflow.model.predict import check_audio_settings, file_windows, predict_files

    lengths = [3.5, 0.4, 2.0, 5.0, 1.0]
    paths = [write_tone(tmp_path / f"t{i}.wav", seconds) for i, seconds in enumerate(lengths)]
    broken = tmp_path / "broken.mp3"
    broken.write_text("not audio")
    order = [paths[0], broken, paths[1], paths[2], tmp_path / "missing.wav", paths[3], paths[4]]
    # batch_size 4: batches cut across files (3 + 1 + 2 ... windows), as a library shard's are
    results = list(predict_files(classifier, order, AUDIO, batch_size=4))
    assert [r.path for r in results] == [str(p) for p in order]
    assert [r.error == "" for r in results] == [True, False, True, True, False, True, True]
    assert results[4].error == "no such file" and results[1].error.startswith("not decodable")
    assert results[1].probs is None and np.isnan(results[1].duration_s) and results[1].mean is None
    for result, path, seconds in zip([results[i] for i in (0, 2, 3, 5, 6)], paths, lengths, strict=True):
        mels, duration = file_windows(path, AUDIO)
        alone = predict_clips(classifier.model, mels)  # the file's windows on their own, as predict_file runs them
        windows = len(window_starts(round(seconds * AUDIO.sample_rate), AUDIO.clip_samples,
                                    tolerance=pad_tolerance(AUDIO.clip_samples)))
        assert windows == max(1, math.ceil(seconds)) and duration == pytest.approx(seconds)  # the last one overlaps
        assert result.probs.shape == (windows, len(GENRES))
        np.testing.assert_allclose(result.probs, alone, atol=1e-6)
        assert result.duration_s == pytest.approx(seconds)
        top = predict_file(classifier, path, AUDIO).genres
        assert [g for g, _ in top] == [GENRES[i] for i in np.argsort(-result.mean, kind="stable")[:3]]
    again = list(predict_files(classifier, order, AUDIO, batch_size=4))
    for a, b in zip(results, again, strict=True):  # the same list gives the same numbers, bit for bit
        assert (a.probs is None and b.probs is None) or np.array_equal(a.probs, b.probs)
    with pytest.raises(PredictError, match="settings"):
        check_audio_settings(classifier, AudioConfig())


def test_model_checksum_changes_with_any_model_file(tmp_path: Path) -> None:
    from genreflow.model.files import model_audio, model_checksum

    run = save_model_dir(tmp_path / "run")
    first = model_checksum(run)
    assert model_checksum(run) == first and len(first) == 32
    (run / "labels.json").write_text(json.dumps(list(reversed(GENRES))))
    relabelled = model_checksum(run)
    assert relabelled != first
    assert model_audio(run) == AudioConfig()  # no audio.json: the defaults
    (run / "audio.json").write_text(AUDIO.model_dump_json())
    assert model_checksum(run) != relabelled and model_audio(run) == AUDIO


def test_a_cnn_with_a_novelty_reference_gives_each_file_its_novelty(tmp_path: Path) -> None:
    """Issue 23: the CNN's last hidden layer, pooled over a file's windows, against its training tracks'. The quick
    path, the library path and a hand computation agree; the probabilities are the same as without it."""
    from genreflow.model.cnn import cnn_representation_model
    from genreflow.model.files import NOVELTY_FILE
    from genreflow.model.open_set import fit_novelty
    from genreflow.model.predict import file_windows, predict_files

    folder = save_model_dir(tmp_path / "run-novel")
    plain = load_classifier(shutil.copytree(folder, tmp_path / "run-plain"))  # the same model, no reference
    tones = [write_tone(tmp_path / f"train{i}.wav", 2.0 + i / 2) for i in range(6)]
    hidden = cnn_representation_model(plain.model)

    def pooled(path: Path) -> np.ndarray:
        mels, _ = file_windows(path, AUDIO)
        return np.asarray(hidden.predict_on_batch(mels[..., None].astype(np.float32))[0]).mean(axis=0)

    fit_novelty(np.stack([pooled(p) for p in tones]), np.zeros((0, 0))).save(folder / NOVELTY_FILE)
    classifier = load_classifier(folder)
    assert plain.novelty_reference is None and np.isnan(predict_file(plain, tones[0], AUDIO).novelty)
    noise = tmp_path / "noise.wav"
    sf.write(noise, np.random.default_rng(0).uniform(-0.9, 0.9, 3 * 22050).astype(np.float32), 22050)
    quick = {p: predict_file(classifier, p, AUDIO) for p in [tones[1], noise]}
    library = {r.path: r for r in predict_files(classifier, [tones[1], noise], AUDIO, batch_size=4)}
    reference = classifier.novelty_reference
    for path, result in quick.items():
        by_hand = float(reference.novelty(pooled(path)[None])[0])
        assert result.novelty == pytest.approx(by_hand, rel=1e-4)
        assert library[str(path)].novelty == pytest.approx(by_hand, rel=1e-4)
        assert result.genres == predict_file(plain, path, AUDIO).genres  # probabilities as without the reference
    assert quick[tones[1]].novelty <= 1.0 < quick[noise].novelty  # a training tone is inside, noise far beyond
