"""Shards: array, index and side tables, sealed by a manifest written last; stale files go first."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genreflow.storage.manifest import Manifest
from genreflow.storage.outputs import OutputSpec, open_output, output_path, state_of
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import open_shard_array, read_shard_index, read_side_table, write_shard


@pytest.fixture(params=["local", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DataRoot]:
    if request.param == "local":
        yield DataRoot(str(tmp_path / "data"))
    else:
        memory = DataRoot(f"memory://genreflow-test-{uuid.uuid4().hex}/data")
        yield memory
        memory.remove(memory.path, recursive=True)


ARRAY = np.arange(3 * 4, dtype=np.int16).reshape(3, 4)
INDEX = pd.DataFrame({"track_id": [2, 2, 5], "clip_index": [0, 1, 0], "row": [0, 1, 2]})
QUARANTINE = pd.DataFrame({"track_id": [9], "reason": ["empty file (0 bytes)"]})


def spec(inputs: str = "fp-1", stage: str = "decode", shard: str = "s0") -> OutputSpec:
    """A shard output made from ``inputs``: another value stands for other inputs."""
    return OutputSpec(stage, shard, inputs=inputs)


def shard_state(root: DataRoot, stage: str, shard: str, inputs: str) -> str:
    return state_of(root, spec(inputs, stage, shard))


def shard_manifest(root: DataRoot, stage: str, shard: str) -> Manifest | None:
    from genreflow.storage.manifest import read_manifest
    from genreflow.storage.outputs import manifest_path

    return read_manifest(root, manifest_path(root, stage, shard))


def write_s0(root: DataRoot, inputs: str = "fp-1") -> None:
    with open_output(root, spec(inputs)) as out:
        write_shard(out, array=ARRAY, index=INDEX, side_tables={"quarantine": QUARANTINE})
        out.extra = {"tracks": 3, "quarantined": 1}


def test_write_shard_writes_every_file_then_the_manifest(root: DataRoot) -> None:
    write_s0(root)
    assert root.listdir("decode") == ["s0.manifest.json", "s0.npy", "s0.parquet", "s0.quarantine.parquet"]
    manifest = shard_manifest(root, "decode", "s0")
    assert manifest is not None
    assert manifest.name == "decode/s0"
    assert manifest.rows == 3
    assert manifest.extra == {"tracks": 3, "quarantined": 1}
    assert set(manifest.files) == {"s0.npy", "s0.parquet", "s0.quarantine.parquet"}
    assert shard_state(root, "decode", "s0", "fp-1") == "done"
    assert shard_state(root, "decode", "s0", "fp-2") == "stale"
    assert shard_state(root, "decode", "s1", "fp-1") == "missing"


def test_shard_contents_read_back(root: DataRoot) -> None:
    write_s0(root)
    np.testing.assert_array_equal(open_shard_array(root, "decode", "s0"), ARRAY)
    np.testing.assert_array_equal(open_shard_array(root, "decode", "s0", mmap=False), ARRAY)
    pd.testing.assert_frame_equal(read_shard_index(root, "decode", "s0"), INDEX)
    pd.testing.assert_frame_equal(read_side_table(root, "decode", "s0", "quarantine"), QUARANTINE)


def test_side_table_is_covered_by_the_manifest(root: DataRoot) -> None:
    write_s0(root)
    root.write_parquet(output_path(root, "decode", "s0", ".quarantine.parquet"), QUARANTINE.iloc[0:0])
    assert shard_state(root, "decode", "s0", "fp-1") == "corrupt"


def test_rewrite_with_new_fingerprint_replaces_the_manifest(root: DataRoot) -> None:
    write_s0(root, "fp-1")
    write_s0(root, "fp-2")
    assert shard_state(root, "decode", "s0", "fp-2") == "done"
    assert shard_state(root, "decode", "s0", "fp-1") == "stale"


def test_failed_rewrite_leaves_no_manifest_to_trust(root: DataRoot) -> None:
    write_s0(root, "fp-1")
    with pytest.raises(ValueError, match="allow_pickle"), open_output(root, spec("fp-1"), force=True) as out:
        write_shard(out, array=np.array([None, "x"], dtype=object), index=INDEX)
    assert shard_manifest(root, "decode", "s0") is None
    assert shard_state(root, "decode", "s0", "fp-1") == "missing"


def test_write_shard_cleans_temp_leftovers_of_that_shard_only(root: DataRoot) -> None:
    leftovers = [output_path(root, "decode", "s0", ".npy.tmp-deadbeef"),
                 output_path(root, "decode", "s0", ".manifest.json.tmp-0badf00d")]
    others = [output_path(root, "decode", "s01", ".npy.tmp-deadbeef"),
              output_path(root, "decode", "s1", ".npy.tmp-deadbeef")]
    for path in leftovers + others:
        root.write_bytes(path, b"half-written")
    write_s0(root)
    assert root.listdir("decode") == sorted(
        ["s0.manifest.json", "s0.npy", "s0.parquet", "s0.quarantine.parquet",
         "s01.npy.tmp-deadbeef", "s1.npy.tmp-deadbeef"]
    )


def test_empty_shard_round_trips(root: DataRoot) -> None:
    with open_output(root, spec("fp-empty", "mel", "val-0000")) as out:
        write_shard(out, array=np.zeros((0, 8, 5), np.float16), index=INDEX.iloc[0:0])
    assert shard_state(root, "mel", "val-0000", "fp-empty") == "done"
    assert open_shard_array(root, "mel", "val-0000").shape == (0, 8, 5)
    assert len(read_shard_index(root, "mel", "val-0000")) == 0
    manifest = shard_manifest(root, "mel", "val-0000")
    assert manifest is not None and manifest.rows == 0
