"""The DAG's stages: one name each, their order, and the code that makes each stage's output.

A stage's name is also its folder under the data root (decode/, mel/,
augment/), its label in logs, progress, ``genreflow status`` and the report.

Every output's fingerprint includes :func:`stage_code`, a hash of the source of
the functions and modules listed in :data:`STAGE_CODE`: upgrading genreflow
redoes exactly the stages whose code changed (and what reads them), with no
version constant to forget. tests/tasks/test_stages.py fails when a listed
module uses a model/ module for its work that the list leaves out.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Literal

from genreflow.storage.fingerprint import code_version, fingerprint

STAGES: tuple[str, ...] = ("ingest", "decode", "mel", "augment", "embed", "stats", "baseline", "train", "evaluate",
                           "promote", "report")
PREPROCESS_STAGES: tuple[str, ...] = ("ingest", "decode", "mel", "augment", "embed")
Stage = Literal["ingest", "decode", "mel", "augment", "embed", "stats", "baseline", "train", "evaluate", "promote",
                "report"]

# What each output's code is: "module" (all of it) or "module:function" (one top-level definition).
# Plumbing that does not change what an output holds (the Prefect wrappers, I/O) stays out, so that
# changing it reruns nothing.
_M = "genreflow.model."
_T = "genreflow.tasks."
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "ingest": (f"{_T}ingest", f"{_T}sources", f"{_T}split", f"{_M}audio"),
    "decode": (f"{_M}audio", f"{_T}decode:decode_shard", f"{_T}decode:to_pcm16"),
    "mel": (f"{_M}mel", f"{_T}mel:mel_stage"),
    "augment": (f"{_M}audio_augment", f"{_M}mel", f"{_T}augment:augment_stage"),
    # The weights are an input (their checksum), not code; musicnn's network and front end are code.
    "embed": (f"{_M}musicnn", f"{_T}embed:embed_stage"),
    "stats": (f"{_T}stats:band_stats",),
    "baseline": (f"{_T}baseline", f"{_M}metrics"),
    "train": (f"{_M}cnn", f"{_M}train", f"{_M}dataset", f"{_M}augment", f"{_T}train:fit_model",
              f"{_T}train:model_knobs"),
    "evaluate": (f"{_T}evaluate", f"{_M}metrics", f"{_M}predict", f"{_M}audio", f"{_M}mel", f"{_M}embedding",
                 f"{_M}musicnn"),
    # The embedding family's head: fitted on the embed shards, saved as one Keras model with musicnn.
    "head": (f"{_M}embedding", f"{_M}musicnn", f"{_M}metrics", f"{_T}head:fit_embedding_model", f"{_T}head:stacked"),
    "promote": (f"{_T}promote",),
    "report": (f"{_T}report", f"{_T}select"),
    "fold": (f"{_T}crossval", f"{_T}folds", f"{_T}evaluate", f"{_T}baseline", f"{_T}select", f"{_T}head",
             f"{_M}metrics", f"{_M}predict", f"{_M}audio", f"{_M}mel", f"{_M}embedding", f"{_M}musicnn"),
    "crossval": (f"{_T}crossval:summarize_folds", f"{_T}report"),
    # Not a DAG stage (no --from-stage): the shards of `genreflow predict` over a library. The model itself is
    # an input (its files' checksum), not code.
    "predict": (f"{_M}audio", f"{_M}mel", f"{_M}predict:check_audio_settings", f"{_M}predict:file_windows",
                f"{_M}predict:predict_clips", f"{_M}predict:FileWindows", f"{_M}predict:predict_files",
                f"{_M}predict:Classifier", f"{_M}predict:window_input", f"{_M}embedding:is_embedding_classifier",
                f"{_M}embedding:patches_per_window", f"{_M}embedding:window_patches", f"{_M}musicnn",
                f"{_M}metrics", f"{_T}predict:prediction_table", f"{_T}predict:predict_table"),
}
# Non-Python files whose content is part of a stage's code: package -> glob.
STAGE_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "report": (("genreflow.tasks", "templates/*"),),
    "crossval": (("genreflow.tasks", "templates/*"),),
}


@cache
def stage_code(stage: str) -> str:
    """The version of the code that makes ``stage``'s outputs (see the module docstring).

    Cached per process: the code of a running process does not change.
    """
    if stage not in STAGE_CODE:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGE_CODE)}")
    version = code_version(*STAGE_CODE[stage])
    data = []
    for package, pattern in STAGE_FILES.get(stage, ()):
        folder, _, glob = pattern.rpartition("/")
        for entry in sorted(files(package).joinpath(folder).iterdir(), key=lambda e: e.name):
            if entry.is_file() and _matches(entry.name, glob):
                data.append((entry.name, entry.read_bytes().hex()))
    return fingerprint(version, data)[:16] if data else version


def _matches(name: str, glob: str) -> bool:
    from fnmatch import fnmatch

    return fnmatch(name, glob)
