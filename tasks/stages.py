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
_S = "genreflow.tasks.sources."
STAGE_CODE: dict[str, tuple[str, ...]] = {
    # The readers: what tasks/sources.py held (the demo synthesiser and the FMA download never were ingest code).
    "ingest": (f"{_T}ingest", f"{_S}base", f"{_S}fma", f"{_S}label_csv", f"{_S}folder", f"{_S}demo", f"{_S}factory",
               f"{_T}split", f"{_M}audio"),
    "decode": (f"{_M}audio", f"{_T}decode:decode_shard", f"{_T}decode:to_pcm16"),
    "mel": (f"{_M}mel", f"{_T}mel:mel_stage"),
    "augment": (f"{_M}augment_copies", f"{_M}mel", f"{_T}augment:augment_stage"),
    # The weights are an input (their checksum), not code; musicnn's network and front end are code.
    "embed": (f"{_M}musicnn", f"{_T}embed:embed_stage"),
    "stats": (f"{_T}stats:band_stats",),
    "baseline": (f"{_M}baseline", f"{_T}baseline", f"{_M}metrics"),
    "train": (f"{_M}cnn", f"{_M}train", f"{_M}dataset", f"{_M}batch_augment", f"{_T}train:fit_model",
              f"{_T}train:model_knobs"),
    "evaluate": (f"{_T}evaluate", f"{_M}metrics", f"{_M}predict", f"{_M}audio", f"{_M}mel", f"{_M}embedding",
                 f"{_M}musicnn"),
    # The embedding family's head: fitted on the embed shards, saved as one Keras model with musicnn.
    "head": (f"{_M}embedding", f"{_M}musicnn", f"{_M}metrics", f"{_T}train_embedding:fit_embedding_model",
             f"{_T}train_embedding:stacked"),
    "promote": (f"{_T}promote",),
    "report": (f"{_T}report", f"{_T}reporting.render", f"{_T}reporting.plots", f"{_T}select"),
    # A fold trains, scores and chooses through the rebuild's own functions, on its tracks of every shard.
    "fold": (f"{_T}crossval", f"{_T}folds", f"{_T}evaluate", f"{_M}baseline", f"{_T}baseline", f"{_T}select",
             f"{_T}train_embedding", f"{_T}train:cnn_clips", f"{_T}train:clip_sources", f"{_M}cnn", f"{_M}train",
             f"{_M}dataset", f"{_M}batch_augment", f"{_M}metrics", f"{_M}predict", f"{_M}audio", f"{_M}mel",
             f"{_M}embedding", f"{_M}musicnn"),
    "crossval": (f"{_T}crossval:summarize_folds", f"{_T}reporting.render", f"{_T}reporting.plots", f"{_M}baseline",
                 f"{_M}metrics"),
    # Not a DAG stage (no --from-stage): the shards of `genreflow predict` over a library. The model itself is
    # an input (its files' checksum), not code.
    "predict": (f"{_M}audio", f"{_M}mel", f"{_M}predict:check_audio_settings", f"{_M}predict:file_windows",
                f"{_M}predict:predict_clips", f"{_M}predict:FileWindows", f"{_M}predict:predict_files",
                f"{_M}predict:Classifier", f"{_M}predict:window_input", f"{_M}embedding:is_embedding_classifier",
                f"{_M}embedding:patches_per_window", f"{_M}embedding:window_patches", f"{_M}musicnn",
                f"{_M}metrics", f"{_T}predict:table_from_windows", f"{_T}predict:predict_files_table"),
}
# Non-Python files whose content is part of a stage's code: package -> glob.
STAGE_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "report": (("genreflow.tasks.reporting", "templates/*"),),
    "crossval": (("genreflow.tasks.reporting", "templates/*"),),
}


# Code versions known to make the same outputs as an earlier release's: stage -> {version now: version then}.
# A refactor that moves, renames or reshapes a stage's code without changing what it computes records the
# earlier version here, so that upgrading keeps every user's finished outputs done instead of recomputing
# them. An entry applies only while the stage's code hashes exactly to "version now": any later change to
# what the code does makes a new version as usual (tests/tasks/test_stages.py fails on an entry that no
# longer applies, so a stale one is removed rather than left to look meaningful). Each entry is checked by
# rebuilding a data root of the earlier release with this code: every output was found done, and a
# forced recompute gave the same bytes.
SAME_OUTPUTS_AS: dict[str, dict[str, str]] = {
    # Issue 20: code versions that no longer hash module paths, and the modules moved and renamed.
    "ingest": {"c3dc8b5d341a04ce": "1e4ec81a3fcd7f47"},
    "decode": {"434d04b74b902036": "f6a0870375382b21"},
    "mel": {"0f9af175f1b96c55": "d536ab22e86f4651"},
    "augment": {"b53d50501d7c1518": "cd8430ed90154be9"},
    "embed": {"6262cd3eccb4bb5f": "6118bc01073f0242"},
    "stats": {"94e3d694fd5f02df": "57cd145b7e0f1005"},
    "baseline": {"cc889a66c9485b46": "b4f07768575c79db"},
    "train": {"f5699901c02b1dab": "9b59b4c8ad3fab6f"},
    "head": {"3b5ddaf97e8fb0d4": "f38df289e5d7d45c"},
    "evaluate": {"94197889f0d7f88c": "b0e1db83d048f20c"},
    "promote": {"eb396916708b31c9": "68352cdcafb1a15f"},
    "report": {"b82989f8aa825593": "a5df0d91178c21ea"},
}


@cache
def stage_code(stage: str) -> str:
    """The version of the code that makes ``stage``'s outputs (see the module docstring).

    Cached per process: the code of a running process does not change.
    """
    version = current_stage_code(stage)
    return SAME_OUTPUTS_AS.get(stage, {}).get(version, version)


def current_stage_code(stage: str) -> str:
    """``stage``'s version computed from its code as it is now, before :data:`SAME_OUTPUTS_AS`."""
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
