"""DataRoot: paths, atomic writes, npy/parquet/json I/O and the writability check, local and in memory."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genreflow.storage.outputs import manifest_path, output_location, output_path, tracks_path
from genreflow.storage.root import DataRoot, StorageError


@pytest.fixture
def memory_root() -> Iterator[DataRoot]:
    """A DataRoot on fsspec's in-memory filesystem, in a bucket of its own, removed afterwards."""
    root = DataRoot(f"memory://genreflow-test-{uuid.uuid4().hex}/data")
    yield root
    root.remove(root.path, recursive=True)


@pytest.fixture(params=["local", "memory"])
def any_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DataRoot]:
    """The same tests on a local root and on an fsspec memory:// root."""
    if request.param == "local":
        yield DataRoot(str(tmp_path / "data"))
    else:
        yield request.getfixturevalue("memory_root")


def files_under(root: DataRoot) -> list[str]:
    """Every file under the root, as paths relative to it."""
    if not root.exists(root.path):
        return []
    return sorted(p[len(root.path) + 1 :] for p in root.fs.find(root.path))


def pickled_npy() -> bytes:
    """An .npy file whose loading needs pickle."""
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buffer.getvalue()


# --------------------------------------------------------------------------- paths


def test_local_paths_follow_the_layout(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    base = str(tmp_path)
    assert root.is_local
    assert tracks_path(root) == f"{base}/tracks.parquet"
    assert root.quarantine_path() == f"{base}/quarantine.parquet"
    assert output_path(root, "stats", "", ".json") == f"{base}/stats.json"
    assert output_path(root, "mel", "train-0000", ".npy") == f"{base}/mel/train-0000.npy"
    assert manifest_path(root, "augment", "t-1") == f"{base}/augment/t-1.manifest.json"
    assert output_location(root, "train", "run-1")[0] == f"{base}/models/run-1"
    assert output_location(root, "report", "run-1")[0] == f"{base}/reports/run-1"
    assert root.sibling(f"{base}/decode/s.manifest.json", "s.npy") == f"{base}/decode/s.npy"
    assert root.local_path(output_path(root, "stats", "", ".json")) == f"{base}/stats.json"


def test_relative_local_root_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert DataRoot("relative/data").path == f"{tmp_path}/relative/data"


@pytest.mark.parametrize("given", ["relative/data", "./relative/../relative/data", "file://relative/data"])
def test_relative_local_root_has_an_absolute_url(given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The url is what tasks on Dask workers get: it must not depend on the worker's working folder."""
    monkeypatch.chdir(tmp_path)
    root = DataRoot(given)
    assert root.url == root.path == f"{tmp_path}/relative/data"
    assert DataRoot(root.url) == root


def test_url_from_another_working_folder_reads_the_same_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "flow").mkdir()
    (tmp_path / "worker").mkdir()
    monkeypatch.chdir(tmp_path / "flow")
    root = DataRoot("data")
    root.write_json(root.join("stats.json"), {"clips": 3})
    monkeypatch.chdir(tmp_path / "worker")  # a Dask worker started elsewhere
    worker_root = DataRoot(root.url)
    assert worker_root.read_json(worker_root.join("stats.json")) == {"clips": 3}
    assert not (tmp_path / "worker" / "data").exists()


def test_memory_url_root_has_bucket_paths_and_no_local_path() -> None:
    root = DataRoot("memory://bucket/x")
    assert not root.is_local
    assert root.path == "/bucket/x"
    assert output_path(root, "decode", "s0", ".npy") == "/bucket/x/decode/s0.npy"
    with pytest.raises(StorageError, match="memory://bucket/x"):
        root.local_path(output_path(root, "stats", "", ".json"))


def test_listdir_sorted_basenames_and_empty_for_missing_stage(any_root: DataRoot) -> None:
    for name in ("b.npy", "a.parquet", "c.manifest.json"):
        any_root.write_bytes(any_root.join("decode", name), b"x")
    assert any_root.listdir("decode") == ["a.parquet", "b.npy", "c.manifest.json"]
    assert any_root.listdir("mel") == []


# --------------------------------------------------------------------------- atomic writes


def test_atomic_open_writes_target_and_leaves_no_temp(any_root: DataRoot) -> None:
    target = any_root.join("sub", "out.bin")
    with any_root.atomic_open(target) as handle:
        handle.write(b"hello")
    assert any_root.read_bytes(target) == b"hello"
    assert files_under(any_root) == ["sub/out.bin"]


def test_failure_inside_atomic_open_leaves_neither_target_nor_temp(any_root: DataRoot) -> None:
    target = any_root.join("out.bin")
    with pytest.raises(RuntimeError, match="boom"), any_root.atomic_open(target) as handle:
        handle.write(b"partial")
        raise RuntimeError("boom")
    assert not any_root.exists(target)
    assert files_under(any_root) == []


def test_existing_file_is_replaced_only_on_success(any_root: DataRoot) -> None:
    target = any_root.join("out.bin")
    any_root.write_bytes(target, b"old")
    with pytest.raises(KeyboardInterrupt), any_root.atomic_open(target) as handle:
        handle.write(b"new but unfinished")
        raise KeyboardInterrupt
    assert any_root.read_bytes(target) == b"old"
    assert files_under(any_root) == ["out.bin"]
    any_root.write_bytes(target, b"new")
    assert any_root.read_bytes(target) == b"new"
    assert files_under(any_root) == ["out.bin"]


# --------------------------------------------------------------------------- formats


def test_npy_round_trip(any_root: DataRoot) -> None:
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    path = any_root.join("decode", "s0.npy")
    any_root.write_npy(path, array)
    loaded = any_root.read_npy(path)
    assert loaded.dtype == np.int16
    np.testing.assert_array_equal(loaded, array)
    np.testing.assert_array_equal(any_root.read_npy(path, mmap=False), array)


def test_read_npy_memory_maps_only_local_roots(tmp_path: Path, memory_root: DataRoot) -> None:
    local = DataRoot(str(tmp_path))
    array = np.linspace(0, 1, 10, dtype=np.float16)
    for root in (local, memory_root):
        root.write_npy(root.join("a.npy"), array)
    assert isinstance(local.read_npy(local.join("a.npy")), np.memmap)
    assert not isinstance(local.read_npy(local.join("a.npy"), mmap=False), np.memmap)
    from_memory = memory_root.read_npy(memory_root.join("a.npy"), mmap=True)  # falls back to bytes
    assert not isinstance(from_memory, np.memmap)
    np.testing.assert_array_equal(from_memory, array)


def test_object_array_is_refused_on_write_and_nothing_is_left(any_root: DataRoot) -> None:
    path = any_root.join("decode", "s0.npy")
    with pytest.raises(ValueError, match="allow_pickle=False"):
        any_root.write_npy(path, np.array([1, "a", None], dtype=object))
    assert not any_root.exists(path)
    assert [f for f in files_under(any_root) if ".tmp-" in f] == []


@pytest.mark.parametrize("mmap", [True, False])
def test_pickled_npy_is_refused_on_read(any_root: DataRoot, mmap: bool) -> None:
    path = any_root.join("evil.npy")
    any_root.write_bytes(path, pickled_npy())
    with pytest.raises(ValueError):
        any_root.read_npy(path, mmap=mmap)


def test_parquet_round_trip_drops_the_index(any_root: DataRoot) -> None:
    frame = pd.DataFrame(
        {"track_id": [2, 3, 5], "genre": ["Rock", "Pop", "Folk"], "score": [0.5, 1.25, -3.0]},
        index=[10, 20, 30],
    )
    path = any_root.join("tracks.parquet")
    any_root.write_parquet(path, frame)
    pd.testing.assert_frame_equal(any_root.read_parquet(path), frame.reset_index(drop=True))


def test_json_round_trip(any_root: DataRoot) -> None:
    payload = {"mean": [0.5, -1.0], "clips": 3, "name": "stats"}
    any_root.write_json(any_root.join("stats.json"), payload)
    assert any_root.read_json(any_root.join("stats.json")) == payload


def test_checksum_is_blake2b_of_the_bytes(any_root: DataRoot) -> None:
    path = any_root.join("x.bin")
    data = bytes(range(256)) * 100
    any_root.write_bytes(path, data)
    assert any_root.checksum(path) == hashlib.blake2b(data, digest_size=16).hexdigest()
    assert any_root.size(path) == len(data)


def test_remove_is_quiet_for_missing_paths(any_root: DataRoot) -> None:
    path = any_root.join("x.bin")
    any_root.remove(path)
    any_root.write_bytes(path, b"x")
    any_root.remove(path)
    assert not any_root.exists(path)


# --------------------------------------------------------------------------- ensure_writable


def test_ensure_writable_creates_the_root_and_leaves_no_probe(any_root: DataRoot) -> None:
    any_root.ensure_writable()
    assert any_root.exists(any_root.path)
    assert files_under(any_root) == []


def test_ensure_writable_under_a_regular_file_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    url = str(blocker / "sub")
    with pytest.raises(StorageError, match="not writable") as info:
        DataRoot(url).ensure_writable()
    assert url in str(info.value)


def test_ensure_writable_on_read_only_dir_names_the_path(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user can write a read-only directory (root ignores permissions)")
        with pytest.raises(StorageError, match="not writable") as info:
            DataRoot(str(locked)).ensure_writable()
        assert str(locked) in str(info.value)
    finally:
        locked.chmod(stat.S_IRWXU)
