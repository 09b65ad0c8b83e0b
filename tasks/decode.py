"""decode stage: a shard of tracks to int16 PCM clips, with unusable tracks quarantined."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from genreflow.model.audio import AudioError, decode_audio, track_clips
from genreflow.model.params import AudioConfig
from genreflow.storage.outputs import SKIPPED_TABLE, OutputSpec, open_output, output_path, state_of
from genreflow.storage.root import QUARANTINE_COLUMNS, DataRoot
from genreflow.storage.shards import read_side_table, write_shard
from genreflow.tasks.workers import ShardPlan, ShardResult

INDEX_COLUMNS = ["track_id", "clip_index", "split", "genre", "row"]


@dataclass
class DecodedShard:
    """PCM clips (n, clip_samples) int16, their index, and the quarantined tracks."""

    clips: np.ndarray
    index: pd.DataFrame
    quarantine: pd.DataFrame


def to_pcm16(clips: np.ndarray) -> np.ndarray:
    """float [-1, 1] to int16, clipping overs: half the bytes of float32, 96 dB of range."""
    return np.clip(np.round(clips * 32767.0), -32768, 32767).astype(np.int16)


def decode_shard(tracks: pd.DataFrame, audio: AudioConfig) -> DecodedShard:
    """Decode each track of ``tracks`` (track_id, path, genre, split) into clips.

    Only as many seconds as the clips need are decoded. A track that cannot be
    used lands in the quarantine table with its reason; the rest go on.
    """
    max_seconds = None if audio.clips_per_track is None else audio.clips_per_track * audio.clip_seconds
    clips: list[np.ndarray] = []
    rows: list[dict] = []
    quarantined: list[dict] = []
    for track in tracks.itertuples(index=False):
        try:
            y = decode_audio(track.path, audio.sample_rate, max_seconds)
            windows = track_clips(y, audio)
        except AudioError as exc:
            quarantined.append(
                {"track_id": track.track_id, "path": track.path, "genre": track.genre, "reason": str(exc)}
            )
            continue
        for clip_index in range(len(windows)):
            rows.append({"track_id": track.track_id, "clip_index": clip_index, "split": track.split,
                         "genre": track.genre, "row": len(rows)})
        clips.append(to_pcm16(windows))
    array = np.concatenate(clips) if clips else np.zeros((0, audio.clip_samples), np.int16)
    return DecodedShard(
        clips=array,
        index=pd.DataFrame(rows, columns=INDEX_COLUMNS).astype({"clip_index": "int32", "row": "int64"}),
        quarantine=pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS),
    )


def decode_stage(root_url: str, spec: OutputSpec, tracks: pd.DataFrame, audio: AudioConfig, force: bool
                 ) -> ShardResult:
    """Decode one shard into decode/<shard>, unless its finished output already matches ``spec``."""
    with open_output(DataRoot(root_url), spec, force) as out:
        if not out.done:
            decoded = decode_shard(tracks, audio)
            write_shard(out, array=decoded.clips, index=decoded.index,
                        side_tables={"quarantine": decoded.quarantine})
            out.extra = {"tracks": len(tracks), "quarantined": len(decoded.quarantine)}
    return ShardResult.of(out)


def write_quarantine(root: DataRoot, plans: list[ShardPlan]) -> pd.DataFrame:
    """quarantine.parquet: tracks skipped at ingest plus those each finished decode shard rejected."""
    tables = []
    skipped = output_path(root, "ingest", "", SKIPPED_TABLE)
    if root.exists(skipped):
        tables.append(root.read_parquet(skipped).assign(stage="ingest"))
    for plan in plans:
        if state_of(root, plan.decode, verify=False) == "done":
            tables.append(read_side_table(root, "decode", plan.shard, "quarantine").assign(stage="decode"))
    columns = [*QUARANTINE_COLUMNS, "stage"]
    table = pd.concat([t for t in tables if len(t)], ignore_index=True) if any(len(t) for t in tables) \
        else pd.DataFrame(columns=columns)
    table = table[columns].astype(str)
    root.write_parquet(root.quarantine_path(), table)
    return table
