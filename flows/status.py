"""``genreflow status``: what is done, stale and missing under a data root, and why it is stale."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

from genreflow.flows.config import Config
from genreflow.flows.gc import referenced_shards, unreferenced_line
from genreflow.flows.lock import lock_holder
from genreflow.flows.plan import baseline_spec, embedding_model_spec, plan_shards, stats_spec, train_spec
from genreflow.storage.gc import unreferenced_files
from genreflow.storage.outputs import SHARD_STAGES, OutputSpec, dependency_changes, staleness, state_of, tracks_path
from genreflow.storage.registry import read_registry
from genreflow.storage.root import DataRoot
from genreflow.tasks.changes import changes_markdown, code_changes, read_last_rebuild
from genreflow.tasks.workers import ShardPlan

# What an output can be, as status reports it: "stale" outputs were made from other inputs or
# parameters, "code-changed" ones by another version of their stage's code, "dependency-changed" ones with
# another version of a library that makes the stage's output (or one upstream of it).
STATES: tuple[str, ...] = ("done", "stale", "code-changed", "dependency-changed", "missing", "corrupt")
_STALENESS_STATES = {"code": "code-changed", "dependencies": "dependency-changed"}


def output_status(root: DataRoot, spec: OutputSpec, changed: set[str] | None = None) -> str:
    """One of STATES for the output ``spec`` plans; ``changed`` gathers "librosa 0.10.2 → 0.11.0" for each
    library version that made a dependency-changed output."""
    state = state_of(root, spec)
    if state != "stale":
        return state
    state = _STALENESS_STATES.get(staleness(root, spec) or "", state)
    if state == "dependency-changed" and changed is not None:
        changed.update(f"{name} {before} → {now}" for name, (before, now) in dependency_changes(root, spec).items())
    return state


def stage_states(root: DataRoot, plans: list[ShardPlan], changed: set[str] | None = None) -> dict[str, Counter]:
    """For each shard stage, how many of its planned shards are in each of STATES; embed only where planned
    (with an embedding model). ``changed``: as output_status's."""
    states = {stage: Counter(output_status(root, spec, changed) for p in plans
                             if (spec := p.output(stage)) is not None)
              for stage in SHARD_STAGES}
    return {stage: counts for stage, counts in states.items() if stage != "embed" or counts}


def collect_status(config: Config) -> dict:
    """Status as data: per-stage shard counts, quarantine count, stats and model state."""
    root = DataRoot(config.run.data_root)
    if not root.exists(tracks_path(root)):
        return {"data_root": root.url, "ingested": False}
    tracks = root.read_parquet(tracks_path(root))
    plans = plan_shards(tracks, config)
    quarantined = len(root.read_parquet(root.quarantine_path())) if root.exists(root.quarantine_path()) else 0
    model = train_spec(plans, config)
    embedding = embedding_model_spec(plans, config)
    last = read_last_rebuild(root)
    unreferenced = unreferenced_files(root, referenced_shards(plans, config))
    changed: set[str] = set()  # library versions that made dependency-changed outputs, gathered as they are seen
    return {
        "data_root": root.url,
        "ingested": True,
        "tracks": len(tracks),
        "shards": len(plans),
        "quarantined": quarantined,
        "stages": {stage: dict(counter) for stage, counter in stage_states(root, plans, changed).items()},
        "stats": output_status(root, stats_spec(plans), changed),
        "baseline": output_status(root, baseline_spec(plans, config.train.seed), changed),
        "run": model.key,
        "train": output_status(root, model, changed),
        "embedding_run": embedding.key if embedding else None,
        "embedding_train": output_status(root, embedding, changed) if embedding else None,
        "dependencies_changed": sorted(changed),  # filled by the calls above, evaluated before this entry
        "promoted": read_registry(root).promoted,
        "last_rebuild": last,
        "code_changed_since_last_rebuild": code_changes(last),
        "in_use_by": lock_holder(root),  # a run holding the data root now: its outputs may be changing
        "unreferenced": {"files": unreferenced.count, "bytes": unreferenced.bytes},  # what `genreflow gc` removes
    }


def print_status(config: Config) -> None:
    status = collect_status(config)
    console = Console(soft_wrap=True)
    if not status["ingested"]:
        console.print(f"{status['data_root']}: nothing ingested yet (run `genreflow rebuild`)")
        return
    console.print(f"data root {status['data_root']}: {status['tracks']} tracks in {status['shards']} shards, "
                  f"{status['quarantined']} quarantined")
    table = Table("stage", "done", "stale: inputs changed", "stale: code changed", "stale: dependency changed",
                  "missing", "corrupt")
    for stage, counts in status["stages"].items():
        table.add_row(stage, *(str(counts.get(k, 0)) for k in STATES))
    console.print(table)
    if status["in_use_by"]:
        console.print(f"in use now by a genreflow run ({status['in_use_by']}): these counts may be changing",
                      markup=False)
    if status["unreferenced"]["files"]:
        console.print(unreferenced_line(status["unreferenced"]["files"], status["unreferenced"]["bytes"]),
                      markup=False)
    if status["dependencies_changed"]:
        console.print(f"stale: dependency changed ({', '.join(status['dependencies_changed'])})", markup=False)
    embedding = (f"   embedding model {status['embedding_run']}: {status['embedding_train']}"
                 if status["embedding_run"] else "")
    console.print(f"stats: {status['stats']}   baseline: {status['baseline']}   model {status['run']}: "
                  f"{status['train']}{embedding}   promoted model: {status['promoted'] or 'none'}")
    if status["code_changed_since_last_rebuild"]:
        console.print("code changed since the last rebuild, for: "
                      + ", ".join(status["code_changed_since_last_rebuild"]))
    last = status["last_rebuild"]
    if last:
        console.print(f"last rebuild, {last.get('finished_at')}:")
        console.print(changes_markdown(last.get("changes") or {}), markup=False)
        if promotion := last.get("promotion"):
            console.print(f"- Model {promotion.get('run')}: {promotion.get('decision')} ({promotion.get('reason')})",
                          markup=False)
