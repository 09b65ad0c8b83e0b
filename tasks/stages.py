"""The DAG's stages: one name each, their order, and the code that makes each stage's output.

A stage's name is also its folder under the data root (decode/, mel/,
augment/), its label in logs, progress, ``genreflow status`` and the report.

Every output's fingerprint includes :func:`stage_code`, a hash of the source of
the functions and modules listed in :data:`STAGE_CODE`: upgrading genreflow
redoes exactly the stages whose code changed (and what reads them), with no
version constant to forget. tests/tasks/test_stages.py fails when a listed
module uses a model/ module for its work that the list leaves out.

The libraries whose numerics make a stage's output are not code of genreflow's
to hash: :data:`STAGE_LIBRARIES` names them, and :func:`stage_libraries` gives
their installed versions, the stage's own and those of every stage upstream of
it (:data:`STAGE_READS`). They are recorded beside the fingerprint in each
manifest, not in it (storage/outputs.py): a data root written before versions
were recorded is adopted as it is, and a later upgrade of one of them makes
exactly the outputs that were made with it stale.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata
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
              f"{_T}train:model_knobs", f"{_T}train:model_open_set", f"{_M}open_set",
              f"{_M}metrics", f"{_M}track_head:pool_clips"),
    "evaluate": (f"{_T}evaluate", f"{_M}metrics", f"{_M}predict", f"{_M}cnn", f"{_M}audio", f"{_M}mel",
                 f"{_M}embedding", f"{_M}musicnn", f"{_M}track_head", f"{_M}open_set"),
    # The embedding family's head: fitted on the embed shards, saved as one Keras model with musicnn.
    "head": (f"{_M}embedding", f"{_M}musicnn", f"{_M}metrics", f"{_M}track_head",
             f"{_T}train_embedding:fit_embedding_model", f"{_T}train_embedding:stacked",
             f"{_T}train_embedding:track_artists", f"{_T}train_embedding:head_open_set", f"{_M}open_set"),
    "promote": (f"{_T}promote",),
    # The report also cuts and encodes the excerpts of its Mistakes (tasks/excerpts.py), as decode cuts clips.
    "report": (f"{_T}report", f"{_T}reporting.render", f"{_T}reporting.plots", f"{_T}select", f"{_T}mistakes",
               f"{_T}excerpts", f"{_M}metrics", f"{_M}audio"),
    # A fold trains, scores and chooses through the rebuild's own functions, on its tracks of every shard.
    "fold": (f"{_T}crossval", f"{_T}folds", f"{_T}evaluate", f"{_M}baseline", f"{_T}baseline", f"{_T}select",
             f"{_T}train_embedding", f"{_T}train:cnn_clips", f"{_T}train:clip_sources", f"{_M}cnn", f"{_M}train",
             f"{_M}dataset", f"{_M}batch_augment", f"{_M}metrics", f"{_M}predict", f"{_M}audio", f"{_M}mel",
             f"{_M}embedding", f"{_M}musicnn", f"{_M}track_head", f"{_M}open_set"),
    "crossval": (f"{_T}crossval:summarize_folds", f"{_T}reporting.render", f"{_T}reporting.plots", f"{_M}baseline",
                 f"{_M}metrics", f"{_T}label_issues", f"{_T}excerpts", f"{_M}audio"),
    # Not a DAG stage (no --from-stage): the shards of `genreflow predict` over a library. The model itself is
    # an input (its files' checksum), not code.
    "predict": (f"{_M}audio", f"{_M}mel", f"{_M}predict:check_audio_settings", f"{_M}predict:file_windows",
                f"{_M}predict:predict_clips", f"{_M}predict:FileWindows", f"{_M}predict:predict_files",
                f"{_M}predict:Classifier", f"{_M}predict:window_input", f"{_M}predict:predict_windows",
                f"{_M}predict:file_probabilities", f"{_M}predict:file_novelty", f"{_M}cnn:cnn_representation_model",
                f"{_M}open_set", f"{_M}embedding:is_track_classifier",
                f"{_M}embedding:window_embedding_model", f"{_M}embedding:track_head_model",
                f"{_M}embedding:pool_windows", f"{_M}embedding:is_embedding_classifier", f"{_M}track_head",
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
    "decode": {"434d04b74b902036": "f6a0870375382b21"},
    "mel": {"0f9af175f1b96c55": "d536ab22e86f4651"},
    "augment": {"b53d50501d7c1518": "cd8430ed90154be9"},
    "stats": {"94e3d694fd5f02df": "57cd145b7e0f1005"},
}


# The libraries whose numerics make each stage's output (the names their versions are recorded under). Plumbing
# that only carries or stores what a stage computes (pandas, pyarrow, Prefect, Dask, matplotlib and jinja2 for the
# report's pictures and text) stays out, so that upgrading it reruns nothing; so does numpy where a stage only adds,
# scales, rounds or copies float32 samples, which IEEE arithmetic does the same in every version. A library in a
# stage upstream need not be listed again (stage_libraries adds STAGE_READS').
STAGE_LIBRARIES: dict[str, tuple[str, ...]] = {
    # Reads the source's table and hashes each track's key into its split (hashlib): nothing numeric.
    "ingest": (),
    # libsndfile's decoders (and the soundfile wheel that bundles them and their codecs), soxr's resampler.
    # numpy only downmixes, pads and rounds to int16.
    "decode": ("soundfile", "libsndfile", "soxr"),
    # librosa's filterbank and window, scipy's FFT and sparse products, numpy's BLAS.
    "mel": ("numpy", "scipy", "librosa"),
    # librosa's time stretch and pitch shift (the waveform recipe), scipy's sparse shifts, and mel's.
    "augment": ("numpy", "scipy", "librosa"),
    # musicnn's front end (librosa's soxr resampling and mel) and its network.
    "embed": ("numpy", "scipy", "librosa", "soxr", "tensorflow", "keras"),
    "stats": ("numpy",),
    # MFCCs (librosa, scipy's DCT) and an SVM.
    "baseline": ("numpy", "scipy", "librosa", "scikit-learn"),
    "train": ("numpy", "tensorflow", "keras"),
    # The embedding model's head: sklearn's lbfgs fit (scipy's optimiser), saved as a Keras model.
    "head": ("numpy", "scipy", "scikit-learn", "tensorflow", "keras"),
    # The model's predictions and sklearn's metrics.
    "evaluate": ("numpy", "scikit-learn", "tensorflow", "keras"),
    "promote": (),  # compares scores; the promoted model is re-scored by evaluate's code
    # Renders what evaluate and promote computed, and cuts and encodes the Mistakes' excerpts (decode's libraries).
    "report": ("soundfile", "libsndfile", "soxr"),
    "fold": (),  # trains, scores and chooses with the stages it reads
    "crossval": ("numpy", "scikit-learn", "cleanlab", "soundfile", "libsndfile", "soxr"),  # suspect labels, excerpts
    # `genreflow predict`: decodes, makes mel or musicnn's input, and runs the model (an input by checksum, so
    # what trained it is not its concern).
    "predict": ("soundfile", "libsndfile", "soxr", "numpy", "scipy", "librosa", "tensorflow", "keras"),
}
# The stages whose outputs each stage reads (for "head", "fold" and "crossval", the kinds of output in
# STAGE_CODE): a library that changes what one of them holds must also redo what reads it, so a stage's
# recorded libraries are its own and those of everything upstream (:func:`stage_libraries`).
STAGE_READS: dict[str, tuple[str, ...]] = {
    "ingest": (),
    "decode": ("ingest",),
    "mel": ("decode",),
    "augment": ("decode",),
    "embed": ("decode",),
    "stats": ("mel", "augment"),
    "baseline": ("mel",),
    "train": ("stats", "mel", "augment"),
    "head": ("embed",),
    "evaluate": ("train", "head", "mel", "embed"),
    "promote": ("evaluate",),
    "report": ("evaluate", "promote", "baseline"),
    "fold": ("train", "head", "baseline", "evaluate"),
    "crossval": ("fold",),
    "predict": (),  # reads audio files and a model, both inputs by content
}
# Distributions a library may be installed as, where that is not (only) its own name.
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel", "tf-nightly"),
}


@cache
def library_version(name: str) -> str | None:
    """The installed version of library ``name`` of :data:`STAGE_LIBRARIES`, or None when it is not installed.

    Read from the installed distribution's metadata, so that learning TensorFlow's version does not import it;
    libsndfile is a C library inside the soundfile wheel, whose version soundfile reports. Cached per process:
    the libraries of a running process do not change.
    """
    if name == "libsndfile":
        try:
            import soundfile
        except (ImportError, OSError):  # OSError: soundfile installed, its libsndfile missing
            return None
        return str(soundfile.__libsndfile_version__)
    for distribution in _DISTRIBUTIONS.get(name, (name,)):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def library_names(stage: str) -> set[str]:
    """The libraries that make ``stage``'s outputs: its own :data:`STAGE_LIBRARIES` and those of every stage
    upstream of it (:data:`STAGE_READS`), since a library that changes what a stage reads changes what it makes."""
    if stage not in STAGE_LIBRARIES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGE_LIBRARIES)}")
    names: set[str] = set()
    frontier, seen = [stage], set()
    while frontier:
        current = frontier.pop()
        if current not in seen:
            seen.add(current)
            names.update(STAGE_LIBRARIES[current])
            frontier.extend(STAGE_READS[current])
    return names


def stage_libraries(stage: str) -> dict[str, str]:
    """{library: installed version} of :func:`library_names`, sorted by name: what the manifests of ``stage``'s
    outputs record. A library not installed is left out (a stage that needs it cannot run)."""
    versions = {name: library_version(name) for name in sorted(library_names(stage))}
    return {name: version for name, version in versions.items() if version is not None}


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
