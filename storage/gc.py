"""Shard files that no current plan references: found for ``genreflow status``, removed by ``genreflow gc``.

A shard that drops out of the plan (its tracks were removed, shards were
merged, augmentation was turned off) is never written again, so its arrays,
index and manifest would stay on disk forever. Only the shard stages' folders
(SHARD_STAGES: decode/, mel/, augment/, embed/) are looked at, one listing
each, no file read: every other output (tracks, stats, baselines, models,
reports, the registry, the records of the last rebuild) is never touched here,
whatever plan is current. Which shards are referenced is the caller's to say
(flows/gc.py, from the plan of the data root's recorded configuration).
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from genreflow.storage.outputs import SHARD_STAGES, output_location
from genreflow.storage.root import DataRoot
from genreflow.storage.space import human_bytes


@dataclass(frozen=True)
class Unreferenced:
    """Files of the shard folders that no planned shard owns: (path, bytes) each, in path order."""

    files: tuple[tuple[str, int], ...] = ()

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.files)

    def summary(self) -> str:
        return files_summary(self.count, self.bytes)


def files_summary(count: int, size: int) -> str:
    """``N files, X MiB``: the figure status and gc print."""
    return f"{count} file{'s' if count != 1 else ''}, {human_bytes(size)}"


def shard_of(name: str) -> str:
    """The shard a file of a shard folder belongs to: its name up to the first dot
    (``train-0003.npy``, ``train-0003.manifest.json``, ``train-0003.npy.tmp-1a2b3c4d``)."""
    return name.split(".", 1)[0]


def unreferenced_files(root: DataRoot, referenced: Mapping[str, Collection[str]]) -> Unreferenced:
    """The files under the shard stages' folders whose shard is not among ``referenced[stage]`` (a stage left
    out references no shard). Folders inside them are not genreflow's: left alone, as is everything else."""
    found: list[tuple[str, int]] = []
    for stage in SHARD_STAGES:
        folder, _ = output_location(root, stage, "")
        if not root.exists(folder):
            continue
        keep = set(referenced.get(stage, ()))
        for entry in root.fs.ls(folder, detail=True):
            path = str(entry["name"]).rstrip("/")
            if entry.get("type") == "file" and shard_of(posixpath.basename(path)) not in keep:
                found.append((path, int(entry.get("size") or 0)))
    return Unreferenced(tuple(sorted(found)))


def remove_unreferenced(root: DataRoot, found: Unreferenced) -> None:
    """Remove the files ``found`` lists, manifests first, so that a run stopped half-way never leaves a
    manifest whose files are gone (it would only read as corrupt, but the next gc finds the rest anyway)."""
    for path, _ in sorted(found.files, key=lambda item: (not item[0].endswith(".manifest.json"), item[0])):
        root.remove(path)
