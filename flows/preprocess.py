"""The preprocessing half of the DAG: ingest -> decode -> mel, decode -> augment (train only), decode -> embed.

One Prefect task per shard, fanned out on Dask, runs that shard's stages in
order (tasks/shard.py, which says why not one task per stage), so stages
overlap across shards. Every stage skips work whose manifest matches its plan.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger

from genreflow.flows.config import Config
from genreflow.flows.lock import data_root_lock
from genreflow.flows.plan import embedding_weights, plan_shards
from genreflow.flows.progress import StageProgress
from genreflow.flows.runner import plugin_on_workers, run_shards
from genreflow.storage.errors import GenreflowError
from genreflow.storage.outputs import SHARD_STAGES, remove_legacy_outputs
from genreflow.storage.root import DataRoot
from genreflow.storage.space import check_space, shard_stage_need
from genreflow.tasks.decode import write_quarantine
from genreflow.tasks.embed import embedder_cache
from genreflow.tasks.ingest import ingest_task
from genreflow.tasks.shard import finished_shard, preprocess_shard_task
from genreflow.tasks.workers import ShardPlan, ShardResult

try:  # a Prefect with ``opaque``: the task gets the value, and nothing walks into it
    from prefect.utilities.annotations import opaque as _Annotation
except ImportError:  # an earlier one: ``quote`` stops Prefect's own walks (prefect-dask's still walks it)
    from prefect.utilities.annotations import quote as _Annotation  # type: ignore[assignment]


class Untraversed(_Annotation):  # type: ignore[misc,valid-type]
    """A task argument that Prefect hands to the task as it is, without walking into it for futures.

    Prefect's own annotations do not survive the pickling to a Dask worker (Prefect 3.9: ``opaque(x)`` comes
    back as ``opaque((x,))``, a tuple where the task wanted ``x``), so this one says how to rebuild itself.
    """

    __slots__ = ()

    def __getnewargs__(self) -> tuple[Any]:
        return (self[0],)


class StageFailed(GenreflowError, RuntimeError):
    """Some shards failed; the ones that succeeded are kept for the rerun."""


@dataclass
class PreprocessResult:
    tracks: pd.DataFrame
    plans: list[ShardPlan]
    results: list[ShardResult] = field(default_factory=list)
    changes: dict[str, Any] = field(default_factory=dict)  # tasks.ingest.track_changes


def run_preprocess(config: Config, root: DataRoot, progress: StageProgress) -> PreprocessResult:
    """Submit one task per shard (its decode, mel and augment in order) and wait for them all.

    ``root``: the flow's DataRoot; the tasks get its (absolute) ``url``, since they are pickled to workers.
    Each plan goes to its task wrapped in :class:`Untraversed`: it holds no futures, and Prefect walking its
    track table and rows for them (twice a submission, once more on the worker) was about a tenth of a
    submission's CPU in the flow process (docs/benchmarks.md, "Where a submission's time goes"). The task
    gets the same plan.
    """
    stages = config.stages_to_run()
    if removed := remove_legacy_outputs(root):
        get_run_logger().info("removed %s: written by genreflow 0.1, rebuilt as decode/ and augment/ (see README, "
                              "Upgrading)", ", ".join(removed))
    ensure_embedding_weights(config)
    ingested = ingest_task(root.url, config.source, config.split, config.run.shard_size,
                           config.run.workers, force=config.forced("ingest"))
    plans = plan_shards(ingested.tracks, config)
    outcome = PreprocessResult(ingested.tracks, plans, changes=ingested.changes)
    if "decode" not in stages:
        return outcome
    check_space(root, [shard_stage_need(root, stage, {p.shard: len(p.tracks) for p in plans
                                                      if p.output(stage) is not None})
                       for stage in SHARD_STAGES if stage in stages], "preprocessing")
    for stage in SHARD_STAGES:
        planned = [p for p in plans if p.output(stage) is not None] if stage in stages else []
        if planned:
            progress.add_stage(stage, len(planned), sum(len(p.tracks) for p in planned))
    forced = [stage for stage in SHARD_STAGES if config.forced(stage)]

    def record(plan: ShardPlan, results: list[ShardResult]) -> None:
        for result in results:
            outcome.results.append(result)
            progress.advance(result)

    def unfinished() -> Iterator[ShardPlan]:
        """The shards to submit, longest first, each as soon as it is known; the finished ones are recorded."""
        for plan in longest_first(plans, augment="augment" in stages):
            finished = finished_shard(root, plan, stages, forced)
            if finished is None:
                yield plan
            else:
                record(plan, finished)

    embedding = any(p.embed for p in plans) and "embed" in stages
    with plugin_on_workers(embedder_cache(config.train)) if embedding else nullcontext():
        failed = run_shards(preprocess_shard_task, config.run.retries, unfinished(),
                            lambda plan: (root.url, Untraversed(plan), config.audio, config.augment, config.train,
                                          stages, forced),
                            record)
    write_quarantine(root, plans)
    failures = [f"shard {plan.shard}: {reason}" for plan, reason in failed]
    if failures:
        raise StageFailed(f"{len(failures)} shard task(s) failed (finished shards are kept; rerun to "
                          "redo only these): " + "; ".join(sorted(failures)))
    return outcome


def ensure_embedding_weights(config: Config) -> None:
    """``--family embedding`` fetches musicnn's weights on first use; ``best`` goes on without them, saying how."""
    from genreflow.model.weights import MUSICNN, fetch_weights

    if embedding_weights(config.train) is not None or config.train.family == "cnn":
        return
    logger = get_run_logger()
    if config.train.family == "embedding":
        logger.info("embed: fetching musicnn's weights (first use; `genreflow weights fetch musicnn` does it ahead)")
        fetch_weights(MUSICNN, config.train.weights_dir)
    else:
        logger.info("embedding model skipped: musicnn's weights are not in the cache (`genreflow weights fetch "
                    "musicnn` adds them; --family cnn silences this)")


def longest_first(plans: list[ShardPlan], augment: bool) -> list[ShardPlan]:
    """Shards in the order to submit them: the longest tasks first, so that short ones fill the end.

    Dask starts tasks in submission order; with the longest first, no worker is
    still on a long shard while the others have run out (the LPT rule). Augmenting
    a clip costs about ten times decoding it and its mel (docs/benchmarks.md), so
    training shards come first when augmentation runs, then larger before smaller.
    """
    return sorted(plans, key=lambda plan: (augment and plan.augment is not None, len(plan.tracks)), reverse=True)


@flow(name="preprocess", log_prints=True)
def preprocess_flow(config: Config) -> dict[str, int]:
    """ingest, decode, mel and augment into shards under the data root."""
    from genreflow.tasks.changes import read_last_rebuild, rebuild_changes, shard_counts, write_last_rebuild

    logger = get_run_logger()
    root = DataRoot(config.run.data_root)
    with data_root_lock(root):
        previous = read_last_rebuild(root)
        with StageProgress(logger) as progress:
            outcome = run_preprocess(config, root, progress)
        write_last_rebuild(root, rebuild_changes(outcome.changes, outcome.results, previous), {})
    summary = {stage: counts["computed"] for stage, counts in shard_counts(outcome.results).items()}
    logger.info("preprocessing done: %d tracks in %d shards; shards computed: %s",
                len(outcome.tracks), len(outcome.plans), summary)
    return summary

