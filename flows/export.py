"""``genreflow export RUN --format savedmodel|tflite|onnx --to DIR``: a trained model for use without genreflow."""

from __future__ import annotations

import argparse
from pathlib import Path

from genreflow.flows.config import data_root_of
from genreflow.model.files import model_audio, resolve_model_dir

FORMATS: tuple[str, ...] = ("savedmodel", "tflite", "onnx")  # model/export.py's, named here without TensorFlow


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``genreflow export``."""
    parser.add_argument("run", metavar="RUN",
                        help="a run name under DATA_ROOT/models, a model folder or its model.keras, or 'promoted'")
    parser.add_argument("--format", required=True, choices=list(FORMATS), dest="export_format",
                        help="savedmodel (TensorFlow), tflite (TFLite/LiteRT) or onnx (onnxruntime and others)")
    parser.add_argument("--to", required=True, type=Path, metavar="DIR", help="folder to write the export into")
    parser.add_argument("--data-root", default=None,
                        help="where to find RUN (default: $GENREFLOW_DATA_ROOT, the project file's, or genreflow-data)")


def export_command(args: argparse.Namespace) -> int:
    """Export the model, check it with its own runtime, and say where it went."""
    from genreflow.model.export import export_model
    from genreflow.model.predict import load_classifier

    model_dir = resolve_model_dir(Path(args.run), data_root_of(args.data_root))
    classifier = load_classifier(model_dir)
    result = export_model(classifier, model_audio(model_dir), args.export_format, args.to)
    checked = "" if result.max_abs_diff is None else f"; its runtime matches the model to {result.max_abs_diff:.1e}"
    print(f"exported {model_dir.name} as {args.export_format}: {result.model_path} and {result.info_path}{checked}")
    return 0
