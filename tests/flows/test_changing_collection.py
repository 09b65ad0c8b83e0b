"""Rebuilds of a collection that grows, shrinks and changes, and of code that changes (issue 12).

Preprocessing only, on a folder source with shards of 4: each step checks that
surviving tracks keep their split, that exactly the shards whose members or
audio changed are recomputed (counted from their manifests), that the stages
after ingest see exactly the current tracks, and that a stage whose code
changed reruns with everything after it and nothing before it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from genreflow.flows.config import Config
from genreflow.flows.plan import plan_shards, split_shards, training_inputs
from genreflow.flows.rebuild import run_command
from genreflow.flows.status import collect_status
from genreflow.storage.manifest import read_manifest
from genreflow.storage.outputs import manifest_path, tracks_path
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import read_shard_index
from tests.flows.conftest import DEMO_SECONDS, small_config

pytestmark = pytest.mark.timeout(900)


def config_for(root: Path, source: Path) -> Config:
    return small_config(root, source, to_stage="stats", time_stretch=[0.9], pitch_shift=[])


def manifests(root: Path) -> dict[str, str]:
    """Every shard output's manifest, with the time it was sealed."""
    data_root = DataRoot(str(root))
    found = {}
    for stage in ("decode", "mel", "augment"):
        for path in sorted((root / stage).glob("*.manifest.json")):
            shard = path.name.removesuffix(".manifest.json")
            manifest = read_manifest(data_root, manifest_path(data_root, stage, shard))
            assert manifest is not None
            found[f"{stage}/{shard}"] = manifest.created_at + manifest.fingerprint
    return found


def recomputed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name, sealed in after.items() if before.get(name) != sealed}


def tracks(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / "tracks.parquet").set_index("track_id")


def shards_of(table: pd.DataFrame, ids: list[str]) -> set[str]:
    return set(table.loc[ids, "shard"])


def assert_stages_see_exactly(root: Path, config: Config) -> None:
    """Training reads the clips of the current training tracks; evaluation those of the current test tracks."""
    data_root = DataRoot(str(root))
    table = data_root.read_parquet(tracks_path(data_root))
    plans = plan_shards(table, config)

    def ids(shards: list[tuple[str, str]]) -> set[str]:
        return {t for stage, shard in shards for t in read_shard_index(data_root, stage, shard)["track_id"]}

    trained, tested = ids(training_inputs(plans)), ids(split_shards(plans, "test"))
    assert trained == set(table.loc[table["split"] == "train", "track_id"])
    assert tested == set(table.loc[table["split"] == "test", "track_id"])
    stats = data_root.read_json(str(root / "stats.json"))
    assert stats["clips"] == 2 * len(trained)  # one clip a track, and its one stretched copy


@pytest.fixture(scope="module")
def extra_tracks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from genreflow.tasks.sources.demo_synth import generate_demo_set

    folder = tmp_path_factory.mktemp("extra")
    generate_demo_set(folder, tracks_per_genre=1, seed=123, seconds=DEMO_SECONDS, genres=["Rock", "Pop", "Folk"])
    return folder


def test_grow_shrink_and_edit_recompute_only_the_touched_shards(tmp_path: Path, demo_dir: Path,
                                                                extra_tracks: Path) -> None:
    source, root = tmp_path / "collection", tmp_path / "root"
    shutil.copytree(demo_dir, source)
    config = config_for(root, source)
    first = run_command("rebuild", config)
    assert first["changes"]["tracks"]["first_ingest"]
    before, splits = manifests(root), tracks(root)["split"]
    assert_stages_see_exactly(root, config)

    # Grow: three new tracks in three genres.
    added = []
    for path in sorted(extra_tracks.glob("*/*.mp3")):
        target = source / path.parent.name / f"new-{path.name}"
        shutil.copy(path, target)
        added.append(f"{path.parent.name}/{target.stem}")
    grown = run_command("rebuild", config)
    table = tracks(root)
    assert (table.loc[splits.index, "split"] == splits).all(), "a surviving track changed split"
    after = manifests(root)
    touched = shards_of(table, added)
    assert {name.split("/")[1] for name in recomputed(before, after)} == touched
    assert len(touched) <= 3 and grown["changes"]["tracks"]["added"] == 3
    assert grown["changes"]["shards"]["decode"] == {"computed": len(touched), "reused": table["shard"].nunique()
                                                    - len(touched)}
    assert_stages_see_exactly(root, config)

    # Shrink: one track goes; only its shard is recomputed.
    victim = sorted(splits.index)[5]
    victim_shard = table.loc[victim, "shard"]
    (source / f"{victim}.mp3").unlink()
    before = after
    shrunk = run_command("rebuild", config)
    after = manifests(root)
    assert {name.split("/")[1] for name in recomputed(before, after)} == {victim_shard}
    assert shrunk["changes"]["tracks"]["removed"] == 1 and victim not in tracks(root).index
    assert_stages_see_exactly(root, config)

    # Edit: one file's audio is replaced in place; its shard alone is recomputed.
    edited = sorted(splits.index.difference([victim]))[0]
    replacement = next(extra_tracks.glob("Pop/*.mp3"))
    shutil.copy(replacement, source / f"{edited}.mp3")
    before = after
    run_command("rebuild", config)
    assert {name.split("/")[1] for name in recomputed(before, manifests(root))} == {tracks(root).loc[edited, "shard"]}
    kept = splits.drop(victim)
    assert (tracks(root).loc[kept.index, "split"] == kept).all()

    # Another data root, built at once from the final collection, holds the same splits.
    fresh = tmp_path / "fresh"
    run_command("preprocess", small_config(fresh, source, time_stretch=[0.9], pitch_shift=[]))
    pd.testing.assert_series_equal(tracks(fresh)["split"].sort_index(), tracks(root)["split"].sort_index())


def test_changed_code_reruns_that_stage_and_what_follows_and_nothing_before(
        tmp_path: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genreflow.tasks import stages

    root = tmp_path / "root"
    config = config_for(root, demo_dir)
    run_command("rebuild", config)
    before = manifests(root)
    stats_before = (root / "stats.manifest.json").read_bytes()

    # "Upgrade" the mel stage: its code now includes one more function.
    monkeypatch.setitem(stages.STAGE_CODE, "mel", (*stages.STAGE_CODE["mel"], "genreflow.tasks.stats:band_stats"))
    stages.stage_code.cache_clear()
    try:
        status = collect_status(config)
        assert status["stages"]["mel"] == {"code-changed": len([n for n in before if n.startswith("mel/")])}
        assert set(status["stages"]["decode"]) == {"done"} and set(status["stages"]["augment"]) == {"done"}
        assert status["stats"] == "stale"  # its inputs changed, not its code
        outcome = run_command("rebuild", config)
    finally:
        stages.stage_code.cache_clear()
    after = manifests(root)
    assert {name.split("/")[0] for name in recomputed(before, after)} == {"mel"}
    assert len(recomputed(before, after)) == len([n for n in before if n.startswith("mel/")])
    assert (root / "stats.manifest.json").read_bytes() != stats_before  # what follows mel reran
    assert outcome["changes"]["code_changed"] == ["mel"]
    assert outcome["changes"]["shards"]["decode"]["computed"] == 0 and outcome["changes"]["shards"]["augment"][
        "computed"] == 0
