"""Load run for issue 6.9: preprocess a demo set of >= 2,000 tracks and record time and memory.

Not a test (pytest collects only test_*.py): it takes tens of minutes. It

1. writes (or reuses) a demo set of ``--tracks-per-genre`` x 8 tracks of 30 s;
2. runs ``genreflow preprocess`` on it as a subprocess (every whole 10 s clip,
   so 3 clips a track; augmentation off unless ``--augment``);
3. samples, every ``--interval`` seconds with psutil, the RSS of the flow
   process and of each Dask worker process, and how many shards are done;
4. writes samples.csv, per_shard.csv (each worker's RSS as each mel shard
   finishes) and summary.json under ``--out``, and prints the summary.

"No growth per shard" is judged by the slope of each worker's RSS against the
number of finished shards over the second half of the run, after the workers
have warmed up (librosa's numba compilation, first-touch allocations).

    python tests/reliability/load_run.py --tracks-per-genre 250 --out /tmp/genreflow-load
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[2]
MB = 1 << 20


def role(process: psutil.Process) -> str:
    """What a child of the flow process is: a Dask worker, the Prefect API, or other."""
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return "gone"
    if "spawn_main" in cmdline or ("distributed" in cmdline and "worker" in cmdline):
        return "worker"
    if "uvicorn" in cmdline or ("prefect" in cmdline and "server" in cmdline):
        return "prefect-api"
    if "resource_tracker" in cmdline:
        return "resource-tracker"
    return "other"


def rss(process: psutil.Process) -> int | None:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return None


def shards_done(root: Path, stage: str) -> int:
    return len(list((root / stage).glob("*.manifest.json"))) if (root / stage).is_dir() else 0


def sample(flow: subprocess.Popen, root: Path, interval: float, start: float) -> list[dict]:
    """RSS samples of the flow process tree until it exits."""
    parent = psutil.Process(flow.pid)
    rows: list[dict] = []
    while flow.poll() is None:
        now = time.monotonic() - start
        decoded, mel = shards_done(root, "decode"), shards_done(root, "mel")
        flow_rss = rss(parent)
        if flow_rss is not None:
            rows.append({"t": round(now, 2), "pid": flow.pid, "role": "flow", "rss_mb": flow_rss / MB,
                         "decode_shards": decoded, "mel_shards": mel})
        try:
            children = parent.children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            child_rss = rss(child)
            if child_rss is not None:
                rows.append({"t": round(now, 2), "pid": child.pid, "role": role(child), "rss_mb": child_rss / MB,
                             "decode_shards": decoded, "mel_shards": mel})
        time.sleep(interval)
    return rows


def per_shard(rows: list[dict]) -> list[dict]:
    """Each worker's RSS at the first sample after each new mel shard finished."""
    out: list[dict] = []
    seen: dict[int, int] = {}
    for row in rows:
        if row["role"] != "worker":
            continue
        if row["mel_shards"] > seen.get(row["pid"], -1):
            seen[row["pid"]] = row["mel_shards"]
            out.append({"pid": row["pid"], "mel_shards": row["mel_shards"], "rss_mb": round(row["rss_mb"], 1)})
    return out


def growth(points: list[dict], total_shards: int) -> dict[str, float]:
    """RSS slope (MB per shard) over the second half of the run, and the change over that half."""
    late = [p for p in points if p["mel_shards"] >= total_shards // 2]
    if len(late) < 3:
        return {"mb_per_shard": float("nan"), "second_half_change_mb": float("nan")}
    x = np.array([p["mel_shards"] for p in late], float)
    y = np.array([p["rss_mb"] for p in late], float)
    slope = float(np.polyfit(x, y, 1)[0]) if np.ptp(x) > 0 else 0.0
    return {"mb_per_shard": round(slope, 3), "second_half_change_mb": round(float(y[-1] - y[0]), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks-per-genre", type=int, default=250, help="x 8 genres (default 250: 2,000 tracks)")
    parser.add_argument("--out", type=Path, default=Path("genreflow-load"))
    parser.add_argument("--demo-dir", type=Path, help="demo set to reuse or write (default: OUT/demo)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--augment", action="store_true", help="keep the seed's 4 augmentations (much slower)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between RSS samples")
    args = parser.parse_args()

    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    demo = (args.demo_dir or out / "demo").absolute()
    root = out / "root"
    summary: dict = {"tracks": args.tracks_per_genre * 8, "workers": args.workers, "shard_size": args.shard_size,
                     "augmentation": "seed's 4" if args.augment else "off", "clips_per_track": "all (3 a track)",
                     "cpus": os.cpu_count()}

    sys.path.insert(0, str(REPO))
    from genreflow.tasks.sources.demo_synth import generate_demo_set

    start = time.monotonic()
    generate_demo_set(demo, tracks_per_genre=args.tracks_per_genre, seed=0, workers=args.workers,
                      progress=lambda done, total: print(f"\rdemo {done}/{total}", end="", file=sys.stderr))
    summary["demo_seconds"] = round(time.monotonic() - start, 1)
    print(f"\ndemo set ready in {summary['demo_seconds']} s", file=sys.stderr)

    command = [sys.executable, "-m", "genreflow.flows.cli", "preprocess", "--source", "folder", "--input", str(demo),
               "--data-root", str(root), "--workers", str(args.workers), "--shard-size", str(args.shard_size)]
    if not args.augment:
        command += ["--time-stretch", "--pitch-shift"]  # empty lists: augmentation off
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(REPO),
           "PREFECT_HOME": str(out / "prefect-home")}
    start = time.monotonic()
    with open(out / "preprocess.log", "w") as log:
        flow = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=out)
        rows = sample(flow, root, args.interval, start)
    summary["preprocess_seconds"] = round(time.monotonic() - start, 1)
    summary["returncode"] = flow.returncode

    with open(out / "samples.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    shards = per_shard(rows)
    with open(out / "per_shard.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["pid", "mel_shards", "rss_mb"])
        writer.writeheader()
        writer.writerows(shards)

    total = shards_done(root, "mel")
    summary["shards"] = total
    summary["tracks_per_second"] = round(summary["tracks"] / summary["preprocess_seconds"], 2)
    summary["peak_rss_mb"] = {"flow": round(max((r["rss_mb"] for r in rows if r["role"] == "flow"), default=0), 1)}
    summary["workers_rss"] = {}
    for pid in sorted({r["pid"] for r in rows if r["role"] == "worker"}):
        points = [p for p in shards if p["pid"] == pid]
        worker_rows = [r for r in rows if r["pid"] == pid]
        summary["workers_rss"][str(pid)] = {
            "peak_mb": round(max(r["rss_mb"] for r in worker_rows), 1),
            "after_first_shard_mb": next((p["rss_mb"] for p in points if p["mel_shards"] >= 1), None),
            "after_last_shard_mb": points[-1]["rss_mb"] if points else None,
            **growth(points, total),
        }
    other = [r for r in rows if r["role"] not in ("flow", "worker", "gone")]
    for name in sorted({r["role"] for r in other}):
        summary["peak_rss_mb"][name] = round(max(r["rss_mb"] for r in other if r["role"] == name), 1)
    by_time: dict[float, float] = {}
    for r in rows:
        by_time[r["t"]] = by_time.get(r["t"], 0.0) + r["rss_mb"]
    summary["peak_rss_mb"]["whole tree"] = round(max(by_time.values(), default=0), 1)
    quarantine = root / "quarantine.parquet"
    if quarantine.exists():
        import pandas as pd

        summary["quarantined"] = len(pd.read_parquet(quarantine))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0 if flow.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
