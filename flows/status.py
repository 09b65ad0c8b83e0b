"""``genreflow status``: what is done, stale and missing under a data root."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

from genreflow.flows.config import Config
from genreflow.flows.plan import baseline_fingerprint, plan_shards, run_name, stats_fingerprint
from genreflow.storage.fingerprint import fingerprint
from genreflow.storage.manifest import output_state
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import shard_state
from genreflow.tasks.baseline import baseline_manifest_path
from genreflow.tasks.common import ShardPlan
from genreflow.tasks.train import model_manifest_path

SHARD_STAGES = (("decode", "audio"), ("mel", "mel"), ("augment", "mel-aug"))


def stage_states(root: DataRoot, plans: list[ShardPlan]) -> dict[str, Counter]:
    """For each shard stage, how many of its planned shards are done, stale, missing or corrupt."""
    counts: dict[str, Counter] = {}
    for stage, folder in SHARD_STAGES:
        counts[stage] = Counter(
            shard_state(root, folder, p.shard, fp, verify=True)
            for p in plans if (fp := p.fingerprint_of(folder)) is not None
        )
    return counts


def collect_status(config: Config) -> dict:
    """Status as data: per-stage shard counts, quarantine count, stats and model state."""
    root = DataRoot(config.run.data_root)
    if not root.exists(root.tracks_path()):
        return {"data_root": root.url, "ingested": False}
    tracks = root.read_parquet(root.tracks_path())
    plans = plan_shards(tracks, config)
    quarantined = len(root.read_parquet(root.quarantine_path())) if root.exists(root.quarantine_path()) else 0
    run = run_name(plans, config)
    baseline_fp = baseline_fingerprint(plans, config.train.seed)
    return {
        "data_root": root.url,
        "ingested": True,
        "tracks": len(tracks),
        "shards": len(plans),
        "quarantined": quarantined,
        "stages": {stage: dict(counter) for stage, counter in stage_states(root, plans).items()},
        "stats": output_state(root, root.join("stats.manifest.json"), stats_fingerprint(plans)),
        "baseline": output_state(root, baseline_manifest_path(root, baseline_fp), baseline_fp),
        "run": run,
        "train": output_state(root, model_manifest_path(root, run), fingerprint("trained", run)),
    }


def print_status(config: Config) -> None:
    status = collect_status(config)
    console = Console(soft_wrap=True)
    if not status["ingested"]:
        console.print(f"{status['data_root']}: nothing ingested yet (run `genreflow rebuild`)")
        return
    console.print(f"data root {status['data_root']}: {status['tracks']} tracks in {status['shards']} shards, "
                  f"{status['quarantined']} quarantined")
    table = Table("stage", "done", "stale", "missing", "corrupt")
    for stage, counts in status["stages"].items():
        table.add_row(stage, *(str(counts.get(k, 0)) for k in ("done", "stale", "missing", "corrupt")))
    console.print(table)
    console.print(f"stats: {status['stats']}   baseline: {status['baseline']}   model {status['run']}: "
                  f"{status['train']}")
