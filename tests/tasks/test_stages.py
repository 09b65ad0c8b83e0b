"""Stage code versions: every listed source exists, and a stage's list covers the model code its modules use."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from genreflow.tasks.stages import (
    SAME_OUTPUTS_AS,
    STAGE_CODE,
    STAGE_LIBRARIES,
    STAGE_READS,
    STAGES,
    current_stage_code,
    library_names,
    library_version,
    stage_code,
    stage_libraries,
)

# model/ modules that hold no computation of an output: parameter types, file names, the quiet TF import, the
# fetching of pretrained weights (their checksum is an input of the outputs made with them).
NOT_COMPUTATION = {"genreflow.model.params", "genreflow.model.files", "genreflow.model.quiet_tf",
                   "genreflow.model.weights"}


def model_imports(module: str) -> set[str]:
    """genreflow.model modules that ``module`` imports (at any depth of its source)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin
    tree = ast.parse(Path(spec.origin).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genreflow.model."):
            found.add(node.module)
    return found - NOT_COMPUTATION


@pytest.mark.parametrize("stage", sorted(STAGE_CODE))
def test_every_stage_has_a_code_version(stage: str) -> None:
    assert len(stage_code(stage)) == 16


def test_every_stage_of_the_dag_is_versioned() -> None:
    assert set(STAGES) <= set(STAGE_CODE)


@pytest.mark.parametrize("stage", sorted(STAGE_CODE))
def test_a_stages_code_covers_the_model_modules_it_uses(stage: str) -> None:
    """Every model/ module that a listed module imports, however indirectly, is listed: a change to it must
    change the stage's version. (Erring this way reruns a stage too often, never too rarely.)"""
    listed = {source.partition(":")[0] for source in STAGE_CODE[stage]}
    needed: set[str] = set()
    frontier = list(listed)
    while frontier:
        for dependency in model_imports(frontier.pop()) - needed:
            needed.add(dependency)
            frontier.append(dependency)
    missing = needed - listed
    assert not missing, f"{stage}: add {sorted(missing)} to STAGE_CODE"


@pytest.mark.parametrize("stage", sorted(SAME_OUTPUTS_AS))
def test_every_same_outputs_entry_still_applies(stage: str) -> None:
    """An entry of SAME_OUTPUTS_AS names the code as it is now; once the code changes it is dead, and goes."""
    assert current_stage_code(stage) in SAME_OUTPUTS_AS[stage], (
        f"{stage}'s code changed since its SAME_OUTPUTS_AS entry was recorded: remove the entry")
    assert stage_code(stage) == SAME_OUTPUTS_AS[stage][current_stage_code(stage)]


def test_a_stage_whose_code_changes_leaves_its_recorded_equivalence(monkeypatch: pytest.MonkeyPatch) -> None:
    """The equivalence is keyed by the exact version: a change to the stage's code is a new version again."""
    stage = "stats"
    now = current_stage_code(stage)
    monkeypatch.setitem(SAME_OUTPUTS_AS, stage, {now: "0123456789abcdef"})
    stage_code.cache_clear()
    try:
        assert stage_code(stage) == "0123456789abcdef"
        monkeypatch.setitem(STAGE_CODE, stage, (*STAGE_CODE[stage], "genreflow.storage.fingerprint:fingerprint"))
        stage_code.cache_clear()
        assert current_stage_code(stage) != now and stage_code(stage) == current_stage_code(stage)
    finally:
        stage_code.cache_clear()


# --------------------------------------------------------------------------- libraries

# Import name -> the library's name in STAGE_LIBRARIES, for the libraries whose numerics can make an output.
NUMERIC_IMPORTS = {"numpy": "numpy", "scipy": "scipy", "librosa": "librosa", "soxr": "soxr", "soundfile": "soundfile",
                   "sklearn": "scikit-learn", "tensorflow": "tensorflow", "keras": "keras"}
# (stage, library) that a stage's listed modules import without their numerics making its output.
NOT_NUMERICS = {
    ("ingest", "numpy"), ("ingest", "soundfile"), ("ingest", "soxr"),  # model/audio for its file extensions only
    ("decode", "numpy"),  # downmixes, pads and rounds float32 samples: exact in every version
    ("predict", "scikit-learn"),  # model/metrics' scores; a prediction uses its numpy track aggregation only
    ("train", "scikit-learn"),  # the same: the open-set threshold uses model/metrics' track aggregation only
}


def numeric_imports(module: str) -> set[str]:
    """The STAGE_LIBRARIES names of the numeric libraries that ``module`` imports (at any depth of its source)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin
    found = set()
    for node in ast.walk(ast.parse(Path(spec.origin).read_text())):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                 else [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
        found.update(NUMERIC_IMPORTS[top] for name in names if (top := name.split(".")[0]) in NUMERIC_IMPORTS)
    return found


def test_every_stage_declares_its_libraries_and_what_it_reads() -> None:
    assert set(STAGE_LIBRARIES) == set(STAGE_CODE) == set(STAGE_READS)
    assert all(set(read) <= set(STAGE_READS) for read in STAGE_READS.values())


@pytest.mark.parametrize("stage", sorted(STAGE_CODE))
def test_a_stages_libraries_cover_the_numeric_libraries_its_code_imports(stage: str) -> None:
    """A numeric library that a stage's code imports is among its libraries (its own or upstream), unless
    NOT_NUMERICS says why its numerics do not make the output."""
    used = set().union(*(numeric_imports(source.partition(":")[0]) for source in STAGE_CODE[stage]))
    missing = {name for name in used - library_names(stage) if (stage, name) not in NOT_NUMERICS}
    assert not missing, f"{stage}: add {sorted(missing)} to STAGE_LIBRARIES (or to NOT_NUMERICS, with the reason)"


def test_a_stages_libraries_are_its_own_and_everything_upstream() -> None:
    assert library_names("ingest") == set()  # tasks/ingest.py builds its spec without libraries: wire them first
    assert library_names("decode") == {"soundfile", "libsndfile", "soxr"}
    assert "librosa" not in library_names("decode")
    assert library_names("mel") == library_names("decode") | {"numpy", "scipy", "librosa"}
    for stage, upstream in (("stats", "augment"), ("train", "stats"), ("evaluate", "train"), ("evaluate", "head"),
                            ("report", "evaluate"), ("crossval", "fold"), ("head", "embed")):
        assert library_names(upstream) <= library_names(stage), (stage, upstream)
    assert {"tensorflow", "keras"}.isdisjoint(library_names("stats") | library_names("baseline"))
    with pytest.raises(ValueError, match="unknown stage"):
        library_names("audio")


def test_installed_versions_are_read_from_metadata_without_importing_tensorflow() -> None:
    import subprocess
    import sys

    import numpy
    import soundfile

    assert library_version("numpy") == numpy.__version__
    assert library_version("libsndfile") == soundfile.__libsndfile_version__
    assert library_version("no-such-library-here") is None
    assert stage_libraries("mel") == {name: library_version(name) for name in sorted(library_names("mel"))}
    assert list(stage_libraries("embed")) == sorted(stage_libraries("embed"))
    code = ("import sys; from genreflow.tasks.stages import library_version as v; "
            "assert v('tensorflow') and v('keras'); assert 'tensorflow' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
