"""``genreflow gc`` and status's unreferenced line: shard files that dropped out of the plan, and only those.

One small collection, preprocessed; then a shard's tracks are removed and
augmentation is turned off, and it is preprocessed again. The dropped shard's
decode and mel files and every augment file are now referenced by no plan:
status counts them, ``gc --dry-run`` lists exactly them, ``gc`` removes them
(refused while a rebuild holds the lock), and the next preprocess recomputes
nothing. Models, reports, stats and the registry are never touched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from genreflow.flows.cli import main
from genreflow.flows.lock import data_root_lock
from genreflow.flows.rebuild import run_command
from genreflow.flows.status import collect_status
from genreflow.storage.gc import Unreferenced, shard_of, unreferenced_files
from genreflow.storage.registry import PromotionRecord, read_registry, record_decision
from genreflow.storage.root import DataRoot
from genreflow.storage.space import human_bytes
from tests.flows.conftest import small_config

pytestmark = pytest.mark.timeout(600)


def test_unreferenced_files_are_the_shard_files_of_no_planned_shard(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    for name in ("decode/train-0000.npy", "decode/train-0000.manifest.json", "decode/train-0001.npy",
                 "decode/train-0001.npy.tmp-1a2b3c4d", "mel/val-0000.parquet", "embed/test-0000.npy",
                 "models/run-1/model.keras", "stats.json", "decode/notes/readme.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * 10)
    found = unreferenced_files(root, {"decode": {"train-0000"}, "mel": {"val-0000"}})
    assert [posixpath_rel(path, tmp_path) for path, _ in found.files] == [
        "decode/train-0001.npy", "decode/train-0001.npy.tmp-1a2b3c4d", "embed/test-0000.npy"]
    assert found.count == 3 and found.bytes == 30 and found.summary() == "3 files, 30 B"
    assert shard_of("train-0003.manifest.json") == "train-0003"
    assert unreferenced_files(DataRoot(str(tmp_path / "none")), {}) == Unreferenced()


def posixpath_rel(path: str, base: Path) -> str:
    return str(Path(path).relative_to(base))


def files_of(root: Path, stage: str, shard: str = "*") -> set[str]:
    return {str(p.relative_to(root)) for p in root.glob(f"{stage}/{shard}.*")}


def test_gc_removes_exactly_the_shards_that_dropped_out_of_the_plan(
        tmp_path: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, root = tmp_path / "collection", tmp_path / "root"
    shutil.copytree(demo_dir, source)
    run_command("preprocess", small_config(root, source, time_stretch=[0.9], pitch_shift=[]))
    before = pd.read_parquet(root / "tracks.parquet")
    victim = "train-0000"
    for path in before.loc[before["shard"] == victim, "path"]:
        Path(path).unlink()
    # What a model run, its report and a promotion leave: gc must never touch them.
    kept = [root / "models" / "run-earlier" / "model.keras", root / "reports" / "run-earlier" / "report.md"]
    for path in kept:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"trained")
    record_decision(DataRoot(str(root)), PromotionRecord(run="run-earlier", decision="promoted", reason="by hand",
                                                         policy="always"))

    config = small_config(root, source, time_stretch=[], pitch_shift=[])  # augmentation off: recorded by the run
    run_command("preprocess", config)
    after = pd.read_parquet(root / "tracks.parquet")
    assert set(before["shard"]) - set(after["shard"]) == {victim} and set(after["shard"]) < set(before["shard"])
    dropped = files_of(root, "decode", victim) | files_of(root, "mel", victim) | files_of(root, "augment")
    assert files_of(root, "decode", victim) and files_of(root, "augment")
    size = sum((root / name).stat().st_size for name in dropped)
    untouched = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
                 if p.is_file() and str(p.relative_to(root)) not in dropped and p.name != ".genreflow.lock"}

    status = collect_status(config)
    assert status["unreferenced"] == {"files": len(dropped), "bytes": size}
    assert main(["status", "--data-root", str(root)]) == 0
    assert f"unreferenced: {len(dropped)} files, {human_bytes(size)} (genreflow gc removes them)" in \
        capsys.readouterr().out

    assert main(["gc", "--dry-run", "--data-root", str(root)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert {row.split("  ")[0] for row in listed[:-1]} == dropped
    summary = f"{len(dropped)} files, {human_bytes(size)}"
    assert listed[-1] == f"{summary} unreferenced in {root}; `genreflow gc` removes them"
    assert all((root / name).exists() for name in dropped)  # a dry run removes nothing

    with data_root_lock(str(root)):  # a rebuild holding the data root: gc is refused, removes nothing
        assert main(["gc", "--data-root", str(root)]) == 1
    assert "genreflow: error:" in capsys.readouterr().err and all((root / name).exists() for name in dropped)

    assert main(["gc", "--data-root", str(root)]) == 0
    assert capsys.readouterr().out.strip() == f"removed {summary} from {root}"
    assert not any((root / name).exists() for name in dropped)
    assert {name: (root / name).read_bytes() for name in untouched} == untouched
    assert read_registry(DataRoot(str(root))).promoted == "run-earlier"

    computed = run_command("preprocess", config)  # shards computed per stage: nothing it needs was removed
    assert set(computed.values()) == {0}, computed
    status = collect_status(config)
    assert all(set(counts) == {"done"} for counts in status["stages"].values() if counts), status["stages"]
    assert status["unreferenced"] == {"files": 0, "bytes": 0}
    assert main(["gc", "--dry-run", "--data-root", str(root)]) == 0
    assert "nothing to remove" in capsys.readouterr().out
