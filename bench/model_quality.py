"""``python -m genreflow.bench.model_quality``: cross-validate recipes and their ablations on one collection.

Each variant is a set of genreflow flags; for each, this runs ``genreflow
preprocess`` (once per distinct preprocessing) and ``genreflow evaluate
--folds K`` as a user would, reads the cross-validation report, and prints a
table of track-level accuracy and macro-F1 (mean and std over folds) for the
CNN, the embedding model (where musicnn's weights are in the cache), the model
each fold's validation tracks chose (what a rebuild promotes) and the MFCC +
SVM baseline from the same folds. docs/model.md holds the results of::

    python -m genreflow.bench.model_quality --source csv --input all-train.csv --work /tmp/gtzan --json gtzan.json

where all-train.csv lists every gtzan-mini excerpt with split ``train``, so
that ingest augments every track (cross-validation ignores ingest's split).
Long: every variant trains K models.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# name -> (what it tests, genreflow flags). The first two are the presets; the rest change one thing.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "seed": ("the seed's recipe", ["--recipe", "seed"]),
    "genreflow": ("the default recipe", ["--recipe", "genreflow"]),
    "no-batch-norm": ("default without batch normalisation", ["--batch-norm", "off"]),
    "no-time-pooling": ("default with the seed's Flatten (whole clips)", ["--time-pooling", "off",
                                                                          "--crop-seconds", "0"]),
    "no-crop": ("default trained on whole 10 s clips", ["--crop-seconds", "0"]),
    "no-spec-augment": ("default without SpecAugment masks", ["--spec-augment", "off"]),
    "no-offline-augment": ("default without stretch/pitch copies", ["--time-stretch", "--pitch-shift"]),
    "mixup": ("default plus mixup 0.2", ["--mixup", "0.2"]),
    "label-smoothing": ("default plus label smoothing 0.1", ["--label-smoothing", "0.1"]),
    "cosine": ("default plus a cosine learning-rate decay", ["--lr-schedule", "cosine"]),
    "class-weights": ("default plus class weights", ["--class-weights", "on"]),
    "crop-3s": ("default trained on random 3 s crops", ["--crop-seconds", "3"]),
    "spectral-augment": ("default, stretch/pitch copies made from the STFT", ["--augment-domain", "spectral"]),
    "waveform-augment": ("default, stretch/pitch copies made by librosa on the audio",
                         ["--augment-domain", "waveform"]),
}
# Flags that change what preprocessing writes: variants that share them share a data root.
PREPROCESSING_FLAGS = ("--recipe", "--clips-per-track", "--sample-rate", "--clip-seconds", "--n-mels", "--time-stretch",
                       "--pitch-shift", "--augment-domain")


def _preprocessing_key(flags: list[str]) -> str:
    """A folder name for the data root of ``flags``: its preprocessing flags and their values."""
    values = [*flags[1:], ""]
    parts = [flag.lstrip("-") + ("" if values[i].startswith("--") or not values[i] else f"_{values[i]}")
             for i, flag in enumerate(flags) if flag in PREPROCESSING_FLAGS]
    return "-".join(sorted(parts)) or "default"


def run_genreflow(args: list[str], log: Path) -> float:
    """Run ``genreflow ARGS``, its output appended to ``log``; seconds taken. Raises on failure."""
    start = time.perf_counter()
    with open(log, "a") as handle:
        handle.write(f"\n$ genreflow {' '.join(args)}\n")
        handle.flush()
        done = subprocess.run([sys.executable, "-m", "genreflow.flows.cli", *args], stdout=handle,
                              stderr=subprocess.STDOUT, env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    if done.returncode != 0:
        raise SystemExit(f"genreflow {' '.join(args)} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def _newest_crossval_report(root: Path) -> dict[str, Any]:
    """The crossval.json written last under ``root``: the evaluate run just finished wrote it."""
    reports = sorted(root.glob("reports/cv-*/crossval.json"), key=lambda p: p.stat().st_mtime_ns)
    if not reports:
        raise SystemExit(f"no cross-validation report under {root}")
    return json.loads(reports[-1].read_text())


def run_variant(name: str, flags: list[str], common: list[str], work: Path, folds: int, log: Path
                ) -> dict[str, Any]:
    root = work / f"root-{_preprocessing_key(flags)}"
    argv = [*common, "--data-root", str(root), *flags]
    run_genreflow(["preprocess", *argv], log)  # a no-op where the shards are current
    seconds = run_genreflow(["evaluate", *argv, "--folds", str(folds)], log)
    report = _newest_crossval_report(root)
    per_epoch = [f["training"]["seconds_per_epoch"] for f in report["folds"]
                 if f.get("training", {}).get("seconds_per_epoch")]
    clips = [f.get("train_clips") for f in report["folds"]]
    return {"variant": name, "what": VARIANTS.get(name, ("", []))[0], "flags": flags, "seconds": seconds,
            "summary": report["summary"], "seconds_per_epoch": per_epoch, "train_clips": clips,
            "epochs": [f["training"]["epochs_run"] for f in report["folds"] if f.get("training")],
            "chosen": [(f.get("selection") or {}).get("chosen", "cnn") for f in report["folds"]]}


def format_table(results: list[dict[str, Any]], markdown: bool = False) -> str:
    """One row per variant: each model's track accuracy (mean ± std over folds), the CNN's macro-F1, which
    family the folds chose, mean epochs and seconds per epoch."""
    def cell(summary: dict[str, Any], model: str, metric: str) -> str:
        entry = summary.get(model, {}).get(metric)
        return "-" if not entry else f"{entry['mean']:.3f} ± {entry['std']:.3f}"

    rows = [("variant", "CNN track acc.", "CNN macro-F1", "embedding track acc.", "chosen track acc.",
             "chosen family", "baseline track acc.", "epochs", "s/epoch")]
    for r in results:
        per_epoch, epochs, chosen = r["seconds_per_epoch"], r["epochs"], r.get("chosen", [])
        rows.append((r["variant"], cell(r["summary"], "cnn", "track_accuracy"), cell(r["summary"], "cnn", "macro_f1"),
                     cell(r["summary"], "embedding", "track_accuracy"), cell(r["summary"], "chosen", "track_accuracy"),
                     ", ".join(f"{family} {chosen.count(family)}" for family in sorted(set(chosen))) or "-",
                     cell(r["summary"], "baseline", "track_accuracy"),
                     f"{sum(epochs) / len(epochs):.1f}" if epochs else "-",
                     f"{sum(per_epoch) / len(per_epoch):.1f}" if per_epoch else "-"))
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join([lines[0], "|" + "---|" * len(rows[0]), *lines[1:]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genreflow.bench.model_quality",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="csv")
    parser.add_argument("--input", required=True, help="the collection (as genreflow's --input)")
    parser.add_argument("--work", type=Path, required=True, help="data roots and the log go here")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--json", type=Path, help="write the results here (and read finished ones back)")
    parser.add_argument("--markdown", action="store_true", help="print the final table as markdown")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="flags for every variant")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "model_quality.log"
    common = ["--source", args.source, "--input", args.input, *args.extra]
    done = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    results = []
    for name in args.variants:
        key = json.dumps([name, common, args.folds])
        if key not in done:
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {VARIANTS[name][0]}", flush=True)
            done[key] = run_variant(name, VARIANTS[name][1], common, args.work, args.folds, log)
            if args.json:
                args.json.write_text(json.dumps(done, indent=2) + "\n")
        results.append(done[key])
        print(format_table(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(results, markdown=args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
