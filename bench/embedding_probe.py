"""``python -m genreflow.bench.embedding_probe``: how well a head separates genres on musicnn embeddings.

The measurement that chose the embedding layer and the head: every 10 s clip
of a folder-per-genre collection (decoded as genreflow decodes it) goes
through musicnn (MTT_musicnn and MSD_musicnn), and each head is
cross-validated on each layer's embeddings: genreflow's own folds
(tasks/folds.py, stratified by genre), fitted on the fold's training clips,
tuned on its validation tracks, track accuracy on its test tracks by the mean
probability of a track's clips. Heads: ``logistic``, genreflow's own
(model/embedding.py: standardised logistic regression, C chosen on
validation), and ``dense``, a Keras dense head (one hidden layer, early
stopping on validation). Prints mean and sample std over folds, and the
embedding cost per clip::

    genreflow weights fetch musicnn
    python -m genreflow.bench.embedding_probe --input ../shared/data/gtzan-mini --heads logistic dense
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genreflow.model.audio import AUDIO_EXTENSIONS, clip_windows, decode_audio, pad_tolerance
from genreflow.model.embedding import fit_head
from genreflow.model.metrics import track_probabilities
from genreflow.model.musicnn import FEATURES, MusicnnEmbedder, log_compressed_mel, patches
from genreflow.tasks.folds import make_folds

DENSE_UNITS, DENSE_EPOCHS, DENSE_PATIENCE = 256, 300, 20
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
        specs = [patches(log_compressed_mel(clip, SAMPLE_RATE)) for clip in clips]
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


def _logistic_probabilities(x: np.ndarray, index: pd.DataFrame, train: np.ndarray, val: np.ndarray,
                            test: np.ndarray, genres: list[str], seed: int) -> np.ndarray:
    """Test-clip probabilities of genreflow's own head (model/embedding.py fit_head: C chosen on validation)."""
    head = fit_head(x[train], index[train], x[val], index[val], genres, seed)
    return head.probabilities(x[test])


def _dense_probabilities(x: np.ndarray, index: pd.DataFrame, train: np.ndarray, val: np.ndarray,
                         test: np.ndarray, genres: list[str], seed: int) -> np.ndarray:
    """Test-clip probabilities of a Keras dense head: standardise, Dense 256 ReLU, dropout 0.5, softmax,
    Adam until the validation loss stops falling (the weights of its best epoch)."""
    import keras

    keras.utils.set_random_seed(seed)
    labels = index["genre"].map({g: i for i, g in enumerate(genres)}).to_numpy()
    norm = keras.layers.Normalization()
    norm.adapt(x[train])
    model = keras.Sequential([keras.Input((x.shape[1],)), norm, keras.layers.Dense(DENSE_UNITS, activation="relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(len(genres), activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    has_val = bool(val.any())
    model.fit(x[train], labels[train], validation_data=(x[val], labels[val]) if has_val else None,
              epochs=DENSE_EPOCHS, batch_size=32, verbose=0,
              callbacks=[keras.callbacks.EarlyStopping("val_loss", patience=DENSE_PATIENCE,
                                                       restore_best_weights=True)] if has_val else [])
    return np.asarray(model.predict(x[test], verbose=0))


HEADS: dict[str, Any] = {"logistic": _logistic_probabilities, "dense": _dense_probabilities}


def cross_validate(x: np.ndarray, clip_track: np.ndarray, genres: np.ndarray, folds: int = 5,
                   seed: int = 0, head: str = "logistic") -> list[float]:
    """Track accuracy of each fold: the head fitted on the fold's training clips, tuned (C, or the epoch) on
    its validation tracks, scored on its test tracks by the clips' mean probability."""
    table = pd.DataFrame({"track_id": np.arange(len(genres)), "genre": genres, "artist": [None] * len(genres)})
    index = pd.DataFrame({"track_id": clip_track, "genre": genres[clip_track]})
    names = sorted(set(genres.tolist()))
    accuracies = []
    for fold in make_folds(table, folds, 0.1, seed):
        train, val, test = (np.isin(clip_track, list(tracks)) for tracks in (fold.train, fold.val, fold.test))
        probs = HEADS[head](x, index, train, val, test, names, seed)
        tracks = track_probabilities(index[test].reset_index(drop=True), probs, names)
        accuracies.append(float(tracks["correct"].mean()))
    return accuracies


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genreflow.bench.embedding_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="folder with one sub-folder of audio per genre")
    parser.add_argument("--models", nargs="+", default=["MTT_musicnn", "MSD_musicnn"])
    parser.add_argument("--weights-dir", type=Path, default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--heads", nargs="+", default=["logistic"], choices=list(HEADS))
    parser.add_argument("--layers", nargs="+", default=None, metavar="MODEL:LAYER",
                        help="embeddings to try (default: every layer of every model)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    embedders = {m: MusicnnEmbedder.from_cache(m, args.weights_dir) for m in args.models}
    data = embed_collection(args.input, embedders)
    candidates = dict(data["features"])
    if len(args.models) > 1:
        candidates["+".join(args.models) + ":penultimate"] = np.hstack(
            [data["features"][f"{m}:penultimate"] for m in args.models])
    if args.layers:
        candidates = {name: candidates[name] for name in args.layers}
    rows = []
    print(f"{len(data['tracks'])} tracks, {len(data['clip_track'])} clips; embedding cost per 10 s clip, all models: "
          f"{data['wall_s_per_clip']:.3f} s wall, {data['cpu_s_per_clip']:.3f} s CPU")
    print(f"| embedding | head | dims | track accuracy (mean ± std over {args.folds} folds) | per fold | "
          "fit and score, s a fold |")
    print("|---|---|---:|---|---|---:|")
    for name, x in candidates.items():
        for head in args.heads:
            start = time.perf_counter()
            accuracies = cross_validate(x, data["clip_track"], data["genres"], args.folds, head=head)
            seconds = (time.perf_counter() - start) / args.folds
            rows.append({"embedding": name, "head": head, "dims": x.shape[1], "mean": float(np.mean(accuracies)),
                         "std": float(np.std(accuracies, ddof=1)), "folds": accuracies, "s_per_fold": seconds})
            print(f"| {name} | {head} | {x.shape[1]} | {rows[-1]['mean']:.3f} ± {rows[-1]['std']:.3f} | "
                  f"{', '.join(f'{a:.2f}' for a in accuracies)} | {seconds:.2f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"input": str(args.input), "wall_s_per_clip": data["wall_s_per_clip"],
                                         "cpu_s_per_clip": data["cpu_s_per_clip"], "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
