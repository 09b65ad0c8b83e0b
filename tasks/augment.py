"""augment stage: time-stretched and pitch-shifted copies of training clips, straight to log-mel.

Runs on training shards only, after the split, so no copy of a validation or
test track can reach training. Augmented audio is turned into log-mel at once
rather than stored, since only its spectrogram is ever used.
"""

from __future__ import annotations

from genreflow.model.augment_copies import augment_shard
from genreflow.model.params import AudioConfig, AugmentConfig
from genreflow.storage.outputs import OutputSpec, open_output
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import open_shard_array, read_shard_index, write_shard
from genreflow.tasks.workers import ShardResult


def augment_stage(root_url: str, spec: OutputSpec, audio: AudioConfig, augment: AugmentConfig, force: bool
                  ) -> ShardResult:
    """Augmented log-mel clips of one training shard into augment/<shard>, unless done for ``spec``."""
    root = DataRoot(root_url)
    with open_output(root, spec, force) as out:
        if not out.done:
            index = read_shard_index(root, "decode", spec.key)
            mel, table = augment_shard(open_shard_array(root, "decode", spec.key), index, audio, augment)
            write_shard(out, array=mel, index=table)
            out.extra = {"tracks": index["track_id"].nunique()}
    return ShardResult.of(out)
