"""``python -m genreflow.bench.scale --sizes 1000,10000,100000``: how genreflow's costs grow to fma_full's size.

Issue 25, part 3. For each size it makes (once, then reuses from ``--workdir``) an FMA-format collection:
``fma_metadata/tracks.csv`` with FMA's header rows (two header rows and the ``track_id`` row, as
fma_metadata's own file), 161 ``genre_top`` values of a skewed (Zipf-like) popularity, artist ids at
fma_full's 6.5 tracks an artist, the official ``set.split`` column drawn per artist (80/10/10), 1 % of the
tracks without a genre and 0.5 % listed without audio, as FMA has both. The audio is ``--distinct`` short
mp3s (2.2 s, 44.1 kHz stereo, encoded once) to which every track's ``fma_medium/<id3>/<id6>.mp3`` is a hard
link (a copy where links are not possible): a linked file decodes exactly as its original does.

Per size, each in a child process of its own (so that its peak RSS is its own, read from VmHWM):

- **steps**: the plain functions, one after another: reading the source (``read``), ``split``, cutting the
  shards (``shard``), ``plan`` (flows/plan.py, the shard plans and their fingerprints), the whole ingest stage
  writing tracks.parquet (``ingest``) and a re-ingest of the unchanged collection (``reingest``: keeps the
  stored splits and shards, compares the tables); ``status`` (``genreflow status``'s own function) on the
  ingested root, then on the same root with every planned shard output sealed (``status_sealed``: a
  manifest over a placeholder file per output, so status reads and checks a manifest per output as on a
  preprocessed root); the report (``report``: dataset summary, confident mistakes and render_report, over
  synthetic test predictions of every test track, 161 genres) and the cross-validation report
  (``crossval``: out-of-fold tracks, suspect labels over every track and render_crossval_report, 5 folds);
- **flow**: ``genreflow preprocess --to-stage ingest`` as the CLI runs it (temporary Prefect API, the
  flow's LocalCluster): the flow process's seconds and peak RSS;
- **preprocess** (sizes up to ``--preprocess-max``): ``genreflow preprocess`` to the mel stage (2 s clips,
  one a track, no augmentation) on a warm 2-worker LocalCluster, with Prefect's ``Task.submit`` timed: the
  wall time per track, the task runs submitted and the flow process's seconds spent submitting them (wall,
  and the submitting thread's CPU: on this machine the two busy workers share its cores);
- **submit** (every size): the same ``genreflow preprocess`` against a Dask scheduler with no workers, stopped
  as soon as its last shard task is submitted: the flow's real submission path (ingest, plan, the finished-shard
  checks, ``Task.submit`` of every shard) with nothing else running, as where the workers are other machines.
  A task run is created in Prefect's API by the worker that starts it, so none is created here; the number
  submitted is the number a run creates.

``--parts`` picks the children (``--parts submit``: the submission figures alone; ``--steps-only`` is
``--parts steps``). It prints the figures per size and each figure's growth between sizes (from 10k to 100k:
10 means linear), and writes them as JSON with ``--json``. docs/benchmarks.md ("A collection of fma_full's
size") holds the figures of a run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

GENRES = 161  # fma_full's genres
TRACKS_PER_ARTIST = 6.5  # fma_full: 106,574 tracks by 16,341 artists
NO_GENRE_SHARE = 0.01  # listed without genre_top: skipped by ingest
MISSING_AUDIO_SHARE = 0.005  # listed, no file: skipped by ingest
DISTINCT = 200  # distinct audio files the tracks link to
TRACK_SECONDS = 2.2  # a 2 s clip and a tail within the pad tolerance
CLIP_SECONDS = 2.0
SHARD_SIZE = 50  # genreflow's default
FOLDS = 5
SEED = 25
FMA_FULL_TRACKS = 106_574
SPLIT_NAMES = ("training", "validation", "test")

# Figures in the order printed: (key, label, unit).
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("read_s", "read tracks.csv + audio check", "s"),
    ("split_s", "split", "s"),
    ("shard_s", "shard assignment", "s"),
    ("plan_s", "shard planning (plan_shards)", "s"),
    ("ingest_s", "ingest stage (read, split, shard, write)", "s"),
    ("reingest_s", "re-ingest, unchanged collection", "s"),
    ("status_s", "status, ingested root", "s"),
    ("status_sealed_s", "status, every shard output sealed", "s"),
    ("report_s", "report (summary, mistakes, render)", "s"),
    ("crossval_s", "crossval report (suspects, render)", "s"),
    ("steps_peak_rss_mib", "steps process peak RSS", "MiB"),
    ("flow_s", "flow to ingest (CLI, API start incl.)", "s"),
    ("flow_peak_rss_mib", "flow process peak RSS (to ingest)", "MiB"),
    ("preprocess_s", "preprocess to mel, 2 warm workers", "s"),
    ("preprocess_per_track_ms", "preprocess wall time per track", "ms"),
    ("task_runs", "Prefect task runs", ""),
    ("submit_s", "seconds submitting them", "s"),
    ("submit_cpu_s", "their CPU seconds (submitting thread)", "s"),
    ("preprocess_peak_rss_mib", "flow process peak RSS (preprocess)", "MiB"),
    ("submit_only_task_runs", "task runs submitted, no workers", ""),
    ("submit_only_s", "seconds submitting them, no workers", "s"),
    ("submit_only_cpu_s", "their CPU seconds, no workers", "s"),
    ("submit_only_loop_s", "first to last submission, no workers", "s"),
    ("submit_peak_rss_mib", "flow process peak RSS (all submitted)", "MiB"),
)


# ---- the collection -----------------------------------------------------------------------------------


def genre_names() -> list[str]:
    """161 genre names; a few with FMA's own punctuation ("Hip-Hop", "Old-Time / Historic")."""
    special = ["Hip-Hop", "Old-Time / Historic", "Soul-RnB", "Easy Listening", "Avant-Garde"]
    return special + [f"Genre {i:03d}" for i in range(GENRES - len(special))]


def track_ids(n: int) -> list[int]:
    """n FMA-like ids (sparse, as FMA's are), all under 1,000,000 so each is 6 digits."""
    return [2 + (i * 3) // 2 for i in range(n)]


def metadata(n: int, seed: int = SEED) -> Any:
    """tracks.csv's table: FMA's two-level columns, the track_id index; deterministic for (n, seed)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng([seed, n])
    genres = genre_names()
    artists = max(1, round(n / TRACKS_PER_ARTIST))
    popularity = 1.0 / np.arange(1, GENRES + 1) ** 0.9
    artist_genre = rng.choice(GENRES, size=artists, p=popularity / popularity.sum())
    artist_split = rng.choice(3, size=artists, p=[0.8, 0.1, 0.1])
    artist = rng.integers(0, artists, size=n)
    ids = track_ids(n)
    genre = np.asarray(genres, dtype=object)[artist_genre[artist]]
    genre[rng.random(n) < NO_GENRE_SHARE] = None
    columns = pd.MultiIndex.from_tuples([
        ("album", "id"), ("album", "title"), ("artist", "id"), ("artist", "name"), ("set", "split"),
        ("set", "subset"), ("track", "bit_rate"), ("track", "duration"), ("track", "genre_top"),
        ("track", "genres"), ("track", "genres_all"), ("track", "title")])
    genre_index = artist_genre[artist]
    data = {
        ("album", "id"): artist * 2 + rng.integers(0, 2, size=n),
        ("album", "title"): [f"Album {a}" for a in artist],
        ("artist", "id"): artist + 1,
        ("artist", "name"): [f"Artist {a + 1}" for a in artist],
        ("set", "split"): np.asarray(SPLIT_NAMES, dtype=object)[artist_split[artist]],
        ("set", "subset"): "medium",
        ("track", "bit_rate"): 256000,
        ("track", "duration"): 2,
        ("track", "genre_top"): genre,
        ("track", "genres"): [f"[{g + 1}]" for g in genre_index],
        ("track", "genres_all"): [f"[{g + 1}, {GENRES + 1}]" for g in genre_index],
        ("track", "title"): [f"Song {i}, take {i % 7}" for i in ids],
    }
    return pd.DataFrame(data, index=pd.Index(ids, name="track_id"), columns=columns)


def distinct_audio(folder: Path, count: int = DISTINCT) -> list[Path]:
    """``count`` distinct 2.2 s, 44.1 kHz stereo mp3s (a tone, its harmonics and noise), made once."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"tone-{k:04d}.mp3" for k in range(count)]
    sr = 44100
    t = np.arange(round(TRACK_SECONDS * sr)) / sr
    for k, path in enumerate(paths):
        if path.exists():
            continue
        rng = np.random.default_rng([SEED, k])
        pitch = 110.0 * 2 ** (k % 36 / 12)
        mono = sum(np.sin(2 * np.pi * pitch * h * t) / h for h in range(1, 5)) * 0.2
        stereo = np.stack([mono + 0.02 * rng.standard_normal(len(t)) for _ in range(2)], axis=1)
        part = path.with_name(f".{path.name}.part")
        sf.write(part, stereo.astype(np.float32), sr, format="MP3", subtype="MPEG_LAYER_III")
        os.replace(part, path)
    return paths


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def make_collection(folder: Path, n: int, audio: list[Path]) -> Path:
    """An FMA root of ``n`` listed tracks under ``folder`` (reused when a finished one is there): its path."""
    from genreflow.tasks.sources.base import fma_audio_path, fma_id

    marker = folder / "collection.json"
    wanted = {"tracks": n, "seed": SEED, "distinct": len(audio), "genres": GENRES}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    table = metadata(n)
    (folder / "fma_metadata").mkdir(parents=True)
    table.to_csv(folder / "fma_metadata" / "tracks.csv")
    audio_dir = folder / "fma_medium"
    step = round(1 / MISSING_AUDIO_SHARE)
    made: set[Path] = set()
    for i, track in enumerate(table.index):
        if i % step == step - 1:
            continue  # listed without its file
        target = fma_audio_path(audio_dir, fma_id(int(track)))
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        _link(audio[i % len(audio)], target)
    marker.write_text(json.dumps(wanted))
    return folder


def bench_config(collection: Path, data_root: Path, **overrides: Any) -> Any:
    """The configuration every side runs with: the FMA source (subset medium), 2 s clips, one a track."""
    from genreflow.flows.config import build_config

    values: dict[str, Any] = {"source": "fma", "input": str(collection), "subset": "medium",
                              "data_root": str(data_root), "workers": 2, "retries": 0, "shard_size": SHARD_SIZE,
                              "clip_seconds": CLIP_SECONDS, "clips_per_track": 1,
                              "recipe": "seed"}  # the seed's recipe: the genreflow one crops 5 s of a clip
    values.update(overrides)
    return build_config(None, **values)


# ---- the steps child -------------------------------------------------------------------------------------


class Clock:
    """Named wall times of the steps, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start


def seal_placeholders(root_url: str, plans: list[Any]) -> int:
    """Seal every planned shard output (decode, mel, augment, embed) over a one-byte placeholder file: a data root
    whose status reads and checks one manifest per output, as a preprocessed root's does."""
    from genreflow.storage.outputs import open_output
    from genreflow.storage.root import DataRoot

    root = DataRoot(root_url)
    sealed = 0
    for plan in plans:
        for spec in (plan.decode, plan.mel, plan.augment, plan.embed):
            if spec is None:
                continue
            with open_output(root, spec) as out:
                out.write_bytes(".placeholder", b"\0")
                out.rows = len(plan.tracks)
            sealed += 1
    return sealed


def synthetic_probabilities(labels: Any, genres: int, rng: Any, right: float = 0.6) -> Any:
    """Softmax rows over ``genres`` that favour the label ``right`` of the time, another genre otherwise."""
    import numpy as np

    n = len(labels)
    logits = rng.standard_normal((n, genres))
    favoured = np.where(rng.random(n) < right, labels, rng.integers(0, genres, size=n))
    logits[np.arange(n), favoured] += 3.0
    logits = np.exp(logits - logits.max(axis=1, keepdims=True))
    return logits / logits.sum(axis=1, keepdims=True)


def report_inputs(tracks: Any, genres: list[str], rng: Any) -> tuple[Any, Any]:
    """(clips, probabilities) of every test track, one clip each, as evaluate would score them."""
    import numpy as np
    import pandas as pd

    test = tracks[tracks["split"] == "test"].reset_index(drop=True)
    index = {g: i for i, g in enumerate(genres)}
    clips = pd.DataFrame({"track_id": test["track_id"], "clip_index": 0, "genre": test["genre"].astype(str),
                          "split": "test", "shard": test["shard"]})
    labels = np.array([index[g] for g in clips["genre"]])
    return clips, synthetic_probabilities(labels, len(genres), rng)


def measure_report(tracks: Any, skipped: Any, config: Any, clock: Clock) -> dict[str, Any]:
    """The report of a run over synthetic test predictions: evaluate's metrics (not timed as the report),
    then the report's own work, timed."""
    import numpy as np
    import pandas as pd

    from genreflow.model.metrics import evaluate_predictions
    from genreflow.tasks.mistakes import confident_mistakes
    from genreflow.tasks.report import track_paths
    from genreflow.tasks.reporting.render import dataset_summary, render_report

    rng = np.random.default_rng(SEED)
    genres = sorted(tracks["genre"].astype(str).unique())
    clips, probs = report_inputs(tracks, genres, rng)
    with clock("evaluate_metrics"):
        predictions, metrics = evaluate_predictions(clips, probs, genres)
    history = pd.DataFrame({"epoch": range(1, 31), "accuracy": np.linspace(0.2, 0.7, 30),
                            "loss": np.linspace(3.0, 1.0, 30), "val_accuracy": np.linspace(0.2, 0.6, 30),
                            "val_loss": np.linspace(3.0, 1.4, 30)})
    counts = tracks.groupby("split").size().rename("clips").reset_index().assign(augmentation="original")
    with clock("report"):
        summary = dataset_summary(tracks, skipped, counts, [])
        mistakes = confident_mistakes(predictions, genres, track_paths(tracks))
        files = render_report("run-scale", metrics, history, summary, config.model_dump(mode="json"),
                              mistakes=mistakes)
    return {"report_bytes": sum(len(b) for b in files.values()), "test_tracks": len(clips),
            "mistakes": len(mistakes)}


def measure_crossval(tracks: Any, config: Any, clock: Clock) -> dict[str, Any]:
    """The cross-validation report over synthetic out-of-fold predictions of every track, 5 folds."""
    import numpy as np
    import pandas as pd

    from genreflow.model.metrics import evaluate_predictions, prob_columns
    from genreflow.tasks.crossval import summarize_folds
    from genreflow.tasks.label_issues import SHOWN_IN_REPORT, out_of_fold_tracks, suspect_labels
    from genreflow.tasks.report import track_paths
    from genreflow.tasks.reporting.render import render_crossval_report

    rng = np.random.default_rng(SEED + 1)
    genres = sorted(tracks["genre"].astype(str).unique())
    index = {g: i for i, g in enumerate(genres)}
    labels = np.array([index[g] for g in tracks["genre"].astype(str)])
    probs = synthetic_probabilities(labels, len(genres), rng)
    fold = np.arange(len(tracks)) % FOLDS
    predictions = pd.DataFrame(probs, columns=prob_columns(genres))
    predictions.insert(0, "track_id", tracks["track_id"].to_numpy())
    predictions.insert(1, "genre", tracks["genre"].astype(str).to_numpy())
    predictions.insert(2, "fold", fold)
    predictions.insert(3, "clip_index", 0)
    results = []
    for k in range(FOLDS):
        rows = fold == k
        clips = predictions.loc[rows, ["track_id", "clip_index", "genre"]].reset_index(drop=True)
        _, metrics = evaluate_predictions(clips, probs[rows], genres)
        results.append({"fold": k, "tracks": {"train": int((fold != k).sum() * 0.9), "val": int((fold != k).sum()
                                                                                              * 0.1),
                                              "test": int(rows.sum())},
                        "training": {"epochs_run": 20}, "cnn": metrics, "chosen": metrics})
    with clock("crossval"):
        summary = summarize_folds(results)
        issues = suspect_labels(out_of_fold_tracks(predictions, genres), genres, track_paths(tracks))
        shown = issues.head(SHOWN_IN_REPORT).to_dict(orient="records")
        files = render_crossval_report("cv-scale", summary, results, config.model_dump(mode="json"),
                                       label_issues=shown, n_label_issues=len(issues))
    return {"crossval_bytes": sum(len(b) for b in files.values()), "suspects": len(issues)}


def run_steps(collection: Path, data_root: Path, out: Path) -> None:
    """The steps child: every plain step on one size, its figures as JSON in ``out``."""
    from genreflow.flows.plan import plan_shards
    from genreflow.flows.status import collect_status, print_status
    from genreflow.tasks.ingest import ingest_stage, skipped_table
    from genreflow.tasks.sources.fma import FmaSource
    from genreflow.tasks.split import assign_shards, split_tracks

    config = bench_config(collection, data_root)
    clock = Clock()
    source = FmaSource(collection, "medium")
    with clock("read"):
        table = source.read()
    with clock("split"):
        split = split_tracks(table, config.split.val_fraction, config.split.test_fraction, config.split.split_seed)
    with clock("shard"):
        sharded = assign_shards(split, SHARD_SIZE)
    with clock("plan"):
        plans = plan_shards(sharded, config)
    with clock("ingest"):
        tracks = ingest_stage(str(data_root), config.source, config.split, SHARD_SIZE, 2, log=_quiet).tracks
    with clock("reingest"):
        again = ingest_stage(str(data_root), config.source, config.split, SHARD_SIZE, 2, log=_quiet)
    if again.changes["added"] or again.changes["removed"] or again.changes["modified"]:
        raise RuntimeError(f"a re-ingest of the same collection changed tracks: {again.changes}")
    with clock("status"), contextlib.redirect_stdout(io.StringIO()) as shown:
        print_status(config)
    status_text = shown.getvalue()
    with clock("seal"):
        sealed = seal_placeholders(str(data_root), plans)
    with clock("status_sealed"), contextlib.redirect_stdout(io.StringIO()) as shown:
        print_status(config)
    sealed_state = collect_status(config)["stages"]  # untimed: what the timed status printed, as data
    report = measure_report(tracks, skipped_table(source.skipped), config, clock)
    crossval = measure_crossval(tracks, config, clock)
    figures = {f"{name}_s": seconds for name, seconds in clock.seconds.items()}
    figures.update({"tracks": len(tracks), "listed": len(table) + len(source.skipped),
                    "skipped": len(source.skipped), "shards": len(plans), "sealed_outputs": sealed,
                    "genres": int(tracks["genre"].nunique()), "artists": int(tracks["artist"].nunique()),
                    "splits": {k: int(v) for k, v in tracks["split"].value_counts().items()},
                    "status_lines": status_text.strip().splitlines()[:1],
                    "status_sealed_stages": sealed_state,
                    "status_all_done": all(set(counts) == {"done"} for counts in sealed_state.values()),
                    **report, **crossval})
    out.write_text(json.dumps(figures))


def _quiet(*_: Any) -> None:
    """A log function that says nothing: the steps are timed, not narrated."""


# ---- the flow children --------------------------------------------------------------------------------------


class SubmitTimer:
    """Counts Prefect's ``Task.submit`` calls in this process, and the seconds they take: wall, and CPU of the
    submitting thread (the wall time less what it spent waiting for a core or the GIL)."""

    def __init__(self) -> None:
        self.calls = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        from prefect.tasks import Task

        original = Task.submit

        def timed(task: Any, *args: Any, **kwargs: Any) -> Any:
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(task, *args, **kwargs)
            finally:
                self.calls += 1
                self.seconds += time.perf_counter() - start
                self.cpu_seconds += time.thread_time() - cpu

        Task.submit = timed  # type: ignore[method-assign]
        try:
            yield
        finally:
            Task.submit = original  # type: ignore[method-assign]


def run_flow(collection: Path, data_root: Path, out: Path) -> None:
    """The flow child: ``genreflow preprocess --to-stage ingest`` as the CLI runs it."""
    from genreflow.bench.preprocess import quiet_stderr
    from genreflow.flows.rebuild import run_command

    config = bench_config(collection, data_root, to_stage="ingest")
    start = time.perf_counter()
    with quiet_stderr():
        run_command("preprocess", config)
    out.write_text(json.dumps({"flow_s": time.perf_counter() - start}))


def run_preprocess(collection: Path, data_root: Path, out: Path) -> None:
    """The preprocess child: ``genreflow preprocess`` to mel on a warm 2-worker LocalCluster, submissions timed."""
    import pandas as pd

    from genreflow.bench.preprocess import WarmCluster, quiet_stderr
    from genreflow.flows.rebuild import run_command
    from genreflow.flows.runner import prefect_api

    warm = next((collection / "fma_medium").rglob("*.mp3"))
    timer = SubmitTimer()
    with prefect_api(), contextlib.closing(WarmCluster(2, warm)) as pool:
        config = bench_config(collection, data_root, dask_address=pool.address, to_stage="mel",
                              time_stretch=[], pitch_shift=[])
        start = time.perf_counter()
        with quiet_stderr(), timer.installed():
            summary = run_command("preprocess", config)
        seconds = time.perf_counter() - start
    tracks = len(pd.read_parquet(data_root / "tracks.parquet", columns=["track_id"]))
    out.write_text(json.dumps({"preprocess_s": seconds, "preprocess_tracks": tracks,
                               "preprocess_per_track_ms": seconds / tracks * 1000,
                               "task_runs": timer.calls, "submit_s": timer.seconds, "submit_cpu_s": timer.cpu_seconds,
                               "shards_computed": summary}))


class AllSubmitted(Exception):
    """Raised by the submit child's flow right after its last shard task is submitted: nothing will run them."""


@contextlib.contextmanager
def stop_after_last_submission(marks: dict[str, float]) -> Iterator[None]:
    """Make the preprocess flow raise AllSubmitted once its last shard is submitted, instead of waiting for results.

    Wraps the shards that flows/preprocess.py hands to ``run_shards`` (which reads them as it submits), so the
    flow's own code, checks and order are what is timed; ``marks`` gets the first and last submission's times.
    """
    import genreflow.flows.preprocess as preprocess

    original = preprocess.run_shards

    def run_shards(task: Any, retries: int, shards: Any, *args: Any, **kwargs: Any) -> Any:
        def until_the_last() -> Iterator[Any]:
            marks["first"] = time.perf_counter()
            yield from shards
            marks["last"] = time.perf_counter()  # asked for one more after the last submission
            raise AllSubmitted

        return original(task, retries, until_the_last(), *args, **kwargs)

    preprocess.run_shards = run_shards  # type: ignore[assignment]
    try:
        yield
    finally:
        preprocess.run_shards = original


def run_submit(collection: Path, data_root: Path, out: Path) -> None:
    """The submit child: ``genreflow preprocess`` to mel against a scheduler with no workers, until every shard's
    task is submitted; ``Task.submit`` timed as in the preprocess child."""
    import logging

    from distributed import LocalCluster

    from genreflow.bench.preprocess import quiet_stderr
    from genreflow.flows.rebuild import run_command
    from genreflow.flows.runner import cluster_settings, prefect_api

    logging.getLogger("prefect").setLevel(logging.CRITICAL)  # the flow's deliberate failure, not news
    timer, marks = SubmitTimer(), dict[str, float]()
    with prefect_api(), cluster_settings(), \
            LocalCluster(n_workers=0, processes=True, dashboard_address=":0", silence_logs=logging.ERROR) as cluster:
        config = bench_config(collection, data_root, dask_address=cluster.scheduler_address, to_stage="mel",
                              time_stretch=[], pitch_shift=[])
        with quiet_stderr(), timer.installed(), stop_after_last_submission(marks), \
                contextlib.suppress(AllSubmitted):
            run_command("preprocess", config)
    if "last" not in marks:
        raise RuntimeError("the preprocess flow ended before submitting its shards")
    out.write_text(json.dumps({"submit_only_task_runs": timer.calls, "submit_only_s": timer.seconds,
                               "submit_only_cpu_s": timer.cpu_seconds,
                               "submit_only_loop_s": marks["last"] - marks["first"]}))


CHILDREN: dict[str, Callable[[Path, Path, Path], None]] = {
    "steps": run_steps, "flow": run_flow, "submit": run_submit, "preprocess": run_preprocess}
PARTS: tuple[str, ...] = tuple(CHILDREN)  # what a size measures by default, in this order


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def child(mode: str, collection: Path, data_root: Path, scratch: Path) -> dict[str, Any]:
    """Run one child; its figures, its peak RSS (``<mode>_peak_rss_mib``) and the load it ended in (``<mode>_load``)."""
    from genreflow.bench.timing import run_child

    out = scratch / f"{mode}.json"
    out.unlink(missing_ok=True)
    shutil.rmtree(data_root, ignore_errors=True)
    data_root.mkdir(parents=True)
    env = _child_env()
    env.setdefault("PREFECT_HOME", str(scratch / "prefect-home"))
    run = run_child([sys.executable, "-m", "genreflow.bench.scale", "--child", mode, "--collection",
                     str(collection), "--data-root", str(data_root), "--out", str(out)], env=env, timeout=7200)
    figures = json.loads(out.read_text())
    figures[f"{mode}_peak_rss_mib"] = run.peak_rss_bytes / 2**20
    figures[f"{mode}_load"] = os.getloadavg()[0]  # the machine's 1-minute load as it ended: timings' context
    return figures


# ---- the whole run ---------------------------------------------------------------------------------------------


def measure_size(n: int, workdir: Path, audio: list[Path], preprocess_max: int,
                 log: Callable[[str], None], parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    """Every figure of one size that ``parts`` (children by name) measure."""
    start = time.perf_counter()
    collection = make_collection(workdir / f"fma-{n}", n, audio)
    log(f"{n} tracks: collection ready in {time.perf_counter() - start:.1f} s")
    scratch = workdir / f"scratch-{n}"
    scratch.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"size": n}
    try:
        if "steps" in parts:
            figures.update(child("steps", collection, scratch / "root", scratch))
            log(f"{n} tracks: steps done ({figures['tracks']} ingested, {figures['shards']} shards)")
        if "flow" in parts:
            figures.update(child("flow", collection, scratch / "root", scratch))
            log(f"{n} tracks: flow to ingest {figures['flow_s']:.1f} s")
        if "submit" in parts:
            figures.update(child("submit", collection, scratch / "root", scratch))
            log(f"{n} tracks: {figures['submit_only_task_runs']} task runs submitted to no workers in "
                f"{figures['submit_only_s']:.1f} s")
        if "preprocess" in parts and n <= preprocess_max:
            figures.update(child("preprocess", collection, scratch / "root", scratch))
            log(f"{n} tracks: preprocessing {figures['preprocess_s']:.1f} s")
    finally:
        shutil.rmtree(scratch / "root", ignore_errors=True)
    return figures


def growth(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per pair of consecutive sizes: each figure's ratio, and the ratio of the sizes (linear growth)."""
    pairs = []
    for small, large in itertools.pairwise(rows):
        ratios = {key: large[key] / small[key] for key, _, _ in FIGURES
                  if isinstance(small.get(key), (int, float)) and isinstance(large.get(key), (int, float))
                  and small[key] > 0}
        pairs.append({"from": small["size"], "to": large["size"], "linear": large["size"] / small["size"],
                      "ratios": ratios})
    return pairs


def _value(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return "–"
    if isinstance(value, int) or (isinstance(value, float) and value >= 100):
        return f"{value:,.0f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def format_table(rows: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> str:
    """Figures per size, then each growth ratio between consecutive sizes (linear: the sizes' ratio)."""
    header = ["figure", *(f"{row['size']:,}" for row in rows),
              *(f"x {p['from']:,}->{p['to']:,} (linear {p['linear']:g})" for p in pairs)]
    lines = [header]
    for key, label, unit in FIGURES:
        if all(row.get(key) is None for row in rows):
            continue
        ratios = [f"{p['ratios'][key]:.1f}" if key in p["ratios"] else "–" for p in pairs]
        lines.append([f"{label}" + (f" ({unit})" if unit else ""), *(_value(row, key) for row in rows), *ratios])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(line, widths, strict=True))) for line in lines)


def targets(rows: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> list[str]:
    """Issue 25's targets, each with what this run measured (only those its sizes can say)."""
    lines = []
    for pair in pairs:
        worst = max(pair["ratios"].items(), key=lambda kv: kv[1] / pair["linear"], default=None)
        if worst:
            lines.append(f"growth {pair['from']:,} -> {pair['to']:,}: steepest {worst[0]} x{worst[1]:.1f} "
                         f"(linear {pair['linear']:g}): " + ("ok" if worst[1] <= pair["linear"] * 1.2 else
                                                             "FASTER THAN LINEAR"))
    for row in rows:
        if row["size"] >= 100_000 and "status_sealed_s" in row:
            lines.append(f"status on {row['size']:,} tracks: {row['status_sealed_s']:.1f} s (target < 10 s)")
        if row["size"] >= 100_000 and "flow_peak_rss_mib" in row:
            lines.append(f"flow process at {row['size']:,}: {row['flow_peak_rss_mib']:.0f} MiB (target < 2048)")
    return lines


def projection(rows: list[dict[str, Any]], workers: tuple[int, ...] = (2, 8, 32)) -> list[str]:
    """fma_full's preprocessing on N workers from the largest preprocessed size: the flow's own work per
    track is serial (submission), the workers' is divided by N.

    A submission costs what the largest submit child measured, with no workers beside the flow: on a cluster
    the workers are other machines' cores. (On the 2-worker LocalCluster it waits for the cores the workers
    hold, while they work: it is not what bounds that run.)
    """
    tasks = math.ceil(FMA_FULL_TRACKS / SHARD_SIZE)
    bare = [row for row in rows if row.get("submit_only_task_runs")]
    done = [row for row in rows if row.get("preprocess_s")]
    if bare:
        submit_per_task = bare[-1]["submit_only_s"] / bare[-1]["submit_only_task_runs"]
    elif done:
        submit_per_task = done[-1]["submit_s"] / max(done[-1]["task_runs"], 1)
    else:
        return []
    lines = [f"fma_full's {tasks:,} task runs: {tasks * submit_per_task / 60:.1f} min of submission "
             f"({submit_per_task * 1000:.0f} ms each{', no workers beside the flow' if bare else ''})"]
    if not done:
        return lines
    row = done[-1]
    work_per_track = max(row["preprocess_s"] - row["submit_s"], 0.0) * 2 / row["preprocess_tracks"]  # 2 workers
    for n in workers:
        wall = max(tasks * submit_per_task, FMA_FULL_TRACKS * work_per_track / n)
        lines.append(f"fma_full ({FMA_FULL_TRACKS:,} tracks, {tasks:,} tasks) on {n} workers: about "
                     f"{wall / 60:.0f} min of 2 s clips (submission {tasks * submit_per_task / 60:.0f} min)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genreflow.bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="collection sizes, comma-separated")
    parser.add_argument("--preprocess-max", type=int, default=10_000,
                        help="preprocess sizes up to this many tracks (default 10000)")
    parser.add_argument("--workdir", type=Path, help="keep the collections here and reuse them (default: a temp dir)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"the children to run per size, comma-separated (default {','.join(PARTS)})")
    parser.add_argument("--steps-only", action="store_true",
                        help="only the plain steps (no Prefect flow, no preprocessing): CI's smoke test; --parts steps")
    parser.add_argument("--distinct", type=int, default=DISTINCT,
                        help=f"distinct audio files the tracks link to (default {DISTINCT}; ~0.3 s each to encode)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--collection", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _silence_logs()
        CHILDREN[args.child](args.collection, args.data_root, args.out)
        return 0
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes: not a list of integers: {args.sizes!r}")
    if not sizes or sizes[0] < 100:
        parser.error("--sizes: each size must be at least 100 tracks")
    asked = {part.strip() for part in args.parts.split(",") if part.strip()}
    if unknown := asked - set(PARTS):
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    parts = ("steps",) if args.steps_only else tuple(part for part in PARTS if part in asked)
    owned = args.workdir is None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="genreflow-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - begin:6.0f}s] {message}", flush=True)

    try:
        audio = distinct_audio(workdir / "distinct", max(1, args.distinct))
        rows = [measure_size(n, workdir, audio, args.preprocess_max, log, parts) for n in sizes]
    finally:
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)
    pairs = growth(rows)
    print()
    print(format_table(rows, pairs))
    print()
    for line in targets(rows, pairs) + projection(rows):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"sizes": rows, "growth": pairs, "load_average": os.getloadavg()},
                                        indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


def _silence_logs() -> None:
    """Ingest's per-source warnings (1 % without genre, 0.5 % without audio) are meant; keep them quiet."""
    import logging

    for name in ("genreflow", "distributed", "prefect", "asyncio", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
