"""What changed since the previous rebuild: tracks, shards recomputed and reused, stages whose code changed,
and libraries whose version changed.

Each rebuild ends by recording what it did in ``rebuilds/last.json``, with the
code version of every stage and the installed version of every library a stage
declares (tasks/stages.py, STAGE_LIBRARIES); the next one compares against it.
The record is shown in the report, by ``genreflow status`` and as a Prefect
artifact.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from genreflow.storage.outputs import LAST_REBUILD_FILE, SHARD_STAGES
from genreflow.storage.root import DataRoot
from genreflow.tasks.stages import STAGE_CODE, STAGE_LIBRARIES, stage_code, stage_libraries
from genreflow.tasks.workers import ShardResult


def code_versions() -> dict[str, str]:
    """The code version of every stage and output kind of this genreflow."""
    return {stage: stage_code(stage) for stage in STAGE_CODE}


def library_versions() -> dict[str, str]:
    """The installed version of every library a stage declares (STAGE_LIBRARIES), by name; those not installed
    are left out."""
    versions = {name: version for stage in STAGE_LIBRARIES for name, version in stage_libraries(stage).items()}
    return dict(sorted(versions.items()))


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


def dependency_changes(previous: dict[str, Any] | None) -> dict[str, list[str]]:
    """{library: [version then, version now]} of each library whose version differs from the one the previous
    rebuild ran with (none without a previous rebuild, or one of a genreflow that recorded no versions)."""
    if not previous or not isinstance(previous.get("libraries"), dict):
        return {}
    before = previous["libraries"]
    return {name: [str(before[name]), version] for name, version in library_versions().items()
            if name in before and before[name] != version}


def shard_counts(results: list[ShardResult]) -> dict[str, dict[str, int]]:
    """Shards computed and reused per shard stage; embed only where it ran (it needs an embedding model)."""
    return {stage: {"computed": sum(1 for r in results if r.stage == stage and not r.skipped),
                    "reused": sum(1 for r in results if r.stage == stage and r.skipped)}
            for stage in SHARD_STAGES if stage != "embed" or any(r.stage == stage for r in results)}


def rebuild_changes(tracks: dict[str, Any], results: list[ShardResult], previous: dict[str, Any] | None
                    ) -> dict[str, Any]:
    """The summary of one rebuild's preprocessing: tracks (tasks.ingest.track_changes), shards computed and
    reused per stage (:func:`shard_counts`), stages whose code changed, libraries whose version changed, and
    whether the test set is the previous rebuild's."""
    return {"tracks": tracks, "shards": shard_counts(results), "code_changed": code_changes(previous),
            "dependencies_changed": dependency_changes(previous),
            "test_set_same": bool(tracks.get("test_set_same")), "previous_rebuild": (previous or {}).get("finished_at")}


def write_last_rebuild(root: DataRoot, changes: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    """Record this rebuild for the next one to compare with; the record."""
    record = {"finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "codes": code_versions(), "libraries": library_versions(), "changes": changes,
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
    if "dependencies_changed" in changes:  # not in the record of a genreflow that compared no versions
        dependencies = changes["dependencies_changed"] or {}
        lines.append("Dependencies changed: " + ("; ".join(
            f"{name} {before} → {after} (used by {', '.join(stages_using(name))})"
            for name, (before, after) in sorted(dependencies.items())) if dependencies else "none") + ".")
    if not tracks.get("first_ingest"):
        lines.append("Test set: the same tracks as the previous rebuild." if changes.get("test_set_same") else
                     "Test set: changed since the previous rebuild; test accuracies are not comparable across it.")
    return lines


def stages_using(library: str) -> list[str]:
    """The stages that declare ``library`` themselves (STAGE_LIBRARIES), in DAG order; what reads their outputs
    is redone too."""
    return [stage for stage, libraries in STAGE_LIBRARIES.items() if library in libraries]


def changes_markdown(changes: dict[str, Any]) -> str:
    return "\n".join(f"- {line}" for line in changes_lines(changes))
