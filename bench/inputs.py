"""The benchmark's inputs: a demo set of real 30 s, 44.1 kHz stereo mp3s, and larger copies of it.

Encoding a demo mp3 costs more than a second of this machine's time, so the
larger sets that the flow comparisons need are made of hard links to the
generated files under new names (a copy where links are not possible). A
linked file costs exactly as much to decode as its original, and genreflow
treats it as another track: other name, other track id.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from genreflow.tasks.sources.demo_synth import DEMO_GENRES, generate_demo_set

TRACK_SECONDS = 30.0
SAMPLE_RATE = 44100
DEMO_SEED = 5


@dataclass(frozen=True)
class BenchSet:
    """A folder source (``<root>/<genre>/*.mp3``) and its files."""

    root: Path
    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.paths)


def generate_base_set(folder: Path, tracks_per_genre: int, workers: int = 2) -> BenchSet:
    """Write ``tracks_per_genre`` demo tracks of each of the 8 genres to ``folder``."""
    paths = generate_demo_set(folder, tracks_per_genre=tracks_per_genre, seed=DEMO_SEED, seconds=TRACK_SECONDS,
                              sr=SAMPLE_RATE, workers=workers)
    return BenchSet(folder, tuple(sorted(paths)))


def replicate_set(base: BenchSet, folder: Path, copies: int) -> BenchSet:
    """A set of ``copies`` x len(base) tracks under ``folder``: copy k of a.mp3 is <genre>/a-ck.mp3."""
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}")
    paths = []
    for path in base.paths:
        genre_dir = folder / path.parent.name
        genre_dir.mkdir(parents=True, exist_ok=True)
        for k in range(copies):
            target = genre_dir / f"{path.stem}-c{k}{path.suffix}"
            if not target.exists():
                try:
                    os.link(path, target)
                except OSError:
                    shutil.copyfile(path, target)
            paths.append(target)
    return BenchSet(folder, tuple(sorted(paths)))


def first_per_genre(bench_set: BenchSet, per_genre: int) -> list[Path]:
    """Up to ``per_genre`` files of each genre, for measurements that need only a few."""
    chosen = []
    for genre in DEMO_GENRES:
        chosen += [p for p in bench_set.paths if p.parent.name == genre][:per_genre]
    return chosen


def train_csv(bench_set: BenchSet, path: Path) -> Path:
    """A label CSV (``path,genre,split``) listing every file of ``bench_set`` with split ``train``.

    For comparisons where every track is augmented, as the seed's loop
    augments every file: ingest keeps a CSV's split instead of drawing one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "genre", "split"])
        writer.writerows([str(p.absolute()), p.parent.name, "train"] for p in bench_set.paths)
    return path
