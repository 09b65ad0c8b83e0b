"""augment stage: time-stretched and pitch-shifted copies of training clips, straight to log-mel.

Runs on training shards only, after the split, so no copy of a validation or
test track can reach training. Augmented audio is turned into log-mel at once
rather than stored, since only its spectrogram is ever used.
"""

from __future__ import annotations

from genreflow.model.audio_augment import augment_shard
from genreflow.model.params import AudioConfig, AugmentConfig
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import open_shard_array, read_shard_index, write_shard
from genreflow.tasks.common import ShardResult, skip_if_done


def augment_stage(
    root_url: str, shard: str, audio: AudioConfig, augment: AugmentConfig, fingerprint: str, force: bool
) -> ShardResult:
    """Augmented log-mel clips of one training shard into mel-aug/<shard>, unless done for ``fingerprint``."""
    root = DataRoot(root_url)
    if (done := skip_if_done(root, "mel-aug", shard, fingerprint, force)) is not None:
        return done
    index = read_shard_index(root, "audio", shard)
    mel, table = augment_shard(open_shard_array(root, "audio", shard), index, audio, augment)
    tracks = index["track_id"].nunique()
    write_shard(root, "mel-aug", shard, array=mel, index=table, fingerprint=fingerprint,
                extra={"tracks": tracks})
    return ShardResult("mel-aug", shard, False, tracks, len(table))
