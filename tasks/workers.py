"""What every shard task shares: its plan, its result record, the retry rule, the worker's loaded model."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from distributed.diagnostics.plugin import WorkerPlugin

from genreflow.storage.errors import disk_full_error
from genreflow.storage.outputs import Output, OutputSpec

# Errors worth a retry: the filesystem or network hiccuped, not the data or the code.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, BlockingIOError)


@dataclass(frozen=True)
class ShardPlan:
    """One shard of tracks and the output each stage makes of it."""

    shard: str
    split: str
    tracks: pd.DataFrame
    decode: OutputSpec
    mel: OutputSpec
    augment: OutputSpec | None  # None for validation and test shards: they are never augmented
    embed: OutputSpec | None = None  # None when no embedding model is trained (flows/plan.py embedding_weights)

    def output(self, stage: str) -> OutputSpec | None:
        return {"decode": self.decode, "mel": self.mel, "augment": self.augment, "embed": self.embed}[stage]


@dataclass(frozen=True)
class ShardResult:
    """What a shard task did, for progress and summaries."""

    stage: str
    shard: str
    skipped: bool
    tracks: int
    clips: int
    quarantined: int = 0

    @classmethod
    def of(cls, out: Output) -> ShardResult:
        """The result of a shard output just written or found done (its counts are in the manifest)."""
        return cls.counted(out.spec, out.done, out.rows, out.extra)

    @classmethod
    def counted(cls, spec: OutputSpec, skipped: bool, rows: int, extra: dict[str, Any]) -> ShardResult:
        """The result of ``spec``'s output from the counts its manifest keeps (rows, tracks, quarantined)."""
        return cls(spec.stage, spec.key, skipped, int(extra.get("tracks", 0)), rows, int(extra.get("quarantined", 0)))


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry I/O hiccups, never data errors or bugs."""
    try:
        state.result()
    except TRANSIENT_ERRORS:
        return True
    except OSError as exc:  # a flaky mount or remote store, not a missing file nor a full disk
        return not isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)) \
            and disk_full_error(exc) is None
    except Exception:
        return False
    return False


class WorkerCache(WorkerPlugin):
    """A Dask worker plugin that holds one object per worker process (a loaded network), loaded on first use.

    Loading TensorFlow and a model costs seconds; a shard's task takes a few
    times that. The flow registers the plugin under ``name`` for its run, each
    worker keeps it in its own plugin registry (no module-level state) and the
    first task that asks loads the object with ``load`` (picklable: a
    module-level function or a partial of one); unregistering drops it.
    """

    def __init__(self, name: str, load: Callable[[], Any]) -> None:
        self.name = name
        self.load = load
        self._value: Any = None
        self._lock: threading.Lock | None = None

    def setup(self, worker: Any) -> None:
        self._value = None
        self._lock = threading.Lock()

    def teardown(self, worker: Any) -> None:
        self._value = None

    def get(self) -> tuple[Any, bool]:
        """The worker's object, and whether this call loaded it."""
        if self._lock is None:
            self._lock = threading.Lock()
        with self._lock:
            if self._value is None:
                self._value = self.load()
                return self._value, True
            return self._value, False

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "load": self.load, "_value": None, "_lock": None}


def worker_cached(cache: WorkerCache) -> tuple[Any, bool]:
    """The object of the worker's plugin of ``cache``'s name (loaded on first use), or a fresh ``cache.load()``
    where the task runs outside Dask or the flow registered no plugin; and whether it was loaded for this call."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not on a Dask worker (a test, or another task runner)
        return cache.load(), True
    plugin = worker.plugins.get(cache.name)
    if not isinstance(plugin, WorkerCache):
        logging.getLogger(__name__).warning("no %s plugin on this worker: loading it for this task only",
                                            cache.name)
        return cache.load(), True
    return plugin.get()
