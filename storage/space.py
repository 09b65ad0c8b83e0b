"""Free space under a data root, and whether what a stage is about to write will fit in it.

A stage that cannot fit should not start: an hour of decoding that ends on a
full disk is an hour lost, and the shards it did write are then in the way of
the space the user needs to free. What a stage needs is estimated from what it
already wrote (issue 25): the bytes a track took in its finished shards times
the tracks still to do, or the size of an earlier run's output of the same
stage. A stage with nothing finished yet has no estimate and starts (a
library prediction counts a small floor a bucket instead); a write
that then finds the disk full stops the run with one line anyway
(storage.errors.disk_full_error). Only local roots are checked: an object store
reports no free space, and fills up rarely.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from genreflow.storage.errors import NotEnoughSpace
from genreflow.storage.manifest import read_manifest
from genreflow.storage.outputs import manifest_path, output_location
from genreflow.storage.root import DataRoot

MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True)
class SpaceNeed:
    """What one stage is about to write: ``units`` (tracks, or whole outputs) at ``per_unit`` bytes each."""

    stage: str
    units: int
    per_unit: float
    unit: str = "track"
    floor: bool = False  # per_unit is a lower bound (nothing finished to go by), not what finished units took

    @property
    def bytes(self) -> int:
        return int(self.units * self.per_unit)

    def describe(self) -> str:
        units = f"{self.units} {self.unit}{'s' if self.units != 1 else ''}"
        least = " at the least" if self.floor else ""
        return f"{self.stage} {human_bytes(self.bytes)} ({units} x {human_bytes(self.per_unit)}{least})"


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def free_bytes(root: DataRoot) -> int | None:
    """Bytes free under the root (its nearest existing folder: a new root is made on first write); None where
    the root is not a local path."""
    if not root.is_local:
        return None
    path = root.path
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def shard_stage_need(root: DataRoot, stage: str, tracks: Mapping[str, int]) -> SpaceNeed | None:
    """What ``stage`` will write for the shards of ``tracks`` ({shard: its tracks}) that have no manifest yet,
    at the bytes a track took in those that have one; None when none has one (no estimate) or none is left.

    One listing of the stage's folder, no file read: cheap beside the stage, whatever the number of shards.
    """
    folder, _ = output_location(root, stage, "")
    sizes: dict[str, int] = {}
    sealed: set[str] = set()
    if root.exists(folder):
        for entry in root.fs.ls(folder, detail=True):
            name = posixpath.basename(str(entry["name"]).rstrip("/"))
            shard = name.split(".", 1)[0]
            if name.endswith(MANIFEST_SUFFIX) and ".tmp-" not in name:
                sealed.add(shard)
            elif entry.get("type") == "file" and ".tmp-" not in name:
                sizes[shard] = sizes.get(shard, 0) + int(entry.get("size") or 0)
    done = [shard for shard in tracks if shard in sealed]
    left = sum(n for shard, n in tracks.items() if shard not in sealed)
    done_tracks = sum(tracks[shard] for shard in done)
    if not left or not done_tracks:
        return None
    return SpaceNeed(stage, left, sum(sizes.get(shard, 0) for shard in done) / done_tracks)


def output_need(root: DataRoot, stage: str, outputs: int = 1) -> SpaceNeed | None:
    """What ``outputs`` new outputs of ``stage`` (a model, a report) will write, at the size of the largest
    sealed one of that stage under the root; None when there is none to go by."""
    if outputs < 1:
        return None
    sizes = []
    for path in root.fs.glob(manifest_path(root, stage, "*")):
        manifest = read_manifest(root, path)
        if manifest is not None:
            sizes.append(sum(entry.size for entry in manifest.files.values()))
    return SpaceNeed(stage, outputs, max(sizes), "output") if sizes else None


# What a new bucket takes at the least where none is sealed yet to go by: its table and its manifest, each at
# least a filesystem block (4 KiB on ext4, xfs and tmpfs).
BUCKET_FLOOR = 2 * 4096
# Sealed buckets read for the estimate: their manifests give rows and sizes; more would only cost time.
BUCKET_SAMPLE = 64


def bucket_need(root: DataRoot, stage: str, keys: str, files: int, buckets: int) -> SpaceNeed | None:
    """What ``buckets`` new outputs of ``stage`` holding ``files`` rows will write (a library prediction's
    buckets): at the bytes a row took in the sealed outputs whose keys match the glob ``keys`` (a sample of
    them), or BUCKET_FLOOR a bucket where none is sealed; None when nothing is left to write."""
    if files < 1 or buckets < 1:
        return None
    size = rows = 0
    for path in sorted(root.fs.glob(manifest_path(root, stage, keys)))[:BUCKET_SAMPLE]:
        manifest = read_manifest(root, path)
        if manifest is not None and manifest.rows:
            size += sum(entry.size for entry in manifest.files.values())
            rows += manifest.rows
    if rows:
        return SpaceNeed(stage, files, size / rows, "file")
    return SpaceNeed(stage, buckets, BUCKET_FLOOR, "bucket", floor=True)


def check_space(root: DataRoot, needs: Iterable[SpaceNeed | None], what: str) -> None:
    """Raise NotEnoughSpace, with the estimate, when ``needs`` clearly will not fit in the root's free space."""
    known = [need for need in needs if need is not None and need.bytes > 0]
    free = free_bytes(root) if known else None
    if free is None:
        return
    total = sum(need.bytes for need in known)
    if total > free:
        basis = "" if all(need.floor for need in known) else ", as the finished outputs took"
        raise NotEnoughSpace(
            f"{root.path}: not enough space for {what}: about {human_bytes(total)} needed "
            f"({'; '.join(need.describe() for need in known)}{basis}) but "
            f"{human_bytes(free)} free, so the disk would be full; free some space there and rerun: finished "
            "outputs are kept")
