"""The data root's model registry: which trained run ``predict`` and ``evaluate`` use, and every decision.

``models/registry.json`` names the promoted run (the alias MLflow and ZenML
call a champion) and keeps each promotion decision with its reason, so that a
worse model never silently replaces a better one and every change can be
traced. It is one small JSON file written atomically beside the models it
names, so it travels with the data root to any fsspec store and needs no
server: a tracking server (MLflow's registry) would be one more service for
every user of a one-machine tool to run, and its local file store ties the
registry to one machine.

Data roots of genreflow 0.1 named the last trained run in ``models/LATEST``;
it counts as promoted until the first decision is recorded.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from genreflow.storage.root import DataRoot, StorageError

REGISTRY_FILE = "models/registry.json"
LEGACY_LATEST = "models/LATEST"

Decision = Literal["promoted", "rejected", "kept"]
# How a rebuild's model is promoted (tasks/promote.py gate); here beside Decision, so that the configuration
# (flows/config.py) names it without importing the promote stage (Prefect, scikit-learn).
Policy = Literal["if-better", "always", "never"]


class PromotionRecord(BaseModel):
    """One decision about one run: what was compared, on which test set, and why."""

    run: str
    decision: Decision
    reason: str
    policy: str
    previous: str | None = None  # the run that was promoted before this decision
    run_track_accuracy: float | None = None
    previous_track_accuracy: float | None = None  # re-scored on the same test tracks
    test_set: str | None = None
    decided_at: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


class Registry(BaseModel):
    promoted: str | None = None
    history: list[PromotionRecord] = Field(default_factory=list)

    def last_decision(self, run: str) -> PromotionRecord | None:
        return next((record for record in reversed(self.history) if record.run == run), None)


def read_registry(root: DataRoot) -> Registry:
    """The registry; empty when absent, with a 0.1 data root's ``models/LATEST`` as the promoted run."""
    path = root.join(REGISTRY_FILE)
    if root.exists(path):
        try:
            return Registry.model_validate_json(root.read_bytes(path))
        except (ValidationError, ValueError) as exc:
            raise StorageError(f"{path} is not a genreflow model registry ({exc.__class__.__name__}); "
                               "fix or delete it, then `genreflow promote RUN`") from None
    latest = root.join(LEGACY_LATEST)
    if root.exists(latest):
        return Registry(promoted=root.read_bytes(latest).decode().strip() or None)
    return Registry()


def record_decision(root: DataRoot, record: PromotionRecord) -> Registry:
    """Append ``record`` and, if it promotes, make its run the promoted one; one atomic write."""
    registry = read_registry(root)
    registry.history.append(record)
    if record.decision == "promoted":
        registry.promoted = record.run
    root.write_bytes(root.join(REGISTRY_FILE), registry.model_dump_json(indent=2).encode())
    return registry
