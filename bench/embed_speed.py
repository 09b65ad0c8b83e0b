"""``python -m genreflow.bench.embed_speed``: the embed stage against the CPU's limit, on one core (issue 22, point 6).

Measured side by side in one process, on one thread each, repetitions
interleaved (bench/timing.py ``interleaved``) and the best kept, because the
machine is shared and noisy:

- ``matmul``: the GFLOP/s of a float32 1024 x 1024 matmul, numpy's BLAS and
  TensorFlow's, the best of both: the core's practical peak;
- ``embed``: the embed stage's own call, ``MusicnnEmbedder.embed_clips`` on 10 s
  clips at genreflow's decoding rate (resampling, musicnn's mel, the network):
  ``embed_ms_per_clip``;
- ``front``: the resampling and mel part alone, and ``network:<runtime>`` the
  network alone on the same patches, for each runtime: TensorFlow as today,
  ONNX Runtime (the network converted by tf2onnx, as ``genreflow export`` does)
  and TFLite with its default XNNPACK delegate, where installed.

musicnn's FLOPs per 3 s patch are counted from the Keras network's layer
shapes (:func:`network_flops`: 2 x multiply-adds of every convolution and dense
layer; batch norm, ReLU and pooling add under 1 %), so a runtime's fraction of
peak is ``flops x patches / seconds / peak``. Each runtime's outputs are
compared with TensorFlow's on the same patches (``max_abs_diff``, every exposed
layer). Needs musicnn's weights (``genreflow weights fetch musicnn``)::

    python -m genreflow.bench.embed_speed --clips 16 --rounds 5 --json embed_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from genreflow.bench.timing import interleaved, machine_info
from genreflow.model.musicnn import FEATURES, N_MELS, PATCH_FRAMES, MusicnnEmbedder, clip_patches

SAMPLE_RATE = 22_050  # genreflow's decoding rate: the embed stage resamples to 16 kHz itself
CLIP_SECONDS = 10.0
MATMUL_SIZE = 1024
BATCH = 32  # patches a runtime runs at once, as MusicnnEmbedder.features does
RUNTIMES: tuple[str, ...] = ("tensorflow", "onnxruntime", "tflite")
ONNX_OPSET = 17


def network_flops(network: Any, frames: int = PATCH_FRAMES) -> dict[str, int]:
    """FLOPs (2 x multiply-adds) of each convolution and dense layer of musicnn for one patch of ``frames``.

    From the layers' kernels and output shapes; musicnn's time axis keeps its
    length through every layer (the timbral and mid-end convolutions pad it),
    so the unknown time axis of the Keras network is ``frames`` throughout.
    """
    flops: dict[str, int] = {}
    for layer in network.layers:
        kind = layer.__class__.__name__
        if kind not in ("Conv1D", "Conv2D", "Dense"):
            continue
        kernel = tuple(int(d) for d in layer.kernel.shape)  # (*window, in, out)
        positions = int(np.prod([frames if d is None else int(d) for d in layer.output.shape[1:-1]], dtype=np.int64))
        flops[layer.name] = 2 * positions * int(np.prod(kernel, dtype=np.int64))
    return flops


def synthetic_clips(n: int, sr: int = SAMPLE_RATE, seconds: float = CLIP_SECONDS, seed: int = 0) -> np.ndarray:
    """``n`` clips of tones in noise [shape=(n, samples)], float32: the cost does not depend on the music."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    tones = [np.sin(2 * np.pi * rng.uniform(80, 4000) * t + rng.uniform(0, 6)) for _ in range(n)]
    return np.stack([0.2 * y + rng.normal(0, 0.05, len(t)) for y in tones]).astype(np.float32)


def matmul_sides(size: int = MATMUL_SIZE) -> dict[str, Callable[[], Any]]:
    """One float32 ``size`` x ``size`` matmul by numpy's BLAS and by TensorFlow (one thread each, set by the caller)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    ta, tb = tf.constant(a), tf.constant(b)
    return {"matmul:numpy": lambda: a @ b, "matmul:tensorflow": lambda: tf.linalg.matmul(ta, tb).numpy()}


def onnx_runner(embedder: MusicnnEmbedder, threads: int = 1) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """musicnn by ONNX Runtime on ``threads`` threads: patches to every exposed layer, as ``embedder.features``."""
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec((None, None, embedder.arch.n_mels), tf.float32, name="log_mel")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto, _ = tf2onnx.convert.from_keras(embedder.network, input_signature=[spec], opset=ONNX_OPSET)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name, outputs = session.get_inputs()[0].name, [o.name for o in session.get_outputs()]

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        parts = [session.run(outputs, {name: batch[i : i + BATCH]}) for i in range(0, len(batch), BATCH)]
        return {out: np.concatenate([p[j] for p in parts]) for j, out in enumerate(outputs)}

    return run


def tflite_runner(embedder: MusicnnEmbedder, threads: int = 1) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """musicnn by the TFLite interpreter (XNNPACK, its default CPU delegate) on ``threads`` threads, in batches
    of :data:`BATCH` patches (the signature runner resizes the input, and replans, where a batch's size changes).

    Converted from a SavedModel, as ``genreflow export --format tflite`` does: the converter freezes the
    weights only from one (from a concrete function it leaves them as uninitialised variables).
    """
    import keras
    import tensorflow as tf

    network = embedder.network
    spec = tf.TensorSpec((None, PATCH_FRAMES, embedder.arch.n_mels), tf.float32, name="log_mel")
    with tempfile.TemporaryDirectory(prefix="genreflow-bench-tflite-") as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TF 2.21 asks to move to ai_edge_litert; it still works
        archive = keras.export.ExportArchive()
        archive.track(network)
        archive.add_endpoint(name="serve", fn=lambda x: network(x, training=False), input_signature=[spec])
        archive.write_out(scratch, verbose=False)
        flat = tf.lite.TFLiteConverter.from_saved_model(scratch).convert()
        interpreter = tf.lite.Interpreter(model_content=flat, num_threads=threads)
    signature = interpreter.get_signature_runner("serving_default")  # the converter keeps the default

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        parts = [signature(log_mel=batch[i : i + BATCH]) for i in range(0, len(batch), BATCH)]
        return {name: np.concatenate([p[name] for p in parts]) for name in FEATURES}

    return run


def runner(runtime: str, embedder: MusicnnEmbedder) -> Callable[[np.ndarray], dict[str, np.ndarray]] | None:
    """The network by ``runtime`` on one thread, or None where that runtime is not installed."""
    if runtime == "tensorflow":
        return embedder.features
    try:
        return {"onnxruntime": onnx_runner, "tflite": tflite_runner}[runtime](embedder)
    except ImportError:
        return None


def _with_cpu_time(fn: Callable[[], Any], seconds: list[float]) -> Callable[[], Any]:
    """``fn``, appending the process CPU seconds of each call to ``seconds``."""

    def call() -> Any:
        start = time.process_time()
        out = fn()
        seconds.append(time.process_time() - start)
        return out

    return call


def measure(embedder: MusicnnEmbedder, clips: np.ndarray, sr: int, rounds: int,
            runtimes: Sequence[str] = RUNTIMES) -> dict[str, Any]:
    """Every side's best over ``rounds`` interleaved rounds, and what it means per clip and against the peak.

    Each figure is given twice: by wall time, and by the process's CPU time, which on a machine shared with
    other busy processes leaves out the time the thread waited for a core (one thread per side, so one CPU
    second is one core busy for a second). The caller limits TensorFlow and BLAS to one thread before
    TensorFlow's first op.
    """
    patches = np.concatenate(clip_patches(clips, sr)).astype(np.float32)
    reference = embedder.features(patches)
    runners = {name: run for name in runtimes if (run := runner(name, embedder)) is not None}
    differences = {name: max(float(np.abs(run(patches)[f] - reference[f]).max()) for f in FEATURES)
                   for name, run in runners.items()}
    sides: dict[str, Callable[[], Any]] = {**matmul_sides(), "embed": lambda: embedder.embed_clips(clips, sr),
                                           "front": lambda: clip_patches(clips, sr)}
    sides.update({f"network:{name}": (lambda run=run: run(patches)) for name, run in runners.items()})
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    timings = interleaved({name: _with_cpu_time(fn, cpu[name]) for name, fn in sides.items()}, rounds)
    best = {"wall": {name: timing.best for name, timing in timings.items()},
            "cpu": {name: min(cpu[name][1:] or cpu[name]) for name in sides}}  # [0]: the warm-up call
    per_layer = network_flops(embedder.network)
    flops = sum(per_layer.values())
    n_clips, n_patches = len(clips), len(patches)
    work = flops * n_patches
    result: dict[str, Any] = {"clips": n_clips, "patches": n_patches, "patch_frames": PATCH_FRAMES, "n_mels": N_MELS,
                              "flops_per_patch": flops, "flops_per_layer": per_layer}
    for clock, seconds in best.items():
        suffix = "" if clock == "wall" else "_cpu"
        matmul = {name.split(":")[1]: 2 * MATMUL_SIZE**3 / seconds[name] / 1e9
                  for name in ("matmul:numpy", "matmul:tensorflow")}
        peak = max(matmul.values()) * 1e9
        result[f"peak_gflops{suffix}"] = peak / 1e9
        result[f"matmul_gflops{suffix}"] = matmul
        result[f"embed_ms_per_clip{suffix}"] = 1000 * seconds["embed"] / n_clips
        result[f"embed_fraction_of_peak{suffix}"] = work / seconds["embed"] / peak
        result[f"front_ms_per_clip{suffix}"] = 1000 * seconds["front"] / n_clips
        result[f"network{suffix}"] = {
            name: {"ms_per_clip": 1000 * seconds[f"network:{name}"] / n_clips,
                   "gflops": work / seconds[f"network:{name}"] / 1e9,
                   "fraction_of_peak": work / seconds[f"network:{name}"] / peak,
                   "max_abs_diff_vs_tensorflow": differences[name]} for name in runners}
    result["timings"] = {name: {**timing.as_dict(), "cpu_s": cpu[name]} for name, timing in timings.items()}
    return result


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def one_thread() -> None:
    """TensorFlow's pools at one thread (before its first op) and BLAS's too: the embed stage on one core."""
    import tensorflow as tf
    from threadpoolctl import threadpool_limits

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    threadpool_limits(limits=1)


def print_figures(result: dict[str, Any]) -> None:
    print(f"musicnn: {result['flops_per_patch'] / 1e9:.2f} GFLOP a 3 s patch, {result['patches']} patches of "
          f"{result['clips']} clips of 10 s")
    for suffix, clock in (("", "wall time"), ("_cpu", "CPU time")):
        matmul = result[f"matmul_gflops{suffix}"]
        print(f"\nBy {clock}: peak (float32 matmul, one thread) {result[f'peak_gflops{suffix}']:.1f} GFLOP/s "
              f"(numpy {matmul['numpy']:.1f}, TensorFlow {matmul['tensorflow']:.1f}); "
              f"embed_ms_per_clip (TensorFlow, the embed stage's call) {result[f'embed_ms_per_clip{suffix}']:.1f} ms, "
              f"{result[f'embed_fraction_of_peak{suffix}']:.2f} of peak; resampling and mel alone "
              f"{result[f'front_ms_per_clip{suffix}']:.1f} ms")
        print("| runtime | network ms per clip | GFLOP/s | fraction of peak | max abs diff vs TensorFlow |")
        print("|---|---:|---:|---:|---:|")
        for name, figures in result[f"network{suffix}"].items():
            print(f"| {name} | {figures['ms_per_clip']:.1f} | {figures['gflops']:.1f} | "
                  f"{figures['fraction_of_peak']:.2f} | {figures['max_abs_diff_vs_tensorflow']:.1e} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genreflow.bench.embed_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="MSD_musicnn", help="musicnn's weights (the default rebuild's)")
    parser.add_argument("--weights-dir", type=Path, default=None)
    parser.add_argument("--clips", type=int, default=16, help="10 s clips embedded in each repetition")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repetitions; the best is kept")
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    one_thread()
    embedder = MusicnnEmbedder.from_cache(args.model, args.weights_dir)
    result = measure(embedder, synthetic_clips(args.clips), SAMPLE_RATE, args.rounds, args.runtimes)
    print_figures(result)
    if args.json:
        versions = {name: _installed_version(name) for name in ("onnxruntime", "tf2onnx")}
        args.json.write_text(json.dumps({"model": args.model, **result, "machine": machine_info(),
                                         "runtime_versions": versions}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
