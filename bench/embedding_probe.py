"""``python -m genreflow.bench.embedding_probe``: how well a linear head separates genres on musicnn embeddings.

A quick measurement to choose the embedding layer and the head before the
embed stage exists: every 10 s clip of a folder-per-genre collection (decoded
as genreflow decodes it) goes through musicnn (MTT_musicnn and MSD_musicnn),
and a standardised logistic regression is cross-validated on each layer's
embeddings: genreflow's own folds (tasks/folds.py, stratified by genre), C
chosen per fold on that fold's validation tracks, refit on train + validation,
track accuracy by the mean probability of a track's clips. Prints mean and
sample std over folds, and the embedding cost per clip::

    genreflow weights fetch musicnn
    python -m genreflow.bench.embedding_probe --input ../shared/data/gtzan-mini
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genreflow.model.audio import AUDIO_EXTENSIONS, clip_windows, decode_audio, pad_tolerance
from genreflow.model.musicnn import FEATURES, MusicnnEmbedder, log_mel, patches
from genreflow.tasks.folds import make_folds

C_GRID = (0.01, 0.1, 1.0)
SAMPLE_RATE = 22_050  # genreflow's decoding rate; musicnn resamples to 16 kHz itself
CLIP_SECONDS = 10.0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def embed_collection(folder: Path, embedders: Mapping[str, MusicnnEmbedder]) -> dict:
    """Every clip of every track under ``folder/<genre>/``: each model's features, the clip's track, the costs."""
    paths = sorted(p for p in folder.glob("*/*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    tracks, genres, clip_track = [], [], []
    features: dict[str, list[np.ndarray]] = {f"{m}:{f}": [] for m in embedders for f in FEATURES}
    wall = cpu = 0.0
    clips_done = 0
    for number, path in enumerate(paths):
        clip = round(CLIP_SECONDS * SAMPLE_RATE)
        clips = clip_windows(decode_audio(path, SAMPLE_RATE), clip, pad_short=True, tolerance=pad_tolerance(clip))
        tracks.append(path.stem)
        genres.append(path.parent.name)
        clip_track += [number] * len(clips)
        start_wall, start_cpu = time.perf_counter(), _cpu_seconds()
        specs = [patches(log_mel(clip, SAMPLE_RATE)) for clip in clips]
        bounds = np.cumsum([len(s) for s in specs])[:-1]
        for model, embedder in embedders.items():
            out = embedder.features(np.concatenate(specs))
            for feature in FEATURES:
                features[f"{model}:{feature}"] += [part.mean(axis=0) for part in np.split(out[feature], bounds)]
        if number > 0:  # the first track pays for librosa's and TensorFlow's warm-up
            wall += time.perf_counter() - start_wall
            cpu += _cpu_seconds() - start_cpu
            clips_done += len(clips)
    return {"tracks": tracks, "genres": np.array(genres), "clip_track": np.array(clip_track),
            "features": {name: np.stack(rows) for name, rows in features.items()},
            "wall_s_per_clip": wall / max(clips_done, 1), "cpu_s_per_clip": cpu / max(clips_done, 1)}


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> Any:
    """A standardised logistic regression (a sklearn Pipeline) fitted on ``x``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings at the largest C
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(x, y)


def _track_accuracy(model: Any, x: np.ndarray, clip_track: np.ndarray, tracks: Sequence[int],
                    genres: np.ndarray) -> float:
    """Share of ``tracks`` whose clips' mean probability picks their genre."""
    rows = np.isin(clip_track, tracks)
    probs = pd.DataFrame(model.predict_proba(x[rows]), columns=model.classes_)
    mean = probs.groupby(clip_track[rows]).mean()
    return float((mean.idxmax(axis=1).to_numpy() == genres[mean.index.to_numpy()]).mean())


def cross_validate(x: np.ndarray, clip_track: np.ndarray, genres: np.ndarray, folds: int = 5,
                   seed: int = 0) -> list[float]:
    """Track accuracy of each fold: C chosen on the fold's validation tracks, refit on train + validation."""
    table = pd.DataFrame({"track_id": np.arange(len(genres)), "genre": genres, "artist": [None] * len(genres)})
    accuracies = []
    for fold in make_folds(table, folds, 0.1, seed):
        train, val, test = list(fold.train), list(fold.val), list(fold.test)
        rows = np.isin(clip_track, train)
        labels = genres[clip_track]
        best = max(C_GRID, key=lambda c: (_track_accuracy(_fit(x[rows], labels[rows], c), x, clip_track, val,
                                                          genres), -abs(np.log10(c))))
        rows = np.isin(clip_track, train + val)
        accuracies.append(_track_accuracy(_fit(x[rows], labels[rows], best), x, clip_track, test, genres))
    return accuracies


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genreflow.bench.embedding_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="folder with one sub-folder of audio per genre")
    parser.add_argument("--models", nargs="+", default=["MTT_musicnn", "MSD_musicnn"])
    parser.add_argument("--weights-dir", type=Path, default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    embedders = {m: MusicnnEmbedder.from_cache(m, args.weights_dir) for m in args.models}
    data = embed_collection(args.input, embedders)
    candidates = dict(data["features"])
    if len(args.models) > 1:
        candidates["+".join(args.models) + ":penultimate"] = np.hstack(
            [data["features"][f"{m}:penultimate"] for m in args.models])
    rows = []
    print(f"{len(data['tracks'])} tracks, {len(data['clip_track'])} clips; embedding cost per 10 s clip, all models: "
          f"{data['wall_s_per_clip']:.3f} s wall, {data['cpu_s_per_clip']:.3f} s CPU")
    print(f"| embedding | dims | track accuracy (mean ± std over {args.folds} folds) | per fold |")
    print("|---|---:|---|---|")
    for name, x in candidates.items():
        accuracies = cross_validate(x, data["clip_track"], data["genres"], args.folds)
        rows.append({"embedding": name, "dims": x.shape[1], "mean": float(np.mean(accuracies)),
                     "std": float(np.std(accuracies, ddof=1)), "folds": accuracies})
        print(f"| {name} | {x.shape[1]} | {rows[-1]['mean']:.3f} ± {rows[-1]['std']:.3f} | "
              f"{', '.join(f'{a:.2f}' for a in accuracies)} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"input": str(args.input), "wall_s_per_clip": data["wall_s_per_clip"],
                                         "cpu_s_per_clip": data["cpu_s_per_clip"], "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
