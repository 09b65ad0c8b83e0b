"""Issues 6.3 (partial files) and 6.4 (corrupted outputs): what is on disk is trusted only with a matching manifest.

tests/flows/test_preprocess_flow.py rebuilds one altered mel shard on a rerun
of preprocess, and tests/storage/test_manifest.py checks the states one by one.
Here: the training side refuses a corrupted shard (it never trains on it), the
rebuild restores the exact bytes, and partial files (truncated, stale manifest,
no manifest, leftover temporary files) are rebuilt, never read as complete.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genreflow.flows.cli import main
from genreflow.flows.status import collect_status
from genreflow.storage.manifest import read_manifest
from tests.reliability.conftest import PREPROCESS_OPTIONS, cli_flags, copy_root, small_config

pytestmark = pytest.mark.timeout(600)


def alter(path: Path, truncate: bool = False) -> None:
    """Damage a file after it was sealed: cut it in half, or change bytes and keep its size."""
    data = bytearray(path.read_bytes())
    if truncate:
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[-64:] = bytes(64)
        path.write_bytes(bytes(data))


def manifest_times(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.glob("*/*.manifest.json")}


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("*/*[0-9].npy"))}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_training_refuses_corrupted_shards_until_they_are_rebuilt(
    tmp_path: Path, preprocessed_root: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_root(preprocessed_root, tmp_path / "root")
    before = manifest_times(root)
    alter(root / "mel" / "train-0001.npy")  # same size, other bytes: only the checksum sees it
    alter(root / "augment" / "train-0000.npy", truncate=True)
    flags = cli_flags(root, demo_dir)

    status = collect_status(small_config(root, demo_dir, **PREPROCESS_OPTIONS))
    assert status["stages"]["mel"].get("corrupt") == 1 and status["stages"]["augment"].get("corrupt") == 1

    code, err = run(["train", *flags, "--to-stage", "stats"], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 1 and "Traceback" not in err
    assert "2 shard(s) not ready" in last and "mel/train-0001 (corrupt)" in last
    assert "augment/train-0000 (corrupt)" in last and "run `genreflow preprocess` first" in last
    assert not (root / "stats.json").exists() and not (root / "models").exists()

    code, err = run(["preprocess", *flags], capsys)
    assert code == 0, err
    after = manifest_times(root)
    assert {k for k in after if after[k] != before[k]} == {"mel/train-0001.manifest.json",
                                                         "augment/train-0000.manifest.json"}
    assert shard_bytes(root) == shard_bytes(preprocessed_root)

    code, err = run(["train", *flags, "--to-stage", "stats"], capsys)
    assert code == 0, err
    stats = (root / "stats.json").read_text()
    assert "NaN" not in stats and read_manifest_rows(root) > 0


def read_manifest_rows(root: Path) -> int:
    from genreflow.storage.root import DataRoot

    manifest = read_manifest(DataRoot(str(root)), str(root / "stats.manifest.json"))
    assert manifest is not None
    return manifest.rows


def test_partial_files_are_rebuilt_never_read_as_complete(
    tmp_path: Path, preprocessed_root: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_root(preprocessed_root, tmp_path / "root")
    # A truncated array under a stale manifest (one from other inputs).
    alter(root / "decode" / "val-0000.npy", truncate=True)
    stale = root / "decode" / "val-0000.manifest.json"
    stale.write_text(stale.read_text().replace('"fingerprint": "', '"fingerprint": "0', 1))
    # A write killed before its manifest: a truncated array, no manifest, a half-written temporary file.
    alter(root / "mel" / "test-0000.npy", truncate=True)
    (root / "mel" / "test-0000.manifest.json").unlink()
    (root / "mel" / "test-0000.npy.tmp-0badf00d").write_bytes(b"\x93NUMPY half")
    # A truncated ingest table.
    alter(root / "tracks.parquet", truncate=True)

    code, err = run(["preprocess", *cli_flags(root, demo_dir)], capsys)

    assert code == 0, err
    assert shard_bytes(root) == shard_bytes(preprocessed_root)
    assert (root / "tracks.parquet").read_bytes() == (preprocessed_root / "tracks.parquet").read_bytes()
    assert not list(root.rglob("*.tmp-*"))
    status = collect_status(small_config(root, demo_dir, **PREPROCESS_OPTIONS))
    n = status["shards"]
    assert status["stages"]["decode"] == {"done": n} and status["stages"]["mel"] == {"done": n}


def test_a_damaged_shard_is_never_fed_to_training_even_if_its_manifest_is_gone(
    tmp_path: Path, preprocessed_root: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No manifest means missing, whatever the array holds: training refuses rather than trusting the file."""
    root = copy_root(preprocessed_root, tmp_path / "root")
    shard = sorted(p.name.split(".")[0] for p in (root / "mel").glob("val-*.manifest.json"))[-1]
    (root / "mel" / f"{shard}.manifest.json").unlink()
    np.save(root / "mel" / f"{shard}.npy", np.full((1, 128, 431), np.nan, np.float16))
    code, err = run(["train", *cli_flags(root, demo_dir), "--to-stage", "stats"], capsys)
    assert code == 1 and f"mel/{shard} (missing)" in err.strip().splitlines()[-1]
