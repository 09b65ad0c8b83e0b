"""``incremental_rebuild_fraction``: a rebuild after 5 % new tracks, against a full preprocessing of the result.

Both sides run the default preprocessing (decode, mel, augment) as ``genreflow
preprocess`` does, on the same warm Dask cluster, in interleaved rounds:

- incremental: a data root already preprocessed with 95 % of the collection;
  the remaining 5 % of the files appear in the same folders (so the tracks
  that were there keep their ids and paths) and the flow runs again;
- full: a fresh data root, the whole collection.

Target: incremental / full <= 0.15 (issue 12). Positional shards made it about
0.9: most shards changed members when a few tracks were added.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from genreflow.bench import preprocess, timing
from genreflow.bench.inputs import BenchSet

NEW_SHARE = 20  # every 20th track is the new one: 5 %


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy across filesystems): a bench collection costs no space."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def split_collection(collection: BenchSet) -> tuple[list[Path], list[Path]]:
    """(the 95 % already there, the 5 % added): every NEW_SHARE-th file of the sorted set is new."""
    paths = sorted(collection.paths)
    return ([p for i, p in enumerate(paths) if i % NEW_SHARE != NEW_SHARE - 1],
            [p for i, p in enumerate(paths) if i % NEW_SHARE == NEW_SHARE - 1])


def measure(collection: BenchSet, workdir: Path, workers: int, address: str | None, shard_size: int,
            clips_per_track: int | None, rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Interleaved rounds of the incremental and the full side; their timings, shards computed and the ratio."""
    old, new = split_collection(collection)
    timings = timing.Recorder()
    shards: dict[str, Any] = {}

    def config(source: Path, root: Path) -> Any:
        return preprocess.bench_config(source, root, workers, dask_address=address, augment=True,
                                       shard_size=shard_size, clips_per_track=clips_per_track)

    for r in range(rounds):
        source = workdir / f"incremental-{r}"
        for path in old:
            link_or_copy(path, source / path.parent.name / path.name)
        root = preprocess.fresh_root(workdir, "incremental")
        preprocess.run_flow(config(source, root))  # the rebuild before the new tracks: not timed
        for path in new:
            link_or_copy(path, source / path.parent.name / path.name)
        full_root = preprocess.fresh_root(workdir, "full")
        for side, data_root in (("incremental", root), ("full", full_root)):
            shards[side] = timings.time(side, partial(preprocess.run_flow, config(source, data_root)))
            preprocess.remove_root(data_root)
        shutil.rmtree(source, ignore_errors=True)
        log(f"incremental rebuild round {r + 1}/{rounds}: {len(new)} new of {len(collection)} tracks in "
            f"{timings.times['incremental'][-1]:.1f} s, full {timings.times['full'][-1]:.1f} s")
    best = {name: timings.timing(name).best for name in ("incremental", "full")}
    return {"ratio": best["incremental"] / best["full"], "tracks": len(collection), "new_tracks": len(new),
            "shard_size": shard_size, "shards_computed": shards,
            "timings": {name: timings.timing(name).as_dict() for name in best}}
