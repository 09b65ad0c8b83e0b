"""Stage code versions: every listed source exists, and a stage's list covers the model code its modules use."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from genreflow.tasks.stages import SAME_OUTPUTS_AS, STAGE_CODE, STAGES, current_stage_code, stage_code

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
