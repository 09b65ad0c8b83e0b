"""``genreflow gc``: remove the shard files that no current plan references, in the manner of ``dvc gc``.

The current plan is the one ``status`` checks against: the data root's
tracks.parquet under the configuration the last rebuild recorded (a flag
changes it). storage/gc.py finds the files, one listing a shard folder; this
module says which shards the plan references, and removes only while it holds
the data root's lock, so gc never runs during a rebuild that may be writing
the very shards it would judge. ``--dry-run`` lists them and removes nothing.
"""

from __future__ import annotations

import posixpath

from genreflow.flows.config import Config
from genreflow.flows.lock import data_root_lock
from genreflow.flows.plan import plan_shards
from genreflow.storage.gc import Unreferenced, files_summary, remove_unreferenced, unreferenced_files
from genreflow.storage.outputs import SHARD_STAGES, tracks_path
from genreflow.storage.root import DataRoot
from genreflow.storage.space import human_bytes
from genreflow.tasks.workers import ShardPlan


def referenced_shards(plans: list[ShardPlan], config: Config) -> dict[str, set[str]]:
    """{stage: the shards the plan has an output of}; for embed, every shard unless the family is ``cnn``.

    The plan leaves embed out also where musicnn's weights are only missing from
    this shell's cache (flows/plan.py embedding_weights); a rebuild that finds
    them again reuses those shards, so gc must not take them.
    """
    referenced = {stage: {p.shard for p in plans if p.output(stage) is not None} for stage in SHARD_STAGES}
    if config.train.family != "cnn":
        referenced["embed"] = {p.shard for p in plans}
    return referenced


def find_unreferenced(config: Config) -> Unreferenced | None:
    """The shard files no shard of the current plan owns; None when nothing is ingested (no plan to go by)."""
    root = DataRoot(config.run.data_root)
    if not root.exists(tracks_path(root)):
        return None
    plans = plan_shards(root.read_parquet(tracks_path(root)), config)
    return unreferenced_files(root, referenced_shards(plans, config))


def unreferenced_line(count: int, size: int) -> str:
    """The line ``status`` prints when there is something to collect."""
    return f"unreferenced: {files_summary(count, size)} (genreflow gc removes them)"


def gc_command(config: Config, dry_run: bool) -> int:
    """List (``dry_run``) or remove the unreferenced shard files, with their count and bytes; exit 0."""
    root = DataRoot(config.run.data_root)
    if dry_run:
        found = find_unreferenced(config)
        if found is None or not found.count:
            print(_nothing(root, found))
            return 0
        for path, size in found.files:
            print(f"{posixpath.relpath(path, root.path)}  {human_bytes(size)}")
        print(f"{found.summary()} unreferenced in {root.url}; `genreflow gc` removes them")
        return 0
    with data_root_lock(root):  # a rebuild holding it refuses us, naming itself
        found = find_unreferenced(config)
        if found is None or not found.count:
            print(_nothing(root, found))
            return 0
        remove_unreferenced(root, found)
    print(f"removed {found.summary()} from {root.url}")
    return 0


def _nothing(root: DataRoot, found: Unreferenced | None) -> str:
    if found is None:
        return f"{root.url}: nothing ingested yet, so no plan to judge shard files by; nothing removed"
    return f"{root.url}: every shard file belongs to the current plan; nothing to remove"
