"""Training and prediction measurements, each run in a child process of its own.

A child per measurement keeps TensorFlow out of the benchmark's main process
(and so out of the Dask workers it starts) and gives each run its own peak
RSS. Run as ``python -m genreflow.bench.training MODE JSON_ARGS``; the child prints one
line ``BENCH_RESULT {json}``.

Modes:
- ``input``: samples/s of the seed CNN fed by ``clip_dataset`` from the
  shards, against the same model fed the same clips from an in-memory numpy
  array, a few batches at a time, alternating;
- ``train``: ``model.train.train_model`` for one epoch over the given shards
  (the pipeline's own training), for its peak RSS;
- ``recipes``: seconds per training epoch of each model recipe (seed,
  genreflow) over the same shards, alternating;
- ``memory``: the seed's way for contrast: every clip loaded into one float32
  array, then a few training steps;
- ``predict``: seconds to classify whole 30 s mp3s with ``model.predict.predict_file``,
  the model already loaded.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESULT_PREFIX = "BENCH_RESULT "


def load_sources(shards: list[str], split: str | None = "train") -> list[Any]:
    """ClipSource for each ``.npy`` shard path, its index read from the ``.parquet`` beside it."""
    from genreflow.model.dataset import ClipSource

    sources = []
    for path in shards:
        index = pd.read_parquet(Path(path).with_suffix(".parquet"))
        if split is not None:
            index = index[index["split"] == split]
        if len(index):
            sources.append(ClipSource(Path(path), index))
    return sources


def in_memory(sources: list[Any], label_of: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Every selected clip as one float32 array (n, n_mels, frames, 1) and its labels: the seed's way."""
    xs, ys = [], []
    for source in sources:
        array = np.load(source.path)
        xs.append(array[source.index["row"].to_numpy()].astype(np.float32))
        ys.append(source.index["genre"].map(label_of).to_numpy(dtype=np.int32))
    return np.concatenate(xs)[..., np.newaxis], np.concatenate(ys)


def _model(n_classes: int, shape: tuple[int, ...], seed: int) -> Any:
    from genreflow.model.cnn import build_seed_cnn, compile_model
    from genreflow.model.quiet_tf import keras, tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()  # as model.train.train_model runs it
    return compile_model(build_seed_cnn(n_classes, input_shape=shape, seed=seed), 1e-3)


def _step_clock() -> Any:
    """A Keras callback whose ``ends`` lists when each training batch ended (perf_counter seconds)."""
    from genreflow.model.quiet_tf import keras

    class StepClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.ends.append(time.perf_counter())

    return StepClock()


def steady_rate(ends: list[float], batch_size: int) -> float:
    """Samples/s between the first and the last batch's end: the first batch's wait excluded."""
    if len(ends) < 2 or ends[-1] <= ends[0]:
        raise ValueError("a steady rate needs at least two batch ends, in increasing time")
    return batch_size * (len(ends) - 1) / (ends[-1] - ends[0])


def measure_input(args: dict[str, Any]) -> dict[str, Any]:
    """Samples/s over ``steps`` batches, shards vs memory, alternating for ``rounds`` rounds.

    Two rates per side: steady state (between the first and the last batch's
    end, so excluding the first batch's wait and fit's per-call set-up, which an
    epoch of thousands of batches amortises) and the plain wall time of the fit call.
    """
    from genreflow.model.dataset import clip_dataset

    sources = load_sources(args["shards"])
    genres = sorted({g for s in sources for g in s.index["genre"]})
    label_of = {g: i for i, g in enumerate(genres)}
    batch, steps, rounds = int(args["batch_size"]), int(args["steps"]), int(args["rounds"])
    x, y = in_memory(sources, label_of)
    if len(x) < batch * steps or steps < 2:
        raise SystemExit(f"need at least 2 steps and {steps} batches of {batch} clips, have {len(x)} clips")
    model = _model(len(genres), x.shape[1:], seed=42)
    shards = clip_dataset(sources, label_of, batch, shuffle=True, seed=42).repeat()

    def fit(name: str, clock: Any) -> None:
        if name == "shards":
            model.fit(shards, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
        else:
            model.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=steps, shuffle=True, verbose=0,
                      callbacks=[clock])

    for name in ("shards", "memory"):  # traces the train step, fills caches
        fit(name, _step_clock())
    rates: dict[str, list[float]] = {"shards": [], "memory": []}
    walls: dict[str, list[float]] = {"shards": [], "memory": []}
    for _ in range(rounds):
        for name in ("memory", "shards"):
            clock = _step_clock()
            start = time.perf_counter()
            fit(name, clock)
            walls[name].append(time.perf_counter() - start)
            rates[name].append(steady_rate(clock.ends, batch))
    return {"clips": len(x), "batch_size": batch, "steps": steps, "rounds": rounds,
            "steady_samples_per_s": rates, "fit_wall_s": walls,
            "shards_samples_per_s": max(rates["shards"]), "memory_samples_per_s": max(rates["memory"]),
            "shards_samples_per_s_fit_wall": batch * steps / min(walls["shards"]),
            "memory_samples_per_s_fit_wall": batch * steps / min(walls["memory"])}


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _genres_and_identity_stats(sources: list[Any]) -> tuple[list[str], dict[str, list[float]]]:
    """The sources' genres in label order, and band statistics that leave the clips as they are."""
    genres = sorted({g for s in sources for g in s.index["genre"]})
    n_mels = int(np.load(sources[0].path, mmap_mode="r").shape[1])
    return genres, {"mean": [0.0] * n_mels, "std": [1.0] * n_mels}


def measure_train(args: dict[str, Any]) -> dict[str, Any]:
    """One epoch of the pipeline's ``train_model`` over the given shards."""
    from genreflow.model.train import train_model

    sources = load_sources(args["shards"])
    genres, stats = _genres_and_identity_stats(sources)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="genreflow-bench-train-") as out:
        train_model(sources, [], genres, stats, Path(out), epochs=1, batch_size=int(args["batch_size"]),
                    learning_rate=1e-3, patience=10, seed=42)
    return {"clips": sum(len(s) for s in sources), "epoch_s": time.perf_counter() - start,
            "vm_hwm_kib": _status_kib("VmHWM"), "rss_anon_kib": _status_kib("RssAnon"),
            "rss_file_kib": _status_kib("RssFile")}


def _epoch_clock() -> Any:
    """A Keras callback whose ``seconds`` lists each epoch's wall time, begin to end (its callbacks included)."""
    from genreflow.model.quiet_tf import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self._start = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    return EpochClock()


def measure_recipes(args: dict[str, Any]) -> dict[str, Any]:
    """Seconds per training epoch of each recipe over the same shards, alternating round after round.

    Each round trains every recipe for ``1 + extra_epochs`` epochs with the
    pipeline's own ``train_model`` and that recipe's knobs; the first epoch
    (tracing) is dropped and the least disturbed of the rest kept. The same
    clips feed every recipe: how many clips a recipe's preprocessing makes per
    track is a separate factor.
    """
    from genreflow.model.params import AudioConfig, TrainConfig
    from genreflow.model.train import train_model
    from genreflow.tasks.train import model_knobs

    sources = load_sources(args["shards"])
    genres, stats = _genres_and_identity_stats(sources)
    epochs = 1 + int(args["extra_epochs"])
    knobs = {name: model_knobs(TrainConfig(recipe=name), AudioConfig()) for name in args["recipes"]}
    seconds: dict[str, list[float]] = {name: [] for name in knobs}
    for _ in range(int(args["rounds"])):
        for name, recipe in knobs.items():
            clock = _epoch_clock()
            with tempfile.TemporaryDirectory(prefix="genreflow-bench-recipe-") as out:
                train_model(sources, [], genres, stats, Path(out), epochs=epochs, batch_size=int(args["batch_size"]),
                            learning_rate=1e-3, patience=epochs, seed=42, knobs=recipe, callbacks=[clock])
            seconds[name] += clock.seconds[1:]
    epoch_s = {name: min(values) for name, values in seconds.items()}
    clips = sum(len(s) for s in sources)
    return {"clips": clips, "knobs": knobs, "epoch_seconds": seconds, "epoch_s": epoch_s,
            "clip_ms": {name: 1000 * s / clips for name, s in epoch_s.items()}}


def measure_memory(args: dict[str, Any]) -> dict[str, Any]:
    """The seed's way: all clips in one array, then a few steps (the array is the growth)."""
    sources = load_sources(args["shards"])
    genres = sorted({g for s in sources for g in s.index["genre"]})
    x, y = in_memory(sources, dict(zip(genres, range(len(genres)), strict=True)))
    model = _model(len(genres), x.shape[1:], seed=42)
    batch = int(args["batch_size"])
    model.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=min(2, len(x) // batch or 1), verbose=0)
    return {"clips": len(x), "array_bytes": int(x.nbytes), "vm_hwm_kib": _status_kib("VmHWM")}


def measure_predict(args: dict[str, Any]) -> dict[str, Any]:
    """Seconds per file of ``predict_file``, the model built and warmed first."""
    from genreflow.model.params import AudioConfig
    from genreflow.model.predict import Classifier, predict_file

    audio = AudioConfig()
    genres = list(args["genres"])
    model = _model(len(genres), (audio.n_mels, audio.frames, 1), seed=42)
    classifier = Classifier(model=model, genres=genres, model_dir=Path(tempfile.gettempdir()))
    paths = [Path(p) for p in args["paths"]]
    predict_file(classifier, paths[0], audio)  # the first call traces the model's predict step
    times, windows = [], []
    for _ in range(int(args.get("rounds", 1))):
        for path in paths:
            start = time.perf_counter()
            result = predict_file(classifier, path, audio)
            times.append(time.perf_counter() - start)
            windows.append(result.n_windows)
    return {"files": len(paths), "times_s": times, "mean_s": float(np.mean(times)),
            "median_s": float(np.median(times)), "windows_per_file": float(np.mean(windows))}


MODES = {"input": measure_input, "train": measure_train, "recipes": measure_recipes, "memory": measure_memory,
         "predict": measure_predict}


def child_command(mode: str, args: dict[str, Any]) -> list[str]:
    """The command line that runs ``mode`` with ``args`` in a fresh interpreter."""
    return [sys.executable, "-m", "genreflow.bench.training", mode, json.dumps(args)]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def parse_result(stdout: str) -> dict[str, Any]:
    """The child's BENCH_RESULT line as a dict."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"no {RESULT_PREFIX.strip()} line in the child's output:\n{stdout[-2000:]}")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in MODES:
        print(f"usage: python -m genreflow.bench.training {{{','.join(MODES)}}} JSON_ARGS", file=sys.stderr)
        return 2
    result = MODES[argv[0]](json.loads(argv[1]))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
