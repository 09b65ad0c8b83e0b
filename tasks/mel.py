"""mel stage: log-mel of one decoded shard (genreflow.model.mel does the work)."""

from __future__ import annotations

from genreflow.model.mel import mel_batches
from genreflow.model.params import AudioConfig
from genreflow.storage.outputs import OutputSpec, open_output
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import open_shard_array, read_shard_index, write_shard
from genreflow.tasks.workers import ShardResult


def mel_stage(root_url: str, spec: OutputSpec, audio: AudioConfig, force: bool) -> ShardResult:
    """Log-mel of one decoded shard into mel/<shard>, unless already done for ``spec``."""
    root = DataRoot(root_url)
    with open_output(root, spec, force) as out:
        if not out.done:
            index = read_shard_index(root, "decode", spec.key).assign(augmentation="original")
            mel = mel_batches(open_shard_array(root, "decode", spec.key), audio)
            write_shard(out, array=mel, index=index)
            out.extra = {"tracks": index["track_id"].nunique()}
    return ShardResult.of(out)
