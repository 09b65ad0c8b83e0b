"""mel stage: log-mel of one decoded shard (genreflow.model.mel does the work)."""

from __future__ import annotations

from genreflow.model.mel import mel_batches
from genreflow.model.params import AudioConfig
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import open_shard_array, read_shard_index, write_shard
from genreflow.tasks.common import ShardResult, skip_if_done


def mel_stage(root_url: str, shard: str, audio: AudioConfig, fingerprint: str, force: bool) -> ShardResult:
    """Log-mel of one decoded shard into mel/<shard>, unless already done for ``fingerprint``."""
    root = DataRoot(root_url)
    if (done := skip_if_done(root, "mel", shard, fingerprint, force)) is not None:
        return done
    index = read_shard_index(root, "audio", shard)
    mel = mel_batches(open_shard_array(root, "audio", shard), audio)
    index = index.assign(augmentation="original")
    tracks = index["track_id"].nunique()
    write_shard(root, "mel", shard, array=mel, index=index, fingerprint=fingerprint, extra={"tracks": tracks})
    return ShardResult("mel", shard, False, tracks, len(index))
