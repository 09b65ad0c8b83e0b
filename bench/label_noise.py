"""``python -m genreflow.bench.label_noise``: how well suspect labels find tags that are wrong on purpose.

It builds a copy of a folder-per-genre collection out of symbolic links (the
audio is never copied) in which a seeded random share of the tracks sits in
the folder of another genre, runs ``genreflow preprocess`` and ``genreflow
evaluate --folds K`` on it as a user would, and scores the ranking of
``reports/cv-<id>/label_issues.csv`` against the tracks it moved: precision
and recall of its first k rows, for k = the number moved. docs/model.md
("Suspect labels") holds the results of::

    python -m genreflow.bench.label_noise --input ../shared/data/gtzan-mini --work /tmp/noise-gtzan
    python -m genreflow.bench.label_noise --demo --work /tmp/noise-demo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genreflow.bench.model_quality import run_genreflow
from genreflow.model.audio import AUDIO_EXTENSIONS
from genreflow.tasks.label_issues import LABEL_ISSUES_FILE, precision_recall_at_k


def swapped_collection(source: Path, target: Path, fraction: float, seed: int) -> dict[str, str]:
    """``target``/<genre>/<file> as links to every audio file of ``source``/<genre>/, a seeded ``fraction`` of
    them (rounded, at least one) under another genre drawn at random; {link path: true genre} of those moved.

    ``target`` must not exist yet: a half-built collection from an earlier run would mix two draws.
    """
    if target.exists():
        raise FileExistsError(f"{target} exists; give a new folder")
    genres = sorted(p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [(genre, path) for genre in genres for path in sorted((source / genre).rglob("*"))
             if path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")]
    if len(genres) < 2 or not files:
        raise ValueError(f"{source} needs audio files in two or more genre folders")
    rng = np.random.default_rng(seed)
    count = max(1, round(fraction * len(files)))
    moved = set(rng.choice(len(files), size=count, replace=False).tolist())
    swapped: dict[str, str] = {}
    for i, (genre, path) in enumerate(files):
        folder = genre
        if i in moved:
            folder = str(rng.choice([g for g in genres if g != genre]))
        link = target / folder / path.relative_to(source / genre)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path.resolve(), link)
        if i in moved:
            swapped[str(link)] = genre
    return swapped


def score_label_issues(issues: pd.DataFrame, swapped: dict[str, str]) -> dict[str, Any]:
    """Precision and recall at k = len(swapped) of label_issues.csv's ranking, and how many it flagged."""
    k = len(swapped)
    ranked = issues.sort_values("rank")["path"].astype(str).tolist()
    precision, recall = precision_recall_at_k(ranked, set(swapped), k)
    found = issues[issues["path"].astype(str).isin(swapped)]
    right = sum(swapped[str(p)] == g for p, g in zip(found["path"], found["suggested_genre"], strict=True))
    return {"k": k, "flagged": len(issues), "precision_at_k": precision, "recall_at_k": recall,
            "recall_all_flagged": len(found) / k, "suggested_true_genre": right}


def run(source: Path, work: Path, fraction: float, seed: int, folds: int, flags: list[str]) -> dict[str, Any]:
    """Swap, cross-validate and score; the result as a dict."""
    work = work.absolute()
    collection = work / "collection"
    swapped = swapped_collection(source, collection, fraction, seed)
    root, log = work / "root", work / "genreflow.log"
    common = ["--source", "folder", "--input", str(collection), "--data-root", str(root), *flags]
    start = time.perf_counter()
    run_genreflow(["preprocess", *common], log)
    run_genreflow(["evaluate", "--folds", str(folds), *common], log)
    reports = sorted(root.glob(f"reports/cv-*/{LABEL_ISSUES_FILE}"), key=lambda p: p.stat().st_mtime_ns)
    if not reports:
        raise SystemExit(f"no {LABEL_ISSUES_FILE} under {root}")
    crossval = json.loads((reports[-1].parent / "crossval.json").read_text())
    tracks = sum(crossval["folds"][i]["tracks"]["test"] for i in range(len(crossval["folds"])))
    summary = crossval["summary"]
    return {"source": str(source), "tracks": tracks, "fraction": fraction, "seed": seed, "folds": folds,
            "flags": flags, "minutes": round((time.perf_counter() - start) / 60, 1),
            "chosen_track_accuracy": (summary.get("chosen") or summary.get("cnn") or {}).get("track_accuracy"),
            "report": str(reports[-1].parent), **score_label_issues(pd.read_csv(reports[-1]), swapped)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genreflow.bench.label_noise", description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, help="a folder-per-genre collection (gtzan-mini)")
    parser.add_argument("--demo", action="store_true", help="the demo set (12 tracks a genre), synthesised first")
    parser.add_argument("--work", type=Path, required=True, help="a new folder for the links and the data root")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("flags", nargs="*", help="genreflow flags after --, e.g. -- --model embedding")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    source = args.input
    if args.demo:
        from genreflow.tasks.sources.demo_synth import generate_demo_set

        source = args.work / "demo"
        generate_demo_set(source, tracks_per_genre=12, seed=0)
    if source is None:
        parser.error("give --input or --demo")
    result = run(source, args.work, args.fraction, args.seed, args.folds, args.flags)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
