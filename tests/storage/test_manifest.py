"""Manifests decide what a rerun trusts: done, stale, missing or corrupt. Also the fingerprints they hold."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genreflow.model.params import AudioConfig
from genreflow.storage.fingerprint import fingerprint, frame_fingerprint
from genreflow.storage.manifest import library_changes, output_state, read_manifest, write_manifest
from genreflow.storage.outputs import manifest_path as shard_manifest_path
from genreflow.storage.outputs import output_path
from genreflow.storage.root import DataRoot

DATA = b"0123456789" * 50
TABLE = b"a table, pretend"


@pytest.fixture(params=["local", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DataRoot]:
    if request.param == "local":
        yield DataRoot(str(tmp_path / "data"))
    else:
        memory = DataRoot(f"memory://genreflow-test-{uuid.uuid4().hex}/data")
        yield memory
        memory.remove(memory.path, recursive=True)


@pytest.fixture
def sealed(root: DataRoot) -> tuple[DataRoot, str, list[str]]:
    """Two files of shard s0 of stage decode, sealed by a manifest with fingerprint 'fp-1'."""
    files = [output_path(root, "decode", "s0", ".npy"), output_path(root, "decode", "s0", ".parquet")]
    root.write_bytes(files[0], DATA)
    root.write_bytes(files[1], TABLE)
    manifest_path = shard_manifest_path(root, "decode", "s0")
    write_manifest(root, manifest_path, name="decode/s0", fingerprint="fp-1", files=files, rows=7,
                   extra={"tracks": 3})
    return root, manifest_path, files


# --------------------------------------------------------------------------- manifests


def test_manifest_records_sizes_checksums_rows_and_extra(sealed: tuple[DataRoot, str, list[str]]) -> None:
    root, manifest_path, _ = sealed
    assert manifest_path == root.join("decode", "s0.manifest.json")
    manifest = read_manifest(root, manifest_path)
    assert manifest is not None
    assert manifest.name == "decode/s0"
    assert manifest.fingerprint == "fp-1"
    assert manifest.rows == 7
    assert manifest.extra == {"tracks": 3}
    assert set(manifest.files) == {"s0.npy", "s0.parquet"}
    assert manifest.files["s0.npy"].size == len(DATA)
    assert manifest.files["s0.npy"].checksum == hashlib.blake2b(DATA, digest_size=16).hexdigest()
    assert manifest.files["s0.parquet"].size == len(TABLE)


def test_state_done_when_fingerprint_and_files_match(sealed: tuple[DataRoot, str, list[str]]) -> None:
    root, manifest_path, _ = sealed
    assert output_state(root, manifest_path, "fp-1") == "done"


def test_state_stale_for_another_fingerprint(sealed: tuple[DataRoot, str, list[str]]) -> None:
    root, manifest_path, _ = sealed
    assert output_state(root, manifest_path, "fp-2") == "stale"


def test_library_versions_are_compared_on_the_libraries_both_name() -> None:
    """A library the manifest does not record is taken at the installed version (an earlier genreflow's manifest
    records none); one it records at another version is a change."""
    current = {"librosa": "0.11.0", "numpy": "2.1.0", "scipy": "1.14.0"}
    assert library_changes({}, current) == {}
    assert library_changes({"numpy": "2.1.0", "keras": "3.0.0"}, current) == {}
    assert library_changes({"librosa": "0.10.2", "numpy": "2.1.0"}, current) == {"librosa": ("0.10.2", "0.11.0")}


def test_state_stale_for_another_version_of_a_recorded_library(root: DataRoot) -> None:
    files = [output_path(root, "mel", "s0", ".npy")]
    root.write_bytes(files[0], DATA)
    path = shard_manifest_path(root, "mel", "s0")
    manifest = write_manifest(root, path, name="mel/s0", fingerprint="fp-1", files=files, rows=1,
                              libraries={"librosa": "0.10.2"})
    assert manifest.libraries == read_manifest(root, path).libraries == {"librosa": "0.10.2"}  # type: ignore[union-attr]
    assert output_state(root, path, "fp-1", libraries={"librosa": "0.10.2", "numpy": "2.1.0"}) == "done"
    assert output_state(root, path, "fp-1", libraries={"librosa": "0.11.0"}) == "stale"
    assert output_state(root, path, "fp-1") == "done"  # without versions to compare, none are


def test_state_missing_without_manifest(root: DataRoot) -> None:
    root.write_bytes(output_path(root, "decode", "s0", ".npy"), DATA)  # data alone is not trusted
    assert output_state(root, shard_manifest_path(root, "decode", "s0"), "fp-1") == "missing"


@pytest.mark.parametrize("garbage", [b"{not json", b"", b"\xff\xfe\x00", b'{"name": "decode/s0"}', b"[1, 2]"])
def test_garbage_manifest_reads_as_missing(sealed: tuple[DataRoot, str, list[str]], garbage: bytes) -> None:
    root, manifest_path, _ = sealed
    root.write_bytes(manifest_path, garbage)
    assert read_manifest(root, manifest_path) is None
    assert output_state(root, manifest_path, "fp-1") == "missing"


def test_truncated_file_is_corrupt_even_without_checksums(sealed: tuple[DataRoot, str, list[str]]) -> None:
    root, manifest_path, files = sealed
    root.write_bytes(files[0], DATA[:-1])
    assert output_state(root, manifest_path, "fp-1") == "corrupt"
    assert output_state(root, manifest_path, "fp-1", verify_checksums=False) == "corrupt"


def test_same_size_altered_bytes_are_caught_by_the_checksum(sealed: tuple[DataRoot, str, list[str]]) -> None:
    root, manifest_path, files = sealed
    altered = bytearray(DATA)
    altered[100] ^= 0x01
    root.write_bytes(files[0], bytes(altered))
    assert output_state(root, manifest_path, "fp-1") == "corrupt"
    assert output_state(root, manifest_path, "fp-1", verify_checksums=False) == "done"  # size alone agrees


def test_deleted_file_is_corrupt(sealed: tuple[DataRoot, str, list[str]]) -> None:
    root, manifest_path, files = sealed
    root.remove(files[1])
    assert output_state(root, manifest_path, "fp-1") == "corrupt"


def test_stale_is_reported_before_file_checks(sealed: tuple[DataRoot, str, list[str]]) -> None:
    root, manifest_path, files = sealed
    root.remove(files[0])
    assert output_state(root, manifest_path, "fp-other") == "stale"


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_ignores_dict_key_order_at_any_depth() -> None:
    a = {"sr": 22050, "mel": {"n_mels": 128, "hop": 512}, "names": ["x", "y"]}
    b = {"names": ["x", "y"], "mel": {"hop": 512, "n_mels": 128}, "sr": 22050}
    assert fingerprint("decode", a) == fingerprint("decode", b)


def test_fingerprint_distinguishes_values_names_and_order_of_parts() -> None:
    base = fingerprint("mel", {"n_mels": 128})
    assert fingerprint("mel", {"n_mels": 64}) != base
    assert fingerprint("augment", {"n_mels": 128}) != base
    assert fingerprint({"n_mels": 128}, "mel") != base
    assert fingerprint("mel", {"n_mels": 128}, "upstream") != base
    assert fingerprint("mel", {"n_mels": 128.5}) != base
    assert fingerprint("mel", ["a", "b"]) != fingerprint("mel", ["b", "a"])  # lists keep their order


def test_fingerprint_treats_whole_floats_as_ints() -> None:
    assert fingerprint({"rate": 1.0}) == fingerprint({"rate": 1})
    assert fingerprint([2.0, -2.0]) == fingerprint([2, -2])
    assert fingerprint(np.int64(3)) == fingerprint(3)
    assert fingerprint(np.float64(1.0)) == fingerprint(1)
    assert fingerprint({"a": [np.float32(2.0)]}) == fingerprint({"a": [2]})
    assert fingerprint(np.float64(0.5)) == fingerprint(0.5)


def test_fingerprint_of_a_model_is_its_dump_and_tracks_changes() -> None:
    audio = AudioConfig()
    assert fingerprint(audio) == fingerprint(audio.model_dump(mode="json"))
    assert fingerprint(audio) != fingerprint(AudioConfig(n_mels=64))
    assert len(fingerprint(audio)) == 32 and int(fingerprint(audio), 16) >= 0


def test_frame_fingerprint_ignores_the_index() -> None:
    frame = pd.DataFrame({"track_id": [2, 3, 5], "genre": ["Rock", "Pop", "Folk"]})
    assert frame_fingerprint(frame) == frame_fingerprint(frame.set_axis([7, 8, 9]))
    assert frame_fingerprint(frame) == frame_fingerprint(frame.copy())


def test_frame_fingerprint_sees_content_row_order_and_column_names() -> None:
    frame = pd.DataFrame({"track_id": [2, 3, 5], "genre": ["Rock", "Pop", "Folk"]})
    base = frame_fingerprint(frame)
    changed = frame.copy()
    changed.loc[1, "genre"] = "Jazz"
    assert frame_fingerprint(changed) != base
    assert frame_fingerprint(frame.rename(columns={"genre": "style"})) != base
    assert frame_fingerprint(frame.iloc[::-1]) != base
    assert frame_fingerprint(frame.iloc[:2]) != base


def test_an_unchanged_local_file_is_not_read_again_and_a_touched_one_is(
        sealed: tuple[DataRoot, str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    root, manifest_path, files = sealed
    if not root.is_local:
        assert read_manifest(root, manifest_path).files["s0.npy"].mtime_ns is None  # type: ignore[union-attr]
        return
    hashed: list[str] = []
    checksum = DataRoot.checksum
    monkeypatch.setattr(DataRoot, "checksum", lambda self, path: hashed.append(path) or checksum(self, path))
    assert output_state(root, manifest_path, "fp-1") == "done" and hashed == []
    stat = os.stat(files[0])
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # same bytes, touched
    assert output_state(root, manifest_path, "fp-1") == "done" and hashed == [files[0]]
