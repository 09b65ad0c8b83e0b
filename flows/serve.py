"""Scheduled and deployed runs: one entry flow per workflow command, served or deployed.

A run started by a Prefect worker or by ``serve`` does not pass through the
CLI, so nothing has chosen its task runner yet. Each entry flow takes the one
``config`` parameter and runs the same code as the CLI command
(flows.rebuild.run_command): the preflight checks, then the flow itself on the
Dask task runner that ``config.run`` asks for (a LocalCluster, or the
scheduler at ``dask_address``). deploy/prefect.yaml points its deployments here,
and ``prefect flow-run retry`` reruns a failed one through the same door.
"""

# No ``from __future__ import annotations`` here: ``serve`` runs a flow by cloudpickling it into a
# subprocess, where Prefect must resolve the ``config: Config`` annotation to validate parameters,
# and a string annotation no longer finds ``Config`` there.
from typing import Any

from prefect import Flow, flow

from genreflow.flows.config import Config, ConfigError
from genreflow.flows.rebuild import run_command


@flow(name="scheduled-rebuild")
def scheduled_rebuild(config: Config) -> dict[str, Any]:
    """The whole DAG, on the task runner of ``config`` (a LocalCluster or --dask-address)."""
    return run_command("rebuild", config)


@flow(name="scheduled-preprocess")
def scheduled_preprocess(config: Config) -> dict[str, Any]:
    """ingest, decode, mel and augment, on the task runner of ``config``."""
    return run_command("preprocess", config)


@flow(name="scheduled-train-evaluate")
def scheduled_train(config: Config) -> dict[str, Any]:
    """stats, train, evaluate and report on the existing shards, on the task runner of ``config``."""
    return run_command("train", config)


# ``genreflow serve --flow NAME`` and deploy/prefect.yaml name the entry flows by these keys.
ENTRY_FLOWS: dict[str, Flow[..., dict[str, Any]]] = {
    "rebuild": scheduled_rebuild,
    "preprocess": scheduled_preprocess,
    "train": scheduled_train,
}


def serve_rebuild(config: Config, cron: str, name: str, command: str = "rebuild") -> None:
    """Serve the entry flow of ``command`` with ``config`` on ``cron`` until interrupted.

    Needs a Prefect server (PREFECT_API_URL): the temporary API runs no
    scheduler. ``global_limit=1`` is the deployment's concurrency limit, so a
    run that comes due while the previous one still runs waits for it.
    """
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import get_current_settings
    from pydantic import ValidationError

    if command not in ENTRY_FLOWS:
        raise ConfigError(f"--flow {command!r} is not one of {', '.join(ENTRY_FLOWS)}")
    try:
        CronSchedule(cron=cron)
    except ValidationError:
        raise ConfigError(f"--cron {cron!r} is not a valid cron expression (e.g. '0 2 * * *')") from None
    if not get_current_settings().api.url:
        raise ConfigError("genreflow serve needs a Prefect server to hold its schedule: start one with "
                          "`prefect server start` and set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)")
    ENTRY_FLOWS[command].serve(name=name, cron=cron, parameters={"config": config.model_dump(mode="json")},
                               global_limit=1)
