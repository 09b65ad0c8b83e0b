"""``python -m genreflow.bench.head_study``: which head, on which musicnn features, issue 22's embedding family ships.

Why: today's head is a logistic regression fitted clip by clip, its C chosen
on a few validation tracks. This study embeds every clip of a folder-per-genre
collection once (bench/embedding_probe.py's ``embed_collection``, both musicnn
models, every layer; cached in a .npz under ``--work`` so reruns are instant),
then cross-validates on the same seeded, stratified track folds
(tasks/folds.py, genreflow's own: train, validation and test tracks a fold):

- ``clip-logistic``: today's head (model/embedding.py ``fit_head``), trained
  on the fold's training clips, C chosen on its validation tracks, a track's
  decision the mean of its clips' probabilities;
- track-level heads (model/track_head.py): one pooled vector a track, a
  logistic regression, an RBF SVM, a small MLP or the best of the three
  (``auto``), each tuned by inner 4-fold CV on the fold's training tracks only
  and calibrated by a temperature fitted on the inner out-of-fold predictions.
  The validation tracks are left alone, as a rebuild leaves them for the choice
  between the CNN and the embedding family.

Prints, per variant, the test tracks' accuracy (mean ± sample std over folds),
ECE (10 bins) before and after calibration over all folds' test tracks
(each track is tested once) and as the mean of the folds, and the head's fit
CPU seconds a fold (the machine is shared: CPU time, not wall) against the
embed stage's CPU time for the collection::

    genreflow weights fetch musicnn
    python -m genreflow.bench.head_study --data ../shared/data/gtzan-mini
    # the folds a rebuild of a CSV of absolute paths draws (bench/model_quality.py's):
    python -m genreflow.bench.head_study --data ../shared/data/gtzan-mini --track-ids path

The folds depend on the track ids they are drawn over, so the two commands
measure on two different draws of 5 folds; docs/model.md gives both.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from genreflow.model.track_head import (
    HEAD_KINDS,
    INNER_FOLDS,
    expected_calibration_error,
    fit_track_head,
    pool_clips,
    softmax,
)
from genreflow.tasks.folds import Fold, make_folds

MODELS: tuple[str, ...] = ("MSD_musicnn", "MTT_musicnn")
SPLIT_SEED = 42  # genreflow's default --split-seed
VAL_FRACTION = 0.1  # genreflow's default validation fraction
# Feature sets: name -> the clip features (model:layer) side by side.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "MSD max_pool": ("MSD_musicnn:max_pool",),
    "MSD mean_pool": ("MSD_musicnn:mean_pool",),
    "MSD penultimate": ("MSD_musicnn:penultimate",),
    "MSD max_pool+mean_pool": ("MSD_musicnn:max_pool", "MSD_musicnn:mean_pool"),
    # max_pool with the 50 tag scores (the network's sigmoid output) side by side: issue 22's second round.
    "MSD max_pool+taggram": ("MSD_musicnn:max_pool", "MSD_musicnn:taggram"),
    "MSD max_pool+penultimate+taggram": ("MSD_musicnn:max_pool", "MSD_musicnn:penultimate", "MSD_musicnn:taggram"),
    "MSD+MTT penultimate": ("MSD_musicnn:penultimate", "MTT_musicnn:penultimate"),
    "MSD+MTT max_pool": ("MSD_musicnn:max_pool", "MTT_musicnn:max_pool"),
    "MTT max_pool": ("MTT_musicnn:max_pool",),
}
HEADS: tuple[str, ...] = ("clip-logistic", *HEAD_KINDS, "logistic-c10", "auto")
# Heads that are a kind with another grid: name -> (kind, grid).
WIDER_GRIDS: dict[str, tuple[str, tuple[dict[str, float], ...]]] = {
    "logistic-c10": ("logistic", tuple({"C": c} for c in (0.1, 0.01, 1.0, 10.0))),
}


# ---------------------------------------------------------------- the embeddings, once


def cache_path(data: Path, work: Path, models: Sequence[str]) -> Path:
    """The .npz of ``data``'s clip embeddings under ``work``: named by the folder, its files and the models."""
    files = sorted(f"{p.relative_to(data)}:{p.stat().st_size}" for p in data.glob("*/*") if p.is_file())
    digest = hashlib.sha256("\n".join([str(data.resolve()), *models, *files]).encode()).hexdigest()[:12]
    return work / f"head-study-{data.name}-{digest}.npz"


def load_or_embed(data: Path, work: Path, models: Sequence[str] = MODELS,
                  weights_dir: Path | None = None) -> dict[str, Any]:
    """Every clip's features of every model and layer, with each model's embedding cost; from the cache if there.

    Each model is embedded in its own pass, so that each one's cost is its own (decode, resampling,
    musicnn's mel and the network: the embed stage's work); returns tracks, genres, clip_track,
    features {model:layer: (clips, dims)}, cpu_s_per_clip and wall_s_per_clip {model: s}.
    """
    path = cache_path(data, work, models)
    if path.exists():
        with np.load(path, allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            return {"tracks": meta["tracks"], "genres": saved["genres"], "clip_track": saved["clip_track"],
                    "features": {name: saved[f"f:{name}"] for name in meta["features"]},
                    "cpu_s_per_clip": meta["cpu_s_per_clip"], "wall_s_per_clip": meta["wall_s_per_clip"],
                    "cache": str(path)}
    from genreflow.bench.embedding_probe import embed_collection
    from genreflow.model.musicnn import MusicnnEmbedder

    out: dict[str, Any] = {"features": {}, "cpu_s_per_clip": {}, "wall_s_per_clip": {}}
    for model in models:
        part = embed_collection(data, {model: MusicnnEmbedder.from_cache(model, weights_dir)})
        out.update(tracks=part["tracks"], genres=part["genres"], clip_track=part["clip_track"])
        out["features"].update(part["features"])
        out["cpu_s_per_clip"][model] = part["cpu_s_per_clip"]
        out["wall_s_per_clip"][model] = part["wall_s_per_clip"]
    work.mkdir(parents=True, exist_ok=True)
    meta = {"tracks": out["tracks"], "features": sorted(out["features"]), "cpu_s_per_clip": out["cpu_s_per_clip"],
            "wall_s_per_clip": out["wall_s_per_clip"], "data": str(data)}
    np.savez(path, meta=json.dumps(meta), genres=np.asarray(out["genres"], dtype=str), clip_track=out["clip_track"],
             **{f"f:{name}": array for name, array in out["features"].items()})
    return {**out, "cache": str(path)}


def feature_matrix(features: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """The clip features ``names`` side by side [shape=(clips, sum of dims)]."""
    return np.hstack([np.asarray(features[name], np.float64) for name in names])


# ---------------------------------------------------------------- one fold


@dataclass(frozen=True)
class FoldResult:
    """A variant on one fold's test tracks: labels, probabilities before and after calibration, fit seconds."""

    labels: np.ndarray  # class indices of the test tracks
    raw: np.ndarray  # [shape=(tracks, genres)] before calibration
    calibrated: np.ndarray
    fit_seconds: float
    chosen: Mapping[str, Any]


def _clip_logistic(x: np.ndarray, clip_track: np.ndarray, genres: np.ndarray, names: list[str], fold: Fold,
                   seed: int) -> FoldResult:
    """Today's head: model/embedding.py's clip-level logistic regression, C on validation, clips' mean probability."""
    from genreflow.model.embedding import fit_head
    from genreflow.model.metrics import track_probabilities

    index = pd.DataFrame({"track_id": clip_track, "genre": genres[clip_track]})
    train, val, test = (np.isin(clip_track, list(tracks)) for tracks in (fold.train, fold.val, fold.test))
    start = time.process_time()
    with threadpool_limits(limits=1):  # as the track heads fit (model/track_head.py): a fair comparison
        head = fit_head(x[train], index[train], x[val], index[val], names, seed)
    seconds = time.process_time() - start
    tracks = track_probabilities(index[test].reset_index(drop=True), head.probabilities(x[test]), names)
    probs = tracks[[f"prob_{g}" for g in names]].to_numpy(np.float64)
    labels = np.array([names.index(g) for g in tracks["genre"]])
    return FoldResult(labels, probs, probs, seconds, {"C": head.c})


def _track_head(x: np.ndarray, clip_track: np.ndarray, genres: np.ndarray, names: list[str], fold: Fold,
                kinds: Sequence[str], pooling: str, seed: int, wider: bool = False) -> FoldResult:
    """A track-level head fitted (inner CV, temperature) on the fold's training tracks only; its test tracks."""
    keys, pooled = pool_clips(x, clip_track, pooling)
    track_genre = genres[keys]
    train, test = np.isin(keys, list(fold.train)), np.isin(keys, list(fold.test))
    start = time.process_time()
    grids = {kind: grid for kind, grid in WIDER_GRIDS.values() if kind in kinds} if wider else None
    head = fit_track_head(pooled[train], track_genre[train], names, kinds=kinds, pooling=pooling, seed=seed,
                          grids=grids)
    seconds = time.process_time() - start
    logits = head.logits(pooled[test])
    labels = np.array([names.index(g) for g in track_genre[test]])
    return FoldResult(labels, softmax(logits), softmax(logits, head.temperature), seconds,
                      {"head": head.kind, **head.params, "T": head.temperature})


def evaluate_variant(x: np.ndarray, clip_track: np.ndarray, genres: np.ndarray, folds: Sequence[Fold], head: str,
                     pooling: str = "mean", seed: int = 0) -> dict[str, Any]:
    """One variant over ``folds``: per-fold accuracy, ECE before and after calibration, fit seconds, choices.

    x : np.ndarray [shape=(clips, dims)]; clip_track [shape=(clips,)]: each clip's track number;
    genres [shape=(tracks,)]: each track's genre, as ``embed_collection`` returns them.
    """
    names = sorted(set(genres.tolist()))
    results = []
    for fold in folds:
        if head == "clip-logistic":
            results.append(_clip_logistic(x, clip_track, genres, names, fold, seed))
        else:
            kinds = HEAD_KINDS if head == "auto" else (WIDER_GRIDS[head][0],) if head in WIDER_GRIDS else (head,)
            results.append(_track_head(x, clip_track, genres, names, fold, kinds, pooling, seed,
                                       wider=head in WIDER_GRIDS))
    accuracies = [float((r.calibrated.argmax(axis=1) == r.labels).mean()) for r in results]
    labels = np.concatenate([r.labels for r in results])
    raw, calibrated = (np.vstack([getattr(r, a) for r in results]) for a in ("raw", "calibrated"))
    return {
        "accuracy_mean": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies, ddof=1)),
        "folds": accuracies,
        "ece_before": expected_calibration_error(raw, labels),
        "ece_after": expected_calibration_error(calibrated, labels),
        "ece_before_fold_mean": float(np.mean([expected_calibration_error(r.raw, r.labels) for r in results])),
        "ece_after_fold_mean": float(np.mean([expected_calibration_error(r.calibrated, r.labels) for r in results])),
        "fit_s_per_fold": float(np.mean([r.fit_seconds for r in results])),
        "chosen": [dict(r.chosen) for r in results],
    }


def study_folds(genres: np.ndarray, k: int, seed: int, ids: Sequence[str] | None = None) -> list[Fold]:
    """genreflow's folds over the collection's tracks, numbered as ``clip_track`` numbers them; no artists known.

    ``ids``: the tracks' ids as genreflow would know them (default: their numbers). The folds depend on
    the ids, so a rebuild's own folds are drawn from its ids (``--track-ids path``: a CSV of absolute paths).
    """
    names = list(range(len(genres))) if ids is None else list(ids)
    table = pd.DataFrame({"track_id": names, "genre": genres, "artist": [None] * len(genres)})
    number = {name: i for i, name in enumerate(names)}
    return [Fold(f.number, *(tuple(number[t] for t in part) for part in (f.train, f.val, f.test)))
            for f in make_folds(table, k, VAL_FRACTION, seed)]


def run_study(data: Mapping[str, Any], feature_sets: Mapping[str, Sequence[str]], heads: Sequence[str],
              poolings: Sequence[str], folds: int = 5, seed: int = SPLIT_SEED, ids: Sequence[str] | None = None
              ) -> list[dict[str, Any]]:
    """Every (feature set, head, pooling) on the same folds; one row each, printed as it finishes."""
    genres, clip_track = np.asarray(data["genres"]), np.asarray(data["clip_track"])
    fold_list = study_folds(genres, folds, seed, ids)
    clips = len(clip_track)
    rows = []
    for set_name, names in feature_sets.items():
        x = feature_matrix(data["features"], names)
        models = sorted({n.split(":")[0] for n in names})
        embed_s = clips * sum(data["cpu_s_per_clip"].get(m, np.nan) for m in models)
        for head in heads:
            for pooling in (["clip mean prob"] if head == "clip-logistic" else poolings):
                result = evaluate_variant(x, clip_track, genres, fold_list, head, pooling, seed)
                row = {"features": set_name, "dims": x.shape[1], "head": head, "pooling": pooling, **result,
                       "embed_cpu_s": embed_s, "fit_fraction_of_embed": result["fit_s_per_fold"] / embed_s}
                rows.append(row)
                print(markdown_row(row), flush=True)
    return rows


TABLE_HEADER = ("| features | dims | head | pooling | track accuracy | per fold | ECE before | ECE after | "
                "ECE before / after (fold mean) | fit CPU s a fold | fit / embed |\n"
                "|---|---:|---|---|---|---|---:|---:|---|---:|---:|")


def markdown_row(row: Mapping[str, Any]) -> str:
    return (f"| {row['features']} | {row['dims']} | {row['head']} | {row['pooling']} | "
            f"{row['accuracy_mean']:.3f} ± {row['accuracy_std']:.3f} | {', '.join(f'{a:.2f}' for a in row['folds'])} | "
            f"{row['ece_before']:.3f} | {row['ece_after']:.3f} | "
            f"{row['ece_before_fold_mean']:.3f} / {row['ece_after_fold_mean']:.3f} | {row['fit_s_per_fold']:.2f} | "
            f"{100 * row['fit_fraction_of_embed']:.1f} % |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genreflow.bench.head_study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with one sub-folder of audio per genre")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "genreflow-head-study",
                        help="where the embeddings' .npz cache lives (default: a folder under the temp dir)")
    parser.add_argument("--weights-dir", type=Path, default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=SPLIT_SEED, help="seed of the folds (genreflow's --split-seed)")
    parser.add_argument("--features", nargs="+", default=list(FEATURE_SETS), choices=list(FEATURE_SETS))
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    parser.add_argument("--poolings", nargs="+", default=["mean"], choices=["mean", "mean+max"])
    parser.add_argument("--track-ids", choices=["number", "path"], default="number",
                        help="what the folds are drawn over: the tracks' numbers, or their absolute paths without "
                             "extension (the ids a CSV of absolute paths gives: a rebuild's own folds)")
    parser.add_argument("--json", type=Path, default=None, help="also write every row here")
    args = parser.parse_args(argv)

    data = load_or_embed(args.data, args.work, MODELS, args.weights_dir)  # both models, so one cache serves all
    print(f"{len(data['tracks'])} tracks, {len(data['clip_track'])} clips (features cached in {data['cache']}); "
          "embedding CPU s a clip: " + ", ".join(f"{m} {s:.3f}" for m, s in data["cpu_s_per_clip"].items())
          + f"; {args.folds} folds, seed {args.seed}, inner CV {INNER_FOLDS} folds")
    print(TABLE_HEADER)
    ids = None if args.track_ids == "number" else [
        str(args.data.resolve() / genre / track) for track, genre in zip(data["tracks"], data["genres"], strict=True)]
    rows = run_study(data, {s: FEATURE_SETS[s] for s in args.features}, args.heads, args.poolings, args.folds,
                     args.seed, ids)
    if args.json:
        args.json.write_text(json.dumps({"data": str(args.data), "folds": args.folds, "seed": args.seed,
                                         "cpu_s_per_clip": data["cpu_s_per_clip"], "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
