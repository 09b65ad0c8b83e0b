"""The files of a trained model's folder: training writes them, the train stage seals them, predict reads them.

No TensorFlow here, so that every layer can name them without loading it; and
:func:`resolve_model_dir`, the one place that decides which model predict and
export use.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from genreflow.model.params import AudioConfig
from genreflow.storage.errors import GenreflowError
from genreflow.storage.files import hash_file
from genreflow.storage.outputs import output_location
from genreflow.storage.registry import read_registry
from genreflow.storage.root import DataRoot

MODEL_FILE = "model.keras"  # the Keras model, loaded in safe mode
LABELS_FILE = "labels.json"  # the genres, in the order of the model's outputs
HISTORY_FILE = "history.csv"  # one row an epoch: the metrics Keras logged
AUDIO_FILE = "audio.json"  # the AudioConfig the training clips were cut and transformed with
EMBEDDING_FILE = "embedding.json"  # the embedding family's musicnn weights, layer and head (model/embedding.py)
# The open-set threshold chosen on validation (model/open_set.py); not an identity file: predictions' probabilities
# do not depend on it, the ``unknown`` decision is made from them when a table is written.
OPEN_SET_FILE = "open_set.json"
# The training tracks a file's novelty is measured against (model/open_set.py NoveltyReference); an identity
# file, since the predictions' novelty column is computed from it.
NOVELTY_FILE = "open_set_reference.npz"
BACKUP_DIR = "backup"  # Keras BackupAndRestore's checkpoints while training runs
TRAINED_FILES: tuple[str, ...] = (MODEL_FILE, HISTORY_FILE, LABELS_FILE)  # what model.train writes

# What a model is, for prediction and export: these files' bytes identify it (audio.json may be absent).
IDENTITY_FILES: tuple[str, ...] = (MODEL_FILE, LABELS_FILE, AUDIO_FILE, EMBEDDING_FILE, NOVELTY_FILE)


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
            hash_file(path, digest)
    return digest.hexdigest()


def model_audio(folder: str | os.PathLike[str]) -> AudioConfig:
    """The audio settings a model was trained with (audio.json); the defaults for a model saved without one."""
    path = Path(folder) / AUDIO_FILE
    return AudioConfig.model_validate_json(path.read_text()) if path.is_file() else AudioConfig()


class ModelNotFound(GenreflowError, FileNotFoundError):
    """No trained model where one was expected."""


def resolve_model_dir(model: Path | None, data_root: str) -> Path:
    """The model folder to predict or export with: the one place that decides which model is used.

    ``model`` is a run folder, its model.keras, or a run name under
    ``<data-root>/models`` (``promoted``: the promoted run); without it, the
    data root's promoted model (storage/registry.py).
    """
    root = DataRoot(data_root)
    if model is not None and str(model) != "promoted":
        folder = model.parent if model.suffix == ".keras" else model
        if (folder / MODEL_FILE).is_file():
            return folder
        if len(model.parts) == 1 and not model.exists() and root.is_local:  # a bare run name
            named = Path(root.local_path(output_location(root, "train", model.name)[0]))
            if (named / MODEL_FILE).is_file():
                return named
            raise ModelNotFound(f"no {MODEL_FILE} in {folder}, nor a run {model.name} under {root.path}/models")
        raise ModelNotFound(f"no {MODEL_FILE} in {folder}")
    promoted = read_registry(root).promoted
    if promoted is None:
        raise ModelNotFound(f"no promoted model under {root.url}: run `genreflow rebuild`, "
                            "`genreflow promote RUN`, or pass --model")
    folder = Path(root.local_path(output_location(root, "train", promoted)[0]))
    if not (folder / MODEL_FILE).is_file():
        raise ModelNotFound(f"the promoted model {promoted} has no {MODEL_FILE} in {folder}: "
                            "`genreflow promote RUN` another run, or pass --model")
    return folder
