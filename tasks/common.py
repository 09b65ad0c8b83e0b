"""What every shard task shares: its result record, the skip check, the retry rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from genreflow.storage.root import DataRoot
from genreflow.storage.shards import shard_manifest, shard_state

# Errors worth a retry: the filesystem or network hiccuped, not the data or the code.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, BlockingIOError)


@dataclass(frozen=True)
class ShardPlan:
    """One shard of tracks and the fingerprints of its outputs at each stage."""

    shard: str
    split: str
    tracks: pd.DataFrame
    decode: str
    mel: str
    augment: str | None  # None for validation and test shards: they are never augmented

    def fingerprint_of(self, stage: str) -> str | None:
        return {"audio": self.decode, "mel": self.mel, "mel-aug": self.augment}[stage]


@dataclass(frozen=True)
class ShardResult:
    """What a shard task did, for progress and summaries."""

    stage: str
    shard: str
    skipped: bool
    tracks: int
    clips: int
    quarantined: int = 0


def skip_if_done(root: DataRoot, stage: str, shard: str, fingerprint: str, force: bool) -> ShardResult | None:
    """The finished shard's result when its manifest matches; None when it must be (re)built."""
    if force or shard_state(root, stage, shard, fingerprint) != "done":
        return None
    manifest = shard_manifest(root, stage, shard)
    assert manifest is not None
    extra = manifest.extra
    return ShardResult(stage, shard, True, int(extra.get("tracks", 0)), manifest.rows,
                       int(extra.get("quarantined", 0)))


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
