"""What every shard task shares: its plan, its result record, the retry rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

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

    def output(self, stage: str) -> OutputSpec | None:
        return {"decode": self.decode, "mel": self.mel, "augment": self.augment}[stage]


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
    except OSError as exc:  # a flaky mount or remote store, not a missing file
        return not isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError))
    except Exception:
        return False
    return False
