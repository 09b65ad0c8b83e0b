"""Scheduled and deployed runs: the rebuild flow served on a cron schedule.

A served or deployed run enters through ``scheduled_rebuild``, which starts the
rebuild with the Dask task runner that its configuration asks for.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.config import Config
from flows.rebuild import rebuild_flow
from flows.runner import make_task_runner


@flow(name="scheduled-rebuild")
def scheduled_rebuild(config: Config) -> dict[str, Any]:
    """The whole DAG, on the task runner of ``config`` (a LocalCluster or --dask-address)."""
    return rebuild_flow.with_options(task_runner=make_task_runner(config.run))(config=config)


def serve_rebuild(config: Config, cron: str, name: str) -> None:
    """Serve ``scheduled_rebuild`` with ``config`` on ``cron`` until interrupted (needs a Prefect server)."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    from flows.config import ConfigError

    try:
        CronSchedule(cron=cron)
    except ValidationError:
        raise ConfigError(f"--cron {cron!r} is not a valid cron expression (e.g. '0 2 * * *')") from None
    scheduled_rebuild.serve(name=name, cron=cron, parameters={"config": config.model_dump(mode="json")},
                            global_limit=1)
