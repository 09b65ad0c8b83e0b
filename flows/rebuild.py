"""The whole DAG as one flow, and the dispatch of the CLI's workflow commands."""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger

from genreflow.flows.config import Config, ConfigError, non_default_values, record_config
from genreflow.flows.lock import check_unlocked, data_root_lock
from genreflow.flows.preprocess import preprocess_flow, run_preprocess
from genreflow.flows.progress import StageProgress
from genreflow.flows.runner import cluster_settings, make_task_runner, prefect_api
from genreflow.flows.train import run_training, train_flow
from genreflow.storage.registry import read_registry
from genreflow.storage.root import DataRoot
from genreflow.tasks.changes import changes_markdown, read_last_rebuild, rebuild_changes, write_last_rebuild
from genreflow.tasks.stages import PREPROCESS_STAGES

# Stages that open files by local path (the Keras model, memory-mapped shards for tf.data), so they
# cannot run on an object-store data root; preprocessing goes through fsspec and can.
LOCAL_ROOT_STAGES: tuple[str, ...] = ("train", "evaluate")


@flow(name="rebuild")
def rebuild_flow(config: Config) -> dict[str, Any]:
    """ingest -> decode -> mel/augment -> stats -> train -> evaluate -> report."""
    logger = get_run_logger()
    root = DataRoot(config.run.data_root)  # the flow's one DataRoot: functions get it, tasks its url
    with data_root_lock(root):
        previous = read_last_rebuild(root)
        with StageProgress(logger) as progress:
            prepared = run_preprocess(config, root, progress)
        changes = rebuild_changes(prepared.changes, prepared.results, previous)
        publish_changes(changes, logger)
        outcome: dict[str, Any] = {"tracks": len(prepared.tracks), "changes": changes}
        if config.stages_to_run()[-1] not in PREPROCESS_STAGES:
            outcome.update(run_training(config, root, prepared.plans, changes))
        write_last_rebuild(root, changes, outcome)
    if outcome.get("metrics"):
        logger.info(result_line(outcome))
    return outcome


def publish_changes(changes: dict[str, Any], logger: Any) -> None:
    """What changed since the previous rebuild: logged, and a Prefect markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    text = changes_markdown(changes)
    logger.info("since the previous rebuild:\n%s", text)
    create_markdown_artifact(markdown="# What changed since the previous rebuild\n\n" + text,
                             key="genreflow-changes", description="tracks, shards and code since the last rebuild")


def result_line(outcome: dict[str, Any]) -> str:
    """The rebuild's last log line: the CNN's test accuracy beside the baseline's, and where the report is."""
    metrics, baseline = outcome["metrics"], outcome.get("baseline") or {}
    clip, track, top2, chance = (metrics.get(key, float("nan"))
                                 for key in ("clip_accuracy", "track_accuracy", "top2_accuracy", "chance"))
    line = f"test accuracy: clip {clip:.3f}, track {track:.3f}, top-2 {top2:.3f} (chance {chance:.3f})"
    if "track_accuracy" in baseline:
        line += f"; {baseline.get('name', 'baseline')} track {baseline['track_accuracy']:.3f}"
    if promotion := outcome.get("promotion"):
        line += f"; {promotion['run']} {promotion['decision']} ({promotion['reason']})"
    return f"{line}; report in {outcome.get('report', {}).get('dir', '?')}"


def _with_stage_bounds(config: Config, first: str | None, last: str | None) -> Config:
    """``config`` with default --from-stage/--to-stage for a partial command."""
    update = {}
    if first and config.run.from_stage is None:
        update["from_stage"] = first
    if last and config.run.to_stage is None:
        update["to_stage"] = last
    return config.model_copy(update={"run": config.run.model_copy(update=update)}) if update else config


def preflight(config: Config, root: DataRoot | None = None) -> None:
    """Check the paths a run needs before anything starts, so a typo costs one line, not a run.

    ``root``: the caller's DataRoot of ``config.run.data_root``, if it has one.
    """
    source = config.source
    needed = {"folder": ("--input", source.input), "csv": ("--input", source.input),
              "fma": ("--input", source.input)}.get(source.source)
    if needed is not None:
        flag, value = needed
        if not value:
            raise ConfigError(f"--source {source.source} needs {flag} PATH")
        if not os.access(value, os.R_OK):
            raise ConfigError(f"{flag} {value}: {'not readable' if os.path.exists(value) else 'no such path'}")
    _check_input_kind(source.source, source.input)
    if source.audio and not os.path.isdir(source.audio):
        raise ConfigError(f"--audio {source.audio}: not a folder")
    root = root if root is not None else DataRoot(config.run.data_root)
    needs_local = [stage for stage in LOCAL_ROOT_STAGES if stage in config.stages_to_run()]
    if needs_local and not root.is_local:
        raise ConfigError(f"--data-root {root.url} is not a local path, and {' and '.join(needs_local)} need one "
                          "(Keras and tf.data open the model and shard files by path): preprocess there "
                          "(`genreflow preprocess`), then train on a local or mounted path")
    root.ensure_writable()
    check_unlocked(root)


def _check_input_kind(kind: str, value: str | None) -> None:
    """--input must be a folder for folder, fma and demo sources and a file for csv: say so before any work."""
    if not value or not os.path.exists(value):
        return  # absent: the checks above, or a demo folder still to be written
    want_file = kind == "csv"
    if want_file and not os.path.isfile(value):
        raise ConfigError(f"--input {value}: --source csv needs a CSV file, this is a folder")
    if not want_file and not os.path.isdir(value):
        raise ConfigError(f"--input {value}: --source {kind} needs a folder, this is a file")
    if not want_file and not os.access(value, os.R_OK | os.X_OK):
        raise ConfigError(f"--input {value}: folder not readable")


def run_command(command: str, config: Config, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``rebuild``, ``preprocess``, ``train`` or ``evaluate`` on the configured task runner.

    A rebuild or preprocess that finishes records its configuration in the data root (``given``: the values
    the user gave; a scheduled run, which only has the Config, records those that differ from the defaults),
    so that status, train and evaluate start from it.
    """
    root = DataRoot(config.run.data_root)
    if command == "preprocess":
        config = _with_stage_bounds(config, None, PREPROCESS_STAGES[-1])
    elif command == "evaluate":
        config = _with_stage_bounds(config, "evaluate", None)
        if config.run.evaluate_run is None and (promoted := read_registry(root).promoted):
            config = config.model_copy(update={"run": config.run.model_copy(update={"evaluate_run": promoted})})
    preflight(config, root)
    runner = make_task_runner(config.run)
    with prefect_api(), cluster_settings():
        if command == "rebuild":
            outcome = rebuild_flow.with_options(task_runner=runner)(config=config)
        elif command == "preprocess":
            outcome = preprocess_flow.with_options(task_runner=runner)(config=config)
        else:
            return train_flow.with_options(task_runner=runner)(config=config)
    record_config(config, non_default_values(config) if given is None else given, command)
    return outcome
