"""The preprocessing task: one Prefect task per shard runs its decode, mel, augment and embed stages in order.

Why one task and not one per stage: a Prefect task submitted to a Dask worker
costs about 0.1 s of the worker's time (it rebuilds Prefect's settings and API
client each time) and 0.07 s of the flow process's (it serialises them), and
as three tasks per shard that overhead was a quarter of the decode and mel work
of a 50-track shard (docs/benchmarks.md). Nested task runs would be cheaper but
are created anew by each attempt, so a worker lost mid-shard would leave one
forever "Running" in the Prefect UI; this task's run id is fixed when it is
submitted, so a rescheduled attempt completes the same task run.

Each stage skips itself when its output's manifest matches the plan, so a retry
(or a rerun of the flow) redoes only the stages still missing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from prefect import task

from genreflow.model.params import AudioConfig, AugmentConfig, TrainConfig
from genreflow.storage.outputs import OutputSpec, done_manifest
from genreflow.storage.root import DataRoot
from genreflow.tasks.augment import augment_stage
from genreflow.tasks.decode import decode_stage
from genreflow.tasks.embed import embed_stage
from genreflow.tasks.mel import mel_stage
from genreflow.tasks.workers import ShardPlan, ShardResult, retry_transient


@task(name="shard", retry_condition_fn=retry_transient)
def preprocess_shard_task(root_url: str, plan: ShardPlan, audio: AudioConfig, augment: AugmentConfig,
                          train: TrainConfig, stages: Sequence[str], forced: Collection[str] = ()
                          ) -> list[ShardResult]:
    """decode, then mel, (training shards) augment and (with an embedding model) embed of ``plan``'s shard,
    as far as ``stages`` goes.

    ``forced``: the stages to recompute even where their manifest matches (--from-stage).
    """
    runs = {output.stage for output in shard_outputs(plan, stages)}
    results = [decode_stage(root_url, plan.decode, plan.tracks, audio, "decode" in forced)]
    if "mel" in runs:
        results.append(mel_stage(root_url, plan.mel, audio, "mel" in forced))
    if "augment" in runs and plan.augment is not None:
        results.append(augment_stage(root_url, plan.augment, audio, augment, "augment" in forced))
    if "embed" in runs and plan.embed is not None:
        results.append(embed_stage(root_url, plan.embed, audio, train, "embed" in forced))
    return results


def shard_outputs(plan: ShardPlan, stages: Sequence[str]) -> list[OutputSpec]:
    """The outputs a shard's task makes: decode always, then mel, (training shards) augment and (with an
    embedding model) embed as far as ``stages`` goes."""
    wanted = [plan.output(stage) for stage in ("mel", "augment", "embed") if stage in stages]
    return [plan.decode, *(output for output in wanted if output is not None)]


def finished_shard(root: DataRoot, plan: ShardPlan, stages: Sequence[str],
                   forced: Collection[str] = ()) -> list[ShardResult] | None:
    """The results :func:`preprocess_shard_task` would return for a shard whose every output is done, or None.

    The flow asks before it submits: a task for a finished shard would only
    find its manifests matching, and its submission alone costs the flow
    process about 0.2 s (Prefect serialises its settings and the plan), which
    made most of a rebuild after a few new tracks (docs/benchmarks.md). The
    decision is the task's own: the same fingerprints, the same check of
    every file (done_manifest), and ``forced`` stages never count as done. It runs in
    the flow process, so it takes the flow's DataRoot rather than a URL.
    """
    results = []
    for output in shard_outputs(plan, stages):
        manifest = None if output.stage in forced else done_manifest(root, output)
        if manifest is None:
            return None
        results.append(ShardResult.counted(output, True, manifest.rows, manifest.extra))
    return results
