"""The whole DAG as one flow, and the dispatch of the CLI's workflow commands."""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger

from flows.config import PREPROCESS_STAGES, Config, ConfigError
from flows.lock import data_root_lock
from flows.preprocess import preprocess_flow, run_preprocess
from flows.progress import StageProgress
from flows.runner import make_task_runner, prefect_api
from flows.train import run_training, train_flow
from storage.root import DataRoot


@flow(name="rebuild")
def rebuild_flow(config: Config) -> dict[str, Any]:
    """ingest -> decode -> mel/augment -> stats -> train -> evaluate -> report."""
    logger = get_run_logger()
    with data_root_lock(config.run.data_root):
        with StageProgress(logger) as progress:
            prepared = run_preprocess(config, progress)
        if config.stages_to_run()[-1] in PREPROCESS_STAGES:
            return {"tracks": len(prepared.tracks)}
        outcome = run_training(config, prepared.plans)
    metrics = outcome.get("metrics") or {}
    if metrics:
        logger.info("test accuracy: clip %.3f, track %.3f, top-2 %.3f (chance %.3f); report in %s",
                    metrics.get("clip_accuracy", float("nan")), metrics.get("track_accuracy", float("nan")),
                    metrics.get("top2_accuracy", float("nan")), metrics.get("chance", float("nan")),
                    outcome.get("report", {}).get("dir", "?"))
    return outcome


def _with_stage_bounds(config: Config, first: str | None, last: str | None) -> Config:
    """``config`` with default --from-stage/--to-stage for a partial command."""
    update = {}
    if first and config.run.from_stage is None:
        update["from_stage"] = first
    if last and config.run.to_stage is None:
        update["to_stage"] = last
    return config.model_copy(update={"run": config.run.model_copy(update=update)}) if update else config


def preflight(config: Config) -> None:
    """Check the paths a run needs before anything starts, so a typo costs one line, not a run."""
    source = config.source
    needed = {"folder": ("--input", source.input), "csv": ("--input", source.input),
              "fma": ("--input", source.input)}.get(source.source)
    if needed is not None:
        flag, value = needed
        if not value:
            raise ConfigError(f"--source {source.source} needs {flag} PATH")
        if not os.access(value, os.R_OK):
            raise ConfigError(f"{flag} {value}: {'not readable' if os.path.exists(value) else 'no such path'}")
    if source.audio and not os.path.isdir(source.audio):
        raise ConfigError(f"--audio {source.audio}: not a folder")
    DataRoot(config.run.data_root).ensure_writable()


def run_command(command: str, config: Config) -> dict[str, Any]:
    """Run ``rebuild``, ``preprocess``, ``train`` or ``evaluate`` on the configured task runner."""
    preflight(config)
    runner = make_task_runner(config.run)
    with prefect_api():
        if command == "rebuild":
            return rebuild_flow.with_options(task_runner=runner)(config=config)
        if command == "preprocess":
            config = _with_stage_bounds(config, None, "augment")
            return preprocess_flow.with_options(task_runner=runner)(config=config)
        if command == "evaluate":
            config = _with_stage_bounds(config, "evaluate", None)
        return train_flow.with_options(task_runner=runner)(config=config)
