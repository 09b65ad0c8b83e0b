"""``genreflow predict``: the genre of audio files with a trained model."""

from __future__ import annotations

import sys
from pathlib import Path

from genreflow.flows.config import AudioConfig
from genreflow.model.files import AUDIO_FILE, MODEL_FILE
from genreflow.storage.errors import GenreflowError
from genreflow.storage.outputs import output_location
from genreflow.storage.registry import read_registry
from genreflow.storage.root import DataRoot


class ModelNotFound(GenreflowError, FileNotFoundError):
    """No trained model where one was expected."""


def resolve_model_dir(model: Path | None, data_root: str) -> Path:
    """--model (a folder or its model.keras), else the data root's promoted model (storage/registry.py)."""
    if model is not None:
        folder = model.parent if model.suffix == ".keras" else model
        if not (folder / MODEL_FILE).is_file():
            raise ModelNotFound(f"no {MODEL_FILE} in {folder}")
        return folder
    root = DataRoot(data_root)
    promoted = read_registry(root).promoted
    if promoted is None:
        raise ModelNotFound(f"no promoted model under {root.url}: run `genreflow rebuild`, "
                            "`genreflow promote RUN`, or pass --model")
    folder = Path(root.local_path(output_location(root, "train", promoted)[0]))
    if not (folder / MODEL_FILE).is_file():
        raise ModelNotFound(f"the promoted model {promoted} has no {MODEL_FILE} in {folder}: "
                            "`genreflow promote RUN` another run, or pass --model")
    return folder


def predict_command(paths: list[Path], model: Path | None, fmt: str, data_root: str) -> int:
    """Print each file's top-3 genres; unreadable files get an error line and the batch goes on."""
    from genreflow.model.predict import PredictionFailure, format_predictions, load_classifier, predict_paths

    model_dir = resolve_model_dir(model, data_root)
    classifier = load_classifier(model_dir)
    audio_file = model_dir / AUDIO_FILE
    audio = AudioConfig.model_validate_json(audio_file.read_text()) if audio_file.is_file() else AudioConfig()
    results = list(predict_paths(classifier, paths, audio))
    print(format_predictions(results, fmt))
    failures = [r for r in results if isinstance(r, PredictionFailure)]
    for failure in failures:
        print(f"genreflow: cannot predict {failure.path}: {failure.reason}", file=sys.stderr)
    return 1 if failures and len(failures) == len(results) else 0
