"""train stage: fit the CNN on the training shards, resumable and cached by fingerprint.

TensorFlow is imported inside the task body only, so that Dask workers which
only decode or compute mels never load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from flows.config import AudioConfig, TrainConfig
from storage.manifest import output_state, read_manifest, write_manifest
from storage.root import DataRoot
from storage.shards import read_shard_index

MODEL_FILES = ("model.keras", "history.csv", "labels.json", "audio.json")


def model_manifest_path(root: DataRoot, run: str) -> str:
    return root.join("models", run, "manifest.json")


def clip_sources(root: DataRoot, shards: list[tuple[str, str]], split: str | None = None) -> list[Any]:
    """model.dataset.ClipSource for each (stage, shard), optionally restricted to one split."""
    from model.dataset import ClipSource

    sources = []
    for stage, shard in shards:
        index = read_shard_index(root, stage, shard)
        if split is not None:
            index = index[index["split"] == split]
        if len(index):
            sources.append(ClipSource(Path(root.local_path(root.shard_path(stage, shard, ".npy"))), index))
    return sources


@task(name="train")
def train_task(
    root_url: str, run: str, genres: list[str], stats: dict, train_shards: list[tuple[str, str]],
    val_shards: list[tuple[str, str]], train: TrainConfig, audio: AudioConfig, fingerprint: str, force: bool,
) -> dict[str, Any]:
    """Train (or resume, or skip when finished) the run ``run``; returns its summary."""
    root = DataRoot(root_url)
    logger = get_run_logger()
    manifest_path = model_manifest_path(root, run)
    if not force and output_state(root, manifest_path, fingerprint) == "done":
        logger.info("train: %s is already trained on these inputs; skipping", run)
        manifest = read_manifest(root, manifest_path)
        return {**(manifest.extra if manifest else {}), "run": run, "skipped": True}
    root.remove(manifest_path)
    model_dir = Path(root.local_path(root.model_dir(run)))
    if force:
        root.remove(str(model_dir / "backup"), recursive=True)
        root.remove(str(model_dir / "history.csv"))

    from model.train import train_model

    def report(epoch: int, epochs: int, logs: dict) -> None:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items()))
        logger.info("train: epoch %d/%d: %s", epoch, epochs, shown)

    result = train_model(
        clip_sources(root, train_shards), clip_sources(root, val_shards), genres, stats, model_dir,
        epochs=train.epochs, batch_size=train.batch_size, learning_rate=train.learning_rate,
        patience=train.patience, seed=train.seed, shuffle_buffer=train.shuffle_buffer, progress=report,
    )
    # predict must cut and transform audio exactly as the training clips were
    root.write_bytes(str(model_dir / "audio.json"), audio.model_dump_json(indent=2).encode())
    summary = {"run": run, "skipped": False, "epochs_run": int(result.epochs_run),
               "resumed_from_epoch": int(result.resumed_from_epoch or 0)}
    write_manifest(root, manifest_path, name=f"models/{run}", fingerprint=fingerprint,
                   files=[str(model_dir / name) for name in MODEL_FILES], rows=int(result.epochs_run),
                   extra=summary)
    root.write_bytes(root.join("models", "LATEST"), run.encode())
    return summary
