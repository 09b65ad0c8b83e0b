"""The files of a trained model's folder: training writes them, the train stage seals them, predict reads them.

No TensorFlow here, so that every layer can name them without loading it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from genreflow.model.params import AudioConfig

MODEL_FILE = "model.keras"  # the Keras model, loaded in safe mode
LABELS_FILE = "labels.json"  # the genres, in the order of the model's outputs
HISTORY_FILE = "history.csv"  # one row an epoch: the metrics Keras logged
AUDIO_FILE = "audio.json"  # the AudioConfig the training clips were cut and transformed with
EMBEDDING_FILE = "embedding.json"  # the embedding family's musicnn weights, layer and head (model/embedding.py)
BACKUP_DIR = "backup"  # Keras BackupAndRestore's checkpoints while training runs
TRAINED_FILES: tuple[str, ...] = (MODEL_FILE, HISTORY_FILE, LABELS_FILE)  # what model.train writes

# What a model is, for prediction and export: these files' bytes identify it (audio.json may be absent).
IDENTITY_FILES: tuple[str, ...] = (MODEL_FILE, LABELS_FILE, AUDIO_FILE, EMBEDDING_FILE)


def model_checksum(folder: str | os.PathLike[str]) -> str:
    """blake2b of the model's files (IDENTITY_FILES present in ``folder``), with their names.

    Keys each worker's loaded model and the predictions made with it, so that a
    model retrained in place is never mistaken for the one predictions came from.
    """
    digest = hashlib.blake2b(digest_size=16)
    for name in IDENTITY_FILES:
        path = Path(folder) / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()


def model_audio(folder: str | os.PathLike[str]) -> AudioConfig:
    """The audio settings a model was trained with (audio.json); the defaults for a model saved without one."""
    path = Path(folder) / AUDIO_FILE
    return AudioConfig.model_validate_json(path.read_text()) if path.is_file() else AudioConfig()
