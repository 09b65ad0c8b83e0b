"""Export a trained model for use without genreflow: a TF SavedModel, a TFLite flatbuffer or an ONNX graph.

Each export is the model file (or folder) and ``genreflow-<format>.json``: the
labels, the audio settings, the exact log-mel recipe, the normalisation and
how window probabilities become a file's. The per-band normalisation is a
layer of the model (model/cnn.py ``band_norm``), so it is inside every exported
graph: a consumer feeds raw log-mel dB, as genreflow does.

Every graph of a CNN takes ``log_mel`` float32 [shape=(batch, n_mels, frames, 1)]
and gives ``probabilities`` float32 [shape=(batch, n_genres)], frames fixed to
one window of the training settings (431 for 10 s at 22,050 Hz, hop 512).

An embedding classifier (model/embedding.py) is exported the same way, as the
one Keras model it is: its graph takes ``musicnn_patches`` float32
[shape=(batch, P, 187, 96)], musicnn's log-compressed mel patches of one
window (P = 3 for 10 s windows), and gives the same ``probabilities``. musicnn, the mean over the
window's patches and the standardisation of that embedding (layer
``embedding_norm``) are all inside the graph; the JSON spells out musicnn's
front end (16 kHz, mel power, float16, log10(10000 x + 1), 187-frame patches)
instead of the CNN's log-mel dB. The converters unroll the TimeDistributed
over the P patches; the weights stay one copy (a full-size export is about
1.9 MB in each format).

An embedding classifier with a track-level head (issue 22) is exported as
the file-level graph a file's prediction is: its input's batch axis is the
windows of ONE file (any number), the graph pools their embeddings (the mean)
and applies the head and its temperature, and its output is the file's one
row of probabilities [shape=(1, n_genres)], so a consumer decides a file as
genreflow's evaluation decides a track. That graph is a function of the
model's own layers (model/embedding.py ``window_embedding_model`` and
``track_head_model``), so ONNX comes from tf2onnx's ``from_function``; the
head holds its constants in variables, which tf2onnx freezes.

Converters: Keras' own ExportArchive (SavedModel), TensorFlow's TFLite
converter (from that SavedModel), and tf2onnx's ``from_keras``. Keras 3.15's
``model.export(format="onnx")`` (tf2onnx's ``from_function`` underneath)
turned the normalisation constants into two extra graph inputs that a
consumer would have to feed, so it is not used. Each export is checked
before it is kept: its own runtime (tf.saved_model, tf.lite.Interpreter,
onnxruntime) must reproduce the Keras model's probabilities on test windows
within VERIFY_TOLERANCE.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from genreflow.model.audio import pad_tolerance
from genreflow.model.embedding import INPUT_NAME as PATCHES_NAME
from genreflow.model.embedding import NORM_LAYER as EMBEDDING_NORM_LAYER
from genreflow.model.embedding import patches_per_window, window_patches
from genreflow.model.files import EMBEDDING_FILE
from genreflow.model.mel import AMIN, TOP_DB
from genreflow.model.musicnn import FLOAT16_MAX, HOP_LENGTH, LOG_SCALE, N_FFT, N_MELS, PATCH_FRAMES, SAMPLE_RATE
from genreflow.model.params import AudioConfig
from genreflow.model.predict import Classifier, file_probabilities, predict_clips, predict_windows
from genreflow.model.quiet_tf import keras, tf
from genreflow.storage.errors import GenreflowError

ExportFormat = Literal["savedmodel", "tflite", "onnx"]
FORMATS: tuple[str, ...] = ("savedmodel", "tflite", "onnx")
MODEL_NAMES: dict[str, str] = {"savedmodel": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
INPUT_NAME, OUTPUT_NAME = "log_mel", "probabilities"  # the CNN's; an embedding classifier's input is PATCHES_NAME
ONNX_OPSET = 17
VERIFY_TOLERANCE = 1e-4  # largest difference from the Keras model's probabilities an export may have
VERIFY_WINDOWS = 8
VERIFY_SEED = 0
NORM_LAYER = "band_norm"  # model/cnn.py's Normalization layer


class ExportError(GenreflowError, RuntimeError):
    """An export that cannot be made here, or that does not reproduce the model."""


@dataclass(frozen=True)
class ExportResult:
    """Where an export went and how closely its runtime matched the Keras model."""

    model_path: Path
    info_path: Path
    max_abs_diff: float | None


def info_name(fmt: str) -> str:
    return f"genreflow-{fmt}.json"


def input_spec(audio: AudioConfig) -> Any:
    """The CNN's exported input: any batch of whole windows of the training settings."""
    return tf.TensorSpec((None, audio.n_mels, audio.frames, 1), tf.float32, name=INPUT_NAME)


def model_input_spec(classifier: Classifier, audio: AudioConfig) -> Any:
    """The exported graph's input: the CNN's log_mel (:func:`input_spec`) or an embedding classifier's patches."""
    if classifier.is_embedding:
        return tf.TensorSpec((None, classifier.patches_per_window, PATCH_FRAMES, N_MELS), tf.float32,
                             name=PATCHES_NAME)
    return input_spec(audio)


# --------------------------------------------------------------------------- the three formats


GraphCall = Callable[[Any], Any]  # the graph's input tensor to its probabilities, where it is not model(x)


def file_graph(classifier: Classifier) -> GraphCall | None:
    """A track-level head's exported graph: one file's windows to its probabilities (1, n_genres); None for a
    model exported as it is (a window to its probabilities)."""
    if not classifier.is_track_level:
        return None
    embed, head = classifier.embedding_model, classifier.head_model

    def call(x: Any) -> Any:
        return head(tf.reduce_mean(embed(x, training=False), axis=0, keepdims=True), training=False)

    return call


def write_savedmodel(model: keras.Model, spec: Any, target: Path, call: GraphCall | None = None) -> None:
    """A SavedModel whose ``serve`` (and ``serving_default``) signature maps ``spec`` (its name the input's)
    to probabilities: ``call(x)`` where given, else ``model(x)``."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    graph = call or (lambda x: model(x, training=False))
    archive.add_endpoint(name="serve", fn=lambda x: {OUTPUT_NAME: graph(x)}, input_signature=[spec])
    archive.write_out(str(target), verbose=False)


def write_tflite(model: keras.Model, spec: Any, target: Path, call: GraphCall | None = None) -> None:
    """A TFLite flatbuffer converted from the SavedModel, keeping its ``serving_default`` signature."""
    with tempfile.TemporaryDirectory(prefix="genreflow-export-") as scratch:
        write_savedmodel(model, spec, Path(scratch) / "saved_model", call)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(scratch) / "saved_model"))
        target.write_bytes(converter.convert())


def write_onnx(model: keras.Model, spec: Any, target: Path, call: GraphCall | None = None) -> None:
    """An ONNX graph by tf2onnx (opset ONNX_OPSET), its input ``spec``'s name and its output renamed probabilities."""
    try:
        import tf2onnx
    except ImportError:
        raise ExportError("ONNX export needs tf2onnx and onnx: pip install 'genreflow[export]'") from None
    if call is None:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=[spec], opset=ONNX_OPSET)
    else:
        proto, _ = tf2onnx.convert.from_function(tf.function(call, input_signature=[spec]), input_signature=[spec],
                                                 opset=ONNX_OPSET)
    if len(proto.graph.output) != 1 or len(proto.graph.input) != 1:
        raise ExportError(f"tf2onnx made a graph of {len(proto.graph.input)} inputs and {len(proto.graph.output)} "
                          "outputs; the model must have one of each")
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
    proto.graph.output[0].name = OUTPUT_NAME
    target.write_bytes(proto.SerializeToString())


WRITERS: dict[str, Callable[[keras.Model, Any, Path, GraphCall | None], None]] = {
    "savedmodel": write_savedmodel, "tflite": write_tflite, "onnx": write_onnx}


# --------------------------------------------------------------------------- the runtimes


def run_savedmodel(path: Path, windows: np.ndarray) -> np.ndarray:
    """Probabilities of windows (the graph's input: [shape=(n, n_mels, frames, 1)] log-mel or
    [shape=(n, P, 187, 96)] musicnn patches) by TensorFlow's SavedModel loader."""
    loaded = tf.saved_model.load(str(path))
    return np.asarray(loaded.serve(tf.constant(windows, tf.float32))[OUTPUT_NAME])


def run_tflite(path: Path, windows: np.ndarray) -> np.ndarray:
    """Probabilities of windows by the TFLite interpreter (tf.lite.Interpreter; LiteRT's has the same API)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TF 2.21 asks to move to ai_edge_litert; it still works
        interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("serving_default")
    (name,) = runner.get_input_details()  # log_mel or musicnn_patches
    return np.asarray(runner(**{name: windows.astype(np.float32)})[OUTPUT_NAME])


def run_onnx(path: Path, windows: np.ndarray) -> np.ndarray:
    """Probabilities of windows by onnxruntime on the CPU."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("checking an ONNX export needs onnxruntime: pip install 'genreflow[export]'") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()  # log_mel or musicnn_patches
    return np.asarray(session.run([OUTPUT_NAME], {graph_input.name: windows.astype(np.float32)})[0])


RUNNERS: dict[str, Callable[[Path, np.ndarray], np.ndarray]] = {
    "savedmodel": run_savedmodel, "tflite": run_tflite, "onnx": run_onnx}
RUNTIMES: dict[str, tuple[str, str]] = {  # format -> (what runs it, the package whose version to record)
    "savedmodel": ("tf.saved_model", "tensorflow"), "tflite": ("tf.lite.Interpreter", "tensorflow"),
    "onnx": ("onnxruntime", "onnxruntime")}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- description and export


def normalisation(model: keras.Model) -> dict[str, Any]:
    """The per-band mean and std the model applies to its input itself (its band_norm layer)."""
    try:
        layer = model.get_layer(NORM_LAYER)
    except ValueError:
        return {"in_graph": False, "note": "no band_norm layer: the model takes its input as it is"}
    mean = np.asarray(layer.mean, dtype=np.float64).ravel()
    std = np.sqrt(np.asarray(layer.variance, dtype=np.float64).ravel())
    return {"in_graph": True, "layer": NORM_LAYER, "axis": "mel band",
            "band_mean_db": [round(float(v), 6) for v in mean], "band_std_db": [round(float(v), 6) for v in std],
            "note": "applied inside the exported graph: feed raw log-mel dB, do not normalise again"}


def windows_rule(audio: AudioConfig) -> str:
    """How a file is cut into windows, in words (model/audio.py window_starts, pad_short as prediction does)."""
    return (f"windows of {audio.clip_samples} samples ({audio.clip_seconds:g} s) one after the other from the "
            "start; when more than tolerance_samples are left after the last whole one, one more window ending "
            "with the file (it overlaps the one before); a file shorter than one window is zero-padded to one")


def describe(classifier: Classifier, audio: AudioConfig, fmt: str, model_file: str) -> dict[str, Any]:
    """The JSON beside an export: everything a consumer needs to go from 22,050 Hz mono audio to genres."""
    if classifier.is_embedding:
        return describe_embedding(classifier, audio, fmt, model_file)
    sr = audio.sample_rate
    return {
        "format": fmt,
        "model_file": model_file,
        "genreflow_run": classifier.model_dir.name,
        "model_family": "cnn",
        "labels": list(classifier.genres),
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, audio.n_mels, audio.frames, 1],
                  "what": "log-mel power of one window, dB relative to the window's own peak, floored at "
                          f"-{TOP_DB:g} dB (values in [-{TOP_DB:g}, 0]); layout (batch, mel band, frame, 1)"},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [None, len(classifier.genres)],
                   "what": "softmax probability of each genre, in the order of labels"},
        "audio": audio.model_dump(mode="json"),
        "features": {
            "decode": f"mono (mean of the channels), resampled to {sr} Hz (soxr HQ)",
            "windows": windows_rule(audio),
            "tolerance_samples": pad_tolerance(audio.clip_samples),
            "mel": {"sr": sr, "n_fft": audio.n_fft, "hop_length": audio.hop_length, "n_mels": audio.n_mels,
                    "window": "hann", "center": True, "pad_mode": "constant", "power": 2.0, "htk": False,
                    "norm": "slaney", "fmin": 0.0, "fmax": sr / 2},
            "db": {"ref": "max of the window's mel power", "amin": AMIN, "top_db": TOP_DB},
            "librosa": (f"librosa.power_to_db(librosa.feature.melspectrogram(y=window, sr={sr}, "
                        f"n_fft={audio.n_fft}, hop_length={audio.hop_length}, n_mels={audio.n_mels}), "
                        f"ref=np.max, amin={AMIN:g}, top_db={TOP_DB:g})"),
        },
        "normalisation": normalisation(classifier.model),
        "file_probabilities": "the mean of the file's window probabilities; its top genre is genreflow's prediction",
    }


def describe_embedding(classifier: Classifier, audio: AudioConfig, fmt: str, model_file: str) -> dict[str, Any]:
    """:func:`describe` of an embedding classifier: musicnn's front end (model/musicnn.py), not the CNN's log-mel."""
    sr, count = audio.sample_rate, classifier.patches_per_window
    embedding_file = classifier.model_dir / EMBEDDING_FILE
    embedding = json.loads(embedding_file.read_text()) if embedding_file.is_file() else {}
    norm = classifier.model.get_layer(EMBEDDING_NORM_LAYER)
    track = classifier.is_track_level
    dims = int(classifier.head_model.input_shape[-1]) if track else int(np.asarray(norm.mean).size)
    resample = (f"librosa.resample(window, orig_sr={sr}, target_sr={SAMPLE_RATE}, res_type='soxr_hq')"
                if sr != SAMPLE_RATE else "window")
    return {
        "format": fmt,
        "model_file": model_file,
        "genreflow_run": classifier.model_dir.name,
        "model_family": "embedding",
        "labels": list(classifier.genres),
        "input": {"name": PATCHES_NAME, "dtype": "float32", "shape": [None, count, PATCH_FRAMES, N_MELS],
                  "what": f"musicnn's log-mel patches of one window: {count} back-to-back patches of {PATCH_FRAMES} "
                          f"frames (3 s at {SAMPLE_RATE} Hz, hop {HOP_LENGTH}) x {N_MELS} mel bands of "
                          f"log10({LOG_SCALE:g} x + 1), x the mel power cast to float16; layout (batch, patch, "
                          "frame, mel band): frames first, the transpose of librosa's (band, frame)"},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [None, len(classifier.genres)],
                   "what": "softmax probability of each genre, in the order of labels"},
        **({"file_graph": {
            "input": "the batch axis is the windows of ONE file, all of them, any number (a file shorter than a "
                     "window: its one zero-padded window)",
            "output": "one row [shape=(1, n_genres)]: the file's probabilities. The graph takes each window's "
                      "embedding (musicnn, the mean over its patches), their mean over the file's windows, the "
                      "track-level head and its calibration temperature",
            "head": {key: embedding.get(key) for key in ("head", "pooling", "temperature", "C", "gamma_scale",
                                                         "alpha", "support_vectors") if key in embedding}}}
           if track else {}),
        "audio": audio.model_dump(mode="json"),
        "audio_note": "sample_rate and clip_seconds cut the windows (every window of a file is predicted, whatever "
                      "clips_per_track); n_mels, n_fft and hop_length are the CNN's log-mel settings, unused by this "
                      "model: musicnn's front end (features) has its own",
        "features": {
            "decode": f"mono (mean of the channels), resampled to {sr} Hz (soxr HQ)",
            "windows": windows_rule(audio),
            "tolerance_samples": pad_tolerance(audio.clip_samples),
            "front_end": "musicnn (Pons and Serra, 2019), as its extractor.batch_data computes it",
            "resample": {"from_sr": sr, "to_sr": SAMPLE_RATE, "res_type": "soxr_hq",
                         "what": "each window resampled to musicnn's rate as librosa.resample does"},
            "mel": {"sr": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH, "n_mels": N_MELS,
                    "window": "hann", "center": True, "pad_mode": "reflect", "power": 2.0, "htk": False,
                    "norm": "slaney", "fmin": 0.0, "fmax": SAMPLE_RATE / 2},
            "log": {"float16": f"mel power clipped at {FLOAT16_MAX:g} (float16's largest) and cast to float16",
                    "scale": LOG_SCALE, "formula": f"log10({LOG_SCALE:g} * float32(power16) + 1), in float32"},
            "patches": {"frames": PATCH_FRAMES, "per_window": count, "hop_frames": PATCH_FRAMES,
                        "rule": "back to back from the window's first frame; frames after the last whole patch "
                                "are dropped; a spectrogram shorter than one patch is repeated until it fills one"},
            "librosa": (f"S = librosa.feature.melspectrogram(y={resample}, sr={SAMPLE_RATE}, n_fft={N_FFT}, "
                        f"hop_length={HOP_LENGTH}, n_mels={N_MELS}, pad_mode='reflect').T; "
                        f"x = np.log10({LOG_SCALE:g} * np.minimum(S, {FLOAT16_MAX:g}).astype(np.float16)"
                        ".astype(np.float32) + 1); "
                        f"patches = np.stack([x[i * {PATCH_FRAMES}:(i + 1) * {PATCH_FRAMES}] "
                        f"for i in range({count})])"),
        },
        "normalisation": {
            "in_graph": True, "layer": EMBEDDING_NORM_LAYER, "axis": "embedding dimension",
            "dims": dims,
            "note": "the standardisation of the window's musicnn embedding (the mean over its patches) is inside "
                    "the exported graph; there is no band normalisation: feed the patches as computed above"},
        "embedding": embedding,
        "file_probabilities": (
            "the graph's one output row, given all the file's windows at once; its top genre is genreflow's "
            "prediction" if track else
            "the mean of the file's window probabilities; its top genre is genreflow's prediction"),
    }


def verify_windows(audio: AudioConfig, n: int = VERIFY_WINDOWS) -> np.ndarray:
    """Seeded test windows in the input's range: smooth random log-mel images, not flat noise."""
    rng = np.random.default_rng(VERIFY_SEED)
    base = rng.uniform(-80.0, 0.0, (n, audio.n_mels, 1, 1))
    wiggle = rng.normal(0.0, 8.0, (n, audio.n_mels, audio.frames, 1))
    return np.clip(base + wiggle, -80.0, 0.0).astype(np.float32)


def verify_patches(audio: AudioConfig, n: int = VERIFY_WINDOWS) -> np.ndarray:
    """Seeded test input of an embedding classifier: musicnn's patches of synthetic windows of ``audio``.

    Each window is a chord of three seeded tones at its own loudness and a
    little noise, through the real front end, so the embeddings and the
    probabilities are in the range real music gives (random patches would not be).
    Returns np.ndarray [shape=(n, P, 187, 96)], float32.
    """
    rng = np.random.default_rng(VERIFY_SEED)
    t = np.arange(audio.clip_samples) / audio.sample_rate
    clips = []
    for _ in range(n):
        tones = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(80.0, 2000.0, 3))
        y = tones / 3 + rng.normal(0.0, rng.uniform(0.01, 0.3), len(t))
        clips.append(rng.uniform(0.05, 0.9) * y / np.abs(y).max())
    return window_patches(np.asarray(clips, np.float32), audio.sample_rate)


def export_model(classifier: Classifier, audio: AudioConfig, fmt: str, to: Path,
                 windows: np.ndarray | None = None, verify: bool = True) -> ExportResult:
    """Write ``fmt``'s model and its JSON into ``to``; check the export against the Keras model first.

    The model is written under a temporary name in ``to`` and moved into place
    only after its runtime reproduced the model's probabilities on ``windows``
    (the graph's input: log-mel windows of the CNN, default :func:`verify_windows`;
    musicnn patches of an embedding classifier, default :func:`verify_patches`)
    within VERIFY_TOLERANCE, so a failed or killed export never leaves a model
    that looks finished.
    """
    if fmt not in WRITERS:
        raise ExportError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    embedding = classifier.is_embedding
    if embedding:
        takes, gives = classifier.patches_per_window, patches_per_window(audio)
        if takes != gives:
            raise ExportError(f"the model takes {takes} musicnn patch(es) a window, its audio settings give "
                              f"{gives} ({audio.clip_seconds:g} s windows)")
    else:
        n_mels, frames = classifier.clip_shape
        if n_mels != audio.n_mels or frames not in (None, audio.frames):
            raise ExportError(f"the model takes {n_mels} x {frames} windows, its audio settings give "
                              f"{audio.n_mels} x {audio.frames}")
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    name = MODEL_NAMES[fmt]
    final, info_path = to / name, to / info_name(fmt)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=to))
    try:
        staged = scratch / name
        try:
            WRITERS[fmt](classifier.model, model_input_spec(classifier, audio), staged, file_graph(classifier))
        except ExportError:
            raise
        except Exception as exc:  # a converter's own failure: say which and why, in one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ExportError(f"{fmt} export of {classifier.model_dir} failed: {type(exc).__name__}: "
                              f"{first[:300]}") from exc
        info = describe(classifier, audio, fmt, name)
        diff = None
        if verify:
            if embedding and classifier.is_track_level:  # whole files: all the windows, then the first alone
                test = verify_patches(audio) if windows is None else np.asarray(windows, np.float32)
                files = (test, test[:1])
                expected = np.vstack([file_probabilities(classifier, *predict_windows(classifier, f)) for f in files])
                got = np.vstack([RUNNERS[fmt](staged, f) for f in files])
            elif embedding:
                test = verify_patches(audio) if windows is None else np.asarray(windows, np.float32)
                expected = predict_clips(classifier.model, test)
            else:
                test = verify_windows(audio) if windows is None else np.asarray(windows, np.float32)
                if test.ndim == 3:
                    test = test[..., np.newaxis]
                expected = predict_clips(classifier.model, test[..., 0])
            if not (embedding and classifier.is_track_level):
                got = RUNNERS[fmt](staged, test)
            diff = float(np.max(np.abs(got - expected)))
            runtime, package = RUNTIMES[fmt]
            info["verified"] = {"runtime": runtime, "version": _version(package), "windows": len(test),
                                "max_abs_diff": diff, "tolerance": VERIFY_TOLERANCE}
            if not diff <= VERIFY_TOLERANCE:
                raise ExportError(f"the {fmt} export differs from the model by {diff:.3g} on {len(test)} test "
                                  f"windows (at most {VERIFY_TOLERANCE:g} allowed); nothing was written")
        info.update({"tensorflow": _version("tensorflow"), "keras": _version("keras"),
                     "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
        if fmt == "onnx":
            info["onnx_opset"] = ONNX_OPSET
        if final.is_dir():
            shutil.rmtree(final)
        elif final.exists():
            final.unlink()
        os.replace(staged, final)
        tmp_info = scratch / info_path.name
        tmp_info.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp_info, info_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ExportResult(final, info_path, diff)
