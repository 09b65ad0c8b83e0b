"""A library upgrade redoes exactly the outputs made with it, and upgrading genreflow redoes nothing (issue 21).

Preprocessing to stats on the session's demo set, as tests/flows/test_changing_collection.py does for code. A
reported library version is monkeypatched (tasks.stages.library_version) instead of installing another one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genreflow.flows.rebuild import run_command
from genreflow.flows.status import collect_status
from genreflow.storage.manifest import read_manifest
from genreflow.storage.root import DataRoot
from genreflow.tasks import stages
from tests.flows.conftest import small_config

pytestmark = pytest.mark.timeout(900)
STAGES = ("decode", "mel", "augment")


def manifests(root: Path) -> dict[str, Path]:
    """The manifest of every shard output and of stats.json, by output name ("mel/train-0000", "stats")."""
    found = {f"{stage}/{path.name.removesuffix('.manifest.json')}": path
             for stage in STAGES for path in sorted((root / stage).glob("*.manifest.json"))}
    return {**found, "stats": root / "stats.manifest.json"}


def sealed(root: Path) -> dict[str, tuple[str, str, dict[str, str]]]:
    """(time sealed, fingerprint, libraries) of each output: what tells a recomputed one from a kept one."""
    data_root = DataRoot(str(root))
    found = {}
    for name, path in manifests(root).items():
        manifest = read_manifest(data_root, str(path))
        assert manifest is not None, name
        found[name] = (manifest.created_at, manifest.fingerprint, manifest.libraries)
    return found


def test_a_library_upgrade_redoes_exactly_the_stages_made_with_it(tmp_path: Path, demo_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    config = small_config(root, demo_dir, to_stage="stats", time_stretch=[0.9], pitch_shift=[])
    run_command("rebuild", config)

    # As an earlier genreflow left the data root: no manifest records a library version. It is adopted as it is.
    for path in manifests(root).values():
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "libraries"}))
    status = collect_status(config)
    assert all(set(counts) == {"done"} for counts in status["stages"].values()) and status["stats"] == "done"
    before = sealed(root)
    kept = run_command("rebuild", config)
    after = sealed(root)
    assert {name: seal[:2] for name, seal in after.items()} == {name: seal[:2] for name, seal in before.items()}
    assert kept["changes"]["shards"]["decode"]["computed"] == kept["changes"]["shards"]["mel"]["computed"] == 0
    # ... and gains the installed versions, so that a later upgrade is seen.
    assert all(libraries == stages.stage_libraries(name.split("/")[0]) for name, (_, _, libraries) in after.items())

    # librosa makes mel and augment, and through them stats; decode does not use it.
    installed = stages.library_version
    old = installed("librosa")
    monkeypatch.setattr(stages, "library_version", lambda name: "99.0" if name == "librosa" else installed(name))
    status = collect_status(config)
    assert set(status["stages"]["decode"]) == {"done"}
    assert set(status["stages"]["mel"]) == set(status["stages"]["augment"]) == {"dependency-changed"}
    assert status["stats"] == "dependency-changed"
    assert status["dependencies_changed"] == [f"librosa {old} → 99.0"]
    upgraded = run_command("rebuild", config)
    redone = {name for name, seal in sealed(root).items() if seal != after[name]}
    assert redone == {name for name in after if not name.startswith("decode/")}
    assert all(sealed(root)[name][2]["librosa"] == "99.0" for name in redone)
    assert upgraded["changes"]["dependencies_changed"] == {"librosa": [old, "99.0"]}
    assert upgraded["changes"]["shards"]["decode"]["computed"] == 0
    assert upgraded["changes"]["shards"]["mel"]["reused"] == 0

    # keras makes nothing that preprocessing makes.
    monkeypatch.setattr(stages, "library_version",
                        lambda name: {"librosa": "99.0", "keras": "99.0"}.get(name) or installed(name))
    status = collect_status(config)
    assert all(set(counts) == {"done"} for counts in status["stages"].values()) and status["stats"] == "done"
