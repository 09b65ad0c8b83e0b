"""What changed since the previous rebuild: tracks, shards recomputed and reused, stages whose code changed.

Each rebuild ends by recording what it did in ``rebuilds/last.json``, with the
code version of every stage; the next one compares against it. The record is
shown in the report, by ``genreflow status`` and as a Prefect artifact.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from genreflow.storage.outputs import LAST_REBUILD_FILE, SHARD_STAGES
from genreflow.storage.root import DataRoot
from genreflow.tasks.stages import STAGE_CODE, stage_code
from genreflow.tasks.workers import ShardResult


def code_versions() -> dict[str, str]:
    """The code version of every stage and output kind of this genreflow."""
    return {stage: stage_code(stage) for stage in STAGE_CODE}


def read_last_rebuild(root: DataRoot) -> dict[str, Any] | None:
    path = root.join(LAST_REBUILD_FILE)
    if not root.exists(path):
        return None
    try:
        record = root.read_json(path)
    except ValueError:
        return None  # unreadable: as if there were none; the next rebuild writes a good one
    return record if isinstance(record, dict) else None


def code_changes(previous: dict[str, Any] | None) -> list[str]:
    """Stages whose code differs from the one the previous rebuild ran (none without a previous rebuild)."""
    if not previous or not isinstance(previous.get("codes"), dict):
        return []
    before = previous["codes"]
    return [stage for stage, version in code_versions().items() if stage in before and before[stage] != version]


def shard_counts(results: list[ShardResult]) -> dict[str, dict[str, int]]:
    """Shards computed and reused per shard stage; embed only where it ran (it needs an embedding model)."""
    return {stage: {"computed": sum(1 for r in results if r.stage == stage and not r.skipped),
                    "reused": sum(1 for r in results if r.stage == stage and r.skipped)}
            for stage in SHARD_STAGES if stage != "embed" or any(r.stage == stage for r in results)}


def rebuild_changes(tracks: dict[str, Any], results: list[ShardResult], previous: dict[str, Any] | None
                    ) -> dict[str, Any]:
    """The summary of one rebuild's preprocessing: tracks (tasks.ingest.track_changes), shards computed and
    reused per stage (:func:`shard_counts`), stages whose code changed, and whether the test set is the
    previous rebuild's."""
    return {"tracks": tracks, "shards": shard_counts(results), "code_changed": code_changes(previous),
            "test_set_same": bool(tracks.get("test_set_same")), "previous_rebuild": (previous or {}).get("finished_at")}


def write_last_rebuild(root: DataRoot, changes: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    """Record this rebuild for the next one to compare with; the record."""
    record = {"finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "codes": code_versions(), "changes": changes,
              "run": (outcome.get("train") or {}).get("run"),
              "promotion": {k: v for k, v in (outcome.get("promotion") or {}).items()
                            if k in ("run", "decision", "reason", "promoted", "previous")} or None}
    root.write_json(root.join(LAST_REBUILD_FILE), record)
    return record


def changes_lines(changes: dict[str, Any]) -> list[str]:
    """The summary as a few sentences (report section, Prefect artifact, log, status)."""
    tracks = changes.get("tracks") or {}
    if tracks.get("first_ingest"):
        lines = [f"First ingest of this data root: {tracks.get('tracks', 0)} tracks."]
    else:
        removed = tracks.get("removed_by_split") or {}
        by_split = f" ({', '.join(f'{k} {v}' for k, v in sorted(removed.items()))})" if removed else ""
        lines = [f"Tracks: {tracks.get('added', 0)} added, {tracks.get('removed', 0)} removed{by_split}, "
                 f"{tracks.get('modified', 0)} modified (re-tagged, moved or re-split); {tracks.get('tracks', 0)} now."]
    shards = changes.get("shards") or {}
    lines.append("Shards: " + "; ".join(f"{stage} {shards[stage]['computed']} recomputed, {shards[stage]['reused']} "
                                          "reused" for stage in SHARD_STAGES if stage in shards) + ".")
    code = changes.get("code_changed") or []
    lines.append(f"Stages whose code changed: {', '.join(code)}." if code else "Stages whose code changed: none.")
    if not tracks.get("first_ingest"):
        lines.append("Test set: the same tracks as the previous rebuild." if changes.get("test_set_same") else
                     "Test set: changed since the previous rebuild; test accuracies are not comparable across it.")
    return lines


def changes_markdown(changes: dict[str, Any]) -> str:
    return "\n".join(f"- {line}" for line in changes_lines(changes))
