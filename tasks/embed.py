"""embed stage: musicnn's embedding of every clip of one decoded shard (model/musicnn.py does the work).

Every split is embedded: the head trains on the training shards, picks its C
on the validation shards and is scored on the test shards. The output is one
float32 row per decoded clip, with the decode index, so the evaluation reads
it as it reads mel shards. The network is loaded once per Dask worker
(:class:`~genreflow.tasks.workers.WorkerCache`, registered by the preprocess
flow, :func:`embedder_cache`).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from genreflow.model.params import AudioConfig, TrainConfig
from genreflow.storage.outputs import OutputSpec, open_output
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import open_shard_array, read_shard_index, write_shard
from genreflow.tasks.workers import ShardResult, WorkerCache, worker_cached

if TYPE_CHECKING:
    from genreflow.model.musicnn import MusicnnEmbedder


def load_embedder(model: str, feature: str, weights_dir: str | None) -> MusicnnEmbedder:
    """musicnn with ``model``'s weights from the cache (the flow fetched them where it had to)."""
    from genreflow.model.musicnn import MusicnnEmbedder

    return MusicnnEmbedder.from_cache(model, weights_dir, feature=feature, fetch=False)


def embedder_cache(train: TrainConfig) -> WorkerCache:
    """The worker plugin the preprocess flow registers: each worker's musicnn, loaded on first use."""
    return WorkerCache(f"genreflow-embedder-{train.embedding_model}-{train.embedding_feature}",
                       partial(load_embedder, train.embedding_model, train.embedding_feature, train.weights_dir))


def embed_stage(root_url: str, spec: OutputSpec, audio: AudioConfig, train: TrainConfig, force: bool) -> ShardResult:
    """Embeddings of one decoded shard into embed/<shard>, unless already done for ``spec``."""
    root = DataRoot(root_url)
    with open_output(root, spec, force) as out:
        if not out.done:
            index = read_shard_index(root, "decode", spec.key).assign(augmentation="original")
            embedder, _ = worker_cached(embedder_cache(train))
            vectors = embedder.embed_clips(open_shard_array(root, "decode", spec.key), audio.sample_rate).vectors
            write_shard(out, array=vectors, index=index)
            out.extra = {"tracks": index["track_id"].nunique()}
    return ShardResult.of(out)
