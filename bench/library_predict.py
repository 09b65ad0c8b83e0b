"""Issue 15's figure: ``genreflow predict`` over a library against the model's own inference rate.

``library_predict_vs_model`` = files per second of the library flow on 2 Dask
workers (decode, log-mel, inference, shard writes, the table) divided by files
per second of the model alone on the same windows, already decoded, on the
same 2 cores. Both sides run in the same rounds, alternating:

- **model**: ``model.predict.predict_clips`` (the inference predict itself
  uses, batch 64) over the windows of the same files, decoded beforehand, in
  one process with TensorFlow's default threads, and in two processes of one
  thread each that start together on half the windows each; the better of the
  two is the model's rate on 2 cores.
- **flow**: the predict flow (flows/predict_flow.py) on a 2-worker LocalCluster
  started and warmed beforehand (processes up, TensorFlow imported), each run
  into a fresh work root, so every shard is computed. The model load, its first
  trace and the per-worker plugin are inside the timed run: start-up is paid
  once per run, as a user's run pays it. The temporary Prefect API is started
  once for the whole benchmark and is outside, as for every ratio.

Also measured, outside the ratio: one cold run as the CLI starts it (a fresh
LocalCluster), and the one-core costs that bound the ratio: decode and log-mel
per file, and inference per window with one TensorFlow thread.

TensorFlow never loads in the benchmark's main process: the model sides run in
children (``python -m genreflow.bench.library_predict MODE JSON``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genreflow.bench import inputs, preprocess, timing
from genreflow.bench.training import RESULT_PREFIX, child_env, parse_result
from genreflow.flows.config import PredictOptions

if TYPE_CHECKING:
    from genreflow.tasks.predict import PredictSummary

SHARD_SIZE = 50  # the CLI's default


# --------------------------------------------------------------------------- children (TensorFlow)


def _threads(count: int | None) -> None:
    if count:
        from genreflow.model.quiet_tf import tf

        tf.config.threading.set_intra_op_parallelism_threads(count)
        tf.config.threading.set_inter_op_parallelism_threads(count)


def make_model(args: dict[str, Any]) -> dict[str, Any]:
    """Save the default recipe's CNN (untrained: weights do not change its cost) as a finished run folder."""
    from genreflow.model.cnn import build_cnn
    from genreflow.model.params import AudioConfig, TrainConfig
    from genreflow.tasks.train import model_knobs

    audio = AudioConfig()
    knobs = model_knobs(TrainConfig(), audio)
    folder = Path(args["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    model = build_cnn(len(args["genres"]), (audio.n_mels, audio.frames, 1), seed=42,
                      batch_norm=knobs["batch_norm"], time_pooling=knobs["time_pooling"])
    model.save(folder / "model.keras")
    (folder / "labels.json").write_text(json.dumps(args["genres"]))
    (folder / "audio.json").write_text(audio.model_dump_json())
    return {"folder": str(folder), "params": int(model.count_params()), "recipe": TrainConfig().recipe}


def decode_windows(paths: list[str], out: str) -> dict[str, Any]:
    """Log-mel windows of ``paths`` as predict makes them, saved to ``out`` (.npy), and their one-core cost."""
    from genreflow.model.params import AudioConfig
    from genreflow.model.predict import file_windows

    audio = AudioConfig()
    file_windows(paths[0], audio)  # librosa's filterbank, soxr, the page cache
    start = time.perf_counter()
    mels = [file_windows(path, audio)[0] for path in paths]
    seconds = time.perf_counter() - start
    windows = np.concatenate(mels).astype(np.float32)
    np.save(out, windows, allow_pickle=False)
    return {"files": len(paths), "windows": len(windows), "decode_mel_per_file_s": seconds / len(paths)}


def model_rate(args: dict[str, Any]) -> dict[str, Any]:
    """Seconds of ``predict_clips`` over ``count`` windows (tiled from the decoded ones), after a warm-up.

    With ``start_at`` it waits for that wall-clock time after its warm-up, so that
    two children run their timed part together; it reports when it began and ended.
    """
    _threads(args.get("threads"))
    from genreflow.model.predict import load_classifier, predict_clips

    classifier = load_classifier(Path(args["model"]))
    unique = np.load(args["windows"], allow_pickle=False)
    count = int(args["count"])
    windows = unique[np.arange(count) % len(unique)]
    predict_clips(classifier.model, windows[:128])  # traces the predict step for full and partial batches
    predict_clips(classifier.model, windows[: len(windows) % 64 or 64])
    if args.get("barrier"):  # ready, then wait for the go: the timed parts of all children start together
        barrier = Path(args["barrier"])
        (barrier / f"ready-{args['index']}").touch()
        while not (barrier / "go").exists():
            time.sleep(0.001)
    began = time.time()
    start = time.perf_counter()
    predict_clips(classifier.model, windows)
    seconds = time.perf_counter() - start
    return {"windows": count, "seconds": seconds, "began": began, "ended": time.time()}


MODES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "make_model": make_model, "decode_windows": lambda a: decode_windows(a["paths"], a["out"]),
    "model_rate": model_rate}


def child(mode: str, args: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, "-m", "genreflow.bench.library_predict", mode, json.dumps(args)]
    return parse_result(timing.run_child(command, env=child_env()).stdout)


def children_together(mode: str, argsets: list[dict[str, Any]], timeout_s: float = 600.0) -> list[dict[str, Any]]:
    """Run children at once, their timed parts starting together once all are warm, and return their results."""
    import contextlib
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="genreflow-bench-barrier-") as barrier, contextlib.ExitStack() as stack:
        procs = []
        for index, args in enumerate(argsets):
            out = stack.enter_context(tempfile.TemporaryFile("w+"))
            command = [sys.executable, "-m", "genreflow.bench.library_predict", mode,
                       json.dumps({**args, "barrier": barrier, "index": index})]
            procs.append((subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, env=child_env(),
                                           text=True), out))
        deadline = time.monotonic() + timeout_s
        while len(list(Path(barrier).glob("ready-*"))) < len(procs):
            if any(proc.poll() not in (None, 0) for proc, _ in procs) or time.monotonic() > deadline:
                for proc, _ in procs:
                    proc.kill()
                raise RuntimeError(f"a {mode} child failed or was not ready in {timeout_s:.0f} s")
            time.sleep(0.01)
        (Path(barrier) / "go").touch()
        results = []
        for proc, out in procs:
            if proc.wait() != 0:
                raise RuntimeError(f"{mode} child exited with {proc.returncode}")
            out.seek(0)
            results.append(parse_result(out.read()))
    return results


# --------------------------------------------------------------------------- the measurement


def _warm_predict_worker() -> int:
    """Import what a predict task imports, TensorFlow included, so no timed run pays the process start."""
    from genreflow.model.quiet_tf import tf  # noqa: F401
    from genreflow.tasks.predict import predict_shard_task  # noqa: F401

    return os.getpid()


def _predict_options(files: Path, model: Path, out: Path, address: str | None) -> PredictOptions:
    return PredictOptions(inputs=[str(files)], model_dir=str(model), out=str(out), shard_size=SHARD_SIZE,
                          workers=2, dask_address=address, retries=0, local_max=0)


def _run_flow(options: PredictOptions) -> PredictSummary:
    import contextlib
    import io

    from genreflow.flows.predict_flow import run_library_predict

    with preprocess.quiet_stderr(), contextlib.redirect_stdout(io.StringIO()):
        return run_library_predict(options)


def measure(base: inputs.BenchSet, files: int, rounds: int, workdir: Path, log: Callable[[str], None],
            cold: bool = True) -> tuple[dict[str, float | None], dict[str, Any]]:
    """The ratio and its figures; call with the temporary Prefect API already up."""
    copies = -(-files // len(base))
    library = inputs.replicate_set(base, workdir / "library-src", copies)
    chosen = sorted(library.paths)[:files]
    folder = workdir / "library"
    shutil.rmtree(folder, ignore_errors=True)
    for path in chosen:  # exactly ``files`` files, linked
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        os.link(path, folder / path.parent.name / path.name)
    genres = sorted({p.parent.name for p in base.paths})
    model = Path(child("make_model", {"folder": str(workdir / "model" / "run-bench"), "genres": genres})["folder"])
    decoded = child("decode_windows", {"paths": [str(p) for p in base.paths], "out": str(workdir / "windows.npy")})
    per_file = decoded["windows"] / decoded["files"]
    count = round(per_file * files)  # the windows of the library's files (its copies decode alike)
    log(f"library predict: {files} files ({count} windows), decode+mel {decoded['decode_mel_per_file_s'] * 1000:.0f} "
        "ms a file on one core")
    one_thread = child("model_rate", {"model": str(model), "windows": str(workdir / "windows.npy"),
                                      "count": min(count, 256), "threads": 1})
    window_s_one_thread = one_thread["seconds"] / one_thread["windows"]

    warm = preprocess.WarmCluster(2, base.paths[0])
    warm.client.run(_warm_predict_worker)
    recorder = timing.Recorder()
    model_s: dict[str, list[float]] = {"one_process": [], "two_processes": []}
    summaries = []
    try:
        for r in range(rounds):
            result = child("model_rate", {"model": str(model), "windows": str(workdir / "windows.npy"),
                                          "count": count})
            model_s["one_process"].append(result["seconds"])
            halves = [count // 2, count - count // 2]
            pair = children_together("model_rate", [{"model": str(model), "windows": str(workdir / "windows.npy"),
                                                     "count": n, "threads": 1} for n in halves])
            model_s["two_processes"].append(max(p["ended"] for p in pair) - min(p["began"] for p in pair))
            out = preprocess.fresh_root(workdir / "roots", "predict") / "predictions.parquet"
            summaries.append(recorder.time("flow", lambda out=out: _run_flow(
                _predict_options(folder, model, out, warm.address))))
            shutil.rmtree(out.parent, ignore_errors=True)
            log(f"round {r + 1}/{rounds}: model {model_s['one_process'][-1]:.1f} s (1 process), "
                f"{model_s['two_processes'][-1]:.1f} s (2 processes); flow {recorder.times['flow'][-1]:.1f} s")
    finally:
        warm.close()
    model_best = min(min(model_s["one_process"]), min(model_s["two_processes"]))
    flow_best = recorder.timing("flow").best
    figures: dict[str, Any] = {
        "files": files, "windows": count, "shard_size": SHARD_SIZE, "model": str(model.name),
        "model_seconds": model_s, "model_files_per_s": files / model_best,
        "flow": recorder.timing("flow").as_dict(), "flow_files_per_s": files / flow_best,
        "predicted": summaries[-1].predicted, "model_loads": summaries[-1].model_loads,
        "flow_worker_s": [x.worker_s for x in summaries], "flow_model_load_s": [x.load_s for x in summaries],
        "decode_mel_per_file_s_one_core": decoded["decode_mel_per_file_s"],
        "window_s_one_tf_thread": window_s_one_thread,
    }
    # The most the flow can reach on 2 cores if nothing but the work itself costs: each file needs its
    # decode and log-mel and its windows' inference, one core each at a time.
    file_cost = decoded["decode_mel_per_file_s"] + per_file * window_s_one_thread
    figures["cpu_bound_files_per_s"] = 2 / file_cost
    figures["cpu_bound_ratio"] = figures["cpu_bound_files_per_s"] / figures["model_files_per_s"]
    log(f"library predict: flow {figures['flow_files_per_s']:.1f} files/s, model alone "
        f"{figures['model_files_per_s']:.1f} files/s; the work alone bounds the ratio at "
        f"{figures['cpu_bound_ratio']:.2f}")
    if cold:
        out = preprocess.fresh_root(workdir / "roots", "predict-cold") / "predictions.parquet"
        start = time.perf_counter()
        _run_flow(_predict_options(folder, model, out, None))
        figures["cold_flow_s"] = time.perf_counter() - start
        figures["library_predict_vs_model_cold"] = (files / figures["cold_flow_s"]) / figures["model_files_per_s"]
        shutil.rmtree(out.parent, ignore_errors=True)
        log(f"library predict, cold (fresh LocalCluster): {figures['cold_flow_s']:.1f} s")
    ratios = {"library_predict_vs_model": figures["flow_files_per_s"] / figures["model_files_per_s"]}
    return ratios, figures


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in MODES:
        print(f"usage: python -m genreflow.bench.library_predict {{{','.join(MODES)}}} JSON_ARGS", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = MODES[argv[0]](json.loads(argv[1]))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
